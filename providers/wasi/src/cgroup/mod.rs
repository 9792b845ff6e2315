//! [`Cgroup`]: what a group of runs may use together, as a Linux cgroup bounds a pod or a
//! container — the memory of all their instances under one limit, their CPU under one
//! quota and weight — nested under the node's root group, whose memory limit is the
//! budget of every guest on the node.
//!
//! Memory is charged when a guest's store grows a memory or a table, all or nothing up
//! the chain (see `host::MemoryLimiter`), and given back when the store goes. CPU time
//! is charged after every poll of a guest's task (see `usage::Metered`) and throttled at
//! the guest's epoch yields ([`cpu`]).

pub(crate) mod cpu;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpu::Bucket;

/// What a group may use. Every field defaults to "no limit of its own".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupSpec {
    /// Bytes of linear memory and tables of all its runs and their instances together.
    pub memory_limit: Option<u64>,
    /// CPU quota in millicores, as CFS bandwidth (200 = 20 ms per 100 ms period,
    /// [`CPU_PERIOD`](crate::CPU_PERIOD)); at least 1. Its runs sleep at their epoch
    /// yields while the group or a parent has used more than its quota.
    pub cpu_limit_millis: Option<u64>,
    /// CPU weight under contention, in millicores (a container's `requests.cpu`): its
    /// guests run one epoch tick between yields per
    /// [`MILLICORES_PER_TICK`](crate::MILLICORES_PER_TICK) (100m), from 1 to
    /// [`MAX_TICKS_PER_YIELD`](crate::MAX_TICKS_PER_YIELD) (10). `None`: the nearest
    /// parent's, else the least (1 tick).
    pub cpu_request_millis: Option<u64>,
}

/// A group of runs and what they may use. Cheap to clone; clones are the same group.
#[derive(Clone)]
pub struct Cgroup(Arc<Group>);

struct Group {
    spec: CgroupSpec,
    parent: Option<Cgroup>,
    /// Bytes committed now by its runs and its children's.
    memory: AtomicU64,
    /// CPU time its runs and its children's have used, in nanoseconds.
    cpu_nanos: AtomicU64,
    /// Its CPU quota, if it has one.
    bucket: Option<Bucket>,
    /// It or a parent has a CPU quota.
    cpu_limited: bool,
    /// Epoch ticks its guests run between yields (its request, or the nearest parent's).
    ticks: u64,
}

/// Which group's memory limit refused a growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The group the run was given, or one of its parents below the root.
    Group { limit: u64 },
    /// The node's root group: every guest on the node together.
    Node { budget: u64 },
}

impl Cgroup {
    /// The node's root group; `memory_budget` bounds every guest together.
    pub(crate) fn root(memory_budget: Option<u64>) -> Cgroup {
        Cgroup::new(CgroupSpec { memory_limit: memory_budget, ..CgroupSpec::default() }, None)
    }

    fn new(spec: CgroupSpec, parent: Option<Cgroup>) -> Cgroup {
        let bucket = spec.cpu_limit_millis.map(|millis| Bucket::new(millis, Instant::now()));
        let cpu_limited = bucket.is_some() || parent.as_ref().is_some_and(|p| p.0.cpu_limited);
        let request = spec.cpu_request_millis.or_else(|| parent.as_ref().and_then(|p| p.0.request()));
        Cgroup(Arc::new(Group {
            spec,
            memory: AtomicU64::new(0),
            cpu_nanos: AtomicU64::new(0),
            bucket,
            cpu_limited,
            ticks: cpu::ticks_for(request),
            parent,
        }))
    }

    /// A group inside this one: what it uses counts here too.
    pub fn child(&self, spec: CgroupSpec) -> Cgroup {
        Cgroup::new(spec, Some(self.clone()))
    }

    /// What this group may use of its own.
    pub fn spec(&self) -> CgroupSpec {
        self.0.spec
    }

    /// Its own memory limit (its parents' may be lower).
    pub fn memory_limit(&self) -> Option<u64> {
        self.0.spec.memory_limit
    }

    /// CPU time its runs (and its children's) have used, in nanoseconds.
    pub fn cpu_nanos(&self) -> u64 {
        self.0.cpu_nanos.load(Ordering::Relaxed)
    }

    /// Bytes of linear memory and tables its runs (and its children's) hold now.
    pub fn memory_bytes(&self) -> u64 {
        self.0.memory.load(Ordering::Relaxed)
    }

    /// Adds `bytes` to this group and every parent, unless one of them would pass its
    /// limit: then nothing is added and the refusing group is named.
    pub(crate) fn try_charge(&self, bytes: u64) -> Result<(), Refusal> {
        let mut charged: Vec<&Cgroup> = Vec::new();
        let mut group = Some(self);
        while let Some(g) = group {
            if let Err(refusal) = g.charge_one(bytes) {
                for done in charged {
                    done.0.memory.fetch_sub(bytes, Ordering::Relaxed);
                }
                return Err(refusal);
            }
            charged.push(g);
            group = g.0.parent.as_ref();
        }
        Ok(())
    }

    fn charge_one(&self, bytes: u64) -> Result<(), Refusal> {
        let limit = self.0.spec.memory_limit;
        self.0
            .memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                let after = now.checked_add(bytes)?;
                limit.is_none_or(|limit| after <= limit).then_some(after)
            })
            .map(drop)
            .map_err(|_| match self.0.parent {
                None => Refusal::Node { budget: limit.unwrap_or(u64::MAX) },
                Some(_) => Refusal::Group { limit: limit.unwrap_or(u64::MAX) },
            })
    }

    /// Gives back `bytes` charged before, to this group and every parent.
    pub(crate) fn uncharge(&self, bytes: u64) {
        let mut group = Some(self);
        while let Some(g) = group {
            // Never below zero, whatever a caller does.
            let _ = g
                .0
                .memory
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| Some(now.saturating_sub(bytes)));
            group = g.0.parent.as_ref();
        }
    }

    /// Adds CPU time used by one of its runs, to this group and every parent, and takes
    /// it out of their CPU quotas.
    pub(crate) fn add_cpu(&self, nanos: u64) {
        let now = Instant::now();
        for g in self.chain() {
            g.0.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
            if let Some(bucket) = &g.0.bucket {
                bucket.charge(nanos, now);
            }
        }
    }

    /// Epoch ticks its guests run between yields: its CPU request's (or the nearest
    /// parent's) share of the guest threads.
    pub(crate) fn ticks(&self) -> u64 {
        self.0.ticks
    }

    /// How long its runs must sleep until neither it nor any parent is over its CPU quota;
    /// `None` when none is.
    pub(crate) fn cpu_debt(&self, now: Instant) -> Option<Duration> {
        self.chain().filter_map(|g| g.0.bucket.as_ref()?.debt(now)).max()
    }

    /// This group, then its parents up to the root.
    fn chain(&self) -> impl Iterator<Item = &Cgroup> {
        std::iter::successors(Some(self), |g| g.0.parent.as_ref())
    }
}

impl Group {
    /// Its CPU request, or the nearest parent's.
    fn request(&self) -> Option<u64> {
        self.spec.cpu_request_millis.or_else(|| self.parent.as_ref()?.0.request())
    }
}

impl fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cgroup")
            .field("spec", &self.0.spec)
            .field("memory_bytes", &self.memory_bytes())
            .field("cpu_nanos", &self.cpu_nanos())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_charged_up_the_chain_all_or_nothing() {
        let node = Cgroup::root(Some(100));
        let pod = node.child(CgroupSpec::default());
        let a = pod.child(CgroupSpec { memory_limit: Some(60), ..CgroupSpec::default() });
        let b = pod.child(CgroupSpec { memory_limit: Some(60), ..CgroupSpec::default() });
        a.try_charge(50).unwrap();
        assert_eq!(a.try_charge(20), Err(Refusal::Group { limit: 60 }));
        b.try_charge(40).unwrap();
        assert_eq!(b.try_charge(20), Err(Refusal::Node { budget: 100 }));
        assert_eq!(
            (a.memory_bytes(), b.memory_bytes(), pod.memory_bytes(), node.memory_bytes()),
            (50, 40, 90, 90)
        );
        a.uncharge(50);
        b.try_charge(20).unwrap();
        assert_eq!((pod.memory_bytes(), node.memory_bytes()), (60, 60));
        b.add_cpu(7);
        assert_eq!((b.cpu_nanos(), pod.cpu_nanos(), node.cpu_nanos(), a.cpu_nanos()), (7, 7, 7, 0));
    }

    #[test]
    fn cpu_is_charged_up_the_chain_and_the_deepest_debt_wins() {
        let node = Cgroup::root(None);
        let pod = node.child(CgroupSpec {
            cpu_limit_millis: Some(100),
            cpu_request_millis: Some(500),
            ..CgroupSpec::default()
        });
        let container = pod.child(CgroupSpec { cpu_limit_millis: Some(1000), ..CgroupSpec::default() });
        let free = node.child(CgroupSpec::default());
        assert!(container.0.cpu_limited && pod.0.cpu_limited && !free.0.cpu_limited);
        assert_eq!((container.0.ticks, pod.0.ticks, free.0.ticks), (5, 5, 1));
        // 100 ms: the container's quota (100 ms a period) covers it, the pod's (10 ms)
        // leaves 90 ms of debt, 900 ms at 0.1 CPU.
        container.add_cpu(100_000_000);
        let debt = container.cpu_debt(Instant::now()).expect("in debt");
        assert!(debt > Duration::from_millis(850) && debt <= Duration::from_millis(900), "{debt:?}");
        assert_eq!(free.cpu_debt(Instant::now()), None);
        assert_eq!(node.cpu_nanos(), 100_000_000);
    }
}
