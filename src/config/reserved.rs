//! Flags of what the node keeps for itself: `--system-reserved` and `--kube-reserved`, in
//! the kubelet's syntax (`cpu=500m,memory=1Gi`). What is left of the node's capacity, less
//! the hard eviction thresholds, is its allocatable (see `node/allocatable.rs`): what the
//! scheduler hands out, and the budget of every guest's memory together.

use super::{ConfigError, invalid};

/// The resources a reservation may name, as the kubelet's flags do (less `pid`: this node
/// reports no PID capacity).
const RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Reservation flags (flattened into [`super::Flags`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReservedFlags {
    /// Resources kept for the operating system and its daemons, taken from the node's
    /// capacity to make its allocatable: `cpu=500m,memory=1Gi,ephemeral-storage=1Gi`.
    /// Default: none, as the kubelet.
    #[arg(long, env = "KRUSTLET_SYSTEM_RESERVED", value_name = "RESOURCE=QUANTITY,...")]
    pub system_reserved: Option<String>,

    /// Resources kept for Kubernetes' own daemons (this agent's own memory and CPU among
    /// them), taken from the capacity likewise. Default: none, as the kubelet.
    #[arg(long, env = "KRUSTLET_KUBE_RESERVED", value_name = "RESOURCE=QUANTITY,...")]
    pub kube_reserved: Option<String>,
}

/// An amount of each resource kept back (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl Reserved {
    /// Both reservations together.
    pub fn plus(self, other: Reserved) -> Reserved {
        Reserved {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_add(other.ephemeral_storage_bytes),
        }
    }
}

/// Parses `resource=quantity,...`; a resource named twice keeps the last, as the kubelet.
/// An unknown resource or a quantity that is not one is an error naming `flag`.
pub(super) fn parse(flag: &'static str, raw: Option<&str>) -> Result<Reserved, ConfigError> {
    let mut out = Reserved::default();
    for item in raw.unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, quantity) = item
            .split_once('=')
            .ok_or_else(|| invalid(flag, format!("{item:?} is not resource=quantity (e.g. memory=1Gi)")))?;
        let (name, quantity) = (name.trim(), quantity.trim());
        let value = match name {
            "cpu" => crate::base::quantity::millis(quantity),
            "memory" | "ephemeral-storage" => crate::base::quantity::units(quantity),
            _ => {
                let why = format!("unknown resource {name:?} (known: {})", RESOURCES.join(", "));
                return Err(invalid(flag, why));
            }
        };
        let value = value.ok_or_else(|| {
            invalid(flag, format!("{item:?}: {quantity:?} is not a quantity such as 500m or 1Gi"))
        })?;
        match name {
            "cpu" => out.cpu_millis = value,
            "memory" => out.memory_bytes = value,
            _ => out.ephemeral_storage_bytes = value,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_take_the_kubelets_syntax() {
        assert_eq!(parse("system-reserved", None).unwrap(), Reserved::default());
        assert_eq!(parse("system-reserved", Some("")).unwrap(), Reserved::default());
        let r = parse("system-reserved", Some("cpu=500m, memory=1Gi,ephemeral-storage=2G")).unwrap();
        assert_eq!(
            r,
            Reserved { cpu_millis: 500, memory_bytes: 1 << 30, ephemeral_storage_bytes: 2_000_000_000 }
        );
        assert_eq!(parse("kube-reserved", Some("cpu=1,cpu=0.25")).unwrap().cpu_millis, 250);
        assert_eq!(r.plus(r).memory_bytes, 2 << 30);
        let e = parse("kube-reserved", Some("gpu=1")).unwrap_err();
        assert_eq!(e.flag, "kube-reserved");
        assert!(e.to_string().contains("unknown resource \"gpu\""), "{e}");
        for bad in ["memory=lots", "memory", "cpu=-1", "memory=1Qi"] {
            let e = parse("system-reserved", Some(bad)).unwrap_err();
            assert_eq!(e.flag, "system-reserved", "{bad:?}");
        }
    }
}
