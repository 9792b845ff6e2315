//! The boundary between pod workers and whatever runs containers: a small trait (the
//! Wasmtime implementation lives in `wasm.rs`; worker tests use a fake).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::base::error::BoxError;
pub use crate::metrics::{CountersFn, ServeCounters, UsageFn};
use crate::oci::{FileImages, PullPolicy, RegistryAuth};
use crate::volumes::OpenMount;

/// What a container needs pulled: the image, how to pull it, and with which credentials.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub image: String,
    pub pull_policy: PullPolicy,
    /// The pod's usable `imagePullSecrets`, merged.
    pub auth: RegistryAuth,
    /// Whether `file://` images may be read from the node's disk: only for static pods,
    /// whose manifests the node's admin wrote (default: refused).
    pub file_images: FileImages,
}

/// A pulled and compiled image, ready to start containers from.
#[derive(Clone)]
pub struct PulledImage<I> {
    /// Digest reference reported as `imageID`.
    pub image_id: String,
    /// Entrypoint of a plain OCI image (empty for Wasm artifacts).
    pub entrypoint: Vec<String>,
    /// Cmd of a plain OCI image (empty for Wasm artifacts).
    pub cmd: Vec<String>,
    /// argv[0] when neither the pod nor the image names a command.
    pub module_path: String,
    /// What runs: a command, or a server the runtime serves requests to.
    pub kind: ImageKind,
    /// The runtime's own form of the image (for Wasmtime: the compiled artifact).
    pub image: I,
}

/// What kind of program an image holds, as far as the node must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A program with `main` and no socket API (a WASI preview1 module that imports no
    /// socket function): it cannot listen.
    Command,
    /// A program with `main` that may use sockets (a `wasi:cli/command` component, or a
    /// preview1 module importing WasmEdge's socket functions, as the guide's server does).
    SocketCommand,
    /// A request handler (a `wasi:http/proxy` component): the runtime listens for it.
    HttpServer,
}

/// A container's view of the node's network (pods share the node's).
#[derive(Debug, Clone)]
pub struct ContainerNetwork {
    /// The address listeners are bound to (`--pod-listen-address`).
    pub listen_address: IpAddr,
    /// The TCP ports the container may listen on (an HTTP server listens on each).
    pub tcp_ports: Vec<u16>,
    /// The UDP ports it may bind.
    pub udp_ports: Vec<u16>,
    /// Per-request deadline of an HTTP server.
    pub request_timeout: Duration,
    /// Requests an HTTP server handles at once.
    pub max_concurrent: usize,
    /// What the pod's sockets may do: the same rules for every run of the pod.
    pub rules: Arc<crate::network::PodSockets>,
}

/// Why an image could not be prepared or a container not started: the reason the kubelet
/// would show, and the cause with its whole chain (print it with
/// [`crate::base::error::chain`]).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RuntimeError {
    /// `ErrImagePull`, `ErrImageNeverPull`, `InvalidImageName` or `CreateContainerError`.
    pub reason: &'static str,
    #[source]
    pub source: BoxError,
}

impl RuntimeError {
    pub fn new(reason: &'static str, source: impl Into<BoxError>) -> Self {
        RuntimeError { reason, source: source.into() }
    }
}

/// One run of one container.
pub struct ContainerRun {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The directories to preopen, already opened beneath their volumes.
    pub mounts: Vec<OpenMount>,
    /// Where the guest's stdin comes from (none: empty).
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
    pub memory_limit: Option<u64>,
    /// Handles (open files, streams, sockets) the run may hold at once.
    pub max_handles: usize,
    /// Ports and limits; `None` for a run with no network at all (an exec).
    pub network: Option<ContainerNetwork>,
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

/// Stops a run from anywhere: a server stops accepting at once and lets requests in
/// flight finish for up to the grace period; a command stops at once (wasm has no signals).
pub type Stopper = Arc<dyn Fn(Duration) + Send + Sync>;

/// A started container.
pub trait Running: Send {
    /// Resolves when the run ends (also after a stop).
    fn wait(&mut self) -> BoxFuture<'_, Exit>;
    /// A handle that stops the run from anywhere.
    fn stopper(&self) -> Stopper;
    /// The run's request counters, if it serves requests.
    fn counters(&self) -> Option<CountersFn> {
        None
    }
    /// The run's resource use, if the runtime measures it.
    fn usage(&self) -> Option<UsageFn> {
        None
    }
}

/// Pulls images and starts containers.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// A pulled image in the runtime's own form.
    type Image: Clone + Send + Sync + 'static;

    /// The runtime's name: the scheme of `containerID`s (`wasmtime://...`) and of the
    /// node's `containerRuntimeVersion`.
    fn name(&self) -> &'static str;

    fn prepare(&self, request: ImageRequest)
    -> BoxFuture<'_, Result<PulledImage<Self::Image>, RuntimeError>>;

    fn start(&self, image: &Self::Image, run: ContainerRun) -> Result<Box<dyn Running>, RuntimeError>;
}
