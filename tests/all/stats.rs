//! End to end, on the real control plane: resource usage through the API server's node
//! proxy, as metrics-server and `kubectl top` read it. `/stats/summary` has the node and
//! each pod and container, with a busy guest's CPU far above a sleeping one's and both
//! guests' memory; `/metrics/resource` has the kubelet's metric names for them.

use crate::common;

use std::time::Duration;

use common::guests;
use common::node::{phase, pod};
use serde_json::Value;

const PORT: u16 = 10388;

fn container<'a>(summary: &'a Value, pod: &str) -> &'a Value {
    let pods = summary["pods"].as_array().unwrap_or_else(|| panic!("no pods in {summary}"));
    let p =
        pods.iter().find(|p| p["podRef"]["name"] == pod).unwrap_or_else(|| panic!("no {pod} in {summary}"));
    &p["containers"][0]
}

#[test]
fn stats_summary_and_resource_metrics_tell_a_busy_guest_from_a_sleeping_one() {
    let cluster = require_cluster!();
    let node = common::shared_node("stats", PORT).unwrap();
    let id = std::process::id();
    let (busy, idle) = (format!("busy-{id}"), format!("idle-{id}"));
    for (name, guest) in [(&busy, "spin"), (&idle, "sleep")] {
        let image = guests::publish(&cluster.registry, guest, "v1", "cncf");
        let mut p = pod(name, &node.name, &image);
        p["spec"]["containers"][0]["resources"] = serde_json::json!({"limits": {"memory": "32Mi"}});
        cluster.apply(&p);
        cluster.wait_pod(name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    }
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", node.name);
    // The busy guest has had a second of CPU; read the summary twice for a rate.
    let summary = common::wait_for("a second of CPU for the busy guest", Duration::from_secs(60), || {
        let s: Value = serde_json::from_str(&cluster.kubectl_ok(&["get", "--raw", &path])).ok()?;
        let cpu = container(&s, &busy)["cpu"]["usageCoreNanoSeconds"].as_u64()?;
        (cpu > 1_000_000_000).then_some(s)
    });
    std::thread::sleep(Duration::from_secs(2));
    let summary2: Value = serde_json::from_str(&cluster.kubectl_ok(&["get", "--raw", &path])).unwrap();
    let (b, i) = (container(&summary2, &busy), container(&summary2, &idle));
    let cpu = |c: &Value, k: &str| c["cpu"][k].as_u64().unwrap_or(0);
    assert!(cpu(b, "usageCoreNanoSeconds") > 20 * cpu(i, "usageCoreNanoSeconds").max(1), "{summary2}");
    // A busy loop uses close to a core (shared with the rest of the machine): at least a
    // tenth of one; the sleeper next to nothing.
    assert!(cpu(b, "usageNanoCores") > 100_000_000, "{summary2}");
    assert!(cpu(i, "usageNanoCores") < 10_000_000, "{summary2}");
    for c in [b, i] {
        let ws = c["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
        assert!(ws > 0 && ws <= 32 << 20, "{c}");
    }
    assert_eq!(summary["node"]["nodeName"], node.name.as_str());
    assert!(summary["node"]["memory"]["availableBytes"].as_u64().unwrap_or(0) > 0);

    let metrics =
        cluster.kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/metrics/resource", node.name)]);
    let line = |name: &str, pod: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("pod=\"{pod}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} for {pod} in\n{metrics}"))
    };
    assert!(line("container_cpu_usage_seconds_total", &busy) > 1.0);
    assert!(line("container_memory_working_set_bytes", &idle) > 0.0);
    assert!(line("pod_cpu_usage_seconds_total", &busy) > 1.0);
    assert!(metrics.contains("node_cpu_usage_seconds_total "), "{metrics}");
    cluster.kubectl(&["delete", "pod", &busy, &idle, "--wait=false"]);
}
