//! What a pod needs while it lives, beside its containers' runs: its volumes rewritten,
//! its emptyDirs measured (and the pod evicted past a `sizeLimit`), and its status
//! reported when it changed. Part of [`super::Machine`]'s transitions.

use std::time::Duration;

use tokio::time::Instant;

use super::{Machine, PodState};
use crate::config::DISK_CHECK_PERIOD;
use crate::events::Kind;
use crate::pods::status::status_json;
use crate::pods::worker::effects::Effect;
use crate::volumes::OverLimit;

/// The timers of a pod whose containers run: its volumes' rewrites and its emptyDirs'
/// measurements. Held by [`PodState::Init`] and [`PodState::Running`], and by no other state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Upkeep {
    /// Whether the pod has volumes to rewrite (else no refresh is ever due: an idle pod
    /// without them wakes for nothing).
    refreshes: bool,
    /// When the pod's volumes are next rewritten.
    refresh_at: Option<Instant>,
    /// When an emptyDir's usage is next measured against its `sizeLimit`.
    disk_check_at: Option<Instant>,
}

impl Upkeep {
    /// The upkeep of a pod just prepared: `refreshes` if it has volumes to rewrite, its
    /// emptyDirs first measured at `disk_check_at`. No refresh is due before
    /// [`Upkeep::schedule_refresh`].
    pub fn new(refreshes: bool, disk_check_at: Option<Instant>) -> Upkeep {
        Upkeep { refreshes, refresh_at: None, disk_check_at }
    }

    /// When to rewrite the volumes next: after `period` (`--sync-frequency`), spread by
    /// the pod's `uid` (up to a tenth more) so a thousand pods do not refresh in the same
    /// second; sooner if a service account token falls due.
    pub fn schedule_refresh(
        &mut self,
        now: Instant,
        token_due: Option<Duration>,
        period: Duration,
        uid: &str,
    ) {
        if !self.refreshes && token_due.is_none() {
            self.refresh_at = None;
            return;
        }
        let spread = uid.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 1000;
        let mut at = now + period + period / 10 * spread / 1000;
        if let Some(due) = token_due {
            at = at.min(now + due);
        }
        self.refresh_at = Some(at);
    }

    /// The emptyDirs were measured, none over its limit: measure again later.
    pub fn disk_checked(&mut self, now: Instant) {
        self.disk_check_at = Some(now + DISK_CHECK_PERIOD);
    }

    /// What is due at `now`: a measurement of the emptyDirs, a rewrite of the volumes.
    pub fn timer(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.disk_check_at.is_some_and(|t| t <= now) {
            self.disk_check_at = None;
            fx.push(Effect::CheckDisk);
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            fx.push(Effect::RefreshVolumes);
        }
    }

    /// The earliest of its timers.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.refresh_at, self.disk_check_at].into_iter().flatten().min()
    }
}

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
        let first_pending = self.state.first_report_at();
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
        let comparable = status_json(&self.view, "");
        if p.reported.as_ref() == Some(&comparable) {
            return;
        }
        fx.push(Effect::Publish { status: status_json(&self.view, &crate::base::time::now_rfc3339()) });
        self.publication.in_flight = Some(comparable);
        if let PodState::Preparing { first_report_at, .. } | PodState::Retrying { first_report_at, .. } =
            &mut self.state
        {
            *first_report_at = None;
        }
    }
}
