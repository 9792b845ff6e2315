//! Where one pod's start spends its time, from the watch event that brought the pod to the
//! API server's answer to its first Running status: a [`StartTrace`] carried through the
//! start (controller, prepare, container start, status report), observed once into
//! `krustlet_pod_start_phase_seconds{phase=...}` and logged at debug level. Wall-clock
//! (`std::time::Instant`): it measures the agent, not the test clock.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::metrics::Metrics;
use crate::objects::ObjectSource;
use crate::volumes::VolumeSource;

/// One step of a start. `Admission`, `Queue`, `Create` and `Status` follow one another;
/// `Volumes` and `Image` are the preparation (they run at once); `Token` and `Reads` are
/// the API calls made inside `Volumes` (and `Create`, for env); `Total` is all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The controller's admission checks, from the watch event to the worker's spawn.
    Admission,
    /// From the spawn to the preparation's first step (the worker's set-up).
    Queue,
    /// The pod's volumes: directories, tmpfs mounts, file writes and the API calls below.
    Volumes,
    /// TokenRequests for projected service-account tokens.
    Token,
    /// ConfigMap and Secret reads (volumes, env, imagePullSecrets).
    Reads,
    /// Looking the module up: the image store and the compiled-module cache (a pull and a
    /// compile when the image is new).
    Image,
    /// Starting the first container: env, mounts, log file, and the runtime's start (the
    /// guest is spawned; it instantiates on the guest threads).
    Create,
    /// From the container started to the API server's answer to the Running status.
    Status,
    /// From the watch event to that answer.
    Total,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Admission,
        Phase::Queue,
        Phase::Volumes,
        Phase::Token,
        Phase::Reads,
        Phase::Image,
        Phase::Create,
        Phase::Status,
        Phase::Total,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The value of the `phase` label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Admission => "admission",
            Phase::Queue => "queue",
            Phase::Volumes => "volumes",
            Phase::Token => "token",
            Phase::Reads => "reads",
            Phase::Image => "image",
            Phase::Create => "create",
            Phase::Status => "status",
            Phase::Total => "total",
        }
    }
}

#[derive(Debug, Default)]
struct Spans {
    /// Time spent in each phase so far, by its index in [`Phase::ALL`].
    spent: [Duration; Phase::ALL.len()],
    /// When the first container was started (the `Status` phase begins).
    started: Option<Instant>,
    /// Observed already: later starts (restarts) are not a pod's start.
    done: bool,
}

/// The trace of one pod's start; clones share it.
#[derive(Debug, Clone)]
pub struct StartTrace {
    seen: Instant,
    spans: Arc<Mutex<Spans>>,
}

impl StartTrace {
    /// A start whose watch event arrived at `seen`.
    pub fn new(seen: Instant) -> StartTrace {
        StartTrace { seen, spans: Arc::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Spans) -> T) -> T {
        f(&mut self.spans.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds `d` to `phase`.
    pub fn add(&self, phase: Phase, d: Duration) {
        self.with(|s| s.spent[phase.index()] += d);
    }

    /// Ends a phase that began when the previous one ended: `phase` gets the time from the
    /// watch event up to now, less what the sequential phases before it took. Only the
    /// first mark counts (a retried preparation does not queue again).
    pub fn mark(&self, phase: Phase) {
        let elapsed = self.seen.elapsed();
        self.with(|s| {
            let before = match phase {
                Phase::Queue => s.spent[Phase::Admission.index()],
                _ => Duration::ZERO,
            };
            let spent = &mut s.spent[phase.index()];
            if spent.is_zero() {
                *spent = elapsed.saturating_sub(before);
            }
        });
    }

    /// Runs `work`, adding its wall time to `phase`.
    pub async fn time<T>(&self, phase: Phase, work: impl Future<Output = T>) -> T {
        let began = Instant::now();
        let out = work.await;
        self.add(phase, began.elapsed());
        out
    }

    /// The first container was started now.
    pub fn started(&self) {
        self.with(|s| {
            s.started.get_or_insert_with(Instant::now);
        });
    }

    /// Whether the Running status this start waits for is still to be reported.
    pub fn awaits_report(&self) -> bool {
        self.with(|s| s.started.is_some() && !s.done)
    }

    /// Whether the start was reported already.
    pub fn is_over(&self) -> bool {
        self.with(|s| s.done)
    }

    /// The Running status was reported now: observes every phase once into `metrics`.
    pub fn reported(&self, metrics: &Metrics) {
        let spent = self.with(|s| {
            let started = s.started.filter(|_| !s.done)?;
            s.done = true;
            s.spent[Phase::Status.index()] = started.elapsed();
            s.spent[Phase::Total.index()] = self.seen.elapsed();
            Some(s.spent)
        });
        let Some(spent) = spent else { return };
        let us = |p: Phase| spent[p.index()].as_micros() as u64;
        tracing::debug!(
            admission_us = us(Phase::Admission),
            queue_us = us(Phase::Queue),
            volumes_us = us(Phase::Volumes),
            token_us = us(Phase::Token),
            reads_us = us(Phase::Reads),
            image_us = us(Phase::Image),
            create_us = us(Phase::Create),
            status_us = us(Phase::Status),
            total_us = us(Phase::Total),
            "start traced"
        );
        for (phase, d) in Phase::ALL.iter().zip(spent) {
            metrics.start_phase(phase.label(), d);
        }
    }
}

/// Reads through `source`, adding the time of each call to the trace: ConfigMaps and
/// Secrets to [`Phase::Reads`], TokenRequests to [`Phase::Token`].
pub struct Timed<'t, S> {
    pub source: S,
    pub trace: &'t StartTrace,
}

impl<S: ObjectSource> ObjectSource for Timed<'_, S> {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        self.trace.time(Phase::Reads, self.source.config_map(ns, name)).await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        self.trace.time(Phase::Reads, self.source.secret(ns, name)).await
    }
}

impl<S: VolumeSource> VolumeSource for Timed<'_, S> {
    async fn token_request(
        &self,
        ns: &str,
        sa: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, kube::Error> {
        self.trace.time(Phase::Token, self.source.token_request(ns, sa, request)).await
    }
}
