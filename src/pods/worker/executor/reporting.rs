//! What the executor tells the API about the pod: its status (written to the pod's
//! directory too) and its events.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::{Done, Executor};
use crate::base::error::chain;
use crate::config::PUBLISH_RETRY;
use crate::events::{Kind, Recorder};
use crate::pods::status::report::{self, Reported};
use crate::pods::worker::effects::{Input, Slot};
use crate::runtime::ContainerRuntime;

/// Events of a pod that starts, held until its first status report is answered: `None`
/// when not holding. See [`Executor::hold_events`].
pub(super) type HeldEvents = Arc<Mutex<Option<Vec<(ObjectReference, Kind, &'static str, String)>>>>;

/// Publishes an event without waiting, or holds it while `held` holds.
pub(super) fn send_event(
    held: &HeldEvents,
    recorder: &Recorder,
    object: ObjectReference,
    kind: Kind,
    reason: &'static str,
    message: String,
) {
    if let Some(held) = held.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        return held.push((object, kind, reason, message));
    }
    if recorder.log_now(&object, kind, reason, &message) {
        return;
    }
    let recorder = recorder.clone();
    tokio::spawn(async move { recorder.publish(&object, kind, reason, &message).await });
}

impl<R: ContainerRuntime> Executor<R> {
    /// Publishes an event about the pod (or one of its containers) without waiting (held
    /// while the pod starts, see [`Executor::hold_events`]).
    pub(super) fn event(&self, slot: Option<Slot>, kind: Kind, reason: &'static str, message: String) {
        let object = self.object_ref(slot);
        send_event(&self.held_events, &self.handles.api.recorder, object, kind, reason, message);
    }

    /// From the first preparation of a pod to its first status report, its events wait:
    /// they are notices (`Pulling`, `Pulled`, `Created`, `Started`), and sent at once they
    /// compete with the start's own requests and its Running report for the API server.
    /// A failure to prepare or start, and the pod going away, send them at once.
    pub(super) fn hold_events(&mut self) {
        if self.handles.api.client.is_some() && !self.trace.is_over() {
            self.held_events.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Vec::new);
        }
    }

    /// Sends the events held, and holds no more.
    pub(super) fn release_events(&mut self) {
        let held = self.held_events.lock().unwrap_or_else(|p| p.into_inner()).take();
        for (object, kind, reason, message) in held.unwrap_or_default() {
            send_event(&self.held_events, &self.handles.api.recorder, object, kind, reason, message);
        }
    }

    /// Writes the status file, then reports the status to the API (or the mirror pod).
    pub(super) fn publish(&mut self, mut status: Value) {
        let previous = serde_json::from_str(&self.last_conditions).unwrap_or(Value::Null);
        report::keep_transition_times(&mut status, &previous);
        self.write_status_file(&status);
        // Only the conditions' transition times are looked at again.
        self.last_conditions = report::transition_times(&status);
        // The first Running status ends the pod's start trace once the API has it.
        let trace = (self.trace.awaits_report() && status["phase"] == "Running").then(|| self.trace.clone());
        let metrics = self.handles.metrics.clone();
        let Some(client) = self.handles.api.client.clone() else {
            if let Some(trace) = trace {
                trace.reported(&metrics);
            }
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
                Done::Reported(match result {
                    Ok(Reported::Done) => {
                        if let Some(trace) = trace {
                            trace.reported(&metrics);
                        }
                        Input::Published { ok: true }
                    }
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
        // Not flushed to disk (two flushes a report, milliseconds on each start): a local
        // view for `krustlet-wasi pods`, kept by the kernel across an agent crash; after a
        // power loss every guest is gone anyway, and the next agent reports each pod anew.
        if let Err(e) = crate::files::write_volatile(&path, doc.to_string().as_bytes(), 0o644) {
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
