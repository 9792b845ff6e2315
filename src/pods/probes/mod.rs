//! Container probes (startup, readiness, liveness) for the whole node: one task and one
//! timer heap, not a task and a sleep per probe. A pod worker registers a running
//! container's probes and gets back transitions only (started, ready or not, failed past
//! its threshold); every failed attempt also gives an `Unhealthy` Event, as the kubelet's.

mod check;
pub mod spec;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

pub use check::Target;
pub use spec::{Handler, ProbeKind, ProbeSpec, has, probes_of};

/// What the prober tells a pod worker about one container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe succeeded (or cannot run here): the other probes start.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// A liveness or startup probe failed `failureThreshold` times in a row: the
    /// container is to be killed. Nothing more is probed for this run.
    Failed { kind: ProbeKind, message: String },
}

/// Where a registration's transitions go.
pub type Report = Arc<dyn Fn(ProbeEvent) + Send + Sync>;
/// Where a registration's `Unhealthy` messages go (`Liveness probe failed: ...`).
pub type Unhealthy = Arc<dyn Fn(String) + Send + Sync>;

/// One container run's probes.
pub struct Registration {
    pub probes: Vec<ProbeSpec>,
    pub target: Target,
    pub report: Report,
    pub unhealthy: Unhealthy,
}

enum Command {
    Add(u64, Box<Registration>),
    Remove(u64),
}

/// The node's prober. Cheap to share.
pub struct Prober {
    tx: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
}

/// Keeps a registration alive; dropping it stops its probes.
pub struct ProbeHandle {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Remove(self.id));
    }
}

impl Prober {
    /// Starts the prober's task (on the current tokio runtime).
    pub fn start() -> Prober {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Prober { tx, next_id: AtomicU64::new(1) }
    }

    /// Starts probing a container run, from now.
    pub fn register(&self, registration: Registration) -> ProbeHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Command::Add(id, Box::new(registration)));
        ProbeHandle { id, tx: self.tx.clone() }
    }
}

/// A registration's state in the prober.
struct Entry {
    reg: Registration,
    since: Instant,
    started: bool,
    /// Consecutive (successes, failures) of each probe.
    counts: Vec<(u32, u32)>,
    ready: Option<bool>,
    /// A liveness or startup failure was reported: nothing more to probe.
    dead: bool,
}

impl Entry {
    fn runnable(&self, i: usize) -> bool {
        !matches!(self.reg.probes[i].handler, Handler::Unsupported(_))
    }

    /// The probes due once startup has succeeded (or at once, without a startup probe).
    fn after_startup(&self, id: u64, now: Instant, due: &mut BinaryHeap<Reverse<(Instant, u64, usize)>>) {
        for (i, p) in self.reg.probes.iter().enumerate() {
            if p.kind != ProbeKind::Startup && self.runnable(i) {
                due.push(Reverse(((self.since + p.initial_delay).max(now), id, i)));
            }
        }
    }
}

type Heap = BinaryHeap<Reverse<(Instant, u64, usize)>>;

/// The prober's task: registrations, a heap of due probes, and the results coming back.
async fn run(mut commands: mpsc::UnboundedReceiver<Command>) {
    // reqwest needs a process-wide rustls provider: the agent installs ring at start;
    // this covers a prober started before it (tests), and is a no-op after.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .ok();
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    let mut due: Heap = BinaryHeap::new();
    let (results_tx, mut results) = mpsc::unbounded_channel::<(u64, usize, check::Outcome)>();
    loop {
        let next = due.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add(id, reg)) => add(id, *reg, &mut entries, &mut due),
                Some(Command::Remove(id)) => {
                    entries.remove(&id);
                }
            },
            Some((id, i, outcome)) = results.recv() => {
                if let Some(entry) = entries.get_mut(&id) {
                    result(id, entry, i, outcome, &mut due);
                }
            }
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while let Some(Reverse((at, id, i))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    let Some(entry) = entries.get(&id).filter(|e| !e.dead) else { continue };
                    let spec = entry.reg.probes[i].clone();
                    let (target, tx, client) = (entry.reg.target.clone(), results_tx.clone(), client.clone());
                    tokio::spawn(async move {
                        let outcome = match &client {
                            Some(c) => check::run(&spec.handler, &target, c, spec.timeout).await,
                            None => Err("the node has no HTTP client for probes".into()),
                        };
                        let _ = tx.send((id, i, outcome));
                    });
                }
            }
        }
    }
}

fn add(id: u64, reg: Registration, entries: &mut HashMap<u64, Entry>, due: &mut Heap) {
    let now = Instant::now();
    let counts = vec![(0, 0); reg.probes.len()];
    let mut entry = Entry { reg, since: now, started: false, counts, ready: None, dead: false };
    let startup = entry.reg.probes.iter().position(|p| p.kind == ProbeKind::Startup);
    match startup {
        Some(i) if entry.runnable(i) => {
            due.push(Reverse((now + entry.reg.probes[i].initial_delay, id, i)));
        }
        other => {
            entry.started = true;
            if other.is_some() {
                (entry.reg.report)(ProbeEvent::Started);
            }
            entry.after_startup(id, now, due);
        }
    }
    // A readiness probe that cannot run here does not hold the pod back.
    let unready = entry
        .reg
        .probes
        .iter()
        .enumerate()
        .any(|(i, p)| p.kind == ProbeKind::Readiness && !entry.runnable(i));
    if unready {
        entry.ready = Some(true);
        (entry.reg.report)(ProbeEvent::Ready(true));
    }
    entries.insert(id, entry);
}

/// One probe's result: count it, report a transition, schedule the next attempt.
fn result(id: u64, entry: &mut Entry, i: usize, outcome: check::Outcome, due: &mut Heap) {
    if entry.dead {
        return;
    }
    let now = Instant::now();
    let spec = entry.reg.probes[i].clone();
    let (successes, failures) = &mut entry.counts[i];
    match &outcome {
        Ok(()) => (*successes, *failures) = (successes.saturating_add(1), 0),
        Err(message) => {
            (*successes, *failures) = (0, failures.saturating_add(1));
            (entry.reg.unhealthy)(format!("{} probe failed: {message}", spec.kind));
        }
    }
    let (successes, failures) = entry.counts[i];
    let again = match (spec.kind, outcome) {
        (ProbeKind::Startup, Ok(())) => {
            entry.started = true;
            (entry.reg.report)(ProbeEvent::Started);
            entry.after_startup(id, now, due);
            false
        }
        (ProbeKind::Startup | ProbeKind::Liveness, Err(message)) if failures >= spec.failure_threshold => {
            entry.dead = true;
            (entry.reg.report)(ProbeEvent::Failed { kind: spec.kind, message });
            false
        }
        (ProbeKind::Readiness, Ok(()))
            if successes >= spec.success_threshold && entry.ready != Some(true) =>
        {
            entry.ready = Some(true);
            (entry.reg.report)(ProbeEvent::Ready(true));
            true
        }
        (ProbeKind::Readiness, Err(_))
            if failures >= spec.failure_threshold && entry.ready != Some(false) =>
        {
            entry.ready = Some(false);
            (entry.reg.report)(ProbeEvent::Ready(false));
            true
        }
        _ => true,
    };
    if again {
        due.push(Reverse((now + spec.period, id, i)));
    }
}

#[cfg(test)]
mod tests;
