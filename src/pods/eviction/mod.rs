//! Eviction under pressure, as the kubelet's eviction manager does with hard thresholds.
//! Every [`EVICTION_MONITOR_PERIOD`] the node's free memory and disk are compared with
//! `--eviction-hard`: `memory.available` (the machine's, or what the agent's cgroup has
//! left), and also what the guests' memory budget has left (the budget less what every
//! guest holds) against the same threshold; `nodefs`/`imagefs` `available` and
//! `inodesFree` of the data dir's filesystem. A threshold crossed on
//! [`EVICTION_CONFIRMATIONS`] observations in a row evicts one pod (`rank.rs`), then the
//! count starts over. Disk pressure first asks image garbage collection to run (the
//! kubelet's node-level reclaim). Critical pods (static, mirror, system-critical priority)
//! are never evicted. The pod's worker does the rest (its `Evicted` status and Event).

pub mod rank;

use kube::ResourceExt;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use super::Host;
use super::directory::{Directory, PodEntry};
use super::resources::{is_critical, pod_requests, priority, request};
use crate::base::host;
use crate::config::eviction::{Crossing, EVICTION_CONFIRMATIONS, EVICTION_MONITOR_PERIOD, Signal};
use rank::{Candidate, Starved};

/// A pod to evict, and its status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub uid: String,
    pub message: String,
}

/// Starts watching for pressure on `host` (its data dir, allocatable and thresholds) by
/// the pods of `directory`; disk pressure first tells `image_gc`. The pods to evict come
/// out of the receiver.
pub fn start(
    host: Arc<Host>,
    directory: Directory,
    image_gc: Arc<tokio::sync::Notify>,
    shutdown: broadcast::Receiver<()>,
) -> mpsc::UnboundedReceiver<Eviction> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(host, directory, image_gc, tx, shutdown));
    rx
}

/// One resource found short: which, the threshold and what is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shortage {
    starved: Starved,
    threshold: u64,
    available: u64,
}

async fn run(
    host: Arc<Host>,
    directory: Directory,
    image_gc: Arc<tokio::sync::Notify>,
    tx: mpsc::UnboundedSender<Eviction>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let watched = host.resources.eviction_hard.0.iter().any(|t| starved_by(t.signal).is_some());
    if !watched {
        debug!("no memory or disk threshold in --eviction-hard: nothing is evicted");
        return;
    }
    let mut tick = tokio::time::interval(EVICTION_MONITOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streak: HashMap<Starved, u32> = HashMap::new();
    let mut evicted: HashSet<String> = HashSet::new();
    let mut images_collected = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        let shortages = observe(&host, &directory);
        streak.retain(|s, _| shortages.iter().any(|x| x.starved == *s));
        if !shortages.iter().any(|s| s.starved != Starved::Memory) {
            images_collected = false;
        }
        // Memory first, as the kubelet: it cannot wait.
        let Some(short) = shortages.iter().min_by_key(|s| s.starved != Starved::Memory).copied() else {
            continue;
        };
        let seen = streak.entry(short.starved).or_default();
        *seen += 1;
        if *seen < EVICTION_CONFIRMATIONS {
            continue;
        }
        streak.clear();
        if short.starved != Starved::Memory && !std::mem::replace(&mut images_collected, true) {
            info!(resource = short.starved.name(), "the node is low on disk: collecting unused images first");
            image_gc.notify_one();
            continue;
        }
        // Copied only now: a scan every second of 10,000 pods' entries is what an idle
        // node would spend its CPU on.
        let entries = directory.entries();
        evicted.retain(|uid| entries.iter().any(|e| e.pod.metadata.uid.as_deref() == Some(uid)));
        let candidates = candidates(&host, &entries, short.starved, &evicted).await;
        let Some(pod) = rank::first(&candidates) else {
            warn!(
                resource = short.starved.name(),
                available = short.available,
                "the node is low on a resource, but no pod may be evicted"
            );
            continue;
        };
        let message = rank::message(short.starved, short.threshold, short.available, pod);
        warn!(uid = %pod.uid, resource = short.starved.name(), "{message}");
        evicted.insert(pod.uid.clone());
        if tx.send(Eviction { uid: pod.uid.clone(), message }).is_err() {
            break;
        }
    }
}

/// Which resource a signal's threshold protects (PIDs: none; pods are not evicted for them).
fn starved_by(signal: Signal) -> Option<Starved> {
    match signal {
        Signal::MemoryAvailable => Some(Starved::Memory),
        Signal::NodefsAvailable | Signal::ImagefsAvailable => Some(Starved::EphemeralStorage),
        Signal::NodefsInodesFree | Signal::ImagefsInodesFree => Some(Starved::Inodes),
        Signal::PidAvailable => None,
    }
}

/// The resources short now: the thresholds the machine crosses, and the guests' budget's
/// headroom against the `memory.available` threshold.
fn observe(host: &Host, directory: &Directory) -> Vec<Shortage> {
    let hard = &host.resources.eviction_hard;
    let usage = host::memory_and_disk(&host.data_dir);
    let mut out: Vec<Shortage> = hard
        .crossings(&usage)
        .into_iter()
        .filter_map(|Crossing { signal, threshold, available }| {
            Some(Shortage { starved: starved_by(signal)?, threshold, available })
        })
        .collect();
    if let (Some(budget), Some(t)) = (host.resources.memory_budget, hard.of(Signal::MemoryAvailable)) {
        let held: u64 = directory.sum(pod_memory);
        let (threshold, available) = (t.amount(usage.memory_total_bytes), budget.saturating_sub(held));
        if available < threshold {
            out.push(Shortage { starved: Starved::Memory, threshold, available });
        }
    }
    // Of two memory shortages, the tighter one is told.
    out.sort_by_key(|s| (s.starved != Starved::Memory, s.available));
    out.dedup_by_key(|s| s.starved);
    out
}

/// What a pod's guests hold: its group's, else its running containers' together.
fn pod_memory(e: &PodEntry) -> u64 {
    match &e.group {
        Some(g) => (g.usage)().1,
        None => {
            e.containers.values().filter(|c| c.running).filter_map(|c| c.usage.as_ref()).map(|u| u().1).sum()
        }
    }
}

/// The pods that may be evicted for `starved`, with their use and requests of it.
async fn candidates(
    host: &Host,
    entries: &[PodEntry],
    starved: Starved,
    evicted: &HashSet<String>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for e in entries {
        let uid = e.pod.uid().unwrap_or_default();
        if is_critical(&e.pod) || evicted.contains(&uid) || !e.containers.values().any(|c| c.running) {
            continue;
        }
        let spec_containers = e.pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let resource = match starved {
            Starved::Memory => "memory",
            _ => "ephemeral-storage",
        };
        let requested = |name: &str| {
            spec_containers.iter().find(|c| c.name == name).and_then(|c| request(c, resource)).unwrap_or(0)
        };
        let requests = pod_requests(&e.pod);
        let (usage, request, containers) = match starved {
            Starved::Memory => {
                let containers = e
                    .containers
                    .iter()
                    .filter(|(_, c)| c.running)
                    .map(|(name, c)| (name.clone(), c.usage.as_ref().map_or(0, |u| u().1), requested(name)))
                    .collect();
                (pod_memory(e), requests.memory_bytes, containers)
            }
            _ => {
                let inodes = starved == Starved::Inodes;
                let (pod_dir, log_dir) = (host.pod_dir(&uid), e.log_dir.clone());
                let names: Vec<String> = e.containers.keys().cloned().collect();
                let measured = tokio::task::spawn_blocking(move || {
                    let logs: Vec<(String, (u64, u64))> =
                        names.into_iter().map(|n| (n.clone(), disk_use(&log_dir.join(&n)))).collect();
                    (disk_use(&pod_dir), logs)
                })
                .await;
                let Ok((volumes, logs)) = measured else { continue };
                let pick = |(bytes, files): (u64, u64)| if inodes { files } else { bytes };
                let total = pick(volumes) + logs.iter().map(|(_, u)| pick(*u)).sum::<u64>();
                let containers = logs
                    .into_iter()
                    .map(|(name, u)| {
                        let r = if inodes { 0 } else { requested(&name) };
                        (name, pick(u), r)
                    })
                    .collect();
                (total, if inodes { 0 } else { requests.ephemeral_storage_bytes }, containers)
            }
        };
        out.push(Candidate { uid, priority: priority(&e.pod), usage, request, containers });
    }
    out
}

/// Bytes and files under `dir` (not following symlinks).
fn disk_use(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total.1 += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total.0 += meta.len();
            }
        }
    }
    total
}
