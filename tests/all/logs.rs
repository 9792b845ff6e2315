//! End to end: `kubectl logs` on Wasm pods through the real API server, with each flag
//! kubectl has (tail, timestamps, limit-bytes, since, since-time, previous, follow).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::guests;
use common::node::{main_status, phase, pod};
use serde_json::json;

const PORT: u16 = 10311;

fn logs(cluster: &common::Cluster, args: &[&str]) -> String {
    let mut all = vec!["logs", "-n", "default"];
    all.extend_from_slice(args);
    cluster.kubectl_ok(&all)
}

fn start(cluster: &common::Cluster, node: &str, name: &str, args: &[&str], policy: &str) {
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let mut p = pod(name, node, &image);
    p["spec"]["restartPolicy"] = json!(policy);
    p["spec"]["containers"][0]["args"] = json!(args);
    cluster.apply(&p);
}

#[test]
fn kubectl_logs_flags_behave_as_on_any_node() {
    let cluster = require_cluster!();
    let node = common::shared_node("logs", PORT).unwrap();
    let name = format!("logs-{}", std::process::id());
    start(cluster, &node.name, &name, &["serve"], "Always");
    cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    common::wait_for("a few ticks", Duration::from_secs(20), || {
        logs(cluster, &[&name]).contains("tick 8").then_some(())
    });

    let all = logs(cluster, &[&name]);
    assert!(all.starts_with("serving\ntick 1\n"), "{all}");
    let tail = logs(cluster, &[&name, "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick ")), "{tail}");
    let stamped = logs(cluster, &[&name, "--timestamps", "--tail=1"]);
    let (ts, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(ts.parse::<k8s_openapi::jiff::Timestamp>().is_ok() && text.starts_with("tick "), "{stamped}");
    assert_eq!(logs(cluster, &[&name, "--limit-bytes=7"]), "serving");
    // "serving" was written more than a second ago: --since=1s leaves it out.
    let recent = logs(cluster, &[&name, "--since=1s"]);
    assert!(!recent.contains("serving") && recent.lines().count() <= 7, "{recent}");
    let future = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(3600);
    assert_eq!(logs(cluster, &[&name, &format!("--since-time={future}")]), "");

    // -f receives lines the guest writes while we follow.
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["logs", "-f", "--tail=1", "-n", "default", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: u64 = lines.next().unwrap().unwrap().trim_start_matches("tick ").parse().unwrap();
    let next: u64 = lines.next().unwrap().unwrap().trim_start_matches("tick ").parse().unwrap();
    assert_eq!(next, first + 1, "a new line arrives while following");
    let _ = child.kill();
    let _ = child.wait();
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn follow_ends_with_the_container_and_previous_shows_the_last_run() {
    let cluster = require_cluster!();
    let node = common::shared_node("logs", PORT).unwrap();
    let counted = format!("count-{}", std::process::id());
    start(cluster, &node.name, &counted, &["count", "10"], "Never");
    cluster.wait_pod(&counted, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let started = Instant::now();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["logs", "-f", "-n", "default", &counted])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("count 10\n"), "follow got everything: {text}");
    assert!(started.elapsed() < Duration::from_secs(15), "follow ended when the container did");

    let crashing = format!("prev-{}", std::process::id());
    start(cluster, &node.name, &crashing, &["fail", "3"], "OnFailure");
    cluster.wait_pod(&crashing, "a restart", Duration::from_secs(60), |p| {
        main_status(p)["restartCount"].as_u64().unwrap_or(0) >= 1
    });
    let previous = logs(cluster, &[&crashing, "--previous"]);
    assert_eq!(previous, "failing with 3\n");
    for n in [&counted, &crashing] {
        cluster.kubectl_ok(&["delete", "pod", n, "--wait=true", "--timeout=30s"]);
    }
}
