//! The pod's state machine: one [`PodState`] enum whose variants own their data, and one
//! pure [`Machine::step`] that takes an [`Input`] and returns the [`Effect`]s to perform.
//! No API call, file write or runtime call happens here (see `executor.rs`), so a slow or
//! absent API server never delays reacting to an exit or a delete. Container runs and
//! restarts are in `containers.rs`; picking a pod up after an agent restart in `recover.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use serde_json::Value;
use tokio::time::Instant;
use tracing::debug;

use super::effects::{Effect, Failure, Input, Prepared, Slot};
use crate::config::{
    CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX, CONFIG_RETRY_VISIBLE_AFTER, DISK_CHECK_PERIOD,
    MIRROR_RECREATE_DELAY, PUBLISH_RETRY,
};
use crate::events::Kind;
use crate::pods::status::{ContainerView, PodView, State};

mod upkeep;

pub use upkeep::Upkeep;

/// Initial delay of image pull and crash-loop back-off; it doubles up to `MAX_BACKOFF`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Longest back-off, as the kubelet's.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long has its crash-loop back-off reset.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// How long `ErrImagePull` shows before it becomes `ImagePullBackOff`.
const SHOW_PULL_ERROR: Duration = Duration::from_secs(2);

/// Where the pod is in its life. Each variant holds what is valid in it.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Volumes and images are being prepared ([`Effect::Prepare`] is in flight).
    /// `retry`: the failures before this attempt, if any. `first_report_at`: until then
    /// the pod is not reported: if it starts by then, its first report says Running (see
    /// [`crate::config::FIRST_REPORT_DELAY`]).
    Preparing { retry: Option<Retry>, first_report_at: Option<Instant> },
    /// Preparing failed; prepare again at `until`. An `ErrImagePull` shows until
    /// `flip_at`, then `ImagePullBackOff`.
    Retrying { until: Instant, flip_at: Option<Instant>, retry: Retry, first_report_at: Option<Instant> },
    /// Init container `index` runs (they run one at a time, in order).
    Init { index: usize, upkeep: Upkeep },
    /// Main containers run, each restarting as the restartPolicy says.
    Running { upkeep: Upkeep },
    /// Nothing will run again (Succeeded or Failed); wait for deletion. `adopted`: it
    /// finished under an earlier agent, and its status is left as that agent wrote it.
    Done { adopted: bool },
    /// Containers are being stopped; then the pod is removed from the API.
    Terminating,
    /// [`Effect::Delete`] is in flight.
    Deleting,
    /// Nothing more to do: the worker ends.
    Finished,
}

impl PodState {
    /// The timers of a pod whose containers run.
    pub(super) fn upkeep(&self) -> Option<&Upkeep> {
        match self {
            PodState::Init { upkeep, .. } | PodState::Running { upkeep } => Some(upkeep),
            _ => None,
        }
    }

    fn upkeep_mut(&mut self) -> Option<&mut Upkeep> {
        match self {
            PodState::Init { upkeep, .. } | PodState::Running { upkeep } => Some(upkeep),
            _ => None,
        }
    }

    /// Until when a pod not prepared yet is not reported.
    fn first_report_at(&self) -> Option<Instant> {
        match self {
            PodState::Preparing { first_report_at, .. } | PodState::Retrying { first_report_at, .. } => {
                *first_report_at
            }
            _ => None,
        }
    }
}

/// Consecutive failed preparations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub failures: u32,
    /// When the first of them happened.
    pub since: Instant,
}

/// One container's run, as far as the machine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    #[default]
    Idle,
    /// [`Effect::Start`] for run `number` is in flight.
    Starting {
        number: u32,
    },
    Running {
        number: u32,
        since: Instant,
    },
}

/// Per-container bookkeeping beside the status view.
#[derive(Debug, Default)]
pub struct Track {
    pub run: RunState,
    /// When a waiting container should be (re)started.
    pub start_at: Option<Instant>,
    /// Crash-loop back-off step (0 = the next restart is immediate).
    pub backoff_step: u32,
    /// Consecutive `CreateContainerConfigError`s (their retries start small).
    pub config_retry: Option<Retry>,
    /// Never started again (finished for good under the restartPolicy).
    pub finished: bool,
    /// The next run is a restart: starting it adds one to `restartCount` (the kubelet
    /// counts a restart when the new run starts, not when the old one dies).
    pub restart_pending: bool,
}

/// Status publication: what was reported, what is in flight, when to retry.
#[derive(Debug, Default)]
struct Publication {
    /// The last status reported, without timestamps.
    reported: Option<Value>,
    /// The status handed to [`Effect::Publish`] and not yet answered.
    in_flight: Option<Value>,
    retry_at: Option<Instant>,
    /// A static pod whose mirror was deleted reports anew (making a new mirror) then.
    mirror_again_at: Option<Instant>,
}

/// Facts about the node the machine needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Scheme of `containerID`s (`wasmtime://...`): the runtime's name.
    pub runtime_name: &'static str,
    pub node_ip: String,
    /// How often running pods' volumes are rewritten (`--sync-frequency`).
    pub sync_frequency: Duration,
    /// The previous agent was OOM-killed by the kernel: runs it lost are charged as
    /// `OOMKilled` and restarted after a back-off (`recover.rs`).
    pub agent_oom_killed: bool,
}

/// One pod's state (with its timers), its status view, and its status reports.
pub struct Machine {
    pub(super) pod: Arc<Pod>,
    pub(super) state: PodState,
    pub(super) view: PodView,
    pub(super) init: Vec<Track>,
    pub(super) main: Vec<Track>,
    pub(super) settings: Settings,
    /// `imageID` of each image, once prepared.
    pub(super) image_ids: HashMap<String, String>,
    publication: Publication,
}

impl Machine {
    /// The machine for `pod`, before [`Machine::begin`].
    pub fn new(pod: Arc<Pod>, settings: Settings, start_time: String) -> Machine {
        let spec = pod.spec.clone().unwrap_or_default();
        let views = |cs: &[Container]| -> Vec<ContainerView> {
            cs.iter().map(|c| ContainerView::new(&c.name, c.image.as_deref().unwrap_or(""))).collect()
        };
        let init = views(spec.init_containers.as_deref().unwrap_or_default());
        let main = views(&spec.containers);
        Machine {
            init: init.iter().map(|_| Track::default()).collect(),
            main: main.iter().map(|_| Track::default()).collect(),
            view: PodView {
                init_done: init.is_empty(),
                init,
                main,
                restart_policy: spec.restart_policy.unwrap_or_else(|| "Always".into()),
                failure: None,
                start_time,
                node_ip: settings.node_ip.clone(),
            },
            pod,
            state: PodState::Preparing { retry: None, first_report_at: None },
            settings,
            image_ids: HashMap::new(),
            publication: Publication::default(),
        }
    }

    pub fn state(&self) -> &PodState {
        &self.state
    }

    pub fn is_finished(&self) -> bool {
        self.state == PodState::Finished
    }

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
                if let PodState::Preparing { retry, first_report_at } = self.state.clone() {
                    self.prepared(result, retry, first_report_at, now, &mut fx);
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
        if crate::pods::report::is_static(&self.pod) {
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
        if let Some(upkeep) = self.state.upkeep_mut() {
            upkeep.timer(now, fx);
        }
        match self.state.clone() {
            PodState::Retrying { flip_at: Some(flip), until, retry, first_report_at }
                if now >= flip && now < until =>
            {
                for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                    if let State::Waiting { reason, message } = &c.state
                        && reason == "ErrImagePull"
                    {
                        c.state = State::waiting("ImagePullBackOff", message.clone());
                    }
                }
                self.state = PodState::Retrying { until, flip_at: None, retry, first_report_at };
            }
            PodState::Retrying { until, retry, first_report_at, .. } if now >= until => {
                fx.push(Effect::Prepare);
                self.state = PodState::Preparing { retry: Some(retry), first_report_at };
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
        let (p, first) = (&self.publication, self.state.first_report_at());
        [state, p.retry_at, p.mirror_again_at, upkeep, first].into_iter().flatten().min()
    }

    fn runs_containers(&self) -> bool {
        self.state.upkeep().is_some()
    }

    fn prepared(
        &mut self,
        result: Result<Prepared, Failure>,
        retry: Option<Retry>,
        first_report_at: Option<Instant>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let retry =
            Retry { failures: retry.map_or(0, |r| r.failures) + 1, since: retry.map_or(now, |r| r.since) };
        match result {
            Ok(p) => {
                for (image, secs) in &p.pulls {
                    let message = format!("Successfully pulled image {image:?} in {secs:.3}s");
                    fx.push(Effect::Event { slot: None, kind: Kind::Normal, reason: "Pulled", message });
                }
                self.image_ids = p.image_ids;
                let mut upkeep = Upkeep::new(p.refreshes, p.watch_disk.then_some(now + DISK_CHECK_PERIOD));
                upkeep.schedule_refresh(now, p.token_due, self.settings.sync_frequency, &self.uid());
                self.begin_containers(upkeep, fx);
            }
            Err(Failure::Pull { image, reason, message }) => {
                let delay = backoff(retry.failures - 1, INITIAL_BACKOFF, MAX_BACKOFF);
                let text = match reason {
                    // Pulled, but the runtime cannot make a container of it (a link error).
                    "CreateContainerError" => format!("Error: {message}"),
                    _ => format!("Failed to pull image {image:?}: {message}"),
                };
                let event =
                    |message| Effect::Event { slot: None, kind: Kind::Warning, reason: "Failed", message };
                fx.push(event(text.clone()));
                fx.push(event(format!("Error: {reason}")));
                for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                    if c.image == image {
                        c.state = State::waiting(reason, Some(text.clone()));
                    }
                }
                let flip_at = (reason == "ErrImagePull").then_some(now + SHOW_PULL_ERROR);
                self.state = PodState::Retrying { until: now + delay, flip_at, retry, first_report_at };
            }
            Err(Failure::Config { message }) => {
                let delay = backoff(retry.failures - 1, CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX);
                debug!(failures = retry.failures, retry_in = ?delay, %message, "preparing the pod failed; retrying");
                // A failure that clears within moments (an authorization race) stays quiet;
                // one that persists shows in the status and as an Event.
                if now.duration_since(retry.since) >= CONFIG_RETRY_VISIBLE_AFTER {
                    let (kind, reason) = (Kind::Warning, "Failed");
                    fx.push(Effect::Event { slot: None, kind, reason, message: format!("Error: {message}") });
                    for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                        c.state = State::waiting("CreateContainerConfigError", Some(message.clone()));
                    }
                }
                self.state = PodState::Retrying { until: now + delay, flip_at: None, retry, first_report_at };
            }
            Err(Failure::Fatal { reason, message }) => {
                let event = Effect::Event {
                    slot: None,
                    kind: Kind::Warning,
                    reason: "Failed",
                    message: message.clone(),
                };
                fx.push(event);
                self.view.failure = Some((reason.to_string(), message));
                self.state = PodState::Done { adopted: false };
            }
        }
    }

    pub(super) fn uid(&self) -> String {
        self.pod.uid().unwrap_or_default()
    }
}

/// Back-off before attempt `step + 1`: `initial` doubling up to `max`. Pulls and crash
/// loops go from [`INITIAL_BACKOFF`] to [`MAX_BACKOFF`] (10 s to 5 min); something the pod
/// references that could not be read, from [`CONFIG_RETRY_INITIAL`] to [`CONFIG_RETRY_MAX`].
pub fn backoff(step: u32, initial: Duration, max: Duration) -> Duration {
    initial.saturating_mul(1u32.checked_shl(step.min(16)).unwrap_or(u32::MAX)).min(max)
}
