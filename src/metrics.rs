//! Node metrics in the Prometheus text format (`/metrics`): container starts, start
//! latency and its phases, image pull duration, exits by reason, log bytes written, refused network use.
//! Lock-free counters that pod workers and socket checks bump; the server renders them
//! with the current pod counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Upper bounds (seconds) of the start phase histograms: a phase of a start takes from
/// about 0.1 ms (admission) to tens of ms (a status report under load).
const PHASE_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.3, 1.0, 10.0];

/// A Prometheus histogram with fixed buckets ([`BUCKETS`] unless made with others).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_buckets(&BUCKETS)
    }
}

impl Histogram {
    /// A histogram with these upper bounds (seconds, ascending).
    pub fn with_buckets(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in self.bounds.iter().enumerate() {
            if s <= *le {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The series of one histogram of a family: `labels` (`a="b",`) before `le`.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        for (i, le) in self.bounds.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces =
            |l: &str| if l.is_empty() { String::new() } else { format!("{{{}}}", l.trim_end_matches(',')) };
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{} {sum}\n{name}_count{} {count}", braces(labels), braces(labels));
    }
}

/// Counters of a run that serves requests, read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeCounters {
    pub requests: u64,
    /// Answered 500: the guest trapped.
    pub trapped: u64,
    /// Answered 500: the guest ran out of memory.
    pub out_of_memory: u64,
    /// Answered 500: past the request timeout.
    pub timed_out: u64,
    /// Answered 503: over the concurrency cap.
    pub over_capacity: u64,
    /// Answered 503: the pod's memory limit (or the node's budget) refused its instance.
    pub over_memory: u64,
    pub in_flight: u64,
}

/// Reads a run's resource use: (CPU nanoseconds so far, memory bytes now).
pub type UsageFn = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Reads a serving run's counters.
pub type CountersFn = Arc<dyn Fn() -> ServeCounters + Send + Sync>;

/// A serving container, as its series are labelled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Which way a refused use of the network went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into a pod: a connection or datagram from a peer, or a bind or listen.
    Ingress,
    /// Out of a pod: a connection, datagram or outgoing HTTP request.
    Egress,
}

/// Why a use of the network was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// A NetworkPolicy.
    Policy,
    /// A range of `--pod-egress-deny`.
    DeniedRange,
    /// One of the agent's own ports.
    AgentPort,
    /// A bind or listen on a port (or address) the pod may not have.
    Port,
}

/// The (direction, reason) pairs `krustlet_network_refused_total` reports.
const REFUSALS: [(Direction, RefusedBy, &str, &str); 6] = [
    (Direction::Ingress, RefusedBy::Policy, "ingress", "policy"),
    (Direction::Ingress, RefusedBy::Port, "ingress", "port"),
    (Direction::Egress, RefusedBy::Policy, "egress", "policy"),
    (Direction::Egress, RefusedBy::DeniedRange, "egress", "denied-range"),
    (Direction::Egress, RefusedBy::AgentPort, "egress", "agent-port"),
    (Direction::Ingress, RefusedBy::AgentPort, "ingress", "agent-port"),
];

/// Everything `/metrics` reports besides the pod counts.
#[derive(Default)]
pub struct Metrics {
    /// The counters of each running server (removed when its run ends).
    servers: Mutex<BTreeMap<ServerKey, CountersFn>>,
    pub container_starts: AtomicU64,
    /// From the pod being seen to its container running (first run only).
    pub start_latency: Histogram,
    pub image_pull: Histogram,
    /// Each phase of pods' starts (see `pods::worker::trace`), by the phase's label.
    start_phases: Mutex<BTreeMap<&'static str, Histogram>>,
    pub log_bytes: AtomicU64,
    exits: Mutex<BTreeMap<&'static str, u64>>,
    /// Refused network uses, by the index of their pair in [`REFUSALS`].
    refused: [AtomicU64; REFUSALS.len()],
}

impl Metrics {
    /// A use of the network was refused.
    pub fn network_refused(&self, direction: Direction, by: RefusedBy) {
        if let Some(i) = REFUSALS.iter().position(|(d, r, _, _)| *d == direction && *r == by) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render_refused(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP krustlet_network_refused_total Guest network use refused: connections, datagrams and outgoing HTTP requests by NetworkPolicy (policy), --pod-egress-deny (denied-range) or because they target the agent's own ports (agent-port); binds and listens on ports or addresses the pod may not have (port).\n# TYPE krustlet_network_refused_total counter"
        );
        for (i, (_, _, direction, reason)) in REFUSALS.iter().enumerate() {
            let n = self.refused[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "krustlet_network_refused_total{{direction=\"{direction}\",reason=\"{reason}\"}} {n}"
            );
        }
    }

    /// One phase of a pod's start took `d`.
    pub fn start_phase(&self, phase: &'static str, d: Duration) {
        let mut phases = self.start_phases.lock().unwrap_or_else(|p| p.into_inner());
        phases.entry(phase).or_insert_with(|| Histogram::with_buckets(&PHASE_BUCKETS)).observe(d);
    }

    fn render_start_phases(&self, out: &mut String) {
        let name = "krustlet_pod_start_phase_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Where pods' starts spend their time, from the watch event to the API server's answer to the first Running status: admission (the node's checks), queue (the worker's set-up), volumes (directories, mounts, files, and the token and reads within), token (TokenRequests), reads (ConfigMap and Secret GETs), image (module lookup; a pull and compile when new), create (env, mounts, log, the runtime's start), status (the Running status report), total. Volumes and image run at once.\n# TYPE {name} histogram"
        );
        for (phase, h) in self.start_phases.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            h.render_series(out, name, &format!("phase=\"{phase}\","));
        }
    }

    pub fn exited(&self, reason: &'static str) {
        *self.exits.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
    }

    /// A run that serves requests started (its series replace an earlier run's).
    pub fn serving(&self, key: ServerKey, counters: CountersFn) {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).insert(key, counters);
    }

    /// A serving run ended: its series go.
    pub fn stopped_serving(&self, key: &ServerKey) {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    fn render_servers(&self, out: &mut String) {
        let servers: Vec<(ServerKey, ServeCounters)> =
            (self.servers.lock().unwrap_or_else(|p| p.into_inner()))
                .iter()
                .map(|(k, f)| (k.clone(), f()))
                .collect();
        let labels = |k: &ServerKey| {
            format!("namespace=\"{}\",pod=\"{}\",container=\"{}\"", k.namespace, k.pod, k.container)
        };
        let _ = writeln!(
            out,
            "# HELP krustlet_http_requests_total Requests a wasi:http container answered.\n# TYPE krustlet_http_requests_total counter"
        );
        for (k, c) in &servers {
            let _ = writeln!(out, "krustlet_http_requests_total{{{}}} {}", labels(k), c.requests);
        }
        let _ = writeln!(
            out,
            "# HELP krustlet_http_errors_total Requests answered 500 (the guest trapped, ran out of memory or past its timeout) or 503 (over the concurrency cap, or over the pod's memory limit).\n# TYPE krustlet_http_errors_total counter"
        );
        for (k, c) in &servers {
            let causes = [
                ("trap", c.trapped),
                ("out_of_memory", c.out_of_memory),
                ("timeout", c.timed_out),
                ("over_capacity", c.over_capacity),
                ("over_memory", c.over_memory),
            ];
            for (cause, n) in causes {
                let _ = writeln!(out, "krustlet_http_errors_total{{{},cause=\"{cause}\"}} {n}", labels(k));
            }
        }
        let _ = writeln!(
            out,
            "# HELP krustlet_http_requests_in_flight Requests a wasi:http container is handling now.\n# TYPE krustlet_http_requests_in_flight gauge"
        );
        for (k, c) in &servers {
            let _ = writeln!(out, "krustlet_http_requests_in_flight{{{}}} {}", labels(k), c.in_flight);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, running_pods: usize, running_containers: usize) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge(
            &mut out,
            "krustlet_running_pods",
            "Pods with at least one running container.",
            running_pods as u64,
            "gauge",
        );
        gauge(
            &mut out,
            "krustlet_running_containers",
            "Containers running now.",
            running_containers as u64,
            "gauge",
        );
        let starts = self.container_starts.load(Ordering::Relaxed);
        gauge(&mut out, "krustlet_container_starts_total", "Container runs started.", starts, "counter");
        self.start_latency.render(
            &mut out,
            "krustlet_pod_start_seconds",
            "Pod seen to first container running.",
        );
        self.image_pull.render(&mut out, "krustlet_image_pull_seconds", "Image pull (and compile) duration.");
        self.render_start_phases(&mut out);
        let _ = writeln!(
            out,
            "# HELP krustlet_container_exits_total Container runs ended, by reason.\n# TYPE krustlet_container_exits_total counter"
        );
        for (reason, n) in self.exits.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "krustlet_container_exits_total{{reason=\"{reason}\"}} {n}");
        }
        let bytes = self.log_bytes.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "krustlet_log_bytes_total",
            "Bytes containers wrote to their logs.",
            bytes,
            "counter",
        );
        self.render_servers(&mut out);
        self.render_refused(&mut out);
        out
    }
}

/// Counts the bytes written through it into `Metrics::log_bytes`.
pub struct Counted<W> {
    pub inner: W,
    pub metrics: Arc<Metrics>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.metrics.log_bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.container_starts.fetch_add(3, Ordering::Relaxed);
        m.start_latency.observe(Duration::from_millis(12));
        m.exited("OOMKilled");
        m.exited("Completed");
        m.exited("Completed");
        let text = m.render(2, 5);
        assert!(text.contains("krustlet_running_pods 2\n"), "{text}");
        assert!(text.contains("krustlet_running_containers 5\n"));
        assert!(text.contains("krustlet_container_starts_total 3\n"));
        assert!(text.contains("krustlet_pod_start_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("krustlet_pod_start_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("krustlet_pod_start_seconds_count 1\n"));
        assert!(text.contains("krustlet_container_exits_total{reason=\"Completed\"} 2\n"));
        assert!(text.contains("krustlet_container_exits_total{reason=\"OOMKilled\"} 1\n"));
        assert!(!text.contains("krustlet_pod_start_phase_seconds_count"), "no start, no series");
        m.start_phase("status", Duration::from_micros(1500));
        m.start_phase("status", Duration::from_millis(30));
        let text = m.render(0, 0);
        let series = "krustlet_pod_start_phase_seconds";
        assert!(text.contains(&format!("{series}_bucket{{phase=\"status\",le=\"0.001\"}} 0\n")), "{text}");
        assert!(text.contains(&format!("{series}_bucket{{phase=\"status\",le=\"0.002\"}} 1\n")));
        assert!(text.contains(&format!("{series}_bucket{{phase=\"status\",le=\"+Inf\"}} 2\n")));
        assert!(text.contains(&format!("{series}_count{{phase=\"status\"}} 2\n")));
        assert!(text.contains(&format!("{series}_sum{{phase=\"status\"}} 0.0315\n")));

        let key = ServerKey { namespace: "ns".into(), pod: "web".into(), container: "c".into() };
        let counters =
            ServeCounters { requests: 7, trapped: 1, over_capacity: 2, in_flight: 3, ..Default::default() };
        m.serving(key.clone(), Arc::new(move || counters));
        let text = m.render(0, 0);
        let labels = "namespace=\"ns\",pod=\"web\",container=\"c\"";
        assert!(text.contains(&format!("krustlet_http_requests_total{{{labels}}} 7\n")), "{text}");
        assert!(text.contains(&format!("krustlet_http_errors_total{{{labels},cause=\"trap\"}} 1\n")));
        assert!(
            text.contains(&format!("krustlet_http_errors_total{{{labels},cause=\"over_capacity\"}} 2\n"))
        );
        assert!(text.contains(&format!("krustlet_http_requests_in_flight{{{labels}}} 3\n")));
        m.stopped_serving(&key);
        assert!(!m.render(0, 0).contains("pod=\"web\""));

        m.network_refused(Direction::Egress, RefusedBy::DeniedRange);
        m.network_refused(Direction::Egress, RefusedBy::DeniedRange);
        m.network_refused(Direction::Ingress, RefusedBy::Policy);
        let text = m.render(0, 0);
        assert!(
            text.contains("krustlet_network_refused_total{direction=\"egress\",reason=\"denied-range\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("krustlet_network_refused_total{direction=\"ingress\",reason=\"policy\"} 1\n"));
        assert!(text.contains("krustlet_network_refused_total{direction=\"egress\",reason=\"policy\"} 0\n"));
    }
}
