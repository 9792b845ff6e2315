//! Pure builders of what the node posts: labels, taints, and the status (capacity,
//! addresses, nodeInfo, conditions with the kubelet's reasons).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::eviction::{Pressure, under};
use crate::base::host::{Machine, Usage};
use crate::config::Config;

/// The architecture/OS label value the node advertises, and that pods select on.
pub const WASM_ARCH: &str = "wasm32-wasi";
/// The key of both taints, so only pods that tolerate Wasm land here.
pub const TAINT_KEY: &str = "kubernetes.io/arch";
/// The effects of the two taints.
pub const TAINT_EFFECTS: [&str; 2] = ["NoSchedule", "NoExecute"];
/// The taint admission puts on every new Node until the node lifecycle controller sees it Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// The version the node reports as `kubeletVersion` (shown by `kubectl get nodes`).
pub fn kubelet_version() -> String {
    format!("v{}-krustlet-wasi", env!("CARGO_PKG_VERSION"))
}

/// Labels the node always carries, plus `--node-labels` (which may not override them).
pub fn labels(cfg: &Config) -> BTreeMap<String, String> {
    let mut labels = cfg.node_labels.clone();
    for key in ["kubernetes.io/os", "beta.kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/arch"]
    {
        labels.insert(key.into(), WASM_ARCH.into());
    }
    labels.insert("type".into(), "krustlet".into());
    labels.insert("kubernetes.io/hostname".into(), cfg.hostname.clone());
    labels
}

/// The two taints as JSON objects (`{key, value, effect}`).
pub fn taints() -> Vec<Value> {
    TAINT_EFFECTS.iter().map(|e| json!({"key": TAINT_KEY, "value": WASM_ARCH, "effect": e})).collect()
}

/// Which of our taints `existing` (a Node's `spec.taints`) lacks.
pub fn missing_taints(existing: &[k8s_openapi::api::core::v1::Taint]) -> Vec<Value> {
    taints()
        .into_iter()
        .filter(|t| {
            !existing.iter().any(|e| {
                e.key == TAINT_KEY
                    && e.value.as_deref() == Some(WASM_ARCH)
                    && Some(e.effect.as_str()) == t["effect"].as_str()
            })
        })
        .collect()
}

/// The Node to create when none exists.
pub fn new_node(cfg: &Config) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels(cfg)},
        "spec": {"taints": taints()},
    })
}

/// One condition as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

/// Ready plus the three pressure conditions, from the `--eviction-hard` thresholds that
/// current usage crosses.
pub fn conditions(crossed: &[(Pressure, String)]) -> Vec<Condition> {
    let memory = under(crossed, Pressure::Memory);
    let disk = under(crossed, Pressure::Disk);
    let pid = under(crossed, Pressure::Pid);
    let pick = |p: bool, yes: &'static str, no: &'static str| if p { yes } else { no };
    vec![
        Condition {
            type_: "MemoryPressure",
            status: memory,
            reason: pick(memory, "KubeletHasInsufficientMemory", "KubeletHasSufficientMemory"),
            message: pick(
                memory,
                "kubelet has insufficient memory available",
                "kubelet has sufficient memory available",
            ),
        },
        Condition {
            type_: "DiskPressure",
            status: disk,
            reason: pick(disk, "KubeletHasDiskPressure", "KubeletHasNoDiskPressure"),
            message: pick(disk, "kubelet has disk pressure", "kubelet has no disk pressure"),
        },
        Condition {
            type_: "PIDPressure",
            status: pid,
            reason: pick(pid, "KubeletHasInsufficientPID", "KubeletHasSufficientPID"),
            message: pick(
                pid,
                "kubelet has insufficient PID available",
                "kubelet has sufficient PID available",
            ),
        },
        Condition {
            type_: "Ready",
            status: true,
            reason: "KubeletReady",
            message: "kubelet is posting ready status",
        },
    ]
}

/// Previous condition state: type -> (status, lastTransitionTime), to keep transition
/// times stable while a condition does not change.
pub type Transitions = BTreeMap<String, (String, String)>;

/// The body of a strategic-merge patch of `nodes/status`; `crossed` is what
/// `cfg.eviction_hard` says of `usage`; `runtime_version` is the runtime's
/// `<name>://<version>`. `now` is RFC 3339.
pub fn status_patch(
    cfg: &Config,
    machine: &Machine,
    runtime_version: &str,
    usage: &Usage,
    crossed: &[(Pressure, String)],
    previous: &Transitions,
    now: &str,
) -> Value {
    let capacity = super::allocatable::Resources::capacity(machine, usage.disk_total_bytes);
    let allocatable = super::allocatable::of(cfg, machine, usage.disk_total_bytes);
    let [mut capacity, mut allocatable] = [capacity.to_json(), allocatable.to_json()];
    capacity["pods"] = json!(cfg.max_pods.to_string());
    allocatable["pods"] = json!(cfg.max_pods.to_string());
    let conditions: Vec<Value> = conditions(crossed)
        .into_iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = match previous.get(c.type_) {
                Some((s, t)) if s == status => t.as_str(),
                _ => now,
            };
            json!({
                "type": c.type_, "status": status, "reason": c.reason, "message": c.message,
                "lastHeartbeatTime": now, "lastTransitionTime": since,
            })
        })
        .collect();
    json!({"status": {
        "capacity": capacity,
        "allocatable": allocatable,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": {
            "machineID": machine.machine_id,
            "systemUUID": machine.system_uuid,
            "bootID": machine.boot_id,
            "kernelVersion": machine.kernel_version,
            "osImage": machine.os_image,
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": kubelet_version(),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "wasm-wasi",
        },
        "conditions": conditions,
    }})
}

/// Reads condition transitions out of a Node returned by the API server.
pub fn transitions_of(node: &k8s_openapi::api::core::v1::Node) -> Transitions {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let t = c.last_transition_time.as_ref()?;
            Some((c.type_.clone(), (c.status.clone(), crate::base::time::rfc3339(&t.0))))
        })
        .collect()
}

/// Whether the Node reports Ready=True but still carries [`NOT_READY_TAINT`], so nothing
/// can be scheduled onto it.
pub fn ready_but_tainted_not_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == NOT_READY_TAINT));
    ready && tainted
}

#[cfg(test)]
mod tests;
