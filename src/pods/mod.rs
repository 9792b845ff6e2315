//! Pods bound to this node: one watch on `spec.nodeName`, one worker per pod that owns
//! the pod's state (see `worker.rs`), admission by `--max-pods`.

pub mod directory;
pub mod env;
mod prepare;
pub(crate) mod quantity;
mod recover;
pub mod runtime;
mod start;
pub mod status;
pub mod wasm;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::events::Recorder;
pub use runtime::ContainerRuntime;
pub use worker::{INITIAL_BACKOFF, MAX_BACKOFF};

/// What every pod worker shares.
pub struct Shared<R> {
    pub runtime: Arc<R>,
    pub client: Client,
    pub recorder: Recorder,
    pub node_ip: IpAddr,
    pub data_dir: PathBuf,
    /// The node's allocatable (CPU millicores, memory bytes): what `resourceFieldRef`
    /// reports for a container without limits.
    pub allocatable: (u64, u64),
    /// What the kubelet API can see of the pods.
    pub directory: directory::Directory,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The runs' log files, shared with the kubelet API's readers.
    pub logs: crate::logs::LogRegistry,
    /// Rotation limits of each run's log (`--container-log-max-size`, `-max-files`).
    pub log_limits: crate::logs::LogLimits,
}

impl<R> Shared<R> {
    /// The context env and volumes are resolved in, for one pod.
    pub fn context<'a>(&self, pod: &'a Pod) -> env::PodContext<'a> {
        env::PodContext { pod, node_ip: self.node_ip, allocatable: self.allocatable }
    }
}

/// The latest state of a pod, as the worker receives it (`None`: gone from the API).
pub type PodSlot = watch::Sender<Option<Arc<Pod>>>;

/// Watches the pods bound to `node_name` and runs a worker for each until shutdown.
pub async fn run<R: ContainerRuntime>(
    shared: Arc<Shared<R>>,
    node_name: String,
    max_pods: u32,
    mut shutdown: broadcast::Receiver<()>,
) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let mut workers: HashMap<String, PodSlot> = HashMap::new();
    let mut active: HashSet<String> = HashSet::new();
    let mut relisted: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = shutdown.recv() => break,
        };
        match event {
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                relisted.insert(uid.clone());
                workers.retain(|_, slot| !slot.is_closed());
                active.retain(|u| workers.contains_key(u));
                let finished = matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
                if finished {
                    active.remove(&uid);
                }
                if let Some(slot) = workers.get(&uid) {
                    let _ = slot.send(Some(Arc::new(pod)));
                    continue;
                }
                if !finished && pod.metadata.deletion_timestamp.is_none() && active.len() >= max_pods as usize
                {
                    reject(&api, &pod, active.len(), max_pods).await;
                    continue;
                }
                let pod = Arc::new(pod);
                let (tx, rx) = watch::channel(Some(pod.clone()));
                tokio::spawn(worker::Worker::run(shared.clone(), pod, rx));
                if !finished {
                    active.insert(uid.clone());
                }
                workers.insert(uid, tx);
            }
            Some(Ok(Event::Delete(pod))) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(slot) = workers.remove(&uid) {
                    let _ = slot.send(None);
                }
                active.remove(&uid);
            }
            Some(Ok(Event::Init)) => relisted.clear(),
            Some(Ok(Event::InitDone)) => {
                // Pods that vanished while the watch was down.
                for (uid, slot) in workers.iter().filter(|(uid, _)| !relisted.contains(*uid)) {
                    info!(%uid, "pod vanished while the watch was re-listing");
                    let _ = slot.send(None);
                }
                workers.retain(|uid, _| relisted.contains(uid));
            }
            Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying with back-off"),
            None => break,
        }
    }
    info!("pod controller stopped");
}

/// Kubelet-style admission failure: the node is full.
async fn reject(api: &Api<Pod>, pod: &Pod, used: usize, capacity: u32) {
    let (ns, name) =
        (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
    let message = format!(
        "Pod Node didn't have enough resource: pods, requested: 1, used: {used}, capacity: {capacity}"
    );
    warn!(pod = %name, "{message}");
    let patch = json!({"status": {"phase": "Failed", "reason": "OutOfpods", "message": message}});
    let api = Api::<Pod>::namespaced(api.clone().into_client(), &ns);
    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        warn!(pod = %name, error = %e, "could not mark the pod OutOfpods");
    }
}
