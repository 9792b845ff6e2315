//! Where a pod's machine begins: for a pod seen for the first time, preparing; for one
//! picked up again after an agent restart, what its stored status says already ran, so a
//! container is restarted as the restartPolicy says and never run twice. Pure.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus};

use super::containers::restarts;
use tokio::time::Instant;

use super::{INITIAL_BACKOFF, MAX_BACKOFF, Machine, PodState, backoff};
use crate::base::time::{now_rfc3339, rfc3339};
use crate::config::{CRASH_LIMIT, FIRST_REPORT_DELAY};
use crate::pods::status::State;
use crate::pods::worker::effects::{Effect, Slot};
use crate::pods::worker::journal::Entry;

/// Exit code recorded for a run the agent lost track of (it was running when the agent
/// stopped), as a container killed with the node would show.
const LOST_RUN_EXIT_CODE: i32 = 137;

/// The message of a run lost when the kernel OOM-killed the agent.
pub const AGENT_OOM_MESSAGE: &str =
    "the node agent was killed for lack of memory (the kernel's OOM killer) while the container was running";

impl Machine {
    /// Decides where a (possibly already running) pod starts; the first effects.
    pub fn begin(&mut self, now: Instant, crashed: Option<Entry>) -> Vec<Effect> {
        let mut fx = Vec::new();
        let status = self.pod.status.clone().unwrap_or_default();
        if self.pod.metadata.deletion_timestamp.is_some() {
            // Nothing runs: deleted at once.
            self.state = PodState::Deleting;
            return vec![Effect::Delete];
        }
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            // Finished under an earlier agent: nothing runs again; leave its status.
            self.state = PodState::Done { adopted: true };
            return fx;
        }
        if let Some(crashed) = crashed.filter(|c| c.attempts >= CRASH_LIMIT) {
            // Earlier agents died in this pod's step: do not redo it.
            let message = format!(
                "the node agent stopped {} times during this pod's step {:?} and does not try it again; \
                 delete the pod to try once more",
                crashed.attempts, crashed.step
            );
            tracing::error!(step = %crashed.step, attempts = crashed.attempts, "refusing a step that crashed the agent");
            let kind = crate::events::Kind::Warning;
            fx.push(Effect::Event { slot: None, kind, reason: "NodeAgentCrashed", message: message.clone() });
            self.view.failure = Some(("NodeAgentCrashed".into(), message));
            self.state = PodState::Done { adopted: false };
            self.step_tail(now, &mut fx);
            return fx;
        }
        let initialized =
            (status.conditions.iter().flatten()).any(|c| c.type_ == "Initialized" && c.status == "True");
        if initialized && !self.view.init.is_empty() {
            self.view.init_done = true;
            for (t, v) in self.init.iter_mut().zip(self.view.init.iter_mut()) {
                t.finished = true;
                v.state = State::Terminated {
                    exit_code: 0,
                    reason: "Completed".into(),
                    message: None,
                    started_at: now_rfc3339(),
                    finished_at: now_rfc3339(),
                };
            }
        }
        let previous = status.container_statuses.unwrap_or_default();
        let policy = self.view.restart_policy.clone();
        let oom = self.settings.agent_oom_killed;
        let m = &self.pod.metadata;
        let pod_key = format!(
            "{}_{}({})",
            m.name.as_deref().unwrap_or(""),
            m.namespace.as_deref().unwrap_or("default"),
            m.uid.as_deref().unwrap_or("")
        );
        for (i, view) in self.view.main.iter_mut().enumerate() {
            let Some(prev) = previous.iter().find(|p| p.name == view.name) else { continue };
            let lost = prev.state.as_ref().is_some_and(|s| s.running.is_some());
            let Some(ended) = ended_run(prev, oom) else {
                // Never ran (or was waiting to be restarted): keep its count and history.
                view.restart_count = prev.restart_count.max(0) as u32;
                view.last = prev.last_state.as_ref().and_then(terminated);
                self.main[i].restart_pending = view.last.is_some();
                continue;
            };
            let code = match &ended {
                State::Terminated { exit_code, .. } => *exit_code,
                _ => LOST_RUN_EXIT_CODE,
            };
            let restart = restarts(&policy, false, code);
            view.restart_count = prev.restart_count.max(0) as u32;
            if restart {
                self.main[i].restart_pending = true;
                view.last = Some(ended);
                if lost && oom {
                    // Charged as a crash of its own: restarted after the back-off.
                    let delay = backoff(0, INITIAL_BACKOFF, MAX_BACKOFF);
                    let track = &mut self.main[i];
                    (track.backoff_step, track.start_at) = (1, Some(now + delay));
                    let message = format!(
                        "back-off {}s restarting failed container={} pod={pod_key}",
                        delay.as_secs(),
                        view.name
                    );
                    view.state = State::waiting("CrashLoopBackOff", Some(message));
                    let message = "Back-off restarting failed container".to_string();
                    let (kind, slot) = (crate::events::Kind::Warning, Some(Slot::Main(i)));
                    fx.push(Effect::Event { slot, kind, reason: "BackOff", message });
                }
            } else {
                view.state = ended;
                self.main[i].finished = true;
            }
        }
        if self.main.iter().all(|t| t.finished) {
            self.state = PodState::Done { adopted: false };
        } else {
            self.publication.first_report_at = Some(now + FIRST_REPORT_DELAY);
            self.state = PodState::Preparing { retry: None };
            fx.push(Effect::Prepare);
        }
        self.step_tail(now, &mut fx);
        fx
    }
}

/// The run a container status records as over: a termination, or a run that was still
/// going when the agent stopped (now lost; `OOMKilled` if the agent died of memory).
fn ended_run(prev: &ContainerStatus, agent_oom_killed: bool) -> Option<State> {
    let state = prev.state.as_ref()?;
    if let Some(t) = terminated(state) {
        return Some(t);
    }
    let running = state.running.as_ref()?;
    let started = running.started_at.as_ref().map(|t| rfc3339(&t.0)).unwrap_or_else(now_rfc3339);
    let (reason, message) = match agent_oom_killed {
        true => ("OOMKilled", AGENT_OOM_MESSAGE),
        false => ("Error", "the node agent restarted while the container was running"),
    };
    Some(State::Terminated {
        exit_code: LOST_RUN_EXIT_CODE,
        reason: reason.into(),
        message: Some(message.into()),
        started_at: started,
        finished_at: now_rfc3339(),
    })
}

fn terminated(state: &ContainerState) -> Option<State> {
    let t = state.terminated.as_ref()?;
    let time = |x: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        x.as_ref().map(|t| rfc3339(&t.0)).unwrap_or_default()
    };
    Some(State::Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_else(|| "Error".into()),
        message: t.message.clone(),
        started_at: time(&t.started_at),
        finished_at: time(&t.finished_at),
    })
}
