//! Unit tests of the Node builders in `object.rs`.

use super::*;
use crate::config::{Flags, HostFacts};

fn cfg(labels: &str) -> Config {
    let flags = Flags {
        node_ip: Some("127.0.0.5".into()),
        hostname: Some("wasm-host".into()),
        node_name: Some("wasm-node".into()),
        node_labels: Some(labels.into()),
        port: Some("10260".into()),
        max_pods: Some("250".into()),
        ..Flags::default()
    };
    Config::resolve(&flags, &HostFacts { home: Some("/h".into()), ..HostFacts::default() }).unwrap()
}

fn usage() -> Usage {
    Usage {
        memory_available_bytes: 8 << 30,
        memory_total_bytes: 16 << 30,
        disk_total_bytes: 100 << 30,
        disk_available_bytes: 50 << 30,
        inodes_total: 1_000_000,
        inodes_free: 900_000,
        pids_in_use: 300,
        pid_max: 4_194_304,
    }
}

fn machine() -> Machine {
    Machine {
        cpus: 2,
        memory_bytes: 4 << 30,
        machine_id: "m".into(),
        system_uuid: "u".into(),
        boot_id: "b".into(),
        kernel_version: "6.1".into(),
        os_image: "Debian".into(),
    }
}

#[test]
fn labels_are_fixed_and_extra_labels_cannot_override_them() {
    let l = labels(&cfg("team=a,kubernetes.io/arch=amd64"));
    assert_eq!(l["kubernetes.io/arch"], "wasm32-wasi");
    assert_eq!(l["beta.kubernetes.io/os"], "wasm32-wasi");
    assert_eq!(l["type"], "krustlet");
    assert_eq!(l["kubernetes.io/hostname"], "wasm-host");
    assert_eq!(l["team"], "a");
}

#[test]
fn missing_taints_are_found() {
    use k8s_openapi::api::core::v1::Taint;
    let t = |effect: &str| Taint {
        key: TAINT_KEY.into(),
        value: Some(WASM_ARCH.into()),
        effect: effect.into(),
        time_added: None,
    };
    assert_eq!(missing_taints(&[]).len(), 2);
    let missing = missing_taints(&[t("NoExecute")]);
    assert_eq!(missing, vec![json!({"key": TAINT_KEY, "value": WASM_ARCH, "effect": "NoSchedule"})]);
    assert!(missing_taints(&[t("NoSchedule"), t("NoExecute")]).is_empty());
}

/// The runtime version the node is given to report.
const RUNTIME: &str = "wasmtime://48.0.1";

/// The status patch of a node configured as `c` on the test machine, with no pressure.
fn patch(c: &Config) -> Value {
    status_patch(c, &machine(), RUNTIME, &usage(), &[], &Transitions::new(), "2026-01-01T00:00:00Z")
}

#[test]
fn status_reports_capacity_endpoint_and_runtime() {
    let s = patch(&cfg(""));
    let st = &s["status"];
    assert_eq!(st["capacity"]["pods"], "250");
    assert_eq!(st["capacity"]["cpu"], "2");
    assert_eq!(st["capacity"]["memory"], "4194304Ki");
    // Less the default hard thresholds: memory.available<100Mi, nodefs.available<1Gi.
    assert_eq!(st["allocatable"]["memory"], format!("{}Ki", (4 << 20) - 100 * 1024));
    assert_eq!(st["allocatable"]["ephemeral-storage"], format!("{}Ki", (99 << 20)));
    assert_eq!(st["allocatable"]["cpu"], "2");
    assert_eq!(st["allocatable"]["pods"], "250");
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10260);
    assert_eq!(st["addresses"][0], json!({"type": "InternalIP", "address": "127.0.0.5"}));
    assert_eq!(st["addresses"][1], json!({"type": "Hostname", "address": "wasm-host"}));
    assert_eq!(st["nodeInfo"]["architecture"], "wasm-wasi");
    assert_eq!(st["nodeInfo"]["containerRuntimeVersion"], RUNTIME);
}

#[test]
fn allocatable_is_less_the_reservations() {
    let mut c = cfg("");
    c.reserved =
        crate::config::Reserved { cpu_millis: 500, memory_bytes: 1 << 30, ephemeral_storage_bytes: 0 };
    let s = patch(&c);
    assert_eq!(s["status"]["allocatable"]["cpu"], "1500m");
    assert_eq!(s["status"]["allocatable"]["memory"], format!("{}Ki", (3 << 20) - 100 * 1024));
    assert_eq!(s["status"]["capacity"]["memory"], "4194304Ki");
}

#[test]
fn conditions_keep_transition_time_until_they_change() {
    let mut prev = Transitions::new();
    prev.insert("Ready".into(), ("True".into(), "2020-01-01T00:00:00Z".into()));
    prev.insert("MemoryPressure".into(), ("True".into(), "2020-01-01T00:00:00Z".into()));
    let s = status_patch(&cfg(""), &machine(), RUNTIME, &usage(), &[], &prev, "2026-01-01T00:00:00Z");
    let conds = s["status"]["conditions"].as_array().unwrap();
    let by = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(by("Ready")["lastTransitionTime"], "2020-01-01T00:00:00Z");
    assert_eq!(by("Ready")["reason"], "KubeletReady");
    // Memory pressure went from True to False: a new transition.
    assert_eq!(by("MemoryPressure")["status"], "False");
    assert_eq!(by("MemoryPressure")["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(by("PIDPressure")["reason"], "KubeletHasSufficientPID");
}

#[test]
fn pressure_is_reported_with_the_kubelets_reasons() {
    let low = Usage {
        memory_available_bytes: 1 << 20,
        disk_available_bytes: 512 << 20,
        pids_in_use: 4_000_000,
        ..usage()
    };
    let c = conditions(&cfg("").eviction_hard.crossed(&low));
    assert!(c.iter().filter(|c| c.type_ != "Ready").all(|c| c.status));
    assert_eq!(c[0].reason, "KubeletHasInsufficientMemory");
    assert_eq!(c[1].reason, "KubeletHasDiskPressure");
    assert_eq!(c[2].reason, "KubeletHasInsufficientPID");
}

#[test]
fn a_ready_node_still_tainted_not_ready_is_noticed() {
    let node = |ready: &str, taints: Value| -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    };
    let not_ready = json!([{"key": NOT_READY_TAINT, "effect": "NoSchedule"}, taints()[0]]);
    assert!(ready_but_tainted_not_ready(&node("True", not_ready.clone())));
    // Not Ready: the taint is right, and re-posting would not lift it.
    assert!(!ready_but_tainted_not_ready(&node("False", not_ready)));
    assert!(!ready_but_tainted_not_ready(&node("True", json!(taints()))));
}
