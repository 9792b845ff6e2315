//! The resources predicate: a pod whose requests do not fit what the pods already admitted
//! leave of the allocatable is rejected (`OutOfcpu`, `OutOfmemory`,
//! `OutOfephemeral-storage`). The scheduler already fits the pods it binds; static pods and
//! pods bound by `nodeName` bypass it, so the node checks every pod.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::pods::resources::{Amounts, pod_requests};

/// The requests of the pods admitted and still active, by UID.
#[derive(Debug, Default)]
pub struct Ledger {
    admitted: HashMap<String, Amounts>,
}

impl Ledger {
    /// Admits `pod` if its requests fit in `allocatable` beside the pods of `active` (the
    /// others are forgotten); otherwise the kubelet's reason and message.
    pub fn admit(
        &mut self,
        pod: &Pod,
        allocatable: Amounts,
        active: &HashSet<String>,
    ) -> Result<(), (&'static str, String)> {
        let uid = pod.uid().unwrap_or_default();
        let asked = pod_requests(pod);
        // A pod that requests nothing always fits, and adds nothing to what the others
        // use: nothing to sum (10,000 such pods admitted cost O(N), not O(N²)).
        if asked == Amounts::default() {
            self.admitted.remove(&uid);
            return Ok(());
        }
        self.admitted.retain(|uid, _| active.contains(uid));
        let used =
            self.admitted.iter().filter(|(u, _)| **u != uid).fold(Amounts::default(), |a, (_, r)| Amounts {
                cpu_millis: a.cpu_millis.saturating_add(r.cpu_millis),
                memory_bytes: a.memory_bytes.saturating_add(r.memory_bytes),
                ephemeral_storage_bytes: a.ephemeral_storage_bytes.saturating_add(r.ephemeral_storage_bytes),
            });
        for (reason, name, asked, used, capacity) in [
            ("OutOfcpu", "cpu", asked.cpu_millis, used.cpu_millis, allocatable.cpu_millis),
            ("OutOfmemory", "memory", asked.memory_bytes, used.memory_bytes, allocatable.memory_bytes),
            (
                "OutOfephemeral-storage",
                "ephemeral-storage",
                asked.ephemeral_storage_bytes,
                used.ephemeral_storage_bytes,
                allocatable.ephemeral_storage_bytes,
            ),
        ] {
            // As the kubelet: only what the pod requests is checked.
            if asked > 0 && asked > capacity.saturating_sub(used) {
                let message = format!(
                    "Pod Node didn't have enough resource: {name}, requested: {asked}, used: {used}, capacity: {capacity}"
                );
                return Err((reason, message));
            }
        }
        self.admitted.insert(uid, asked);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, requests: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_that_does_not_fit_what_is_left_is_rejected_as_the_kubelet_does() {
        let allocatable =
            Amounts { cpu_millis: 2000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 10 << 30 };
        let mut ledger = Ledger::default();
        let mut active = HashSet::new();
        let a = pod("a", json!({"memory": "768Mi", "cpu": "1500m"}));
        ledger.admit(&a, allocatable, &active).unwrap();
        active.insert("a".to_string());
        let b = pod("b", json!({"memory": "512Mi"}));
        let (reason, message) = ledger.admit(&b, allocatable, &active).unwrap_err();
        assert_eq!(reason, "OutOfmemory");
        assert_eq!(
            message,
            "Pod Node didn't have enough resource: memory, requested: 536870912, used: 805306368, capacity: 1073741824"
        );
        let (reason, message) =
            ledger.admit(&pod("c", json!({"cpu": "1"})), allocatable, &active).unwrap_err();
        assert_eq!(reason, "OutOfcpu");
        assert!(message.ends_with("cpu, requested: 1000, used: 1500, capacity: 2000"), "{message}");
        // A pod that requests nothing always fits (BestEffort).
        ledger.admit(&pod("d", json!({})), allocatable, &active).unwrap();
        // Once `a` is no longer active, `b` fits.
        active.clear();
        ledger.admit(&b, allocatable, &active).unwrap();
    }
}
