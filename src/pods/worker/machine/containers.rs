//! The machine's container transitions: init containers one at a time, then the main
//! containers; each run's start, failure to start and exit; restarts under the
//! restartPolicy with crash-loop back-off. Pure, as all of `Machine`.

use kube::ResourceExt;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::{
    BACKOFF_RESET_AFTER, INITIAL_BACKOFF, MAX_BACKOFF, Machine, PodState, Retry, RunState, Track, Upkeep,
    backoff,
};
use crate::base::time::now_rfc3339;
use crate::config::{CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX, CONFIG_RETRY_VISIBLE_AFTER};
use crate::events::Kind;
use crate::pods::probes::{self, ProbeEvent, ProbeKind};
use crate::pods::status::{ContainerView, State};
use crate::pods::worker::effects::{Effect, Slot};
use crate::runtime::Exit;

/// Whether a run that ended with `code` is run again, by the kubelet's rules: never under
/// `Never`; on failure under `OnFailure`; always under `Always`, except that an init
/// container that succeeded is done.
pub fn restarts(policy: &str, init: bool, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => !init || code != 0,
    }
}

impl Machine {
    /// After preparing: the first unfinished init container, or all main containers.
    pub(super) fn begin_containers(&mut self, upkeep: Upkeep, fx: &mut Vec<Effect>) {
        match (0..self.init.len()).find(|i| !self.init[*i].finished) {
            Some(i) if !self.view.init_done => {
                self.state = PodState::Init { index: i, upkeep };
                for c in &mut self.view.main {
                    c.state = State::waiting("PodInitializing", None);
                }
                self.request_start(Slot::Init(i), fx);
            }
            _ => self.begin_main(upkeep, fx),
        }
    }

    fn begin_main(&mut self, upkeep: Upkeep, fx: &mut Vec<Effect>) {
        self.view.init_done = true;
        self.state = PodState::Running { upkeep };
        for i in 0..self.main.len() {
            // One waiting out a back-off (charged for a lost run) starts on its timer.
            if !self.main[i].finished && self.main[i].start_at.is_none() {
                self.request_start(Slot::Main(i), fx);
            }
        }
        self.check_done();
    }

    /// Asks the executor to start the next run of `slot`.
    pub(super) fn request_start(&mut self, slot: Slot, fx: &mut Vec<Effect>) {
        let number = self.container_view(slot).restart_count;
        let track = self.track_mut(slot);
        track.start_at = None;
        let number = number + u32::from(track.restart_pending);
        track.run = RunState::Starting { number };
        fx.push(Effect::Start { slot, run: number });
    }

    pub(super) fn started(&mut self, slot: Slot, run: u32, now: Instant, fx: &mut Vec<Effect>) {
        if self.track_mut(slot).run != (RunState::Starting { number: run }) {
            return;
        }
        let (uid, runtime) = (self.uid(), self.settings.runtime_name);
        let image_id = self.image_ids.get(&self.container_view(slot).image).cloned().unwrap_or_default();
        let has = |kind| slot.container(&self.pod).is_some_and(|c| probes::has(c, kind));
        let (startup, readiness) = (has(ProbeKind::Startup), has(ProbeKind::Readiness));
        let track = self.track_mut(slot);
        track.run = RunState::Running { number: run, since: now };
        track.restart_pending = false;
        track.config_retry = None;
        let view = self.view_mut(slot);
        view.state = State::Running { started_at: now_rfc3339() };
        view.restart_count = run;
        view.container_id = format!("{runtime}://{uid}/{}/{run}", view.name);
        view.image_id = image_id;
        // Probes run for main containers only, as on the kubelet.
        let probed = matches!(slot, Slot::Main(_));
        view.probe_started = !(probed && startup);
        view.probe_ready = view.probe_started && !(probed && readiness);
        let name = view.name.clone();
        if matches!(self.state, PodState::Terminating | PodState::Deleting | PodState::Finished) {
            // Deleted while it was starting: it stops at once.
            fx.push(Effect::Stop { slot });
            return;
        }
        let event = |reason, verb| Effect::Event {
            slot: Some(slot),
            kind: Kind::Normal,
            reason,
            message: format!("{verb} container {name}"),
        };
        fx.push(event("Created", "Created"));
        fx.push(event("Started", "Started"));
    }

    /// A run could not be created: show why and try again after a back-off (a small one
    /// for `CreateContainerConfigError`, which an object created moments later clears).
    pub(super) fn start_failed(
        &mut self,
        slot: Slot,
        run: u32,
        reason: &'static str,
        message: String,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let track = self.track_mut(slot);
        if track.run != (RunState::Starting { number: run }) {
            return;
        }
        track.run = RunState::Idle;
        let config = reason == "CreateContainerConfigError";
        let retry = config.then(|| {
            let last = track.config_retry;
            Retry { failures: last.map_or(0, |r| r.failures) + 1, since: last.map_or(now, |r| r.since) }
        });
        track.config_retry = retry;
        // A reference that clears within moments (an authorization race) stays quiet.
        if retry.is_none_or(|r| now.duration_since(r.since) >= CONFIG_RETRY_VISIBLE_AFTER) {
            let (kind, failed, text) = (Kind::Warning, "Failed", format!("Error: {message}"));
            fx.push(Effect::Event { slot: Some(slot), kind, reason: failed, message: text });
            self.view_mut(slot).state = State::waiting(reason, Some(message));
        } else {
            debug!(%message, "starting the container failed; retrying");
        }
        if matches!(self.state, PodState::Terminating | PodState::Deleting | PodState::Finished) {
            return;
        }
        let track = self.track_mut(slot);
        let delay = match retry {
            Some(r) => backoff(r.failures - 1, CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX),
            None => {
                track.backoff_step += 1;
                backoff(track.backoff_step - 1, INITIAL_BACKOFF, MAX_BACKOFF)
            }
        };
        track.start_at = Some(now + delay);
    }

    /// A run ended: record it, then restart, move on, or finish, as the policy says.
    pub(super) fn exited(&mut self, slot: Slot, run: u32, exit: Exit, now: Instant, fx: &mut Vec<Effect>) {
        let since = match self.track_mut(slot).run {
            RunState::Running { number, since } if number == run => since,
            _ => return, // a stale exit of a run already replaced
        };
        self.track_mut(slot).run = RunState::Idle;
        let view = self.view_mut(slot);
        let started_at = match &view.state {
            State::Running { started_at } => started_at.clone(),
            _ => now_rfc3339(),
        };
        let term = State::Terminated {
            exit_code: exit.code,
            reason: exit.reason.to_string(),
            message: exit.message.clone(),
            started_at,
            finished_at: now_rfc3339(),
        };
        info!(container = %view.name, code = exit.code, reason = exit.reason, "container exited");
        // Stopped for good: deleted, or evicted (Done).
        if matches!(
            self.state,
            PodState::Terminating | PodState::Deleting | PodState::Finished | PodState::Done { .. }
        ) {
            self.view_mut(slot).state = term;
            return;
        }
        let restart = restarts(&self.view.restart_policy, matches!(slot, Slot::Init(_)), exit.code);
        match (slot, restart) {
            (Slot::Init(i), false) if exit.code == 0 => {
                let upkeep = self.state.upkeep().copied().unwrap_or_default();
                self.view.init[i].state = term;
                self.init[i].finished = true;
                match (i + 1..self.init.len()).find(|j| !self.init[*j].finished) {
                    Some(next) => {
                        self.state = PodState::Init { index: next, upkeep };
                        self.request_start(Slot::Init(next), fx);
                    }
                    None => self.begin_main(upkeep, fx),
                }
            }
            (Slot::Init(i), false) => {
                self.view.init[i].state = term;
                self.state = PodState::Done { adopted: false };
            }
            (Slot::Main(i), false) => {
                self.view.main[i].state = term;
                self.main[i].finished = true;
                self.check_done();
            }
            (_, true) => self.schedule_restart(slot, term, now.duration_since(since), now, fx),
        }
    }

    /// Crash-loop back-off: the first restart is immediate, then 10 s doubling to 5 min;
    /// a run of 10 min resets it.
    fn schedule_restart(
        &mut self,
        slot: Slot,
        term: State,
        ran: Duration,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let (pod, ns, uid) = (self.name(), self.namespace(), self.uid());
        let track = self.track_mut(slot);
        if ran >= BACKOFF_RESET_AFTER {
            track.backoff_step = 0;
        }
        track.restart_pending = true;
        let step = track.backoff_step;
        track.backoff_step += 1;
        self.view_mut(slot).last = Some(term);
        if step == 0 {
            return self.request_start(slot, fx);
        }
        let delay = backoff(step - 1, INITIAL_BACKOFF, MAX_BACKOFF);
        let view = self.view_mut(slot);
        let message = format!(
            "back-off {}s restarting failed container={} pod={pod}_{ns}({uid})",
            delay.as_secs(),
            view.name
        );
        view.state = State::waiting("CrashLoopBackOff", Some(message));
        self.track_mut(slot).start_at = Some(now + delay);
        let message = "Back-off restarting failed container".to_string();
        fx.push(Effect::Event { slot: Some(slot), kind: Kind::Warning, reason: "BackOff", message });
    }

    /// A probe of the current run changed its verdict: readiness and startup show in the
    /// status; a failed liveness or startup probe kills the run, which then restarts as
    /// the restartPolicy says.
    pub(super) fn probe(&mut self, slot: Slot, run: u32, event: ProbeEvent, fx: &mut Vec<Effect>) {
        if !matches!(self.track_mut(slot).run, RunState::Running { number, .. } if number == run)
            || !matches!(self.state, PodState::Running { .. })
        {
            return;
        }
        let readiness = slot.container(&self.pod).is_some_and(|c| probes::has(c, ProbeKind::Readiness));
        let view = self.view_mut(slot);
        match event {
            ProbeEvent::Started => {
                view.probe_started = true;
                view.probe_ready = !readiness;
            }
            ProbeEvent::Ready(ready) => view.probe_ready = ready && view.probe_started,
            ProbeEvent::Failed { kind, message } => {
                view.probe_ready = false;
                let which = kind.to_string().to_lowercase();
                info!(container = %view.name, probe = %which, %message, "probe failed; killing the container");
                let message = format!("Container {} failed {which} probe, will be restarted", view.name);
                fx.push(Effect::Event { slot: Some(slot), kind: Kind::Normal, reason: "Killing", message });
                fx.push(Effect::Stop { slot });
            }
        }
    }

    /// All main containers finished for good: nothing will run again.
    fn check_done(&mut self) {
        let idle = |t: &Track| t.finished && t.run == RunState::Idle;
        if matches!(self.state, PodState::Running { .. }) && self.main.iter().all(idle) {
            self.state = PodState::Done { adopted: false };
        }
    }

    /// Stops every run (and every start in flight); with `announce`, a Killing event each.
    /// Nothing starts again.
    pub(super) fn stop_all(&mut self, announce: bool, fx: &mut Vec<Effect>) {
        for slot in self.slots() {
            let track = self.track_mut(slot);
            track.start_at = None;
            track.finished = true;
            if track.run == RunState::Idle {
                continue;
            }
            fx.push(Effect::Stop { slot });
            if announce {
                let message = format!("Stopping container {}", self.container_view(slot).name);
                fx.push(Effect::Event { slot: Some(slot), kind: Kind::Normal, reason: "Killing", message });
            }
        }
    }

    /// Runs started or starting.
    pub(super) fn running(&self) -> usize {
        self.init.iter().chain(&self.main).filter(|t| t.run != RunState::Idle).count()
    }

    fn slots(&self) -> Vec<Slot> {
        (0..self.init.len()).map(Slot::Init).chain((0..self.main.len()).map(Slot::Main)).collect()
    }

    pub(super) fn container_view(&self, slot: Slot) -> &ContainerView {
        match slot {
            Slot::Init(i) => &self.view.init[i],
            Slot::Main(i) => &self.view.main[i],
        }
    }

    fn view_mut(&mut self, slot: Slot) -> &mut ContainerView {
        match slot {
            Slot::Init(i) => &mut self.view.init[i],
            Slot::Main(i) => &mut self.view.main[i],
        }
    }

    fn track_mut(&mut self, slot: Slot) -> &mut Track {
        match slot {
            Slot::Init(i) => &mut self.init[i],
            Slot::Main(i) => &mut self.main[i],
        }
    }

    fn name(&self) -> String {
        self.pod.name_any()
    }

    fn namespace(&self) -> String {
        self.pod.namespace().unwrap_or_else(|| "default".into())
    }
}
