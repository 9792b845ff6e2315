//! What pods share, as a few small handles grouped by concern — the API ([`Api`]), the host
//! and the node's settings for pods ([`Host`]), the runs' logs ([`Logs`]), ConfigMap and
//! Secret reads ([`Objects`]), who to tell when a pod goes away ([`Wakes`]) — and the set a
//! pod worker holds ([`Handles`]). Each part of `pods/` is given only the handles it uses.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::sync::Notify;

use super::cache::{Cached, ObjectCache};
use super::directory::Directory;
use super::probes::Prober;
use super::resources::NodeResources;
use super::source::ApiSource;
use crate::config::{PodLimits, Serving};
use crate::events::Recorder;
use crate::logs::{LogLimits, LogRegistry};
use crate::metrics::Metrics;
use crate::network::Network;
use crate::volumes::MemoryMedium;

/// The API server as pods see it, and the node they are reported against.
#[derive(Clone)]
pub struct Api {
    /// None in standalone mode (static pods only).
    pub client: Option<Client>,
    pub recorder: Recorder,
    pub node_name: String,
    /// The Node's UID when connected (mirror pods are owned by the Node).
    pub node_uid: Option<String>,
}

/// The host pods run on, and the node's settings for them.
pub struct Host {
    pub node_ip: IpAddr,
    pub data_dir: PathBuf,
    /// Where secret, projected, downwardAPI and `medium: Memory` volumes live: a tmpfs
    /// each when the agent may mount (decided at start-up), else the data dir's disk.
    pub memory_medium: MemoryMedium,
    /// What a container may use when its spec does not say (`--default-memory-limit`).
    pub limits: PodLimits,
    /// Where pods' listeners are bound, and the HTTP limits (`--pod-listen-address`, ...).
    pub serving: Serving,
    /// How often running pods' volumes from the API are rewritten (`--sync-frequency`).
    pub sync_frequency: Duration,
    /// Allocatable, memory budget and eviction thresholds (`resources.rs`, `eviction/`).
    pub resources: NodeResources,
}

impl Host {
    /// The context env and volumes are resolved in, for one pod: `resourceFieldRef` of a
    /// container without limits reports the node's allocatable CPU and memory.
    pub fn context<'a>(&self, pod: &'a Pod) -> crate::objects::PodContext<'a> {
        let allocatable = &self.resources.allocatable;
        crate::objects::PodContext {
            pod,
            node_ip: self.node_ip,
            allocatable: (allocatable.cpu_millis, allocatable.memory_bytes),
        }
    }

    /// The directory of the pod with `uid` (its volumes, its journal).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }
}

/// The runs' log files, shared with the kubelet API's readers, and their rotation.
#[derive(Clone)]
pub struct Logs {
    pub registry: LogRegistry,
    /// `--container-log-max-size`, `--container-log-max-files`.
    pub limits: LogLimits,
}

/// Where ConfigMaps, Secrets and tokens are read: the API server, through the node's cache
/// (kept for `--sync-frequency`).
#[derive(Clone)]
pub struct Objects {
    pub client: Option<Client>,
    pub cache: Arc<ObjectCache>,
}

impl Objects {
    /// When a pod starts: always the API server (what is read also fills the cache).
    pub fn source(&self) -> Cached<ApiSource> {
        Cached { source: ApiSource(self.client.clone()), cache: self.cache.clone(), fresh: true }
    }

    /// Where running pods' volumes are rewritten from: the node's cache, else the API.
    pub fn refresh_source(&self) -> Cached<ApiSource> {
        Cached { fresh: false, ..self.source() }
    }
}

/// Who is told when a pod goes away (and, for the memory trim, when a container first
/// starts).
#[derive(Clone, Default)]
pub struct Wakes {
    /// Image garbage collection looks then.
    pub image_gc: Arc<Notify>,
    /// Freed memory is given back to the system then.
    pub memory_trim: Arc<Notify>,
}

/// What a pod worker holds: the handles its effects use.
pub struct Handles<R> {
    pub runtime: Arc<R>,
    pub api: Api,
    pub host: Arc<Host>,
    pub logs: Logs,
    pub objects: Objects,
    /// What the kubelet API can see of the pods.
    pub directory: Directory,
    pub metrics: Arc<Metrics>,
    /// Pods' network rules: who holds each node port, egress ranges, NetworkPolicy.
    pub network: Network,
    /// Runs every container's probes on one timer.
    pub prober: Prober,
    pub wakes: Wakes,
}
