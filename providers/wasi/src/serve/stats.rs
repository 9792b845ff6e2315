//! [`HttpStats`]: what one served HTTP artifact counted, as atomics a metrics endpoint
//! reads while the server runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one HTTP run. Every field only grows except `in_flight`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests read from a client, whatever their answer (503s included).
    pub requests: AtomicU64,
    /// Requests whose instance trapped, failed in a host call, failed to instantiate,
    /// or ended without a response: a 500 (when no response had been sent yet).
    pub trapped: AtomicU64,
    /// Requests whose instance ran out of its own memory limit (the spec's, per
    /// instance): a 500.
    pub out_of_memory: AtomicU64,
    /// Requests whose instance the run's cgroup (the pod's memory limit, shared by all
    /// its instances) or the node's memory budget refused memory, at instantiation or as
    /// it grew: a 503 (when no response had been sent yet; else the body is cut).
    pub over_memory: AtomicU64,
    /// Requests whose instance ran past the request timeout: a 500.
    pub timed_out: AtomicU64,
    /// Requests refused with a 503 because the concurrency cap, the connection cap or
    /// the node's pool of request instances was full.
    pub over_capacity: AtomicU64,
    /// Connections closed as soon as accepted because the run's rules refused the client
    /// (no response, no instance).
    pub refused: AtomicU64,
    /// Instances running now.
    pub in_flight: AtomicU64,
    /// Instances requests ran in (one per request that got past the caps), whether made
    /// for the request or ahead of it (a spare: one made and never used is not counted).
    pub instantiated: AtomicU64,
    /// Time spent creating them, from building the store to a ready instance, in
    /// nanoseconds summed: divided by `instantiated`, the cost of a request's instance
    /// (the request waited for it only when it was not made ahead).
    pub instantiate_nanos: AtomicU64,
}

/// A copy of [`HttpStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStatsSnapshot {
    /// See [`HttpStats::requests`].
    pub requests: u64,
    /// See [`HttpStats::trapped`].
    pub trapped: u64,
    /// See [`HttpStats::out_of_memory`].
    pub out_of_memory: u64,
    /// See [`HttpStats::over_memory`].
    pub over_memory: u64,
    /// See [`HttpStats::timed_out`].
    pub timed_out: u64,
    /// See [`HttpStats::over_capacity`].
    pub over_capacity: u64,
    /// See [`HttpStats::refused`].
    pub refused: u64,
    /// See [`HttpStats::in_flight`].
    pub in_flight: u64,
    /// See [`HttpStats::instantiated`].
    pub instantiated: u64,
    /// See [`HttpStats::instantiate_nanos`].
    pub instantiate_nanos: u64,
}

impl HttpStats {
    /// Reads every counter (each on its own; they may move in between).
    pub fn snapshot(&self) -> HttpStatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HttpStatsSnapshot {
            requests: read(&self.requests),
            trapped: read(&self.trapped),
            out_of_memory: read(&self.out_of_memory),
            over_memory: read(&self.over_memory),
            timed_out: read(&self.timed_out),
            over_capacity: read(&self.over_capacity),
            refused: read(&self.refused),
            in_flight: read(&self.in_flight),
            instantiated: read(&self.instantiated),
            instantiate_nanos: read(&self.instantiate_nanos),
        }
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instantiated(&self, took: std::time::Duration) {
        self.instantiated.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.instantiate_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Holds one `in_flight` place; gives it back when dropped.
pub(crate) struct InFlight<'a>(&'a HttpStats);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(stats: &'a HttpStats) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
