//! Publishes core/v1 Events, as the kubelet does: `kubectl describe` shows them, and a
//! node is allowed to create them (1.20's node role grants only core/v1 events).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::warn;

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
}

impl Recorder {
    pub fn new(client: Client, node_name: &str) -> Self {
        Recorder { client: Some(client), node_name: node_name.to_string() }
    }

    /// A recorder for a node without an API server: events go to the log only.
    pub fn local(node_name: &str) -> Self {
        Recorder { client: None, node_name: node_name.to_string() }
    }

    /// Publishes one event about `object`. Failing to publish is logged, never fatal:
    /// an event is a notice, and the work it reports has already happened.
    pub async fn publish(&self, object: &ObjectReference, kind: Kind, reason: &str, message: &str) {
        let Some(client) = self.client.clone() else {
            tracing::info!(object = object.name.as_deref().unwrap_or(""), ?kind, reason, message, "event");
            return;
        };
        // Node events live in "default", as the kubelet puts them.
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    object.name.as_deref().unwrap_or("unknown"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .to_string(),
            ),
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
        let api: Api<Event> = Api::namespaced(client, &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            warn!(reason, error = %e, "could not publish event");
        }
    }
}
