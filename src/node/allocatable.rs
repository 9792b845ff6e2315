//! The node's allocatable, by the kubelet's formula: capacity less `--system-reserved`,
//! less `--kube-reserved`, less the hard eviction threshold of the resource
//! (`memory.available` for memory, `nodefs.available` for ephemeral storage; CPU has
//! none). It is what the scheduler hands out, what `resourceFieldRef` reports for a
//! container without limits, what admission fits pods into, and (memory) the budget of
//! every guest together. Pure.

use serde_json::{Value, json};

use crate::base::host::Machine;
use crate::config::eviction::{Signal, Thresholds};
use crate::config::{Config, Reserved};

/// Capacity or allocatable, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl Resources {
    /// The machine's capacity; `disk_bytes` is the size of the data dir's filesystem.
    pub fn capacity(machine: &Machine, disk_bytes: u64) -> Resources {
        Resources {
            cpu_millis: u64::from(machine.cpus) * 1000,
            memory_bytes: machine.memory_bytes,
            ephemeral_storage_bytes: disk_bytes,
        }
    }

    /// What is left of this capacity for pods (never below zero).
    pub fn allocatable(self, reserved: Reserved, hard: &Thresholds) -> Resources {
        let threshold = |signal, capacity| hard.of(signal).map_or(0, |t| t.amount(capacity));
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(reserved.cpu_millis),
            memory_bytes: self
                .memory_bytes
                .saturating_sub(reserved.memory_bytes)
                .saturating_sub(threshold(Signal::MemoryAvailable, self.memory_bytes)),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_sub(reserved.ephemeral_storage_bytes)
                .saturating_sub(threshold(Signal::NodefsAvailable, self.ephemeral_storage_bytes)),
        }
    }

    /// As the Node reports it (`cpu`, `memory`, `ephemeral-storage`; bytes in whole Ki).
    pub fn to_json(self) -> Value {
        json!({
            "cpu": crate::base::quantity::format_millis(self.cpu_millis),
            "memory": format!("{}Ki", self.memory_bytes / 1024),
            "ephemeral-storage": format!("{}Ki", self.ephemeral_storage_bytes / 1024),
        })
    }
}

/// The node's allocatable under `cfg`'s reservations and thresholds.
pub fn of(cfg: &Config, machine: &Machine, disk_bytes: u64) -> Resources {
    Resources::capacity(machine, disk_bytes).allocatable(cfg.reserved, &cfg.eviction_hard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::eviction::parse;

    const GI: u64 = 1 << 30;

    #[test]
    fn allocatable_is_capacity_less_reservations_and_hard_thresholds() {
        let capacity =
            Resources { cpu_millis: 2000, memory_bytes: 24 * GI, ephemeral_storage_bytes: 100 * GI };
        let reserved = Reserved { cpu_millis: 500, memory_bytes: GI, ephemeral_storage_bytes: 0 }
            .plus(Reserved { cpu_millis: 250, memory_bytes: GI / 2, ephemeral_storage_bytes: GI });
        let hard = parse("memory.available<100Mi,nodefs.available<10%,pid.available<10%").unwrap();
        let a = capacity.allocatable(reserved, &hard);
        assert_eq!(a.cpu_millis, 1250, "CPU has no eviction threshold");
        assert_eq!(a.memory_bytes, 24 * GI - GI - GI / 2 - (100 << 20));
        assert_eq!(a.ephemeral_storage_bytes, 100 * GI - GI - 10 * GI);
        assert_eq!(a.to_json()["cpu"], "1250m");
        assert_eq!(capacity.to_json()["memory"], "25165824Ki");
        // No thresholds, no reservations: all of it.
        assert_eq!(capacity.allocatable(Reserved::default(), &Thresholds::default()), capacity);
        // More reserved than there is: nothing, not a wrap.
        let greedy = Reserved { cpu_millis: 9000, memory_bytes: 99 * GI, ephemeral_storage_bytes: 0 };
        let none = capacity.allocatable(greedy, &hard);
        assert_eq!((none.cpu_millis, none.memory_bytes), (0, 0));
        // A percentage of the memory capacity.
        let pct = capacity.allocatable(Reserved::default(), &parse("memory.available<10%").unwrap());
        assert_eq!(pct.memory_bytes, 24 * GI - (24 * GI) / 10);
    }
}
