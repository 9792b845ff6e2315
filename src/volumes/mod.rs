//! A pod's volumes as directories on the host, and each container's mounts of them as WASI
//! preopened directories (host dir -> guest path, read-only or read-write).

pub mod downward;
#[cfg(test)]
pub(crate) mod fake;
mod host_path;
mod payload;
mod writer;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Container, ServiceAccount, Volume};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::pods::env::{ConfigKind, EnvError, Lookup, ObjectSource, PodContext};
use downward::DownwardError;
use payload::Tokens;

/// Reads what volumes are built from: ConfigMaps, Secrets, and service account tokens.
pub trait VolumeSource: ObjectSource {
    /// Creates a TokenRequest (`serviceaccounts/token`) for `service_account` in `ns`.
    fn token_request(
        &self,
        ns: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> impl Future<Output = Result<TokenRequest, kube::Error>> + Send;
}

impl VolumeSource for Client {
    async fn token_request(
        &self,
        ns: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, kube::Error> {
        Api::<ServiceAccount>::namespaced(self.clone(), ns)
            .create_token_request(service_account, &PostParams::default(), request)
            .await
    }
}

/// One directory a container sees: `host` preopened at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Why a pod's volumes could not be prepared or mounted.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A volume type this node cannot provide (the pod cannot run here).
    #[error("volume {volume:?}: type {kind} is not supported on wasm32-wasi nodes")]
    Unsupported { volume: String, kind: String },
    /// A required ConfigMap/Secret (`key: None`) or item key is missing (the kubelet's
    /// `CreateContainerConfigError` case). Displays as the kubelet's FailedMount message.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {}", missing_message(*kind, name, key.as_deref()))]
    MissingConfig { volume: String, kind: ConfigKind, name: String, key: Option<String> },
    /// Reading a ConfigMap/Secret failed for another reason than "not found".
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Api { volume: String, source: Box<EnvError> },
    #[error(
        "MountVolume.SetUp failed for volume {volume:?} : requesting a token for service account \
         {namespace}/{service_account} failed: {problem}"
    )]
    TokenRequest { volume: String, namespace: String, service_account: String, problem: String },
    /// A hostPath `type` check failed (the kubelet's message).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    HostPath { volume: String, message: String },
    #[error("volume {volume:?}: item {path:?}: {source}")]
    Downward { volume: String, path: String, source: DownwardError },
    #[error("volume {volume:?}: invalid path {path:?}: it must be relative and must not contain '..'")]
    InvalidPath { volume: String, path: String },
    #[error("writing volume {volume:?} at {} failed: {source}", path.display())]
    Write { volume: String, path: PathBuf, source: std::io::Error },
    #[error("container {container:?}: volumeMount {volume:?} names no volume of the pod")]
    NoSuchVolume { container: String, volume: String },
    #[error(
        "container {container:?}: subPath {sub_path:?} of volume {volume:?} is invalid: it must be \
         relative, must not contain '..' and must stay inside the volume"
    )]
    InvalidSubPath { container: String, volume: String, sub_path: String },
    #[error(
        "container {container:?}: subPath {sub_path:?} of volume {volume:?} is not a directory; \
         wasm32-wasi can only mount directories"
    )]
    SubPathNotDirectory { container: String, volume: String, sub_path: String },
    #[error("container {container:?}: subPath {sub_path:?} does not exist in read-only volume {volume:?}")]
    SubPathMissing { container: String, volume: String, sub_path: String },
    #[error("container {container:?}: volumeMount {volume:?} uses subPathExpr, which is not supported")]
    SubPathExpr { container: String, volume: String },
    #[error(
        "container {container:?}: volume {volume:?} is {}, which is not a directory; \
         wasm32-wasi can only mount directories", path.display()
    )]
    NotDirectory { container: String, volume: String, path: PathBuf },
    #[error("container {container:?}: preparing {} of volume {volume:?} failed: {source}", path.display())]
    Mount { container: String, volume: String, path: PathBuf, source: std::io::Error },
}

fn missing_message(kind: ConfigKind, name: &str, key: Option<&str>) -> String {
    match (kind, key) {
        (_, None) => format!("{} {name:?} not found", kind.resource()),
        (ConfigKind::ConfigMap, Some(key)) => format!("configmap references non-existent config key: {key}"),
        (ConfigKind::Secret, Some(key)) => format!("references non-existent secret key: {key}"),
    }
}

/// What a volume is, as far as mounting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EmptyDir,
    HostPath,
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

#[derive(Debug, Clone)]
struct Prepared {
    host: PathBuf,
    kind: Kind,
}

/// The volumes of one pod, materialized under `<pod_dir>/volumes/<name>` (hostPath volumes
/// stay where they are).
#[derive(Debug)]
pub struct PodVolumes {
    root: PathBuf,
    volumes: BTreeMap<String, Prepared>,
    tokens: Tokens,
}

impl PodVolumes {
    /// Materializes every volume of the pod: emptyDir as a directory (kept across calls,
    /// `medium` and `sizeLimit` ignored); hostPath as the host path itself, after the
    /// kubelet's `type` checks (`DirectoryOrCreate`/`FileOrCreate` create it); configMap and
    /// secret as one file per key or per item, `mode`/`defaultMode` applied (default 0644),
    /// skipped when `optional` and missing; downwardAPI as one file per item; projected as
    /// all its sources merged into one directory, a serviceAccountToken source through a
    /// TokenRequest for the pod's service account (its `audience`, `expirationSeconds`,
    /// bound to the pod). Each file is written atomically (temp + rename).
    pub async fn prepare(
        src: &impl VolumeSource,
        ctx: &PodContext<'_>,
        pod_dir: &Path,
    ) -> Result<PodVolumes, VolumeError> {
        let root = pod_dir.join("volumes");
        let mut volumes = BTreeMap::new();
        for volume in pod_volumes(ctx) {
            let kind = kind_of(volume)?;
            let host = match &volume.host_path {
                Some(hp) if kind == Kind::HostPath => {
                    let path = PathBuf::from(&hp.path);
                    host_path::check(&path, hp.type_.as_deref())
                        .map_err(|message| VolumeError::HostPath { volume: volume.name.clone(), message })?;
                    path
                }
                _ if volume.name.contains('/')
                    || writer::normalize(&volume.name).as_ref() != Some(&volume.name) =>
                {
                    return Err(VolumeError::InvalidPath {
                        volume: volume.name.clone(),
                        path: volume.name.clone(),
                    });
                }
                _ => root.join(&volume.name),
            };
            if kind == Kind::EmptyDir {
                writer::ensure_dir(&host).map_err(|source| VolumeError::Write {
                    volume: volume.name.clone(),
                    path: host.clone(),
                    source,
                })?;
            }
            volumes.insert(volume.name.clone(), Prepared { host, kind });
        }
        let mut this = PodVolumes { root, volumes, tokens: Tokens::new() };
        this.refresh(src, ctx).await?;
        Ok(this)
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes in place, so a
    /// running guest sees changed objects. Tokens are requested again only once due (see
    /// [`PodVolumes::token_refresh_at`]). A volume whose objects cannot be read keeps its
    /// old files.
    pub async fn refresh(
        &mut self,
        src: &impl VolumeSource,
        ctx: &PodContext<'_>,
    ) -> Result<(), VolumeError> {
        let mut lookup = Lookup::new(src, ctx.namespace());
        for volume in pod_volumes(ctx) {
            let Some(prepared) = self.volumes.get(&volume.name) else { continue };
            if matches!(prepared.kind, Kind::EmptyDir | Kind::HostPath) {
                continue;
            }
            let files = payload::for_volume(src, &mut lookup, ctx, volume, &mut self.tokens).await?;
            writer::sync_dir(&prepared.host, &files).map_err(|(path, source)| VolumeError::Write {
                volume: volume.name.clone(),
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// When the earliest service account token is due to be requested again (80% of its
    /// lifetime, at most a day), if the pod has any; call [`PodVolumes::refresh`] then.
    pub fn token_refresh_at(&self) -> Option<SystemTime> {
        self.tokens.values().map(|t| t.refresh_at).min()
    }

    /// The mounts of one container: each `volumeMount` as a [`Mount`] at its `mountPath`.
    /// A `subPath` (relative, no `..`, not escaping the volume through a symlink) mounts
    /// that directory of the volume; it is created in an emptyDir/hostPath volume if missing
    /// (as the kubelet does) and must be a directory (a WASI preopen is one). `readOnly` is
    /// honoured; configMap, secret, downwardAPI and projected volumes are always read-only.
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>, VolumeError> {
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let at = MountAt { container: &container.name, volume: &vm.name };
            let prepared = self.volumes.get(&vm.name).ok_or_else(|| VolumeError::NoSuchVolume {
                container: at.container.into(),
                volume: at.volume.into(),
            })?;
            if vm.sub_path_expr.as_deref().is_some_and(|e| !e.is_empty()) {
                return Err(VolumeError::SubPathExpr {
                    container: at.container.into(),
                    volume: at.volume.into(),
                });
            }
            let writable = matches!(prepared.kind, Kind::EmptyDir | Kind::HostPath);
            let base = prepared.host.canonicalize().map_err(at.io(&prepared.host))?;
            let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => at.sub_dir(&base, sub, writable)?,
                None if base.is_dir() => base,
                None => {
                    let (container, volume) = (at.container.into(), at.volume.into());
                    return Err(VolumeError::NotDirectory { container, volume, path: base });
                }
            };
            let read_only = !writable || vm.read_only == Some(true);
            mounts.push(Mount { host, guest: vm.mount_path.clone(), read_only });
        }
        Ok(mounts)
    }

    /// Where this pod's volume data lives (`<pod_dir>/volumes`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the pod's volume data under `<pod_dir>/volumes` (emptyDir, configMap, secret,
    /// downwardAPI, projected). hostPath volumes are never under it, so their contents stay.
    /// A missing directory is not an error.
    pub fn cleanup(pod_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(pod_dir.join("volumes")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// One volumeMount of one container, for error messages.
#[derive(Clone, Copy)]
struct MountAt<'a> {
    container: &'a str,
    volume: &'a str,
}

impl MountAt<'_> {
    fn io(self, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
        let (container, volume, path) = (self.container.into(), self.volume.into(), path.to_path_buf());
        move |source| VolumeError::Mount { container, volume, path, source }
    }

    /// The directory `sub` names inside the volume at `base` (canonical), created if missing
    /// in a writable volume; it must not leave the volume, even through a symlink.
    fn sub_dir(self, base: &Path, sub: &str, writable: bool) -> Result<PathBuf, VolumeError> {
        let (container, volume, sub_path) = (self.container.into(), self.volume.into(), sub.into());
        let Some(rel) = writer::normalize(sub) else {
            return Err(VolumeError::InvalidSubPath { container, volume, sub_path });
        };
        let path = base.join(rel);
        if std::fs::symlink_metadata(&path).is_err() {
            if !writable {
                return Err(VolumeError::SubPathMissing { container, volume, sub_path });
            }
            writer::ensure_dir(&path).map_err(self.io(&path))?;
        }
        let real = path.canonicalize().map_err(self.io(&path))?;
        if !real.starts_with(base) {
            Err(VolumeError::InvalidSubPath { container, volume, sub_path })
        } else if !real.is_dir() {
            Err(VolumeError::SubPathNotDirectory { container, volume, sub_path })
        } else {
            Ok(real)
        }
    }
}

fn pod_volumes<'p>(ctx: &PodContext<'p>) -> impl Iterator<Item = &'p Volume> {
    ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten())
}

/// The volume's kind, or [`VolumeError::Unsupported`] naming its type as the API spells it.
/// A volume with no source is an emptyDir (the API server's default).
fn kind_of(volume: &Volume) -> Result<Kind, VolumeError> {
    let unsupported =
        |kind: &str| VolumeError::Unsupported { volume: volume.name.clone(), kind: kind.into() };
    if let Some(p) = &volume.projected
        && p.sources.iter().flatten().any(|s| s.cluster_trust_bundle.is_some())
    {
        return Err(unsupported("projected clusterTrustBundle"));
    }
    let known = [
        (volume.empty_dir.is_some(), Kind::EmptyDir),
        (volume.host_path.is_some(), Kind::HostPath),
        (volume.config_map.is_some(), Kind::ConfigMap),
        (volume.secret.is_some(), Kind::Secret),
        (volume.downward_api.is_some(), Kind::DownwardApi),
        (volume.projected.is_some(), Kind::Projected),
    ];
    if let Some((_, kind)) = known.iter().find(|(set, _)| *set) {
        return Ok(*kind);
    }
    let json = serde_json::to_value(volume).unwrap_or_default();
    match json.as_object().and_then(|o| o.keys().find(|k| *k != "name")) {
        Some(other) => Err(unsupported(other)),
        None => Ok(Kind::EmptyDir),
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod mounts_tests;
