//! End to end: `kubectl exec` on a Wasm pod through the real API server, with the
//! installed kubectl 1.32 (WebSocket, or SPDY after its fallback) and Debian's kubectl
//! 1.20 (SPDY only): stdout, stderr, stdin piped in, and the guest's exit code as
//! kubectl's own exit status.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::guests;
use common::node::{phase, pod};
use serde_json::json;

const PORT: u16 = 10301;

fn exec(kubectl: &PathBuf, kubeconfig: &PathBuf, pod: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(["exec", "-n", "default"]);
    if stdin.is_some() {
        cmd.arg("-i");
    }
    cmd.arg(pod).arg("--").args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn kubectl_exec_runs_the_module_with_streams_and_exit_codes() {
    let cluster = require_cluster!();
    let node = common::shared_node("exec", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("exec-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    p["spec"]["containers"][0]["env"] = json!([{"name": "GREETING", "value": "hi"}]);
    cluster.apply(&p);
    cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");

    for kubectl in common::kubectls() {
        let which = kubectl.display().to_string();
        let out = exec(&kubectl, &cluster.kubeconfig, &name, &["tool", "echo", "hello", "$GREETING"], None);
        assert!(out.status.success(), "{which}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello $GREETING\n", "{which}");

        let out = exec(&kubectl, &cluster.kubeconfig, &name, &["tool", "fail", "3"], None);
        assert_eq!(out.status.code(), Some(3), "{which}: kubectl exits with the guest's code");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("failing with 3"),
            "{which}: stderr reaches kubectl"
        );

        let out =
            exec(&kubectl, &cluster.kubeconfig, &name, &["tool", "cat"], Some("piped in\nsecond line\n"));
        assert!(out.status.success(), "{which}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "piped in\nsecond line\n",
            "{which}: stdin reaches the guest"
        );
    }
    // The pod's own container kept running through all of it.
    let p = cluster.get_json(&["pod", &name, "-n", "default"]).unwrap();
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}
