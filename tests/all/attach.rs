//! End to end, on the real control plane: `kubectl attach` to a running Wasm container
//! (kubectl 1.32 over WebSocket, Debian's 1.20 over SPDY) shows what it writes from then
//! on, and ends when the container's run ends.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::guests;
use common::node::{phase, pod};
use serde_json::json;

const PORT: u16 = 10389;

#[test]
fn kubectl_attach_streams_the_running_containers_output_until_it_ends() {
    let cluster = require_cluster!();
    let node = common::shared_node("attach", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let id = std::process::id();
    let (serving, counting) = (format!("attach-{id}"), format!("attach-count-{id}"));
    let mut p = pod(&serving, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    cluster.apply(&p);
    cluster.wait_pod(&serving, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    std::thread::sleep(Duration::from_secs(1));

    for kubectl in common::kubectls() {
        let kubectl = kubectl.display().to_string();
        // Attached for a few seconds, then stopped: ticks written meanwhile, not the
        // "serving" line written at start.
        let out = Command::new("timeout")
            .args(["4", &kubectl, "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .args(["attach", "-n", "default", &serving, "-c", "main"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let ticks = text.lines().filter(|l| l.starts_with("tick ")).count();
        assert!(ticks >= 5, "{kubectl}: {ticks} ticks in\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("serving"), "{kubectl}: output from before attaching:\n{text}");
    }

    // A run that ends ends the attach, and kubectl exits 0.
    let mut p = pod(&counting, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["args"] = json!(["count", "40"]);
    cluster.apply(&p);
    cluster.wait_pod(&counting, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let out = Command::new("timeout")
        .args(["60", "kubectl", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .args(["attach", "-n", "default", &counting])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("count 40"), "{text}");

    // stdin: true and stdinOnce: what `kubectl attach -i` sends is what the guest reads
    // (tool cat echoes it), and the end of that input is the guest's end of file.
    let reading = format!("attach-stdin-{id}");
    let mut p = pod(&reading, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["args"] = json!(["cat"]);
    p["spec"]["containers"][0]["stdin"] = json!(true);
    p["spec"]["containers"][0]["stdinOnce"] = json!(true);
    cluster.apply(&p);
    cluster.wait_pod(&reading, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let mut child = Command::new("timeout")
        .args(["60", "kubectl", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .args(["attach", "-i", "-n", "default", &reading])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(b"typed into attach\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed into attach"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let done = cluster.wait_pod(&reading, "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    cluster.kubectl(&["delete", "pod", &serving, &counting, &reading, "--wait=false"]);
}
