//! The real container runtime: images from the OCI store, compiled and run by the
//! Wasmtime host in `providers/wasi`. The one file of the agent that drives the provider,
//! [`build`] the one place that constructs it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use krustlet_wasi_provider::{
    Artifact, ArtifactKind, Cgroup, CgroupSpec, ExitStatus, HttpLimits, LoadSource, NetworkPolicy, Preopen,
    RunHandle, RunSpec, Runtime,
};

use super::{
    ContainerNetwork, ContainerRun, CountersFn, Exit, Group, GroupLimits, ImageKind, ImageRequest,
    ImageService, PulledImage, Running, RuntimeError, RuntimeService, ServeCounters, Stopper, UsageFn,
};
use crate::oci::{OciError, Store};

/// Pulls with the OCI store and runs with one Wasmtime runtime for the whole process.
pub struct WasmRuntime {
    store: Store,
    wasm: Runtime,
    /// One turn per digest being loaded: the pods of a new image wait here for its first
    /// load, not on blocking-pool threads (see [`crate::config::RUNTIME_BLOCKING_THREADS`]).
    loading: crate::base::turns::Turns,
}

/// Why the Wasmtime runtime could not be built.
pub type BuildError = krustlet_wasi_provider::Error;

/// Builds the runtime: pulls with `store`, keeps compiled modules under `cache_dir`, lets
/// all guests together use at most `memory_budget` bytes, and compiles on
/// `compile_threads` threads (`None`: one per CPU).
pub fn build(
    store: Store,
    cache_dir: PathBuf,
    memory_budget: u64,
    compile_threads: Option<usize>,
) -> Result<WasmRuntime, BuildError> {
    let mut builder = Runtime::builder().cache_dir(cache_dir).memory_budget(memory_budget);
    if let Some(n) = compile_threads {
        builder = builder.compile_threads(n);
    }
    Ok(WasmRuntime { store, wasm: builder.build()?, loading: Default::default() })
}

impl WasmRuntime {
    /// The compiled artifact of a pulled module: from memory, else from the disk cache,
    /// else compiled now on the provider's compile threads (one blocking-pool thread
    /// waits for it; the other pods of the same new image wait for their turn, then find
    /// it in memory).
    async fn compile(&self, path: std::path::PathBuf, digest: String) -> Result<Artifact, RuntimeError> {
        if let Some(a) = self.wasm.cached(&digest) {
            return Ok(a);
        }
        // Pods waiting for this turn find the artifact in memory when they get it.
        let _turn = self.loading.take(&digest).await;
        if let Some(a) = self.wasm.cached(&digest) {
            return Ok(a);
        }
        let wasm = self.wasm.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            wasm.load_file(&path, &digest).map_err(|e| RuntimeError::new(CREATE, e))
        });
        compiled.await.map_err(|e| RuntimeError::new(CREATE, e))?
    }
}

const CREATE: &str = "CreateContainerError";

/// A port of an HTTP server could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the wasi:http component")]
struct Listen {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The node's word for what an artifact is.
fn kind_of(artifact: &Artifact) -> ImageKind {
    match artifact.kind() {
        ArtifactKind::Module if artifact.uses_wasmedge_sockets() => ImageKind::SocketCommand,
        ArtifactKind::Module => ImageKind::Command,
        ArtifactKind::Component => ImageKind::SocketCommand,
        ArtifactKind::HttpProxy => ImageKind::HttpServer,
    }
}

/// Gives the run its network: listeners for an HTTP server (bound here, so a port in
/// use is this container's error), wasi:sockets for a command component, WasmEdge
/// sockets for a preview1 module (the guide's server). Every socket use of the run, the HTTP server's
/// outgoing connections and accepted peers included, is judged by the pod's rules, and its
/// name lookups go to the pod's budget on `wasm`'s resolver pool. With a specific
/// `--pod-listen-address`, a WasmEdge module's binds to the wildcard address go there (it
/// cannot be told where to listen; the guide's binds `0.0.0.0:8080`); a component's are
/// judged as asked, and refused with an Event saying which address to bind.
fn with_network(
    spec: RunSpec,
    artifact: &Artifact,
    network: Option<ContainerNetwork>,
    wasm: &Runtime,
) -> Result<RunSpec, RuntimeError> {
    let Some(net) = network else { return Ok(spec) };
    let lookups = net.rules.lookups(|| wasm.lookups(crate::config::POD_LOOKUPS_IN_FLIGHT));
    let policy = NetworkPolicy::with_rules(net.rules.clone()).lookups(lookups);
    Ok(match artifact.kind() {
        ArtifactKind::Module if !net.listen_address.is_unspecified() => {
            spec.network(policy.bind_wildcard_to(net.listen_address))
        }
        ArtifactKind::Module | ArtifactKind::Component => spec.network(policy),
        ArtifactKind::HttpProxy => {
            let listeners = (net.tcp_ports.iter())
                .map(|port| {
                    let addr = SocketAddr::new(net.listen_address, *port);
                    TcpListener::bind(addr)
                        .map_err(|source| RuntimeError::new(CREATE, Listen { addr, source }))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let limits =
                HttpLimits { request_timeout: net.request_timeout, max_concurrent: net.max_concurrent };
            // Its listeners are the agent's; the rules judge their peers, its outgoing
            // connections and any socket it opens, as for every run of the pod.
            spec.listeners(listeners).http(limits).network(policy)
        }
    })
}

/// The kubelet's reason for a pull that failed this way.
fn pull_reason(e: &OciError) -> &'static str {
    match e {
        OciError::NotPresent { .. } => "ErrImageNeverPull",
        OciError::BadReference { .. } | OciError::LocalFileRefused { .. } => "InvalidImageName",
        _ => "ErrImagePull",
    }
}

impl ImageService for WasmRuntime {
    type Image = Artifact;

    fn prepare(&self, request: ImageRequest) -> BoxFuture<'_, Result<PulledImage<Artifact>, RuntimeError>> {
        Box::pin(async move {
            let began = std::time::Instant::now();
            let pulled = (self
                .store
                .pull(&request.image, request.pull_policy, &request.auth, request.file_images)
                .await)
                .map_err(|e| RuntimeError::new(pull_reason(&e), e))?;
            let pull_ms = began.elapsed().as_secs_f64() * 1e3;
            let image = self.compile(pulled.wasm_path.clone(), pulled.wasm_digest.clone()).await?;
            let load_ms = began.elapsed().as_secs_f64() * 1e3 - pull_ms;
            // Once per image and process at info (its code compiled or read from disk), at
            // debug for every later pod of the image.
            match image.source() {
                LoadSource::Memory => {
                    tracing::debug!(image = %request.image, pull_ms, load_ms, "image ready")
                }
                code => tracing::info!(image = %request.image, pull_ms, load_ms, ?code, "image ready"),
            }
            let module_path = match pulled.entrypoint.first().or(pulled.cmd.first()) {
                Some(first) => first.clone(),
                None => format!("{}.wasm", short_name(&request.image)),
            };
            Ok(PulledImage {
                image_id: pulled.image_id,
                entrypoint: pulled.entrypoint,
                cmd: pulled.cmd,
                module_path,
                kind: kind_of(&image),
                image,
            })
        })
    }

    fn remove(&self, digest: &str) {
        self.wasm.discard(digest);
    }
}

impl RuntimeService for WasmRuntime {
    fn name(&self) -> &'static str {
        krustlet_wasi_provider::RUNTIME_NAME
    }

    fn version(&self) -> &'static str {
        krustlet_wasi_provider::WASMTIME_VERSION
    }

    fn start(&self, artifact: &Artifact, run: ContainerRun) -> Result<Box<dyn Running>, RuntimeError> {
        let mut spec = RunSpec::new().argv(run.argv).envs(run.env).stdout(run.stdout).stderr(run.stderr);
        for m in run.mounts {
            spec = spec.preopen(Preopen::opened(m.dir, m.guest, m.read_only));
        }
        if let Some(stdin) = run.stdin {
            spec = spec.stdin(stdin);
        }
        // In its container's group, the run shares the group's memory limit with every other
        // run and instance of the container. Its own cap is that limit too, so an instance
        // that alone would pass it ran out of memory (OOMKilled, a 500 for a request), while
        // one refused because the others hold the memory is over the group's (a 503).
        if let Some(cgroup) = run.group.as_ref().and_then(|g| g.handle.downcast_ref::<Cgroup>()) {
            spec = spec.cgroup(cgroup.clone());
        }
        if let Some(limit) = run.memory_limit {
            spec = spec.memory_limit(limit);
        }
        spec = spec.max_handles(run.max_handles);
        spec = with_network(spec, artifact, run.network, &self.wasm)?;
        let handle = self.wasm.run(artifact, spec).map_err(|e| RuntimeError::new(CREATE, e))?;
        Ok(Box::new(WasmRun(handle)))
    }

    fn group(&self, parent: Option<&Group>, limits: GroupLimits) -> Option<Group> {
        let spec = CgroupSpec {
            memory_limit: limits.memory_limit,
            cpu_limit_millis: limits.cpu_limit_millis,
            cpu_request_millis: limits.cpu_request_millis,
        };
        let cgroup = match parent.and_then(|p| p.handle.downcast_ref::<Cgroup>()) {
            Some(parent) => parent.child(spec),
            None => self.wasm.cgroup(spec),
        };
        let read = cgroup.clone();
        Some(Group {
            handle: Arc::new(cgroup),
            usage: Arc::new(move || (read.cpu_nanos(), read.memory_bytes())),
            limits,
            since: std::time::SystemTime::now(),
        })
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

    fn stopper(&self) -> Stopper {
        let s = self.0.stopper();
        Arc::new(move |grace| s.shutdown(grace))
    }

    fn usage(&self) -> Option<UsageFn> {
        let usage = self.0.usage();
        Some(Arc::new(move || (usage.cpu_nanos(), usage.memory_bytes())))
    }

    fn counters(&self) -> Option<CountersFn> {
        let stats = self.0.http_stats()?;
        Some(Arc::new(move || {
            let s = stats.snapshot();
            ServeCounters {
                requests: s.requests,
                trapped: s.trapped,
                out_of_memory: s.out_of_memory,
                timed_out: s.timed_out,
                over_capacity: s.over_capacity,
                over_memory: s.over_memory,
                in_flight: s.in_flight,
            }
        }))
    }
}

/// The provider's exit status in the kubelet's terms: its code, and the reason.
pub fn exit_of(status: ExitStatus) -> Exit {
    let code = status.code();
    match status {
        ExitStatus::Exited(_) => Exit::from_code(code, None),
        ExitStatus::Trapped { message } => Exit { code, reason: "Error", message: Some(message) },
        ExitStatus::OutOfMemory { message } => Exit { code, reason: "OOMKilled", message: Some(message) },
        ExitStatus::Stopped => Exit { code, reason: "Error", message: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_kubelet_reasons() {
        assert_eq!(exit_of(ExitStatus::Exited(42)), Exit::from_code(42, None));
        assert_eq!(exit_of(ExitStatus::Exited(0)).reason, "Completed");
        let oom = exit_of(ExitStatus::OutOfMemory { message: "over the memory limit of 1 bytes".into() });
        assert_eq!(
            (oom.code, oom.reason, oom.message.as_deref()),
            (137, "OOMKilled", Some("over the memory limit of 1 bytes"))
        );
        let trap = exit_of(ExitStatus::Trapped { message: "unreachable".into() });
        assert_eq!((trap.code, trap.reason, trap.message.as_deref()), (134, "Error", Some("unreachable")));
        assert_eq!(short_name("127.0.0.1:5000/ns/app:1.0"), "app");
        assert_eq!(short_name("app@sha256:ab"), "app");
    }

    #[test]
    fn config_defaults_are_the_hosts() {
        let http = crate::config::Serving::default().http;
        assert_eq!(http.request_timeout, krustlet_wasi_provider::DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(http.max_concurrent, krustlet_wasi_provider::DEFAULT_MAX_CONCURRENT);
    }
}
