//! The Node object: registration (create, or patch so a restart restores it), the Lease
//! heartbeat in `kube-node-lease`, and periodic status refreshes.

pub mod allocatable;
mod object;
pub mod oom;

pub use object::{TAINT_EFFECTS, TAINT_KEY, WASM_ARCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::base::host::{self, Machine};
use crate::config::eviction;
use crate::config::{
    Config, LEASE_DURATION, LEASE_RENEW_INTERVAL, NODE_NOT_READY_TAINT_RECHECK, NODE_STATUS_INTERVAL,
};
use crate::events::{Kind, Recorder};

const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Errors of registration, each naming the step.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("creating Node {name} failed: {source}")]
    Create { name: String, source: kube::Error },
    #[error("reading Node {name} failed: {source}")]
    Get { name: String, source: kube::Error },
    #[error("patching Node {name} failed: {source}")]
    Patch { name: String, source: kube::Error },
    #[error("posting status of Node {name} failed: {source}")]
    Status { name: String, source: kube::Error },
    #[error("creating Lease {name} failed: {source}")]
    Lease { name: String, source: kube::Error },
}

/// Creates the Node, or brings an existing one back to what this agent advertises, then
/// posts its status. Returns the Node as the API server stored it.
pub async fn register(
    client: &Client,
    cfg: &Config,
    machine: &Machine,
    runtime_version: &str,
    recorder: &Recorder,
) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let name = cfg.node_name.clone();
    let existing = api.get_opt(&name).await.map_err(|e| NodeError::Get { name: name.clone(), source: e })?;
    match existing {
        None => {
            let node: Node = serde_json::from_value(object::new_node(cfg)).unwrap_or_default();
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => info!(node = %name, "registered Node"),
                // Someone created it between our get and create: patch it like an existing one.
                Err(kube::Error::Api(s)) if s.code == 409 => restore(&api, cfg, recorder).await?,
                Err(e) => return Err(NodeError::Create { name, source: e }),
            }
        }
        Some(_) => restore(&api, cfg, recorder).await?,
    }
    post_status(&api, cfg, machine, runtime_version, &object::Transitions::new(), recorder).await
}

/// Re-applies labels and, where the cluster allows it, taints to an existing Node.
async fn restore(api: &Api<Node>, cfg: &Config, recorder: &Recorder) -> Result<(), NodeError> {
    let name = &cfg.node_name;
    let patch_err = |e| NodeError::Patch { name: name.clone(), source: e };
    let labels = json!({"metadata": {"labels": object::labels(cfg)}});
    let node = api.patch(name, &PatchParams::default(), &Patch::Merge(&labels)).await.map_err(patch_err)?;
    info!(node = %name, "Node exists; labels restored");
    let existing = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let missing = object::missing_taints(&existing);
    if missing.is_empty() {
        return Ok(());
    }
    let mut all: Vec<Value> = existing.iter().filter_map(|t| serde_json::to_value(t).ok()).collect();
    all.extend(missing.iter().cloned());
    let taints = json!({"spec": {"taints": all}});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&taints)).await {
        Ok(_) => info!(node = %name, restored = missing.len(), "taints restored"),
        // NodeRestriction forbids a node to change its own taints: say so, loudly.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            let list: Vec<String> = missing
                .iter()
                .map(|t| format!("{TAINT_KEY}={WASM_ARCH}:{}", t["effect"].as_str().unwrap_or_default()))
                .collect();
            let message = format!(
                "Node is missing taint(s) {}; the API server refused to let the node restore them ({}). Non-Wasm pods may be scheduled here. Restore with: kubectl taint nodes {name} {}",
                list.join(", "),
                s.message,
                list.join(" ")
            );
            warn!(node = %name, "{message}");
            recorder.publish(&node_ref(name), Kind::Warning, "TaintsMissing", &message).await;
        }
        Err(e) => return Err(patch_err(e)),
    }
    Ok(())
}

/// The reference Events about this node point at (the kubelet uses the name as UID).
pub fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(name.into()),
        ..ObjectReference::default()
    }
}

async fn post_status(
    api: &Api<Node>,
    cfg: &Config,
    machine: &Machine,
    runtime_version: &str,
    previous: &object::Transitions,
    recorder: &Recorder,
) -> Result<Node, NodeError> {
    let usage = host::usage(&cfg.data_dir);
    let crossed = cfg.eviction_hard.crossed(&usage);
    pressure_changes(&cfg.node_name, &crossed, previous, recorder).await;
    let now = crate::base::time::now_rfc3339();
    let patch = object::status_patch(cfg, machine, runtime_version, &usage, &crossed, previous, &now);
    api.patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|e| NodeError::Status { name: cfg.node_name.clone(), source: e })
}

/// Says when a pressure condition turns True (which threshold, by how much) or False again,
/// in the log and as the kubelet's Node events (`NodeHasDiskPressure`, ...).
async fn pressure_changes(
    name: &str,
    crossed: &[(eviction::Pressure, String)],
    previous: &object::Transitions,
    recorder: &Recorder,
) {
    use eviction::Pressure;
    for (pressure, condition, yes, no) in [
        (Pressure::Memory, "MemoryPressure", "NodeHasInsufficientMemory", "NodeHasSufficientMemory"),
        (Pressure::Disk, "DiskPressure", "NodeHasDiskPressure", "NodeHasNoDiskPressure"),
        (Pressure::Pid, "PIDPressure", "NodeHasInsufficientPID", "NodeHasSufficientPID"),
    ] {
        let why: Vec<&str> =
            crossed.iter().filter(|(p, _)| *p == pressure).map(|(_, w)| w.as_str()).collect();
        let was = previous.get(condition).is_some_and(|(s, _)| s == "True");
        let message = match (was, why.is_empty()) {
            (false, false) => {
                let why = why.join(", ");
                warn!(node = %name, condition, "{why}: reporting {condition}; nothing new is scheduled here until it passes (--eviction-hard)");
                format!("Node {name} status is now: {yes} ({why}; see --eviction-hard)")
            }
            (true, true) => {
                info!(node = %name, condition, "{condition} passed");
                format!("Node {name} status is now: {no}")
            }
            _ => continue,
        };
        let reason = if why.is_empty() { no } else { yes };
        recorder.publish(&node_ref(name), Kind::Normal, reason, &message).await;
    }
}

/// Keeps the node alive until shutdown: renews the Lease every [`LEASE_RENEW_INTERVAL`] and
/// re-posts the status every [`NODE_STATUS_INTERVAL`], or every few seconds while the Node is Ready yet still tainted
/// not-ready (see [`NODE_NOT_READY_TAINT_RECHECK`]). API errors are logged and retried at
/// the next tick, never fatal.
pub async fn heartbeat(
    client: Client,
    cfg: Config,
    machine: Machine,
    runtime_version: String,
    node: Node,
    recorder: Recorder,
    mut shutdown: broadcast::Receiver<()>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let uid = node.uid().unwrap_or_default();
    let mut transitions = object::transitions_of(&node);
    let mut lease_tick = tokio::time::interval(LEASE_RENEW_INTERVAL);
    // Registration just posted the status.
    let mut next_status = tokio::time::Instant::now() + next_status_in(&node, true);
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(&leases, &cfg.node_name, &uid).await {
                    warn!(error = %e, "renewing the node Lease failed; retrying in {} s", LEASE_RENEW_INTERVAL.as_secs());
                }
            }
            _ = tokio::time::sleep_until(next_status) => {
                let wait = match post_status(&nodes, &cfg, &machine, &runtime_version, &transitions, &recorder).await {
                    Ok(node) => {
                        transitions = object::transitions_of(&node);
                        debug!("node status posted");
                        next_status_in(&node, false)
                    }
                    Err(e) => {
                        warn!(error = %e, "posting node status failed; retrying in {} s", NODE_STATUS_INTERVAL.as_secs());
                        NODE_STATUS_INTERVAL
                    }
                };
                next_status = tokio::time::Instant::now() + wait;
            }
            _ = shutdown.recv() => break,
        }
    }
    debug!("heartbeat stopped");
}

/// When to post the status again, given the Node as last stored. Right after registration
/// the taint is expected (the controller has not seen the Node yet), so that is not logged.
fn next_status_in(node: &Node, registering: bool) -> std::time::Duration {
    if object::ready_but_tainted_not_ready(node) {
        if !registering {
            info!(
                taint = object::NOT_READY_TAINT,
                "Node is Ready but still tainted not-ready, so nothing is scheduled here; posting status again in {}s so the node lifecycle controller looks again",
                NODE_NOT_READY_TAINT_RECHECK.as_secs()
            );
        }
        NODE_NOT_READY_TAINT_RECHECK
    } else {
        NODE_STATUS_INTERVAL
    }
}

/// Renews the Lease, creating it (owned by the Node) if it does not exist.
async fn renew_lease(leases: &Api<Lease>, name: &str, node_uid: &str) -> Result<(), NodeError> {
    let spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_DURATION.as_secs(),
        "renewTime": serde_json::to_value(MicroTime(Timestamp::now())).unwrap_or(Value::Null),
    });
    let lease_err = |e| NodeError::Lease { name: name.into(), source: e };
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(lease_err(e)),
    }
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": spec,
    }))
    .unwrap_or_default();
    leases.create(&PostParams::default(), &lease).await.map_err(lease_err)?;
    info!(lease = %name, namespace = LEASE_NAMESPACE, "created node Lease");
    Ok(())
}
