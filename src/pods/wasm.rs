//! The real container runtime: images from the OCI store, compiled and run by the
//! Wasmtime host in `providers/wasi`.

use std::sync::Arc;

use futures::future::BoxFuture;
use krustlet_wasi_provider::{Artifact, ExitStatus, Preopen, RunHandle, RunSpec, Runtime};

use super::runtime::{ContainerRun, ContainerRuntime, Exit, ImageRequest, PrepareError, Prepared, Running};
use crate::oci::{OciError, PullPolicy, RegistryAuth, Store};

/// Pulls with the OCI store and runs with one Wasmtime runtime for the whole process.
pub struct WasmRuntime {
    store: Store,
    wasm: Runtime,
}

impl WasmRuntime {
    pub fn new(store: Store, wasm: Runtime) -> Self {
        WasmRuntime { store, wasm }
    }
}

fn pull_error(e: &OciError) -> PrepareError {
    let reason = match e {
        OciError::NotPresent { .. } => "ErrImageNeverPull",
        OciError::BadReference { .. } => "InvalidImageName",
        _ => "ErrImagePull",
    };
    PrepareError { reason, message: e.to_string() }
}

impl ContainerRuntime for WasmRuntime {
    fn prepare(&self, request: ImageRequest) -> BoxFuture<'_, Result<Prepared, PrepareError>> {
        Box::pin(async move {
            let mut auth = RegistryAuth::anonymous();
            for (kind, data) in &request.pull_secrets {
                match RegistryAuth::from_secret_data(kind, data) {
                    Ok(a) => auth.merge(a),
                    Err(e) => tracing::warn!(error = %e, "ignoring an unusable imagePullSecret"),
                }
            }
            let policy = PullPolicy::from_k8s(request.pull_policy.as_deref(), &request.image);
            let pulled = self.store.pull(&request.image, policy, &auth).await.map_err(|e| pull_error(&e))?;
            let artifact = match self.wasm.cached(&pulled.wasm_digest) {
                Some(a) => a,
                None => {
                    let (wasm, path, digest) =
                        (self.wasm.clone(), pulled.wasm_path.clone(), pulled.wasm_digest.clone());
                    let compiled = tokio::task::spawn_blocking(move || {
                        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                        wasm.load(&bytes, &digest).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                    compiled.map_err(|message| PrepareError { reason: "CreateContainerError", message })?
                }
            };
            let module_path = match pulled.entrypoint.first().or(pulled.cmd.first()) {
                Some(first) => first.clone(),
                None => format!("{}.wasm", short_name(&request.image)),
            };
            Ok(Prepared {
                image_id: pulled.image_id,
                entrypoint: pulled.entrypoint,
                cmd: pulled.cmd,
                module_path,
                payload: Arc::new(artifact),
            })
        })
    }

    fn start(&self, prepared: &Prepared, run: ContainerRun) -> Result<Box<dyn Running>, String> {
        let artifact =
            prepared.payload.downcast_ref::<Artifact>().ok_or("prepared image is not a Wasm artifact")?;
        let mut spec = RunSpec::new().argv(run.argv).envs(run.env).stdout(run.stdout).stderr(run.stderr);
        for m in run.mounts {
            spec = spec.preopen(if m.read_only {
                Preopen::read_only(m.host, m.guest)
            } else {
                Preopen::read_write(m.host, m.guest)
            });
        }
        if let Some(stdin) = run.stdin {
            spec = spec.stdin(stdin);
        }
        if let Some(limit) = run.memory_limit {
            spec = spec.memory_limit(limit);
        }
        let handle = self.wasm.run(artifact, spec).map_err(|e| e.to_string())?;
        Ok(Box::new(WasmRun(handle)))
    }
}

/// The repository's last path segment without tag or digest (`reg/ns/app:1` -> `app`).
fn short_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

struct WasmRun(RunHandle);

impl Running for WasmRun {
    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move { exit_of(self.0.wait().await) })
    }

    fn stopper(&self) -> Arc<dyn Fn() + Send + Sync> {
        let s = self.0.stopper();
        Arc::new(move || s.stop())
    }
}

/// The provider's exit status in the kubelet's terms (one place for the mapping).
pub fn exit_of(status: ExitStatus) -> Exit {
    match status {
        ExitStatus::Exited(code) => Exit::from_code(code, None),
        ExitStatus::Trapped { message } => {
            Exit { code: krustlet_wasi_provider::TRAP_EXIT_CODE, reason: "Error", message: Some(message) }
        }
        ExitStatus::OutOfMemory => Exit {
            code: krustlet_wasi_provider::KILLED_EXIT_CODE,
            reason: "OOMKilled",
            message: Some("the guest exceeded its memory limit".into()),
        },
        ExitStatus::Stopped => {
            Exit { code: krustlet_wasi_provider::KILLED_EXIT_CODE, reason: "Error", message: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_kubelet_reasons() {
        assert_eq!(exit_of(ExitStatus::Exited(42)), Exit::from_code(42, None));
        assert_eq!(exit_of(ExitStatus::Exited(0)).reason, "Completed");
        assert_eq!(exit_of(ExitStatus::OutOfMemory).reason, "OOMKilled");
        assert_eq!(exit_of(ExitStatus::OutOfMemory).code, 137);
        let trap = exit_of(ExitStatus::Trapped { message: "unreachable".into() });
        assert_eq!((trap.code, trap.reason, trap.message.as_deref()), (134, "Error", Some("unreachable")));
        assert_eq!(short_name("127.0.0.1:5000/ns/app:1.0"), "app");
        assert_eq!(short_name("app@sha256:ab"), "app");
    }
}
