//! The pod's state machine: one [`PodState`] enum whose variants own their data, and one
//! pure [`Machine::step`] that takes an [`Input`] and returns the [`Effect`]s to perform.
//! No API call, file write or runtime call happens here (see `executor.rs`), so a slow or
//! absent API server never delays reacting to an exit or a delete. By concept: the states
//! (`state.rs`), the transition function and its timers (`step.rs`), the outcome of
//! preparing (`preparing.rs`), container runs and restarts (`containers.rs`), what a
//! living pod needs beside them (`upkeep.rs`), and picking a pod up after an agent restart
//! (`recover.rs`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::time::Instant;

#[cfg(doc)]
use super::effects::{Effect, Input};
use crate::base::vecmap::VecMap;
#[cfg(doc)]
use crate::config::{CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX};
use crate::pods::status::{ContainerView, PodView};

mod containers;
mod preparing;
mod recover;
mod state;
mod step;
mod upkeep;

pub use state::{PodState, Upkeep};
use state::{Retry, RunState, Track};

/// Initial delay of image pull and crash-loop back-off; it doubles up to `MAX_BACKOFF`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Longest back-off, as the kubelet's.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long has its crash-loop back-off reset.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// Status publication: what was reported, what is in flight, when to retry.
#[derive(Debug, Default)]
struct Publication {
    /// The last status reported, without timestamps: the SHA-256 of its JSON text. A pod
    /// holds it as long as it lives, and only equality is asked of it; the text was 1 KB a
    /// pod (a `serde_json::Value` tree five times that).
    reported: Option<StatusDigest>,
    /// The status handed to [`Effect::Publish`] and not yet answered (as `reported`).
    in_flight: Option<StatusDigest>,
    retry_at: Option<Instant>,
    /// A new pod is not reported before then ([`crate::config::FIRST_REPORT_DELAY`] after
    /// it was taken on) while it is being prepared or its first runs are being started: if
    /// it starts by then, its first report says Running, not Pending then Running (the
    /// second would wait for the first's answer). Cleared by the first report.
    first_report_at: Option<Instant>,
    /// A static pod whose mirror was deleted reports anew (making a new mirror) then.
    mirror_again_at: Option<Instant>,
}

/// The SHA-256 of a status's JSON text (see [`Publication::reported`]).
type StatusDigest = [u8; 32];

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
    pod: Arc<Pod>,
    state: PodState,
    view: PodView,
    init: Vec<Track>,
    main: Vec<Track>,
    settings: Settings,
    /// `imageID` of each image, once prepared.
    image_ids: VecMap<String, String>,
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
            state: PodState::Preparing { retry: None },
            settings,
            image_ids: VecMap::new(),
            publication: Publication::default(),
        }
    }

    pub fn state(&self) -> &PodState {
        &self.state
    }

    pub fn is_finished(&self) -> bool {
        self.state == PodState::Finished
    }

    fn uid(&self) -> String {
        self.pod.uid().unwrap_or_default()
    }
}

/// Back-off before attempt `step + 1`: `initial` doubling up to `max`. Pulls and crash
/// loops go from [`INITIAL_BACKOFF`] to [`MAX_BACKOFF`] (10 s to 5 min); something the pod
/// references that could not be read, from [`CONFIG_RETRY_INITIAL`] to [`CONFIG_RETRY_MAX`].
pub fn backoff(step: u32, initial: Duration, max: Duration) -> Duration {
    initial.saturating_mul(1u32.checked_shl(step.min(16)).unwrap_or(u32::MAX)).min(max)
}

#[cfg(test)]
mod tests;
