//! Pods bound to this node: one watch on `spec.nodeName` and the static pods of
//! `--pod-manifest-path` (`static_pods/`), admitted (`admission/`: max-pods, RuntimeClass,
//! resources, node ports), then one worker per pod that owns the pod's state (`worker/`)
//! and reports it (`status/`), with its probes (`probes/`). Pods' network (ports,
//! listeners, socket rules, port-forward's address) lives in `crate::network`.

pub mod admission;
pub mod cache;
pub mod directory;
pub mod env;
pub mod eviction;
mod handles;
pub mod probes;
pub mod resources;
pub mod source;
pub mod static_pods;
pub mod status;
mod sweep;
mod worker;

pub use handles::{Api, Handles, Host, Logs, Objects, Wakes};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::config::{MANIFEST_RESCAN_PERIOD, MANIFEST_SETTLE};
use crate::runtime::ContainerRuntime;
use crate::wake::{Changed, Wake};
use status::report;

/// Where a pod's worker receives its messages: a channel of `futures`, whose empty channel
/// is about 150 bytes, where tokio's unbounded one allocates its first block of 32 slots
/// with it (1.3 KB, heaptrack), and every pod holds one while it lives.
pub type PodSlot = futures::channel::mpsc::UnboundedSender<worker::Msg>;

/// The pods of this node and their workers.
struct Controller<R> {
    handles: Arc<Handles<R>>,
    workers: HashMap<String, PodSlot>,
    /// Pods that count against `--max-pods` (not finished).
    active: HashSet<String>,
    /// UIDs of pods that came from the API (a re-list only concerns those).
    from_api: HashSet<String>,
    /// `--max-pods`, RuntimeClasses, resources and node ports (`admission/`).
    admission: admission::Admission,
    /// How many workers were left at the last [`Controller::prune`].
    pruned_len: usize,
}

impl<R: ContainerRuntime> Controller<R> {
    /// A pod appeared or changed: hand it to its worker, or admit it and start one.
    async fn apply(&mut self, pod: Pod) {
        // When the watch event arrived; a trace is made only for a pod that gets a worker
        // (most events are updates of pods that have one).
        let seen = std::time::Instant::now();
        let uid = pod.uid().unwrap_or_default();
        // Forgetting the workers that ended walks them all: done when admission needs the
        // exact count of active pods, else once the map doubled since the last time (a burst
        // of 10,000 new pods costs O(N), not O(N²)).
        if self.workers.len() >= 2 * self.pruned_len.max(64)
            || self.admission.needs_exact(&pod, self.active.len())
        {
            self.prune();
        }
        let finished =
            matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        if finished {
            // A finished pod's runs have ended, and with them its listeners.
            self.active.remove(&uid);
            self.handles.network.pod_stopped(&uid);
        }
        // A worker that ended is not this pod's any more: a new one starts.
        if let Some(slot) = self.workers.get(&uid).filter(|s| !s.is_closed()) {
            let _ = slot.unbounded_send(worker::Msg::Update(Arc::new(pod)));
            return;
        }
        tracing::debug!(pod = pod.name_any(), %uid, "new pod");
        if !finished && pod.metadata.deletion_timestamp.is_none() {
            let node = admission::Node {
                client: self.handles.api.client.as_ref(),
                handler: self.handles.runtime.name(),
                allocatable: self.handles.host.resources.allocatable,
                network: &self.handles.network,
            };
            if let Err((reason, message)) = self.admission.admit(&pod, &self.active, &node).await {
                self.reject(&pod, reason, message).await;
                return;
            }
        }
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let trace = worker::StartTrace::new(seen);
        trace.mark(worker::Phase::Admission);
        tokio::spawn(worker::run(self.handles.clone(), Arc::new(pod), rx, trace));
        if !finished {
            self.active.insert(uid.clone());
        }
        self.workers.insert(uid, tx);
    }

    /// Forgets the workers that ended, and their pods as active ones.
    fn prune(&mut self) {
        self.workers.retain(|_, slot| !slot.is_closed());
        let workers = &self.workers;
        self.active.retain(|u| workers.contains_key(u));
        self.pruned_len = self.workers.len();
    }

    /// A mirror pod as the API shows it. One being deleted (`kubectl delete`) is removed at
    /// once, as the kubelet does, and its worker makes a new one (see `mirror_gone`); a
    /// mirror of no static pod this node runs (its manifest changed or went away while the
    /// agent was down) is removed.
    fn mirror_seen(&self, pod: &Pod) {
        let ours =
            report::mirror_hash(pod).and_then(|h| self.workers.get(&h)).is_some_and(|s| !s.is_closed());
        if ours && pod.metadata.deletion_timestamp.is_none() {
            return;
        }
        if let Some(client) = self.handles.api.client.clone() {
            tokio::spawn(report::delete_mirror(client, pod.clone()));
        }
    }

    /// A mirror pod is gone from the API: if its static pod still runs, its worker reports
    /// it anew, which creates a new mirror.
    fn mirror_gone(&self, pod: &Pod) {
        if let Some(slot) = report::mirror_hash(pod).and_then(|h| self.workers.get(&h)) {
            let _ = slot.unbounded_send(worker::Msg::MirrorGone);
        }
    }

    /// A pod bound to this node, as the API has it now.
    async fn api_pod(&mut self, mut pod: Pod) {
        report::mark_from_api(&mut pod);
        self.from_api.insert(pod.uid().unwrap_or_default());
        self.apply(pod).await;
    }

    /// Rescans `--pod-manifest-path` (if given) and starts, replaces or stops static pods.
    async fn manifests_changed(&mut self, statics: Option<&mut static_pods::Manifests>, changed: Changed) {
        let Some(statics) = statics else { return };
        let changes = match changed {
            Changed::Names(names) => statics.rescan_names(&names),
            Changed::Anything => statics.rescan(),
        };
        for change in changes {
            match change {
                static_pods::Change::Upsert(pod) => self.apply(*pod).await,
                static_pods::Change::Remove(uid) => self.gone(&uid),
            }
        }
    }

    /// Removes the files of pods gone while the agent was down (see `sweep.rs`).
    fn sweep(&self) {
        let known: HashSet<String> =
            self.workers.iter().filter(|(_, s)| !s.is_closed()).map(|(u, _)| u.clone()).collect();
        let removed = sweep::sweep(&self.handles.host.data_dir, &known);
        info!(removed, "swept the files of pods gone while the agent was down");
    }

    /// A pod is gone (deleted from the API, or its manifest removed).
    fn gone(&mut self, uid: &str) {
        if let Some(slot) = self.workers.remove(uid) {
            let _ = slot.unbounded_send(worker::Msg::Gone);
        }
        self.active.remove(uid);
        self.from_api.remove(uid);
    }
}

/// Runs the pods of `node_name` until shutdown: those bound to it in the API (one watch on
/// `spec.nodeName`, when connected) and the static pods of `manifests` (when given).
pub async fn run<R: ContainerRuntime>(
    handles: Arc<Handles<R>>,
    max_pods: u32,
    manifests: Option<PathBuf>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let node_name = handles.api.node_name.clone();
    let mut events = match &handles.api.client {
        Some(client) => {
            let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
            watcher(kube::Api::<Pod>::all(client.clone()), config).default_backoff().boxed()
        }
        None => futures::stream::pending().boxed(),
    };
    let mut statics = manifests.as_deref().map(|dir| static_pods::Manifests::new(dir, &node_name));
    let watch_manifests = || manifests.as_deref().map(|path| Wake::watch(&[&static_pods::watched_dir(path)]));
    let mut wake = watch_manifests();
    let mut ctl = Controller {
        handles,
        workers: HashMap::new(),
        active: HashSet::new(),
        from_api: HashSet::new(),
        admission: admission::Admission::new(max_pods),
        pruned_len: 0,
    };
    let h = &ctl.handles;
    let mut evictions = eviction::start(
        h.host.clone(),
        h.directory.clone(),
        h.wakes.image_gc.clone(),
        shutdown.resubscribe(),
    );
    // The static pods start before the watch reports mirror pods, so that a mirror of no
    // static pod is known to be one.
    ctl.manifests_changed(statics.as_mut(), Changed::Anything).await;
    // Standalone, the static pods are all there is; connected, the first list completes it.
    let mut swept = false;
    if ctl.handles.api.client.is_none() {
        ctl.sweep();
        swept = true;
    }
    let mut relisted: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Some(eviction) = evictions.recv() => {
                if let Some(slot) = ctl.workers.get(&eviction.uid) {
                    let _ = slot.unbounded_send(worker::Msg::Evict(eviction.message));
                }
            }
            Some(changed) = async { Some(wake.as_mut()?.changes(MANIFEST_RESCAN_PERIOD).await) }, if wake.is_some() => {
                tokio::time::sleep(MANIFEST_SETTLE).await;
                if changed == Changed::Anything {
                    // Watch afresh before looking at everything: a replaced directory is
                    // watched again, and what changes during the look is not missed.
                    wake = watch_manifests();
                }
                ctl.manifests_changed(statics.as_mut(), changed).await;
            }
            event = events.next() => match event {
                // Mirror pods are our own reflections of static pods: not pods to run.
                Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) if report::is_mirror(&pod) => {
                    ctl.mirror_seen(&pod);
                }
                Some(Ok(Event::Delete(pod))) if report::is_mirror(&pod) => ctl.mirror_gone(&pod),
                Some(Ok(Event::InitApply(pod))) => {
                    // Only a re-list's pods: this set lives until the list is done.
                    relisted.insert(pod.uid().unwrap_or_default());
                    ctl.api_pod(pod).await;
                }
                Some(Ok(Event::Apply(pod))) => ctl.api_pod(pod).await,
                Some(Ok(Event::Delete(pod))) => ctl.gone(&pod.uid().unwrap_or_default()),
                Some(Ok(Event::Init)) => relisted.clear(),
                Some(Ok(Event::InitDone)) => {
                    // API pods that vanished while the watch was down.
                    let vanished: Vec<String> = ctl.from_api.iter().filter(|u| !relisted.contains(*u)).cloned().collect();
                    for uid in vanished {
                        info!(%uid, "pod vanished while the watch was re-listing");
                        ctl.gone(&uid);
                    }
                    relisted = HashSet::new();
                    if !std::mem::replace(&mut swept, true) {
                        ctl.sweep();
                    }
                }
                Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying with back-off"),
                None => break,
            },
        }
    }
    info!("pod controller stopped");
}

/// Kubelet-style admission failure: the pod is Failed with the reason and message, and a
/// Warning Event says the same. A static pod (no API to report to) is logged.
impl<R: ContainerRuntime> Controller<R> {
    async fn reject(&self, pod: &Pod, reason: &'static str, message: String) {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        warn!(pod = %name, reason, "{message}");
        let Some(client) = self.handles.api.client.clone() else { return };
        let object = pod.object_ref(&());
        self.handles.api.recorder.publish(&object, crate::events::Kind::Warning, reason, &message).await;
        let patch = json!({"status": {"phase": "Failed", "reason": reason, "message": message}});
        let api = kube::Api::<Pod>::namespaced(client, &ns);
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            warn!(pod = %name, error = %e, "could not mark the pod Failed");
        }
    }
}
