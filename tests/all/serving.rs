//! End to end, on the real control plane: pods use the node's network, so a
//! `containerPort` is a port of the node. A second pod declaring a port another pod (or
//! the agent itself) holds is rejected at admission, as the kubelet rejects host-port
//! conflicts, and the port is free again once its pod is gone.

use crate::common;

use std::time::Duration;

use common::guests;
use common::node::{phase, pod};
use serde_json::json;

const PORT: u16 = 10391;

#[test]
fn a_port_held_by_another_pod_or_the_agent_fails_the_pod_naming_the_holder() {
    let cluster = require_cluster!();
    let node = common::shared_node("serving", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let id = std::process::id();
    let with_port = |name: &str, port: u16| {
        let mut p = pod(name, &node.name, &image);
        p["spec"]["containers"][0]["args"] = json!(["serve"]);
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": port}]);
        p
    };
    let (first, second, third, agent) =
        (format!("ports-a-{id}"), format!("ports-b-{id}"), format!("ports-c-{id}"), format!("ports-k-{id}"));
    cluster.apply(&with_port(&first, 18181));
    cluster.wait_pod(&first, "Running", Duration::from_secs(60), |p| phase(p) == "Running");

    cluster.apply(&with_port(&second, 18181));
    let failed = cluster.wait_pod(&second, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(failed["status"]["reason"], "NodePorts");
    let message = failed["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("port 18181/TCP is already in use on this node by pod default/{first}")),
        "{message}"
    );
    let events = cluster.pod_events(&second);
    assert!(events.iter().any(|(r, m)| r == "NodePorts" && m.contains("18181")), "{events:?}");

    cluster.apply(&with_port(&agent, PORT));
    let failed = cluster.wait_pod(&agent, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
    let message = failed["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains("by the node agent's kubelet API (--port)"), "{message}");

    // Once the holder is gone, the port is free.
    cluster.kubectl_ok(&["delete", "pod", &first, "--wait=true", "--timeout=60s"]);
    cluster.apply(&with_port(&third, 18181));
    cluster.wait_pod(&third, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    for name in [&second, &third, &agent] {
        cluster.kubectl(&["delete", "pod", name, "--wait=false"]);
    }
}

/// A node in a network namespace of its own has a pod IP that is not loopback: the API
/// server reaches its kubelet API there (logs), and pods report that IP.
#[test]
fn a_node_in_its_own_network_namespace_reports_its_ip_and_serves_logs() {
    let cluster = require_cluster!();
    let netns = common::netns::Netns::create("svc");
    let node =
        common::node::TestNode::join_at(cluster, "svc", PORT + 1, &cluster.registry, &[], Some(&netns));
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("netns-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    cluster.apply(&p);
    let running = cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    assert_eq!(running["status"]["podIP"], netns.node_ip.as_str());
    common::wait_for("kubectl logs through the node's own IP", Duration::from_secs(20), || {
        let out = cluster.kubectl(&["logs", "-n", "default", &name, "--tail", "1"]);
        String::from_utf8_lossy(&out.stdout).contains("tick").then_some(())
    });
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
}
