//! Resource usage as the kubelet serves it, for `kubectl top` (through metrics-server) and
//! monitoring: `/stats/summary` (the stats/v1alpha1 Summary: node, pods, containers) and
//! `/metrics/resource` (Prometheus, the kubelet's metric names). Per container and per pod:
//! the CPU time their guests ran and the bytes of their linear memories and tables, read
//! from their resource groups (as a kubelet reads cgroups: every run, exec instance and
//! wasi:http request instance counts); the node's from `/proc`. Computed when asked: no
//! timer runs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ServerState;
use crate::base::time::rfc3339_of;
use crate::pods::directory::PodEntry;

/// CPU rates need two readings: the last reading of each container (and the node), and
/// the rate computed then.
#[derive(Default)]
pub struct CpuRates(Mutex<HashMap<String, (Instant, u64, u64)>>);

/// Readings less than this apart keep the rate computed before (a rate over a few
/// milliseconds would be noise).
const MIN_RATE_WINDOW: f64 = 1.0;

impl CpuRates {
    /// Nano-cores used by `key`, whose cumulative CPU time is now `nanos`; `since` is when
    /// it started, for a first reading (the average over its life).
    fn rate(&self, key: &str, nanos: u64, since: Option<SystemTime>) -> u64 {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key).copied() {
            Some((at, before, rate)) => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs < MIN_RATE_WINDOW {
                    return rate;
                }
                let rate = (nanos.saturating_sub(before) as f64 / secs) as u64;
                map.insert(key.to_string(), (now, nanos, rate));
                rate
            }
            None => {
                let lived = since.and_then(|s| s.elapsed().ok()).map_or(0.0, |d| d.as_secs_f64());
                let rate = if lived > 0.0 { (nanos as f64 / lived) as u64 } else { 0 };
                map.insert(key.to_string(), (now, nanos, rate));
                rate
            }
        }
    }

    /// Forgets containers no longer running.
    fn keep(&self, live: &std::collections::HashSet<String>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| k == "node" || live.contains(k));
    }
}

/// One running container's figures.
struct ContainerStats {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    started: SystemTime,
    cpu_nanos: u64,
    nano_cores: u64,
    memory: u64,
}

/// One pod's figures: its resource group's (every container and instance of it, a
/// wasi:http server's requests included), else its running containers' together.
struct PodStats {
    containers: Vec<ContainerStats>,
    cpu_nanos: u64,
    nano_cores: u64,
    memory: u64,
}

/// The pods with a running container, and their figures.
fn pods(state: &ServerState) -> Vec<PodStats> {
    let mut out = Vec::new();
    let mut live = std::collections::HashSet::new();
    let entries: Vec<PodEntry> = state.pods.entries();
    for entry in entries {
        let m = &entry.pod.metadata;
        let (namespace, pod, uid) = (
            m.namespace.clone().unwrap_or_else(|| "default".into()),
            m.name.clone().unwrap_or_default(),
            m.uid.clone().unwrap_or_default(),
        );
        let mut containers = Vec::new();
        for (name, c) in entry.containers.iter().filter(|(_, c)| c.running) {
            let Some(usage) = &c.usage else { continue };
            let (cpu_nanos, memory) = usage();
            // A group's CPU counts every run of the container since the group was made.
            let (key, since) = match &c.group {
                Some(g) => (format!("{uid}/{name}"), g.since),
                None => (format!("{uid}/{name}/{}", c.run), c.started),
            };
            let nano_cores = state.cpu_rates.rate(&key, cpu_nanos, Some(since));
            live.insert(key);
            containers.push(ContainerStats {
                namespace: namespace.clone(),
                pod: pod.clone(),
                uid: uid.clone(),
                container: name.clone(),
                started: c.started,
                cpu_nanos,
                nano_cores,
                memory,
            });
        }
        if containers.is_empty() {
            continue;
        }
        let (cpu_nanos, nano_cores, memory) = match &entry.group {
            Some(g) => {
                let (cpu, memory) = (g.usage)();
                let rate = state.cpu_rates.rate(&uid, cpu, Some(g.since));
                live.insert(uid.clone());
                (cpu, rate, memory)
            }
            None => containers
                .iter()
                .fold((0, 0, 0), |(a, b, c), s| (a + s.cpu_nanos, b + s.nano_cores, c + s.memory)),
        };
        out.push(PodStats { containers, cpu_nanos, nano_cores, memory });
    }
    state.cpu_rates.keep(&live);
    out
}

/// The host's busy CPU time (all cores, nanoseconds) and (total, available, free) memory.
fn host() -> (u64, u64, u64, u64) {
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy: u64 = stat
        .lines()
        .next()
        .map(|l| {
            // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
            l.split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    };
    let total = kib("MemTotal:").unwrap_or(0) * 1024;
    (
        busy.saturating_mul(1_000_000_000 / ticks),
        total,
        kib("MemAvailable:").unwrap_or(0) * 1024,
        kib("MemFree:").unwrap_or(0) * 1024,
    )
}

fn cpu(now: &str, nanos: u64, nano_cores: u64) -> Value {
    json!({"time": now, "usageNanoCores": nano_cores, "usageCoreNanoSeconds": nanos})
}

fn memory(now: &str, bytes: u64) -> Value {
    json!({"time": now, "usageBytes": bytes, "workingSetBytes": bytes, "rssBytes": bytes, "pageFaults": 0, "majorPageFaults": 0})
}

/// `/stats/summary`.
pub async fn summary(State(state): State<Arc<ServerState>>) -> Response {
    let now = rfc3339_of(SystemTime::now());
    let list = pods(&state);
    let (busy, total, available, free) = host();
    let node_rate = state.cpu_rates.rate("node", busy, None);
    let pods: Vec<Value> = list
        .iter()
        .map(|p| {
            let first = &p.containers[0];
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    json!({"name": c.container, "startTime": rfc3339_of(c.started),
                        "cpu": cpu(&now, c.cpu_nanos, c.nano_cores), "memory": memory(&now, c.memory)})
                })
                .collect();
            let started = p.containers.iter().map(|c| c.started).min().unwrap_or(first.started);
            json!({
                "podRef": {"name": first.pod, "namespace": first.namespace, "uid": first.uid},
                "startTime": rfc3339_of(started), "containers": containers,
                "cpu": cpu(&now, p.cpu_nanos, p.nano_cores),
                "memory": memory(&now, p.memory),
            })
        })
        .collect();
    let used = total.saturating_sub(available);
    let body = json!({
        "node": {
            "nodeName": state.node_name,
            "startTime": rfc3339_of(SystemTime::now() - std::time::Duration::from_secs(uptime())),
            "cpu": cpu(&now, busy, node_rate),
            "memory": {"time": now, "availableBytes": available, "usageBytes": total.saturating_sub(free),
                "workingSetBytes": used, "rssBytes": used, "pageFaults": 0, "majorPageFaults": 0},
        },
        "pods": pods,
    });
    axum::Json(body).into_response()
}

fn uptime() -> u64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    text.split('.').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `/metrics/resource`.
pub async fn resource(State(state): State<Arc<ServerState>>) -> Response {
    let pods = pods(&state);
    let list: Vec<&ContainerStats> = pods.iter().flat_map(|p| &p.containers).collect();
    let (busy, total, available, _) = host();
    let mut out = String::new();
    let family = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let _ = writeln!(out, "node_cpu_usage_seconds_total {}", busy as f64 / 1e9);
    family(&mut out, "node_memory_working_set_bytes", "Current working set of the node in bytes", "gauge");
    let _ = writeln!(out, "node_memory_working_set_bytes {}", total.saturating_sub(available));
    let labels = |c: &&ContainerStats| {
        format!("container=\"{}\",namespace=\"{}\",pod=\"{}\"", c.container, c.namespace, c.pod)
    };
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for c in &list {
        let _ =
            writeln!(out, "container_cpu_usage_seconds_total{{{}}} {}", labels(c), c.cpu_nanos as f64 / 1e9);
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for c in &list {
        let _ = writeln!(out, "container_memory_working_set_bytes{{{}}} {}", labels(c), c.memory);
    }
    family(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for c in &list {
        let secs = c.started.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(out, "container_start_time_seconds{{{}}} {secs}", labels(c));
    }
    let pods: Vec<(&str, &str, u64, u64)> = pods
        .iter()
        .map(|p| (p.containers[0].namespace.as_str(), p.containers[0].pod.as_str(), p.cpu_nanos, p.memory))
        .collect();
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for (ns, pod, cpu, _) in &pods {
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{pod}\"}} {}",
            *cpu as f64 / 1e9
        );
    }
    family(&mut out, "pod_memory_working_set_bytes", "Current working set of the pod in bytes", "gauge");
    for (ns, pod, _, mem) in &pods {
        let _ = writeln!(out, "pod_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{pod}\"}} {mem}");
    }
    family(
        &mut out,
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let _ = writeln!(out, "scrape_error 0");
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
