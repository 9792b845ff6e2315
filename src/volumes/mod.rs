//! A pod's volumes as directories on the host (memory-backed ones on a tmpfs each where
//! the agent may mount), and each container's mounts of them as WASI preopened directories
//! (host dir -> guest path, read-only or read-write).

mod beneath;
mod error;
#[cfg(test)]
pub(crate) mod fake;
mod host_path;
mod memory;
pub mod mountinfo;
mod payload;
mod teardown;
mod tmpfs;
mod usage;
mod writer;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Container, ServiceAccount, Volume};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::objects::{Lookup, ObjectSource, PodContext};
use beneath::BeneathError;
pub use error::VolumeError;
use payload::Tokens;
pub use teardown::{TeardownError, remove_gone_pod_dir, remove_pod_dir};
pub use tmpfs::{MemoryMedium, probe};

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

/// One directory a container sees: a volume, or a subPath inside it, at `guest`. It holds
/// no open handle and no resolved path: [`Mount::open`] resolves it anew, beneath the
/// volume's root, at every container start and every exec, because a guest may have
/// changed what the subPath names since (e.g. replaced it with a symlink that climbs out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume's directory on the host: made by the agent, or the pod's hostPath.
    pub volume_root: PathBuf,
    /// The subPath inside the volume (normalized: relative, no `..`); empty for all of it.
    pub sub_path: PathBuf,
    /// The path the guest sees it at.
    pub guest: String,
    pub read_only: bool,
    /// A missing subPath is created (emptyDir and hostPath volumes, as the kubelet does).
    create: bool,
    /// For error messages: the container and the volume this mount belongs to.
    container: String,
    volume: String,
}

/// A [`Mount`] opened: the directory handle the runtime preopens (never a path).
#[derive(Debug)]
pub struct OpenMount {
    pub dir: OwnedFd,
    pub guest: String,
    pub read_only: bool,
}

impl Mount {
    /// Opens the mounted directory beneath the volume's root (see `beneath.rs`): a subPath
    /// that leads out of the volume, through `..` or any symlink, is refused, and a missing
    /// one is created inside the volume only.
    pub fn open(&self) -> Result<OpenMount, VolumeError> {
        let dir =
            beneath::open_dir(&self.volume_root, &self.sub_path, self.create).map_err(|e| self.error(e))?;
        Ok(OpenMount { dir, guest: self.guest.clone(), read_only: self.read_only })
    }

    fn error(&self, e: BeneathError) -> VolumeError {
        let (container, volume) = (self.container.clone(), self.volume.clone());
        let sub_path = self.sub_path.display().to_string();
        let whole = self.sub_path.as_os_str().is_empty();
        match e {
            BeneathError::Escapes => VolumeError::InvalidSubPath { container, volume, sub_path },
            BeneathError::NotDirectory if whole => {
                VolumeError::NotDirectory { container, volume, path: self.volume_root.clone() }
            }
            BeneathError::NotDirectory => VolumeError::SubPathNotDirectory { container, volume, sub_path },
            BeneathError::Missing if !whole && !self.create => {
                VolumeError::SubPathMissing { container, volume, sub_path }
            }
            other => VolumeError::Mount {
                container,
                volume,
                path: self.volume_root.join(&self.sub_path),
                source: std::io::Error::other(other),
            },
        }
    }
}

/// Opens every mount of a container (see [`Mount::open`]), or says which one failed.
pub fn open_all(mounts: &[Mount]) -> Result<Vec<OpenMount>, VolumeError> {
    mounts.iter().map(Mount::open).collect()
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
    /// An emptyDir's `sizeLimit`, in bytes.
    size_limit: Option<u64>,
}

/// Where each volume of a pod is on the host: under `<pod_dir>/volumes/<name>` (hostPath
/// volumes stay where they are). Fixed once prepared; shared by every start and exec.
#[derive(Debug)]
pub struct VolumeLayout {
    root: PathBuf,
    volumes: BTreeMap<String, Prepared>,
}

/// The volumes of one pod: their layout, and the service account tokens their refreshes
/// renew.
#[derive(Debug)]
pub struct PodVolumes {
    layout: Arc<VolumeLayout>,
    tokens: Tokens,
}

impl PodVolumes {
    /// Materializes every volume of the pod under `<pod_dir>/volumes` (the pod's directory
    /// and that one owner-only, 0700): emptyDir as a directory (kept across calls,
    /// `sizeLimit` kept for [`VolumeLayout::over_size_limit`]); hostPath as the host path
    /// itself, after the kubelet's `type` checks (`DirectoryOrCreate`/`FileOrCreate`
    /// create it); configMap and secret as one file per key or per item, `mode`/
    /// `defaultMode` applied (default 0644, for secret files 0600), skipped when `optional`
    /// and missing; downwardAPI as one file per item; projected as all its sources merged
    /// into one directory, a serviceAccountToken source through a TokenRequest for the
    /// pod's service account (its `audience`, `expirationSeconds`, bound to the pod). Each
    /// file is written atomically (temp + rename).
    ///
    /// With [`MemoryMedium::Tmpfs`], the volumes the kubelet keeps in memory (secret,
    /// projected, downwardAPI, emptyDir `medium: Memory`) are each a tmpfs mounted on the
    /// volume's directory (see `memory.rs` for its size); one already mounted there (by
    /// the agent before a restart) is used again. With [`MemoryMedium::Disk`] they are
    /// directories on the data dir's disk.
    pub async fn prepare(
        src: &impl VolumeSource,
        ctx: &PodContext<'_>,
        pod_dir: &Path,
        medium: MemoryMedium,
    ) -> Result<PodVolumes, VolumeError> {
        let root = pod_dir.join("volumes");
        for dir in [pod_dir, &root] {
            writer::ensure_private_dir(dir)
                .map_err(|source| VolumeError::PodDir { path: dir.to_path_buf(), source })?;
        }
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
            let in_memory = medium == MemoryMedium::Tmpfs
                && matches!(kind, Kind::EmptyDir | Kind::Secret | Kind::Projected | Kind::DownwardApi)
                && memory::is_memory_backed(volume);
            if in_memory {
                let size = memory::tmpfs_size(volume, ctx);
                tmpfs::ensure_mounted(&host, size).map_err(|source| VolumeError::Tmpfs {
                    volume: volume.name.clone(),
                    path: host.clone(),
                    source,
                })?;
            } else if kind == Kind::EmptyDir {
                writer::ensure_dir(&host).map_err(|source| VolumeError::Write {
                    volume: volume.name.clone(),
                    path: host.clone(),
                    source,
                })?;
            }
            let size_limit = (volume.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()))
                .and_then(|q| crate::base::quantity::bytes(&q.0));
            volumes.insert(volume.name.clone(), Prepared { host, kind, size_limit });
        }
        let mut this = PodVolumes { layout: Arc::new(VolumeLayout { root, volumes }), tokens: Tokens::new() };
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
        let mut lookup = Lookup::new(src, &ctx.namespace());
        for volume in pod_volumes(ctx) {
            let Some(prepared) = self.layout.volumes.get(&volume.name) else { continue };
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

    /// The volumes' layout, for opening mounts while a refresh runs.
    pub fn layout(&self) -> Arc<VolumeLayout> {
        self.layout.clone()
    }

    /// See [`VolumeLayout::mounts`].
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>, VolumeError> {
        self.layout.mounts(container)
    }

    /// Where this pod's volume data lives (`<pod_dir>/volumes`).
    pub fn root(&self) -> &Path {
        &self.layout.root
    }
}

/// An emptyDir over its `sizeLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub volume: String,
    pub used: u64,
    pub limit: u64,
}

impl VolumeLayout {
    /// Whether any volume's files come from the API or the pod (configMap, secret,
    /// downwardAPI, projected): only then are they rewritten every `--sync-frequency`.
    pub fn refreshes(&self) -> bool {
        self.volumes.values().any(|v| !matches!(v.kind, Kind::EmptyDir | Kind::HostPath))
    }

    /// Whether the pod has an emptyDir with a `sizeLimit` (whose usage must be watched).
    pub fn has_size_limits(&self) -> bool {
        self.volumes.values().any(|v| v.size_limit.is_some())
    }

    /// The first emptyDir that holds more than its `sizeLimit` (blocking: walks the
    /// volumes, see `usage.rs`).
    pub fn over_size_limit(&self) -> Option<OverLimit> {
        self.volumes.iter().find_map(|(name, v)| {
            let limit = v.size_limit?;
            let used = usage::disk_usage(&v.host, limit);
            (used > limit).then(|| OverLimit { volume: name.clone(), used, limit })
        })
    }
    /// The mounts of one container: each `volumeMount` as a [`Mount`] at its `mountPath`,
    /// checked as far as it can be without opening anything (the volume exists, no
    /// subPathExpr, a subPath that is relative and has no `..`). `readOnly` is honoured;
    /// configMap, secret, downwardAPI and projected volumes are always read-only. Open the
    /// result with [`open_all`] at each start: that is where a subPath is resolved beneath
    /// its volume, created if missing in an emptyDir/hostPath volume (as the kubelet does),
    /// and must be a directory (a WASI preopen is one).
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>, VolumeError> {
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let (c, v) = (container.name.clone(), vm.name.clone());
            let prepared = self
                .volumes
                .get(&vm.name)
                .ok_or_else(|| VolumeError::NoSuchVolume { container: c.clone(), volume: v.clone() })?;
            if vm.sub_path_expr.as_deref().is_some_and(|e| !e.is_empty()) {
                return Err(VolumeError::SubPathExpr { container: c, volume: v });
            }
            let sub_path = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => match writer::normalize(sub) {
                    Some(rel) => PathBuf::from(rel),
                    None => {
                        let sub_path = sub.to_string();
                        return Err(VolumeError::InvalidSubPath { container: c, volume: v, sub_path });
                    }
                },
                None => PathBuf::new(),
            };
            let writable = matches!(prepared.kind, Kind::EmptyDir | Kind::HostPath);
            mounts.push(Mount {
                volume_root: prepared.host.clone(),
                sub_path,
                guest: vm.mount_path.clone(),
                read_only: !writable || vm.read_only == Some(true),
                create: writable,
                container: c,
                volume: v,
            });
        }
        Ok(mounts)
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
mod tests;

#[cfg(test)]
mod mounts_tests;

#[cfg(test)]
mod secrets_tests;
