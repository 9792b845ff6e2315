//! The single transition function, [`Machine::step`]: one input in, the effects to perform
//! out; the timers it answers, and what follows every transition.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use super::{Machine, PodState, Upkeep};
use crate::config::{MIRROR_RECREATE_DELAY, PUBLISH_RETRY};
use crate::pods::status::State;
use crate::pods::worker::effects::{Effect, Input, Slot};

impl Machine {
    /// The single transition function: one input in, the effects to perform out.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Pod(pod) => self.pod_changed(pod, &mut fx),
            Input::Gone => self.gone(&mut fx),
            Input::MirrorGone => self.publication.mirror_again_at = Some(now + MIRROR_RECREATE_DELAY),
            Input::Shutdown => {
                self.stop_all(false, &mut fx);
                self.state = PodState::Finished;
            }
            Input::Timer => self.timer(now, &mut fx),
            Input::Prepared(result) => {
                if let PodState::Preparing { retry } = self.state.clone() {
                    self.prepared(result, retry, now, &mut fx);
                }
            }
            Input::Started { slot, run } => self.started(slot, run, now, &mut fx),
            Input::StartFailed { slot, run, reason, message } => {
                self.start_failed(slot, run, reason, message, now, &mut fx);
            }
            Input::Exited { slot, run, exit } => self.exited(slot, run, exit, now, &mut fx),
            Input::Published { ok: true } => {
                if let Some(reported) = self.publication.in_flight.take() {
                    self.publication.reported = Some(reported);
                }
            }
            Input::Published { ok: false } => {
                self.publication.in_flight = None;
                self.publication.retry_at = Some(now + PUBLISH_RETRY);
            }
            Input::Refreshed { token_due } => {
                let (period, uid) = (self.settings.sync_frequency, self.uid());
                if let Some(upkeep) = self.state.upkeep_mut() {
                    upkeep.schedule_refresh(now, token_due, period, &uid);
                }
            }
            Input::Deleted => {
                fx.push(Effect::Forget);
                self.state = PodState::Finished;
            }
            Input::DiskChecked { over: None } => {
                if let Some(upkeep) = self.state.upkeep_mut() {
                    upkeep.disk_checked(now);
                }
            }
            Input::DiskChecked { over: Some(over) } => self.evict_over(over, &mut fx),
            Input::Evict(message) => self.evict(message, &mut fx),
            Input::Probe { slot, run, event } => self.probe(slot, run, event, &mut fx),
        }
        self.step_tail(now, &mut fx);
        fx
    }

    /// What follows every transition: a terminating pod whose runs all ended is deleted,
    /// and a changed status is reported.
    pub(super) fn step_tail(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.state == PodState::Terminating && self.running() == 0 {
            fx.push(Effect::Delete);
            self.state = PodState::Deleting;
        }
        self.publish(now, fx);
    }

    fn pod_changed(&mut self, pod: Arc<Pod>, fx: &mut Vec<Effect>) {
        self.pod = pod;
        if self.pod.metadata.deletion_timestamp.is_some() {
            self.terminate(fx);
        }
    }

    /// The pod is being deleted: stop everything (Killing), then delete it (see `step`).
    pub(super) fn terminate(&mut self, fx: &mut Vec<Effect>) {
        match self.state {
            PodState::Terminating | PodState::Deleting | PodState::Finished => return,
            // A pull in flight is cancelled, not waited for.
            PodState::Preparing { .. } => fx.push(Effect::CancelPrepare),
            _ => {}
        }
        tracing::info!("pod is being deleted; stopping its containers");
        self.stop_all(true, fx);
        self.state = PodState::Terminating;
    }

    /// Gone from the API (or its manifest removed): a static pod's mirror goes too.
    fn gone(&mut self, fx: &mut Vec<Effect>) {
        if matches!(self.state, PodState::Deleting | PodState::Finished) {
            return;
        }
        if matches!(self.state, PodState::Preparing { .. }) {
            fx.push(Effect::CancelPrepare);
        }
        self.stop_all(false, fx);
        if crate::pods::status::report::is_static(&self.pod) {
            fx.push(Effect::Delete);
            self.state = PodState::Deleting;
        } else {
            fx.push(Effect::Forget);
            self.state = PodState::Finished;
        }
    }

    fn timer(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.publication.mirror_again_at.is_some_and(|t| t <= now) {
            self.publication.mirror_again_at = None;
            self.publication.reported = None;
        }
        if self.publication.retry_at.is_some_and(|t| t <= now) {
            self.publication.retry_at = None;
        }
        if self.publication.first_report_at.is_some_and(|t| t <= now) {
            self.publication.first_report_at = None;
        }
        if let Some(upkeep) = self.state.upkeep_mut() {
            upkeep.timer(now, fx);
        }
        match self.state.clone() {
            PodState::Retrying { flip_at: Some(flip), until, retry } if now >= flip && now < until => {
                for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                    if let State::Waiting { reason, message } = &c.state
                        && reason == "ErrImagePull"
                    {
                        c.state = State::waiting("ImagePullBackOff", message.clone());
                    }
                }
                self.state = PodState::Retrying { until, flip_at: None, retry };
            }
            PodState::Retrying { until, retry, .. } if now >= until => {
                fx.push(Effect::Prepare);
                self.state = PodState::Preparing { retry: Some(retry) };
            }
            PodState::Init { index, .. } if self.init[index].start_at.is_some_and(|t| t <= now) => {
                self.request_start(Slot::Init(index), fx);
            }
            PodState::Running { .. } => {
                for i in 0..self.main.len() {
                    if self.main[i].start_at.is_some_and(|t| t <= now) {
                        self.request_start(Slot::Main(i), fx);
                    }
                }
            }
            _ => {}
        }
    }

    /// The earliest instant a [`Input::Timer`] is wanted, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let state = match &self.state {
            PodState::Retrying { until, flip_at, .. } => Some(flip_at.map_or(*until, |f| f.min(*until))),
            PodState::Init { index, .. } => self.init[*index].start_at,
            PodState::Running { .. } => self.main.iter().filter_map(|t| t.start_at).min(),
            _ => None,
        };
        let upkeep = self.state.upkeep().and_then(Upkeep::next_deadline);
        let p = &self.publication;
        [state, p.retry_at, p.mirror_again_at, upkeep, self.first_report_held()].into_iter().flatten().min()
    }

    pub(super) fn runs_containers(&self) -> bool {
        self.state.upkeep().is_some()
    }
}
