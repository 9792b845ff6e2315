//! Keeps the [`View`] current: kube-runtime watchers on NetworkPolicies, Namespaces and Pods
//! of the whole cluster, each object reduced at once to what evaluation needs (the API
//! objects are not kept), and a new view published a short while after changes
//! ([`POLICY_SETTLE`]), once all three have been listed. A watch that fails (no RBAC, an
//! API server without the resource) is retried with back-off; meanwhile the last view
//! stands (none: pods open), and a Warning Event on the Node says policies are not
//! enforced and why.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::selector::Labels;
use super::{PodInfo, Policies, Policy, View, compile};
use crate::config::POLICY_SETTLE;
use crate::events::{Kind, Recorder};

/// What the watch reports to: where views go, and where the Node's Events go.
pub struct Watch {
    pub client: Client,
    pub policies: Arc<Policies>,
    pub recorder: Recorder,
    /// The Node, for Events about enforcement.
    pub node: ObjectReference,
}

/// One object kind's part of the view: what is live, a re-list being gathered, whether it
/// was ever listed.
struct Part<T> {
    live: HashMap<String, T>,
    relist: Option<HashMap<String, T>>,
    listed: bool,
}

impl<T: PartialEq> Part<T> {
    fn new() -> Self {
        Part { live: HashMap::new(), relist: None, listed: false }
    }

    /// Applies one watch event; true when the live set changed. `reduce` gives the key and
    /// what is kept, or the key alone when nothing of the object is kept now.
    fn apply<K>(&mut self, event: Event<K>, reduce: impl Fn(&K) -> (Option<String>, Option<T>)) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                if let (Some(key), Some(value)) = reduce(&obj) {
                    self.relist.get_or_insert_default().insert(key, value);
                }
                false
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(obj) => match reduce(&obj) {
                (Some(key), Some(value)) if self.live.get(&key) != Some(&value) => {
                    self.live.insert(key, value);
                    true
                }
                (Some(key), None) => self.live.remove(&key).is_some(),
                _ => false,
            },
            Event::Delete(obj) => match reduce(&obj).0 {
                Some(key) => self.live.remove(&key).is_some(),
                None => false,
            },
        }
    }
}

/// Which watch an event or error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Policies,
    Namespaces,
    Pods,
}

impl Source {
    fn resource(self) -> &'static str {
        match self {
            Source::Policies => "networkpolicies (networking.k8s.io)",
            Source::Namespaces => "namespaces",
            Source::Pods => "pods",
        }
    }
}

/// One watch event, its object boxed (a Pod is large) and dropped once reduced.
enum Change {
    Policy(Box<Event<NetworkPolicy>>),
    Namespace(Box<Event<Namespace>>),
    Pod(Box<Event<Pod>>),
}

fn watch_all<K>(
    client: &Client,
    wrap: fn(Event<K>) -> Change,
    source: Source,
) -> impl Stream<Item = (Source, Result<Change, watcher::Error>)> + use<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let api = Api::<K>::all(client.clone());
    watcher(api, watcher::Config::default()).default_backoff().map(move |r| (source, r.map(wrap)))
}

/// Watches until shutdown, publishing views into `w.policies`.
pub async fn run(w: Watch, mut shutdown: broadcast::Receiver<()>) {
    let mut changes = futures::stream::select_all([
        watch_all(&w.client, |e| Change::Policy(Box::new(e)), Source::Policies).boxed(),
        watch_all(&w.client, |e| Change::Namespace(Box::new(e)), Source::Namespaces).boxed(),
        watch_all(&w.client, |e| Change::Pod(Box::new(e)), Source::Pods).boxed(),
    ]);
    let mut policies: Part<Arc<Policy>> = Part::new();
    let mut spaces: Part<Arc<Labels>> = Part::new();
    let mut pods: Part<Arc<PodInfo>> = Part::new();
    let mut due: Option<Instant> = None;
    let mut failing: HashMap<Source, String> = HashMap::new();
    let mut warned = false;
    let mut enforced = false;
    loop {
        let change = tokio::select! {
            _ = shutdown.recv() => break,
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                due = None;
                if policies.listed && spaces.listed && pods.listed {
                    let view = View::new(policies.live.values().cloned(), spaces.live.clone(), pods.live.clone());
                    debug!(policies = view.policy_count(), namespaces = spaces.live.len(), pods = pods.live.len(), "NetworkPolicy view rebuilt");
                    w.policies.publish(view);
                    if !enforced {
                        enforced = true;
                        info!(policies = policies.live.len(), "NetworkPolicy is enforced on this node's pods");
                        if std::mem::take(&mut warned) {
                            let message = "NetworkPolicy is enforced on this node's pods again";
                            w.recorder.publish(&w.node, Kind::Normal, "NetworkPolicyEnforced", message).await;
                        }
                    }
                }
                continue;
            }
            next = changes.next() => match next {
                Some(c) => c,
                None => break,
            },
        };
        let changed = match change {
            (source, Err(e)) => {
                let why = e.to_string();
                let first = failing.insert(source, why.clone()).is_none();
                if first {
                    warn!(resource = source.resource(), error = %why, "cannot watch {}; NetworkPolicy is not enforced until it can (retrying)", source.resource());
                } else {
                    debug!(resource = source.resource(), error = %why, "watch still failing");
                }
                if !enforced && !warned {
                    warned = true;
                    let message = format!(
                        "NetworkPolicy is not enforced on this node: cannot list {} cluster-wide: {why}. Its pods are open \
                         until it can (retrying). Grant get, list and watch of networkpolicies, namespaces and pods to the \
                         group system:nodes (bootstrap/bootstrap.sh applies the ClusterRole krustlet-wasi:network-policy)",
                        source.resource()
                    );
                    w.recorder.publish(&w.node, Kind::Warning, "NetworkPolicyNotEnforced", &message).await;
                }
                false
            }
            (source, Ok(c)) => {
                if failing.remove(&source).is_some() {
                    info!(resource = source.resource(), "watching {} again", source.resource());
                }
                match c {
                    Change::Policy(e) => policies.apply(*e, |np: &NetworkPolicy| {
                        let key = np
                            .metadata
                            .namespace
                            .as_ref()
                            .zip(np.metadata.name.as_ref())
                            .map(|(ns, n)| format!("{ns}/{n}"));
                        (key, compile::policy(np).map(Arc::new))
                    }),
                    Change::Namespace(e) => {
                        spaces.apply(*e, |ns: &Namespace| match compile::namespace_labels(ns) {
                            Some((name, labels)) => (Some(name), Some(Arc::new(labels))),
                            None => (None, None),
                        })
                    }
                    Change::Pod(e) => pods.apply(*e, |pod: &Pod| {
                        let uid = pod.uid();
                        (uid, compile::pod_info(pod).map(|(_, info)| Arc::new(info)))
                    }),
                }
            }
        };
        if changed && due.is_none() {
            due = Some(Instant::now() + POLICY_SETTLE);
        }
    }
    debug!("NetworkPolicy watch stopped");
}

#[cfg(test)]
mod tests;
