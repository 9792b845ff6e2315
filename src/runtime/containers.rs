//! The runtime side of the boundary (CRI's RuntimeService): the runtime's name and
//! version, starting a container from a prepared image, resource groups, and a started
//! container (`Running`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use super::images::ImageService;
use super::{CountersFn, RuntimeError, UsageFn};
pub use crate::network::ContainerNetwork;
use crate::volumes::OpenMount;

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

/// Starts containers from the images its [`ImageService`] prepared.
pub trait RuntimeService: ImageService {
    /// The runtime's name: the scheme of `containerID`s (`wasmtime://...`) and of the
    /// node's `containerRuntimeVersion`.
    fn name(&self) -> &'static str;

    /// The runtime's version, reported as the node's `containerRuntimeVersion`
    /// (`<name>://<version>`).
    fn version(&self) -> &'static str;

    fn start(&self, image: &Self::Image, run: ContainerRun) -> Result<Box<dyn Running>, RuntimeError>;

    /// A resource group for a pod (no `parent`) or for a container inside its pod's group;
    /// `None` when this runtime does not group runs.
    fn group(&self, _parent: Option<&Group>, _limits: GroupLimits) -> Option<Group> {
        None
    }
}
