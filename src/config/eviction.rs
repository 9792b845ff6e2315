//! Hard eviction thresholds (`--eviction-hard`, in the kubelet's syntax:
//! `memory.available<100Mi,nodefs.available<10%`): how little free memory, disk, inodes or
//! PIDs counts as MemoryPressure, DiskPressure or PIDPressure. The node lifecycle
//! controller turns a pressure condition into a NoSchedule taint, so nothing new is
//! scheduled here until it passes. Disk and inodes are those of `--data-dir`'s filesystem
//! (modules, compiled code and logs live there), so `nodefs` and `imagefs` are the same.
//!
//! Crossing a memory or disk threshold also evicts pods, as the kubelet's hard eviction
//! does (`pods/eviction/`), observed every [`EVICTION_MONITOR_PERIOD`].

use std::time::Duration;

use crate::base::host::Usage;

/// How often the eviction manager observes memory and disk against `--eviction-hard`
/// (the kubelet's housekeeping is 10 s; a guest grows its memory much faster than that, and
/// one observation costs a read of `/proc/meminfo`, the agent's cgroup and one `statvfs`).
pub const EVICTION_MONITOR_PERIOD: Duration = Duration::from_secs(1);

/// How many consecutive observations must cross a threshold before a pod is evicted: 2,
/// so one second at least. A guest refused at the node's memory budget exits at once
/// (OOMKilled) and gives its memory back: it is charged for that, and no other pod is
/// evicted for a pressure that already passed. After an eviction the count starts over,
/// so the next pod goes only if the pressure outlives the evicted pod's exit.
pub const EVICTION_CONFIRMATIONS: u32 = 2;

/// What a threshold watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    ImagefsAvailable,
    NodefsInodesFree,
    ImagefsInodesFree,
    PidAvailable,
}

const SIGNALS: [(Signal, &str); 6] = [
    (Signal::MemoryAvailable, "memory.available"),
    (Signal::NodefsAvailable, "nodefs.available"),
    (Signal::ImagefsAvailable, "imagefs.available"),
    (Signal::NodefsInodesFree, "nodefs.inodesFree"),
    (Signal::ImagefsInodesFree, "imagefs.inodesFree"),
    (Signal::PidAvailable, "pid.available"),
];

/// The node condition a signal feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    Memory,
    Disk,
    Pid,
}

impl Signal {
    pub fn name(self) -> &'static str {
        SIGNALS.iter().find(|(s, _)| *s == self).map(|(_, n)| *n).unwrap_or("")
    }

    pub fn pressure(self) -> Pressure {
        match self {
            Signal::MemoryAvailable => Pressure::Memory,
            Signal::PidAvailable => Pressure::Pid,
            _ => Pressure::Disk,
        }
    }

    /// `(available, capacity)` now, or `None` where the machine did not tell.
    fn observe(self, u: &Usage) -> Option<(u64, u64)> {
        let (available, capacity) = match self {
            Signal::MemoryAvailable => (u.memory_available_bytes, u.memory_total_bytes),
            Signal::NodefsAvailable | Signal::ImagefsAvailable => {
                (u.disk_available_bytes, u.disk_total_bytes)
            }
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => (u.inodes_free, u.inodes_total),
            Signal::PidAvailable => (u.pid_max.saturating_sub(u.pids_in_use), u.pid_max),
        };
        (capacity > 0).then_some((available, capacity))
    }
}

/// A threshold's amount: a quantity (bytes, inodes or PIDs) or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Quantity(u64),
    Percent(f64),
}

/// `signal < amount` means pressure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub below: Amount,
}

/// All thresholds in force.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Thresholds(pub Vec<Threshold>);

/// Parses `--eviction-hard`: comma-separated `signal<amount` items, the amount a quantity
/// (`100Mi`, `1Gi`, `5000`) or a percentage (`10%`). Empty: no thresholds. The error says
/// which item is wrong and why.
pub fn parse(raw: &str) -> Result<Thresholds, String> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, amount) = item
            .split_once('<')
            .ok_or_else(|| format!("{item:?} is not signal<amount (e.g. nodefs.available<1Gi)"))?;
        let signal = SIGNALS.iter().find(|(_, n)| *n == name.trim()).map(|(s, _)| *s).ok_or_else(|| {
            let known: Vec<&str> = SIGNALS.iter().map(|(_, n)| *n).collect();
            format!("unknown signal {:?} (known: {})", name.trim(), known.join(", "))
        })?;
        let amount = amount.trim();
        let below = match amount.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Amount::Percent(p),
                _ => return Err(format!("{item:?}: {amount:?} is not a percentage from 0% to 100%")),
            },
            None => Amount::Quantity(crate::base::quantity::bytes(amount).ok_or_else(|| {
                format!("{item:?}: {amount:?} is not a quantity such as 1Gi or a percentage")
            })?),
        };
        out.retain(|t: &Threshold| t.signal != signal);
        out.push(Threshold { signal, below });
    }
    Ok(Thresholds(out))
}

/// One threshold crossed, in numbers: the kubelet's `Threshold quantity` and `available`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub signal: Signal,
    /// The threshold as an amount (a percentage taken of the capacity).
    pub threshold: u64,
    pub available: u64,
}

impl Threshold {
    /// The threshold's amount for a resource of `capacity`.
    pub fn amount(&self, capacity: u64) -> u64 {
        match self.below {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }
}

impl Thresholds {
    /// The threshold of `signal`, if one is set.
    pub fn of(&self, signal: Signal) -> Option<&Threshold> {
        self.0.iter().find(|t| t.signal == signal)
    }

    /// The thresholds `usage` crosses, in numbers.
    pub fn crossings(&self, usage: &Usage) -> Vec<Crossing> {
        self.0
            .iter()
            .filter_map(|t| {
                let (available, capacity) = t.signal.observe(usage)?;
                let threshold = t.amount(capacity);
                (available < threshold).then_some(Crossing { signal: t.signal, threshold, available })
            })
            .collect()
    }

    /// The thresholds `usage` crosses, each with a line saying by how much, e.g.
    /// `nodefs.available 900.0Mi < 1.0Gi`.
    pub fn crossed(&self, usage: &Usage) -> Vec<(Pressure, String)> {
        self.0
            .iter()
            .filter_map(|t| {
                let (available, capacity) = t.signal.observe(usage)?;
                let (limit, shown) = match t.below {
                    Amount::Quantity(q) => (q as f64, human(t.signal, q)),
                    Amount::Percent(p) => {
                        let limit = capacity as f64 * p / 100.0;
                        (limit, format!("{p}% of {}", human(t.signal, capacity)))
                    }
                };
                ((available as f64) < limit).then(|| {
                    (
                        t.signal.pressure(),
                        format!("{} {} < {shown}", t.signal.name(), human(t.signal, available)),
                    )
                })
            })
            .collect()
    }
}

/// Whether `crossed` (from [`Thresholds::crossed`]) has a threshold of `pressure`.
pub fn under(crossed: &[(Pressure, String)], pressure: Pressure) -> bool {
    crossed.iter().any(|(p, _)| *p == pressure)
}

/// Bytes in binary units; inode and PID counts as numbers.
fn human(signal: Signal, n: u64) -> String {
    if !matches!(signal, Signal::MemoryAvailable | Signal::NodefsAvailable | Signal::ImagefsAvailable) {
        return n.to_string();
    }
    let units = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n}") } else { format!("{value:.1}{}", units[unit]) }
}

#[cfg(test)]
mod tests;
