//! Why a pod's volumes could not be prepared or mounted, in the kubelet's words where it
//! has some.

use std::path::PathBuf;

use crate::objects::ConfigKind;
use crate::objects::LookupError;
use crate::objects::downward::DownwardError;

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
    Api { volume: String, source: Box<LookupError> },
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
    /// The volume's tmpfs could not be mounted (the node decided at start-up it may mount).
    #[error("MountVolume.SetUp failed for volume {volume:?} : mounting a tmpfs on {} failed: {source}", path.display())]
    Tmpfs { volume: String, path: PathBuf, source: std::io::Error },
    #[error("preparing the pod's directory {} failed: {source}", path.display())]
    PodDir { path: PathBuf, source: std::io::Error },
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
