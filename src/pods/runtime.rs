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

/// What a resource group may use (a pod's, or one of its containers'), in plain numbers:
/// `None` is no limit of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupLimits {
    /// Bytes of memory of all its runs and their instances together (`limits.memory`).
    pub memory_limit: Option<u64>,
    /// CPU quota in millicores (`limits.cpu`).
    pub cpu_limit_millis: Option<u64>,
    /// CPU weight under contention, in millicores (`requests.cpu`).
    pub cpu_request_millis: Option<u64>,
}

/// A resource group a runtime made, as a cgroup: every run given it (the container's runs,
/// its exec instances, a server's request instances) charges its memory and CPU there,
/// under its limits and its parent's. Cheap to clone; clones are the same group.
#[derive(Clone)]
pub struct Group {
    /// The runtime's own handle (for Wasmtime, a provider `Cgroup`).
    pub handle: Arc<dyn std::any::Any + Send + Sync>,
    /// Reads (CPU nanoseconds, memory bytes) of all its runs, its children's included.
    pub usage: UsageFn,
    pub limits: GroupLimits,
    /// When it was made (CPU rates over its life start here).
    pub since: std::time::SystemTime,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("limits", &self.limits).field("usage", &(self.usage)()).finish()
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
    /// The container's resource group, shared by its runs and exec instances; without one
    /// the run has only `memory_limit`, on its own.
    pub group: Option<Group>,
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

    /// A resource group for a pod (no `parent`) or for a container inside its pod's group;
    /// `None` when this runtime does not group runs.
    fn group(&self, _parent: Option<&Group>, _limits: GroupLimits) -> Option<Group> {
        None
    }
}
