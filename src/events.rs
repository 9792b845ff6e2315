//! Publishes core/v1 Events, as the kubelet does: `kubectl describe` shows them, and a
//! node is allowed to create them (1.20's node role grants only core/v1 events). An event
//! that repeats one already published (same object, type, reason and message) bumps that
//! event's `count` and `lastTimestamp` instead of adding an object, as the kubelet's
//! recorder does, so a crash loop is one `BackOff` event with a growing count.
//! Events go out a few at a time behind the node's other requests
//! ([`EVENTS_MAX_IN_FLIGHT`]), and past [`EVENTS_MAX_WAITING`] waiting they are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::config::{EVENTS_MAX_IN_FLIGHT, EVENTS_MAX_WAITING};

/// How many distinct events are remembered for counting repeats (the kubelet's recorder
/// keeps 4096 too); when full, the memory starts over.
const REMEMBERED_EVENTS: usize = 4096;

/// What makes two events the same one: object (namespace, name, uid, field path), type,
/// reason, message.
type EventKey = (String, String, String, String, &'static str, String, String);

/// A standalone node's event: a line in the log.
fn log(object: &ObjectReference, kind: Kind, reason: &str, message: &str) {
    let pod = if object.kind.as_deref() == Some("Pod") { object.name.as_deref() } else { None };
    let namespace = object.namespace.as_deref().unwrap_or("");
    let object = object.name.as_deref().unwrap_or("");
    tracing::info!(object, namespace, pod = pod.unwrap_or(""), ?kind, reason, message, "event");
}

/// `Normal` or `Warning`, as `kubectl describe` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// Creates Events on behalf of this node.
#[derive(Clone)]
pub struct Recorder {
    /// None in standalone mode: events are only logged.
    client: Option<Client>,
    node_name: String,
    /// Published events by what makes them the same: (event name, count).
    published: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
    /// The lanes events are sent through, and how many events wait for one.
    lanes: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Events dropped since the last one that got through: logged once per burst.
    dropped: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn new(client: Client, node_name: &str) -> Self {
        Recorder::with_lanes(Some(client), node_name, EVENTS_MAX_IN_FLIGHT)
    }

    /// A recorder for a node without an API server: events go to the log only.
    pub fn local(node_name: &str) -> Self {
        Recorder::with_lanes(None, node_name, EVENTS_MAX_IN_FLIGHT)
    }

    fn with_lanes(client: Option<Client>, node_name: &str, lanes: usize) -> Self {
        Recorder {
            client,
            node_name: node_name.to_string(),
            published: Arc::default(),
            lanes: Arc::new(Semaphore::new(lanes)),
            waiting: Arc::default(),
            dropped: Arc::default(),
        }
    }

    /// On a standalone node, logs the event at once and returns true (what
    /// [`Recorder::publish`] would do there, without a task to run it: 10,000 static pods
    /// starting at once made 50,000 such tasks, 50 MB at the peak that malloc kept after).
    /// False, doing nothing, on a node with an API server.
    pub fn log_now(&self, object: &ObjectReference, kind: Kind, reason: &str, message: &str) -> bool {
        let local = self.client.is_none();
        if local {
            log(object, kind, reason, message);
        }
        local
    }

    /// Publishes one event about `object`. Failing to publish is logged, never fatal:
    /// an event is a notice, and the work it reports has already happened.
    pub async fn publish(&self, object: &ObjectReference, kind: Kind, reason: &str, message: &str) {
        let Some(client) = self.client.clone() else {
            return log(object, kind, reason, message);
        };
        // Node events live in "default", as the kubelet puts them.
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let type_ = match kind {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        };
        let key: EventKey = (
            namespace.clone(),
            object.name.clone().unwrap_or_default(),
            object.uid.clone().unwrap_or_default(),
            object.field_path.clone().unwrap_or_default(),
            type_,
            reason.to_string(),
            message.to_string(),
        );
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= EVENTS_MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                let object = object.name.as_deref().unwrap_or("");
                warn!(reason, object, "too many events waiting; dropping new ones until they drain");
            }
            return;
        }
        let lane = self.lanes.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(_lane) = lane else { return };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn!(dropped, "events were dropped while too many waited");
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let api: Api<Event> = Api::namespaced(client, &namespace);
        let repeat = {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.get_mut(&key).map(|(name, count)| {
                *count += 1;
                (name.clone(), *count)
            })
        };
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({"count": count, "lastTimestamp": Time(now)});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return,
                // Expired (events live an hour) or never created: publish it anew.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    warn!(reason, error = %e, "could not update a repeated event");
                    return;
                }
            }
        }
        let name = format!("{}.{:x}", object.name.as_deref().unwrap_or("unknown"), now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some("krustlet-wasi".into()),
                host: Some(self.node_name.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            reporting_component: Some("krustlet-wasi".into()),
            reporting_instance: Some(self.node_name.clone()),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
                if published.len() >= REMEMBERED_EVENTS {
                    published.clear();
                }
                published.insert(key, (name, 1));
            }
            Err(e) => warn!(reason, error = %e, "could not publish event"),
        }
    }

    /// Forgets the events of the object with `uid` (a pod that is gone: none of them will
    /// repeat), so what is remembered is about objects that still exist.
    pub fn forget(&self, uid: &str) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published.retain(|key, _| key.2 != uid);
        if published.capacity() > 64 && published.len() < published.capacity() / 4 {
            published.shrink_to_fit();
        }
    }

    /// How many distinct events are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.published.lock().map(|p| p.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose API server creates every Event it is sent.
    fn accepting() -> Client {
        let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            let body = br#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},"involvedObject":{}}"#;
            let response =
                http::Response::builder().status(201).body(kube::client::Body::from(body.to_vec()));
            Ok::<_, std::convert::Infallible>(response.unwrap())
        });
        Client::new(svc, "default")
    }

    fn pod(uid: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some(format!("p-{uid}")),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    /// A client whose API server never answers.
    fn silent() -> Client {
        let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            std::future::pending::<Result<http::Response<kube::client::Body>, std::convert::Infallible>>()
                .await
        });
        Client::new(svc, "default")
    }

    #[tokio::test]
    async fn events_take_a_few_lanes_and_past_the_waiting_cap_are_dropped() {
        let recorder = Recorder::with_lanes(Some(silent()), "node-1", 2);
        let mut sends = Vec::new();
        for i in 0..2 + EVENTS_MAX_WAITING {
            let r = recorder.clone();
            sends.push(tokio::spawn(async move {
                r.publish(&pod(&i.to_string()), Kind::Normal, "Started", "s").await
            }));
        }
        while recorder.waiting.load(Ordering::Relaxed) < EVENTS_MAX_WAITING {
            tokio::task::yield_now().await;
        }
        assert_eq!(recorder.lanes.available_permits(), 0, "two in flight, the rest wait");
        let extra = pod("x");
        let dropped = recorder.publish(&extra, Kind::Normal, "Started", "s");
        let dropped = tokio::time::timeout(std::time::Duration::from_secs(5), dropped);
        assert!(dropped.await.is_ok(), "one more is dropped at once, not queued");
        assert_eq!(recorder.waiting.load(Ordering::Relaxed), EVENTS_MAX_WAITING);
        recorder.publish(&extra, Kind::Normal, "Started", "s").await;
        assert_eq!(recorder.dropped.load(Ordering::Relaxed), 2, "counted, to be logged once");
        sends.iter().for_each(|s| s.abort());
    }

    #[tokio::test]
    async fn a_gone_pods_events_are_forgotten_and_the_others_kept() {
        let recorder = Recorder::new(accepting(), "node-1");
        recorder.publish(&pod("a"), Kind::Normal, "Pulled", "pulled").await;
        recorder.publish(&pod("a"), Kind::Normal, "Started", "started").await;
        recorder.publish(&pod("b"), Kind::Normal, "Started", "started").await;
        assert_eq!(recorder.remembered(), 3);
        recorder.forget("a");
        assert_eq!(recorder.remembered(), 1, "only pod b's event is left");
    }
}
