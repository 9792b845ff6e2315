//! One worker per pod: it owns the pod's state, receives the pod's updates as messages,
//! and moves through one `Phase` enum by `step()`. Starting containers lives in `start.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio::time::sleep_until;
use tracing::{Instrument, debug, info, info_span};

use super::Shared;
use super::prepare::{self, Failure, PreparedPod};
use super::runtime::{ContainerRuntime, Exit};
use super::status::{ContainerView, State};
use crate::events::Kind;

/// Initial delay of image pull and crash-loop back-off; it doubles up to `MAX_BACKOFF`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Longest back-off, as the kubelet's.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long has its crash-loop back-off reset.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// How long `ErrImagePull` shows before it becomes `ImagePullBackOff`.
const SHOW_PULL_ERROR: Duration = Duration::from_secs(2);

/// What the controller tells a worker.
pub enum Msg {
    /// The pod changed (or was seen again after a re-list).
    Update(Arc<Pod>),
    /// The pod is gone from the API.
    Gone,
}

/// Where the pod is in its life.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Phase {
    /// Volumes and images are being prepared (a task is in flight).
    Preparing,
    /// Preparing failed; try again at `until` (pull back-off, or a missing ConfigMap).
    Retry { until: Instant, flip_at: Option<Instant> },
    /// Init container `index` runs (they run one at a time, in order).
    Init { index: usize },
    /// Main containers run, each restarting as the restartPolicy says.
    Running,
    /// Nothing will run again (Succeeded or Failed); wait for deletion.
    Done,
    /// Containers are being stopped; then the pod is deleted from the API.
    Terminating,
}

/// A container slot: init containers and main containers are numbered separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Init(usize),
    Main(usize),
}

pub(super) enum Event {
    Msg(Option<Msg>),
    Prepared(Box<Result<PreparedPod, Failure>>),
    Exited { slot: Slot, run: u32, exit: Exit },
    Timer,
}

/// One run in flight: its stopper, when it started, and its number.
pub(super) struct Run {
    pub stop: Arc<dyn Fn() + Send + Sync>,
    pub started: Instant,
    pub number: u32,
}

/// Per-container bookkeeping beside the status view.
#[derive(Default)]
pub(super) struct Track {
    pub run: Option<Run>,
    /// When a waiting container should be (re)started.
    pub start_at: Option<Instant>,
    /// Crash-loop back-off step (0 = next delay is `INITIAL_BACKOFF`).
    pub backoff_step: u32,
    /// Never started again (finished for good under the restartPolicy).
    pub finished: bool,
    /// The next run is a restart: starting it adds one to `restartCount` (the kubelet
    /// counts a restart when the new run starts, not when the old one dies).
    pub restart_pending: bool,
}

pub struct Worker<R: ContainerRuntime> {
    pub(super) shared: Arc<Shared<R>>,
    pub(super) pod: Arc<Pod>,
    pub(super) phase: Phase,
    pub(super) view: super::status::PodView,
    pub(super) init: Vec<Track>,
    pub(super) main: Vec<Track>,
    pub(super) prepared: Option<PreparedPod>,
    pub(super) pull_attempts: u32,
    /// Container exits in flight.
    pub(super) tasks: FuturesUnordered<BoxFuture<'static, Event>>,
    /// The preparation in flight, if any.
    pub(super) preparing: Option<BoxFuture<'static, Event>>,
    /// The status last patched (without timestamps), to patch only on change.
    pub(super) published: Option<serde_json::Value>,
    /// A failed status patch is retried at this instant.
    pub(super) publish_retry_at: Option<Instant>,
    /// A static pod whose mirror was deleted makes a new one at this instant.
    pub(super) mirror_again_at: Option<Instant>,
    /// When the pod's volumes from the API are next rewritten (`--sync-frequency`, or a
    /// service account token falling due, whichever comes first).
    pub(super) refresh_at: Option<Instant>,
    /// When this worker first saw the pod (start latency is measured from here).
    pub(super) seen: Instant,
    /// Adopted in a final phase from an earlier agent: its status is left as it is.
    pub(super) frozen: bool,
    pub(super) exit: bool,
}

impl<R: ContainerRuntime> Worker<R> {
    /// Runs the worker until the pod is gone (deleted by us or by someone else).
    pub async fn run(shared: Arc<Shared<R>>, pod: Arc<Pod>, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        let span = info_span!(
            "pod",
            ns = pod.metadata.namespace.as_deref().unwrap_or(""),
            pod = pod.metadata.name.as_deref().unwrap_or("")
        );
        async move {
            let mut w = Worker::new(shared, pod);
            rx.borrow_and_update();
            w.shared.directory.upsert_pod(w.pod.clone(), w.log_dir());
            w.begin();
            if w.phase == Phase::Terminating {
                w.delete_from_api().await;
            }
            while !w.exit {
                w.publish().await;
                let deadline =
                    w.next_deadline().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                let event = tokio::select! {
                    changed = rx.changed() => Event::Msg(match changed {
                        Ok(()) => Some(match rx.borrow_and_update().clone() {
                            Some(pod) => Msg::Update(pod),
                            None => Msg::Gone,
                        }),
                        Err(_) => None,
                    }),
                    Some(e) = w.tasks.next(), if !w.tasks.is_empty() => e,
                    e = poll_opt(&mut w.preparing), if w.preparing.is_some() => e,
                    _ = sleep_until(deadline) => Event::Timer,
                };
                w.step(event).await;
            }
            debug!("worker finished");
        }
        .instrument(span)
        .await
    }

    /// The single transition function: one event in, state (and side effects) out.
    pub(super) async fn step(&mut self, event: Event) {
        match event {
            Event::Msg(None) => {
                // The agent is going away: leave the pod and its files for the next start.
                self.stop_all(false);
                self.exit = true;
            }
            Event::Msg(Some(Msg::Gone)) => {
                self.stop_all(false);
                if super::report::is_static(&self.pod) {
                    // Manifest removed: the mirror pod goes too.
                    self.delete_from_api().await;
                } else {
                    self.forget();
                }
            }
            Event::Msg(Some(Msg::Update(pod))) => {
                self.pod = pod;
                if super::report::is_static(&self.pod) {
                    // Sent again because its mirror pod was deleted: report anew soon,
                    // which creates a new mirror (see MIRROR_RECREATE_DELAY).
                    self.mirror_again_at = Some(Instant::now() + crate::config::MIRROR_RECREATE_DELAY);
                }
                self.shared.directory.upsert_pod(self.pod.clone(), self.log_dir());
                if self.pod.metadata.deletion_timestamp.is_some() && self.phase != Phase::Terminating {
                    self.terminate().await;
                }
            }
            Event::Prepared(result) => {
                self.preparing = None;
                if self.phase == Phase::Preparing {
                    self.prepared(*result).await;
                }
            }
            Event::Timer => self.timer().await,
            Event::Exited { slot, run, exit } => self.exited(slot, run, exit).await,
        }
        if self.phase == Phase::Terminating && self.running() == 0 {
            self.delete_from_api().await;
        }
    }

    /// Starts preparing (volumes, images) in a task the worker can drop on deletion.
    pub(super) fn start_prepare(&mut self) {
        self.phase = Phase::Preparing;
        let (shared, pod) = (self.shared.clone(), self.pod.clone());
        let pod_dir = self.pod_dir();
        let recorder = shared.recorder.clone();
        let pod_ref = self.object_ref(None);
        self.preparing = Some(Box::pin(async move {
            let on_pull = move |image: &str| {
                let (r, o, m) = (recorder.clone(), pod_ref.clone(), format!("Pulling image {image:?}"));
                tokio::spawn(async move { r.publish(&o, Kind::Normal, "Pulling", &m).await });
            };
            let result = prepare::prepare(shared, pod, pod_dir, on_pull).await;
            Event::Prepared(Box::new(result))
        }));
    }

    async fn prepared(&mut self, result: Result<PreparedPod, Failure>) {
        match result {
            Ok(p) => {
                for (image, secs) in &p.pulls {
                    self.shared.metrics.image_pull.observe(Duration::from_secs_f64(*secs));
                    self.event(
                        None,
                        Kind::Normal,
                        "Pulled",
                        format!("Successfully pulled image {image:?} in {secs:.3}s"),
                    );
                }
                self.pull_attempts = 0;
                self.prepared = Some(p);
                self.schedule_refresh();
                self.begin_containers().await;
            }
            Err(Failure::Pull { image, reason, message }) => {
                let delay = backoff(self.pull_attempts);
                self.pull_attempts += 1;
                let text = format!("Failed to pull image {image:?}: {message}");
                self.event(None, Kind::Warning, "Failed", text.clone());
                self.event(None, Kind::Warning, "Failed", format!("Error: {reason}"));
                self.set_waiting_for_image(&image, reason, &text);
                let now = Instant::now();
                let flip = (reason == "ErrImagePull").then_some(now + SHOW_PULL_ERROR);
                self.phase = Phase::Retry { until: now + delay, flip_at: flip };
            }
            Err(Failure::Config { message }) => {
                let message = self.config_message(message);
                self.event(None, Kind::Warning, "Failed", format!("Error: {message}"));
                for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                    c.state = State::waiting("CreateContainerConfigError", Some(message.clone()));
                }
                self.phase = Phase::Retry { until: Instant::now() + INITIAL_BACKOFF, flip_at: None };
            }
            Err(Failure::Fatal { reason, message }) => {
                self.event(None, Kind::Warning, "Failed", message.clone());
                self.view.failure = Some((reason.to_string(), message));
                self.phase = Phase::Done;
            }
        }
    }

    fn set_waiting_for_image(&mut self, image: &str, reason: &str, message: &str) {
        for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
            if c.image == image {
                c.state = State::waiting(reason, Some(message.to_string()));
            }
        }
    }

    async fn timer(&mut self) {
        let now = Instant::now();
        if self.mirror_again_at.is_some_and(|t| t <= now) {
            self.mirror_again_at = None;
            self.published = None;
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_volumes().await;
        }
        match self.phase.clone() {
            Phase::Retry { flip_at: Some(flip), until } if now >= flip && now < until => {
                for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                    if let State::Waiting { reason, message } = &c.state
                        && reason == "ErrImagePull"
                    {
                        c.state = State::waiting("ImagePullBackOff", message.clone());
                    }
                }
                self.phase = Phase::Retry { until, flip_at: None };
            }
            Phase::Retry { until, .. } if now >= until => self.start_prepare(),
            Phase::Init { index } if self.init[index].start_at.is_some_and(|t| t <= now) => {
                self.start(Slot::Init(index)).await;
            }
            Phase::Running => {
                let due: Vec<usize> = (0..self.main.len())
                    .filter(|i| self.main[*i].start_at.is_some_and(|t| t <= now))
                    .collect();
                for i in due {
                    self.start(Slot::Main(i)).await;
                }
            }
            _ => {}
        }
    }

    /// The earliest instant a timer must wake the worker.
    fn next_deadline(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Retry { until, flip_at } => Some(flip_at.map_or(*until, |f| f.min(*until))),
            Phase::Init { index } => self.init[*index].start_at,
            Phase::Running => self.main.iter().filter_map(|t| t.start_at).min(),
            _ => None,
        };
        let refresh = self.refresh_at.filter(|_| matches!(self.phase, Phase::Init { .. } | Phase::Running));
        [phase, self.publish_retry_at, self.mirror_again_at, refresh].into_iter().flatten().min()
    }

    pub(super) fn running(&self) -> usize {
        self.init.iter().chain(&self.main).filter(|t| t.run.is_some()).count()
    }

    /// Stops every run; with `announce`, emits Killing for each.
    pub(super) fn stop_all(&mut self, announce: bool) {
        let mut killed = Vec::new();
        for (i, t) in self
            .init
            .iter()
            .enumerate()
            .map(|(i, t)| (Slot::Init(i), t))
            .chain(self.main.iter().enumerate().map(|(i, t)| (Slot::Main(i), t)))
        {
            if let Some(run) = &t.run {
                (run.stop)();
                killed.push(i);
            }
        }
        for t in self.init.iter_mut().chain(self.main.iter_mut()) {
            t.start_at = None;
            t.finished = true;
        }
        if announce {
            for slot in killed {
                let name = self.container_view(slot).name.clone();
                self.event(Some(slot), Kind::Normal, "Killing", format!("Stopping container {name}"));
            }
        }
    }

    async fn terminate(&mut self) {
        info!("pod is being deleted; stopping its containers");
        // Drop a preparation in flight: a pull is cancelled, not waited for.
        self.preparing = None;
        self.stop_all(true);
        self.phase = Phase::Terminating;
    }

    pub(super) fn container_view(&self, slot: Slot) -> &ContainerView {
        match slot {
            Slot::Init(i) => &self.view.init[i],
            Slot::Main(i) => &self.view.main[i],
        }
    }
}

/// Back-off before attempt `step + 1`: 10 s doubling up to 5 min.
pub fn backoff(step: u32) -> Duration {
    INITIAL_BACKOFF.saturating_mul(1u32.checked_shl(step.min(16)).unwrap_or(u32::MAX)).min(MAX_BACKOFF)
}

/// Polls an optional future; pending forever when there is none.
pub(super) async fn poll_opt(f: &mut Option<BoxFuture<'static, Event>>) -> Event {
    match f.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
