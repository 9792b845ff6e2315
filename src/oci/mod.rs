//! Getting Wasm modules out of OCI registries: the pull policy, the pulled result, the
//! errors a user sees in `kubectl describe pod`, and the parts below (references,
//! credentials, artifact formats, the content-addressed store, push).
//!
//! Accepted artifacts (anything else is [`OciError::UnsupportedArtifact`]):
//! - wasm-to-oci: config `application/vnd.wasm.config.v1+json`, one layer
//!   `application/vnd.wasm.content.layer.v1+wasm`;
//! - the CNCF Wasm OCI artifact: config `application/vnd.wasm.config.v0+json`, one layer
//!   `application/wasm`;
//! - ordinary OCI / Docker v2 images whose Entrypoint/Cmd names a `.wasm` file in the
//!   layers (or that hold exactly one `.wasm` file);
//! - image indexes / manifest lists (the `wasip1`/`wasi`/`wasm` entry is chosen);
//! - `file:///abs/path/app.wasm` (no registry; static pods only, see [`FileImages`]).
//!
//! Every read is capped (see `limits.rs`): manifests and configs at 4 MiB, an image's
//! layers together and what a layer unpacks to at `--image-max-size`. Blobs stream to
//! disk and are verified (size and digest) while they stream.

mod auth;
mod blobs;
mod fetch;
mod formats;
pub(crate) mod gc;
mod image;
mod layer_guard;
mod limits;
mod local;
mod push;
mod reference;
mod registry;
mod store;

use std::path::PathBuf;

pub use auth::RegistryAuth;
pub use gc::GcReport;
pub use limits::{Limit, MAX_MANIFEST_SIZE};
pub use push::{PushFormat, push};
pub use reference::warm_parser;
pub use store::Store;

/// Whether to ask the registry, as Kubernetes' `imagePullPolicy` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always resolve the reference at the registry (blobs already stored are reused).
    Always,
    /// Use the stored image if this reference was pulled before; else pull.
    IfNotPresent,
    /// Never contact a registry: use the stored image or fail with [`OciError::NotPresent`].
    Never,
}

impl PullPolicy {
    /// The policy for a container: `imagePullPolicy` if it is one of the three names,
    /// else the Kubernetes default — `Always` when the tag is `latest` or absent (and no
    /// digest is given), `IfNotPresent` otherwise.
    pub fn from_k8s(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ if reference::tag_is_latest(image) => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// Whether a pull may read a `file://` module from this node's disk. Only static pods
/// (written by the node's admin under `--pod-manifest-path`) may: any pod author could
/// otherwise read any file the agent can (`file:///etc/shadow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileImages {
    /// `file://` references fail with [`OciError::LocalFileRefused`].
    #[default]
    Refused,
    /// `file://` references are read (regular files only, up to `--image-max-size`).
    Allowed,
}

/// Which kind of artifact the Wasm module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArtifactFormat {
    /// `application/vnd.wasm.content.layer.v1+wasm` (wasm-to-oci, Krustlet's format).
    WasmToOci,
    /// `application/vnd.wasm.config.v0+json` + `application/wasm` (CNCF Wasm OCI artifact).
    CncfWasm,
    /// An ordinary OCI or Docker v2 image with the module as a file in its layers.
    OciImage,
    /// A `file://` reference on this node.
    LocalFile,
}

/// A module ready to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pulled {
    /// The reference as given.
    pub image: String,
    /// `<registry>/<repository>@sha256:...` of the manifest (of the index, when the
    /// reference named one) — what the kubelet reports as `imageID`. For `file://`
    /// references: `file://<path>@sha256:<digest of the module>`.
    pub image_id: String,
    /// `sha256:<hex>` of the Wasm bytes: the cache key for compiled code.
    pub wasm_digest: String,
    /// The content-addressed module file in the store.
    pub wasm_path: PathBuf,
    /// For [`ArtifactFormat::OciImage`]: the image's Entrypoint. Empty for the other formats.
    pub entrypoint: Vec<String>,
    /// For [`ArtifactFormat::OciImage`]: the image's Cmd (a pod's `args` replace it).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Where the module came from.
    pub format: ArtifactFormat,
}

/// Why a pull, a push or a pull secret failed. Display strings are meant for
/// `kubectl describe pod`.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid image reference {reference:?}: {why}")]
    BadReference { reference: String, why: String },
    #[error("image {reference:?} not found: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("pulling {reference:?}: unauthorized by registry {registry} (check imagePullSecrets): {detail}")]
    Unauthorized { reference: String, registry: String, detail: String },
    #[error("registry {registry} is unreachable while pulling {reference:?}: {detail}")]
    Unreachable { reference: String, registry: String, detail: String },
    #[error("registry request for {reference:?} failed: {detail}")]
    Registry { reference: String, detail: String },
    #[error("pushing {reference:?} failed: {detail}")]
    Push { reference: String, detail: String },
    #[error("image {reference:?} is not a Wasm artifact this node can run: {detail}")]
    UnsupportedArtifact { reference: String, detail: String },
    #[error("image {reference:?} has no image index entry for Wasm (platforms: {platforms})")]
    NoWasmPlatform { reference: String, platforms: String },
    #[error("image {reference:?} does not contain the Wasm module: {detail}")]
    WasmNotInImage { reference: String, detail: String },
    #[error("manifest or config of {reference:?} is malformed: {detail}")]
    BadManifest { reference: String, detail: String },
    #[error("reading layer {digest} failed: {source}")]
    LayerRead { digest: String, source: std::io::Error },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("image {reference:?} is not present on this node and imagePullPolicy is Never")]
    NotPresent { reference: String },
    #[error("image store: {action} {path} failed: {source}")]
    StoreIo { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("image store: index entry {path} is malformed: {detail}")]
    StoreIndex { path: PathBuf, detail: String },
    #[error("{what} of image {reference:?} exceeds {limit}")]
    TooLarge { reference: String, what: String, limit: Limit },
    #[error(
        "image {reference:?} is refused: file:// images may only be used by static pods (from --pod-manifest-path); a pod from the API server must name a registry image"
    )]
    LocalFileRefused { reference: String },
    #[error("file:// image {path} is {kind}, not a regular file (only regular files are read)")]
    LocalFileNotRegular { path: PathBuf, kind: &'static str },
    #[error("reading local module {path} failed: {source}")]
    LocalFile { path: PathBuf, source: std::io::Error },
    #[error("image pull secret of type {kind:?} is unusable: {detail}")]
    BadPullSecret { kind: String, detail: String },
}

impl OciError {
    /// True for errors that mean "the registry has no such image" (kubelet: ErrImagePull
    /// with "not found"), as opposed to every other pull failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OciError::NotFound { .. })
    }
}

/// Installs ring as the process-wide rustls provider if nothing is installed yet (the
/// binary does this in `main`; library users and tests may not have).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::PullPolicy;

    #[test]
    fn pull_policy_follows_kubernetes_defaults() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::from_k8s(None, "example.com/app"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "example.com/app:latest"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "localhost:5000/app"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "localhost:5000/app:v1"), IfNotPresent);
        let pinned = format!("localhost:5000/app@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::from_k8s(None, &pinned), IfNotPresent);
        assert_eq!(PullPolicy::from_k8s(Some("Never"), "app"), Never);
        assert_eq!(PullPolicy::from_k8s(Some("IfNotPresent"), "app"), IfNotPresent);
        assert_eq!(PullPolicy::from_k8s(Some("Always"), "app:v1"), Always);
        assert_eq!(PullPolicy::from_k8s(Some(""), "app:v1"), IfNotPresent);
    }
}
