//! What the executor tells the API about the pod: its status (written to the pod's
//! directory too) and its events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::{Done, Executor};
use crate::base::error::chain;
use crate::config::PUBLISH_RETRY;
use crate::events::Kind;
use crate::pods::status::report::{self, Reported};
use crate::pods::worker::effects::{Input, Slot};
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime> Executor<R> {
    /// Publishes an event about the pod (or one of its containers) without waiting.
    pub(super) fn event(&self, slot: Option<Slot>, kind: Kind, reason: &'static str, message: String) {
        let (recorder, object) = (self.handles.api.recorder.clone(), self.object_ref(slot));
        tokio::spawn(async move { recorder.publish(&object, kind, reason, &message).await });
    }

    /// Writes the status file, then reports the status to the API (or the mirror pod).
    pub(super) fn publish(&mut self, mut status: Value) {
        report::keep_transition_times(&mut status, &self.last_status);
        self.write_status_file(&status);
        // Only the conditions are looked at again (their transition times); the rest of
        // the tree would be kilobytes held by every pod.
        self.last_status = json!({"conditions": status["conditions"].clone()});
        let Some(client) = self.handles.api.client.clone() else {
            return self.tasks.push(Box::pin(std::future::ready(Done::Input(Input::Published { ok: true }))));
        };
        let pod = self.pod.clone();
        let api = &self.handles.api;
        let node = (api.node_name.clone(), api.node_uid.clone().unwrap_or_default());
        self.tasks.push(Box::pin(
            async move {
                let began = Instant::now();
                let result = match report::is_static(&pod) {
                    true => report::report_mirror(client, &pod, (&node.0, &node.1), &status)
                        .await
                        .map(|()| Reported::Done),
                    false => report::patch_status(client, &pod, &status).await,
                };
                debug!(ms = began.elapsed().as_secs_f64() * 1e3, "status reported");
                Done::Input(match result {
                    Ok(Reported::Done) => Input::Published { ok: true },
                    Ok(Reported::Gone) => {
                        info!("the pod is no longer in the API");
                        Input::Gone
                    }
                    Err(e) => {
                        warn!(error = %chain(&e), "reporting the pod status failed; retrying in {PUBLISH_RETRY:?}");
                        Input::Published { ok: false }
                    }
                })
            }
            .instrument(tracing::debug_span!("publish")),
        ));
    }

    /// `<pod-dir>/status.json`: namespace, name, uid, static, and the status.
    fn write_status_file(&self, status: &Value) {
        let m = &self.pod.metadata;
        let doc = json!({
            "namespace": m.namespace.as_deref().unwrap_or("default"), "name": m.name, "uid": m.uid,
            "static": report::is_static(&self.pod), "status": status,
        });
        let path = self.pod_dir().join("status.json");
        if let Err(e) = crate::files::write_atomic(&path, doc.to_string().as_bytes(), 0o644) {
            warn!(error = %e, "writing the local pod status failed");
        }
    }

    pub(super) fn object_ref(&self, slot: Option<Slot>) -> ObjectReference {
        let field_path = slot.and_then(|s| {
            let name = &self.container(s)?.name;
            Some(match s {
                Slot::Init(_) => format!("spec.initContainers{{{name}}}"),
                Slot::Main(_) => format!("spec.containers{{{name}}}"),
            })
        });
        ObjectReference {
            namespace: Some(self.pod.namespace().unwrap_or_else(|| "default".into())),
            field_path,
            ..self.pod.object_ref(&())
        }
    }
}
