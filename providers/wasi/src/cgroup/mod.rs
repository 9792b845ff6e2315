//! [`Cgroup`]: what a group of runs may use together, as a Linux cgroup bounds a pod or a
//! container — the memory of all their instances under one limit, their CPU under one
//! quota and weight — nested under the node's root group, whose memory limit is the
//! budget of every guest on the node.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a group may use. Every field defaults to "no limit of its own".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupSpec {
    /// Bytes of linear memory and tables of all its runs and their instances together.
    pub memory_limit: Option<u64>,
    /// CPU quota in millicores, as CFS bandwidth (200 = 20 ms per 100 ms period).
    pub cpu_limit_millis: Option<u64>,
    /// CPU weight under contention, in millicores (a container's `requests.cpu`).
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
        Cgroup(Arc::new(Group { spec, parent, memory: AtomicU64::new(0), cpu_nanos: AtomicU64::new(0) }))
    }

    /// A group inside this one: what it uses counts here too.
    pub fn child(&self, spec: CgroupSpec) -> Cgroup {
        Cgroup::new(spec, Some(self.clone()))
    }

    /// What this group may use of its own.
    pub fn spec(&self) -> CgroupSpec {
        self.0.spec
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

    /// Adds CPU time used by one of its runs, to this group and every parent.
    pub(crate) fn add_cpu(&self, nanos: u64) {
        let mut group = Some(self);
        while let Some(g) = group {
            g.0.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
            group = g.0.parent.as_ref();
        }
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
}
