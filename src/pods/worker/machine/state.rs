//! Where the pod is in its life ([`PodState`]), each state holding what is valid in it, and
//! what the machine tracks of each container's runs.

use tokio::time::Instant;

use super::Upkeep;

/// Where the pod is in its life. Each variant holds what is valid in it.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Volumes and images are being prepared ([`Effect::Prepare`](crate::pods::worker::effects::Effect::Prepare) is in flight).
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

    /// Until when a pod not prepared yet is not reported.
    pub(super) fn first_report_at(&self) -> Option<Instant> {
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
