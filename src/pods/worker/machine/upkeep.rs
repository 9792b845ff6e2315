//! What a pod needs while it lives, beside its containers' runs: its volumes rewritten,
//! its emptyDirs measured (and the pod evicted past a `sizeLimit`), and its status
//! reported when it changed. Part of [`super::Machine`]'s transitions.

use tokio::time::Instant;

use super::{Machine, PodState, RunState};
use crate::events::Kind;
use crate::pods::status::status_json;
use crate::pods::worker::effects::Effect;
use crate::volumes::OverLimit;

impl Machine {
    /// An emptyDir holds more than its `sizeLimit`: the pod is evicted.
    pub(super) fn evict_over(&mut self, over: OverLimit, fx: &mut Vec<Effect>) {
        let limit = crate::base::quantity::format_bytes(over.limit);
        let message = format!("Usage of EmptyDir volume {:?} exceeds the limit {limit:?}. ", over.volume);
        tracing::warn!(volume = %over.volume, used = over.used, limit = over.limit, "emptyDir over its sizeLimit");
        self.evict(message, fx);
    }

    /// The pod is evicted as the kubelet's hard eviction does (an emptyDir past its
    /// `sizeLimit`, or the node short of memory or disk): a Warning Event `Evicted`, its
    /// containers killed (no grace period: a server's requests in flight are cut), then
    /// phase Failed with reason `Evicted` and `message`; nothing runs again.
    pub(super) fn evict(&mut self, message: String, fx: &mut Vec<Effect>) {
        if !self.runs_containers() {
            return;
        }
        tracing::warn!(%message, "evicting the pod");
        fx.push(Effect::Event {
            slot: None,
            kind: Kind::Warning,
            reason: "Evicted",
            message: message.clone(),
        });
        let from = fx.len();
        self.stop_all(true, fx);
        for effect in &mut fx[from..] {
            if let Effect::Stop { slot } = *effect {
                *effect = Effect::Kill { slot };
            }
        }
        self.view.failure = Some(("Evicted".into(), message));
        self.state = PodState::Done { adopted: false };
    }

    /// Until when the first report waits (see `Publication::first_report_at`): `None` once
    /// the pod is neither being prepared nor having a run started.
    pub(super) fn first_report_held(&self) -> Option<Instant> {
        let preparing = matches!(self.state, PodState::Preparing { .. } | PodState::Retrying { .. });
        let starting = self.init.iter().chain(&self.main).any(|t| matches!(t.run, RunState::Starting { .. }));
        self.publication.first_report_at.filter(|_| preparing || starting)
    }

    /// Asks for the status to be reported when it changed since the last report (one
    /// report in flight at a time; a failed one is retried after [`PUBLISH_RETRY`]).
    pub(super) fn publish(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let quiet = matches!(
            self.state,
            PodState::Done { adopted: true }
                | PodState::Terminating
                | PodState::Deleting
                | PodState::Finished
        );
        let first_pending = self.first_report_held();
        // An evicted pod's containers are being stopped: its Failed phase is reported with
        // their terminated states, once they have exited, never beside a running one.
        let stopping = matches!(self.state, PodState::Done { .. }) && self.running() > 0;
        let p = &self.publication;
        if quiet
            || stopping
            || p.in_flight.is_some()
            || p.retry_at.is_some()
            || first_pending.is_some_and(|t| now < t)
        {
            return;
        }
        let comparable = digest(&status_json(&self.view, ""));
        if p.reported == Some(comparable) {
            return;
        }
        fx.push(Effect::Publish { status: status_json(&self.view, &crate::base::time::now_rfc3339()) });
        self.publication.in_flight = Some(comparable);
        self.publication.first_report_at = None;
    }
}

/// The SHA-256 of `status`'s JSON text, written into the hash as it is serialized.
fn digest(status: &serde_json::Value) -> super::StatusDigest {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    // Writing into a hasher cannot fail; a `Value` always serializes.
    let _ = serde_json::to_writer(&mut hasher, status);
    hasher.finalize().into()
}
