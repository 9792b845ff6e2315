//! Where the pod is in its life ([`PodState`]), each state holding what is valid in it, and
//! what the machine tracks of each container's runs. A state's timers are in the state:
//! a running pod's [`Upkeep`], for one.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::DISK_CHECK_PERIOD;
use crate::pods::worker::effects::Effect;

/// Where the pod is in its life. Each variant holds what is valid in it.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Volumes and images are being prepared ([`Effect::Prepare`](crate::pods::worker::effects::Effect::Prepare) is in flight).
    /// `retry`: the failures before this attempt, if any.
    Preparing { retry: Option<Retry> },
    /// Preparing failed; prepare again at `until`. An `ErrImagePull` shows until
    /// `flip_at`, then `ImagePullBackOff`.
    Retrying { until: Instant, flip_at: Option<Instant>, retry: Retry },
    /// Init container `index` runs (they run one at a time, in order).
    Init { index: usize, upkeep: Upkeep },
    /// Main containers run, each restarting as the restartPolicy says.
    Running { upkeep: Upkeep },
    /// Nothing will run again (Succeeded or Failed); wait for deletion. `adopted`: it
    /// finished under an earlier agent, and its status is left as that agent wrote it.
    Done { adopted: bool },
    /// Containers are being stopped; then the pod is removed from the API.
    Terminating,
    /// [`Effect::Delete`](crate::pods::worker::effects::Effect::Delete) is in flight.
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

    pub(super) fn upkeep_mut(&mut self) -> Option<&mut Upkeep> {
        match self {
            PodState::Init { upkeep, .. } | PodState::Running { upkeep } => Some(upkeep),
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
    /// [`Effect::Start`](crate::pods::worker::effects::Effect::Start) for run `number` is in flight.
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
