//! End to end, on the real control plane: `runtimeClassName: wasmtime` is all a pod needs.
//! The RuntimeClass of `examples/runtimeclass.yaml` carries the node selector and the
//! tolerations (the API server's RuntimeClass admission plugin copies the tolerations
//! into the pod), and the node runs it. A pod naming a RuntimeClass with another handler
//! is refused with a reason saying so.

use crate::common;

use std::time::Duration;

use common::guests;
use common::node::phase;
use serde_json::{Value, json};

const PORT: u16 = 10387;

fn bare_pod(name: &str, node: &str, image: &str, class: &str) -> Value {
    // Pinned to this test's node by hostname only (other test nodes may be up); no
    // tolerations and no arch selector of its own.
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": class,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": image, "args": ["serve"]}],
        },
    })
}

#[test]
fn a_pod_naming_the_wasmtime_runtime_class_runs_and_another_handler_is_refused() {
    let cluster = require_cluster!();
    let node = common::shared_node("rtclass", PORT).unwrap();
    let example =
        std::fs::read_to_string(format!("{}/examples/runtimeclass.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let class: Value = serde_saphyr::from_str(&example).unwrap();
    cluster.apply(&class);
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let id = std::process::id();

    let name = format!("rtclass-{id}");
    cluster.apply(&bare_pod(&name, &node.name, &image, "wasmtime"));
    let running = cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let tolerations = running["spec"]["tolerations"].to_string();
    assert!(tolerations.contains("wasm32-wasi") && tolerations.contains("NoExecute"), "{tolerations}");
    assert_eq!(running["spec"]["nodeSelector"]["kubernetes.io/arch"], "wasm32-wasi");

    // Another handler: a RuntimeClass that would schedule here, for runc.
    let runc = format!("runc-{id}");
    let mut other = class.clone();
    other["metadata"]["name"] = json!(runc);
    other["handler"] = json!("runc");
    cluster.apply(&other);
    let refused = format!("rtclass-runc-{id}");
    cluster.apply(&bare_pod(&refused, &node.name, &image, &runc));
    let failed = cluster.wait_pod(&refused, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(failed["status"]["reason"], "UnsupportedRuntimeHandler");
    let message = failed["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains("has handler \"runc\"") && message.contains("\"wasmtime\""), "{message}");
    cluster.kubectl(&["delete", "pod", &name, &refused, "--wait=false"]);
    cluster.kubectl(&["delete", "runtimeclass", &runc, "--wait=false"]);
}
