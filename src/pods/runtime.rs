//! The boundary between pod workers and whatever runs containers: a small trait (the
//! Wasmtime implementation lives in `wasm.rs`; worker tests use a fake).

use std::any::Any;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use tokio::io::{AsyncRead, AsyncWrite};

/// What a container needs pulled: the image, the pod's pull policy and pull secrets.
#[derive(Debug, Clone, Default)]
pub struct ImageRequest {
    pub image: String,
    /// The container's `imagePullPolicy` as written (None = Kubernetes' default).
    pub pull_policy: Option<String>,
    /// `(secret type, data)` of each resolvable `imagePullSecrets` entry.
    pub pull_secrets: Vec<(String, BTreeMap<String, Vec<u8>>)>,
}

/// A pulled and compiled image, ready to start containers from.
#[derive(Clone)]
pub struct Prepared {
    /// Digest reference reported as `imageID`.
    pub image_id: String,
    /// Entrypoint of a plain OCI image (empty for Wasm artifacts).
    pub entrypoint: Vec<String>,
    /// Cmd of a plain OCI image (empty for Wasm artifacts).
    pub cmd: Vec<String>,
    /// argv[0] when neither the pod nor the image names a command.
    pub module_path: String,
    /// Runtime-private payload (the compiled artifact).
    pub payload: Arc<dyn Any + Send + Sync>,
}

/// Why an image could not be prepared, as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareError {
    /// `ErrImagePull`, `ErrImageNeverPull`, `InvalidImageName` or `CreateContainerError`.
    pub reason: &'static str,
    pub message: String,
}

/// A preopened directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// One run of one container.
pub struct ContainerRun {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    /// Where the guest's stdin comes from (none: empty).
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
    pub memory_limit: Option<u64>,
}

/// How a run ended, in the kubelet's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    /// `Completed`, `Error` or `OOMKilled`.
    pub reason: &'static str,
    pub message: Option<String>,
}

impl Exit {
    pub fn from_code(code: i32, message: Option<String>) -> Exit {
        Exit { code, reason: if code == 0 { "Completed" } else { "Error" }, message }
    }
}

/// A started container.
pub trait Running: Send {
    /// Resolves when the run ends (also after `stop`).
    fn wait(&mut self) -> BoxFuture<'_, Exit>;
    /// A handle that stops the run from anywhere.
    fn stopper(&self) -> Arc<dyn Fn() + Send + Sync>;
}

/// Pulls images and starts containers.
pub trait ContainerRuntime: Send + Sync + 'static {
    fn prepare(&self, request: ImageRequest) -> BoxFuture<'_, Result<Prepared, PrepareError>>;
    fn start(&self, prepared: &Prepared, run: ContainerRun) -> Result<Box<dyn Running>, String>;
}
