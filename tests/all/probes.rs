//! End to end, on the real control plane: startup, readiness and liveness probes of Wasm
//! pods. Exec probes count by exit code; a readiness failure makes the pod unready and
//! never restarts it; a liveness failure (exec or httpGet) kills and restarts the
//! container with `Unhealthy` and `Killing` Events; the startup probe holds the others
//! back; and a readiness flip takes a pod out of its Service's endpoints and back.

use crate::common;

use std::net::TcpListener;
use std::time::Duration;

use common::guests;
use common::node::{TestNode, main_status, phase, pod};
use serde_json::{Value, json};

const PORT: u16 = 10385;
const NETNS_PORT: u16 = 10386;

fn exec(command: &[&str], failure_threshold: u32) -> Value {
    json!({"exec": {"command": command}, "periodSeconds": 1, "failureThreshold": failure_threshold})
}

/// A `tool serve` pod with `probes` merged into its container.
fn tool_pod(cluster: &common::Cluster, node: &TestNode, name: &str, probes: Value) -> Value {
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let mut p = pod(name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    for (k, v) in probes.as_object().unwrap() {
        p["spec"]["containers"][0][k] = v.clone();
    }
    cluster.apply(&p);
    p
}

fn ready(p: &Value) -> bool {
    main_status(p)["ready"] == true
}

fn condition(p: &Value, kind: &str) -> String {
    let conditions = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let c = conditions.iter().find(|c| c["type"] == kind);
    c.and_then(|c| c["status"].as_str()).unwrap_or("").to_string()
}

#[test]
fn exec_probes_count_exit_codes_and_only_liveness_restarts() {
    let cluster = require_cluster!();
    let node = common::shared_node("probes", PORT).unwrap();
    let id = std::process::id();
    let (ok, unready, dying) =
        (format!("exec-ok-{id}"), format!("exec-unready-{id}"), format!("exec-dying-{id}"));
    tool_pod(cluster, node, &ok, json!({"readinessProbe": exec(&["tool", "echo", "ok"], 3)}));
    tool_pod(cluster, node, &unready, json!({"readinessProbe": exec(&["tool", "fail", "1"], 1)}));
    tool_pod(cluster, node, &dying, json!({"livenessProbe": exec(&["tool", "fail", "3"], 2)}));

    let p = cluster.wait_pod(&ok, "Ready", Duration::from_secs(60), ready);
    assert_eq!((condition(&p, "Ready"), condition(&p, "ContainersReady")), ("True".into(), "True".into()));

    // Exit 1 keeps it unready, and a readiness probe never restarts.
    let p = cluster.wait_pod(&unready, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    common::wait_for("a failed readiness probe's Unhealthy event", Duration::from_secs(30), || {
        let events = cluster.pod_events(&unready);
        events.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Readiness probe failed:")).then_some(())
    });
    let p = cluster.get_json(&["pod", &unready, "-n", "default"]).unwrap_or(p);
    assert!(!ready(&p), "{p}");
    assert_eq!(condition(&p, "Ready"), "False");
    assert_eq!(main_status(&p)["restartCount"], 0);

    // Exit 3 twice in a row: killed and restarted, and the Events say why.
    let p = cluster.wait_pod(&dying, "restarted by its liveness probe", Duration::from_secs(90), |p| {
        main_status(p)["restartCount"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(main_status(&p)["lastState"]["terminated"]["exitCode"], 137, "{p}");
    let events = cluster.pod_events(&dying);
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed:") && m.contains("fail")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Killing" && m == "Container main failed liveness probe, will be restarted"),
        "{events:?}"
    );
    cluster.kubectl(&["delete", "pod", &ok, &unready, &dying, "--wait=false"]);
}

#[test]
fn http_probes_make_a_wasi_http_pod_ready_and_restart_it_when_it_fails() {
    let cluster = require_cluster!();
    let node = common::shared_node("probes", PORT).unwrap();
    let name = format!("http-probed-{}", std::process::id());
    const WEB: u16 = 18300;
    let image = guests::publish(&cluster.registry, "http_hello", "v1", "cncf");
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["ports"] = json!([{"name": "web", "containerPort": WEB}]);
    p["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"port": "web", "path": "/", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 1});
    p["spec"]["containers"][0]["livenessProbe"] = json!({"httpGet": {"port": WEB, "path": "/file/no/such/file"},
        "initialDelaySeconds": 3, "periodSeconds": 1, "failureThreshold": 2});
    cluster.apply(&p);
    cluster.wait_pod(&name, "Ready", Duration::from_secs(60), ready);
    let p = cluster.wait_pod(&name, "restarted by its liveness probe", Duration::from_secs(90), |p| {
        main_status(p)["restartCount"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(main_status(&p)["lastState"]["terminated"]["exitCode"], 137, "{p}");
    let events = cluster.pod_events(&name);
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Unhealthy"
                && m == "Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{events:?}"
    );
    // The restarted run has the port again and turns ready again.
    cluster.wait_pod(&name, "Ready after the restart", Duration::from_secs(60), |p| {
        ready(p) && main_status(p)["restartCount"].as_u64().unwrap_or(0) >= 1
    });
    let logs = cluster.kubectl_ok(&["logs", "-n", "default", &name]);
    assert!(logs.contains("GET /"), "the probes' requests reach the guest: {logs}");
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
}

#[test]
fn the_startup_probe_holds_the_other_probes_back() {
    let cluster = require_cluster!();
    let node = common::shared_node("probes", PORT).unwrap();
    let name = format!("startup-{}", std::process::id());
    const GATE: u16 = 18310;
    let probes = json!({
        "startupProbe": {"tcpSocket": {"port": GATE}, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": exec(&["tool", "echo", "ok"], 3),
    });
    tool_pod(cluster, node, &name, probes);
    cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    // A few startup failures in, the passing readiness probe has not made it ready.
    common::wait_for("startup probe failures", Duration::from_secs(30), || {
        let events = cluster.pod_events(&name);
        let failures =
            events.iter().filter(|(r, m)| r == "Unhealthy" && m.starts_with("Startup probe failed:")).count();
        (failures >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = cluster.get_json(&["pod", &name, "-n", "default"]).unwrap();
    assert_eq!(
        (main_status(&p)["started"].clone(), main_status(&p)["ready"].clone()),
        (json!(false), json!(false)),
        "{p}"
    );
    assert!(
        !cluster.pod_events(&name).iter().any(|(_, m)| m.starts_with("Readiness probe")),
        "readiness ran before startup passed"
    );
    let _gate = TcpListener::bind(("127.0.0.1", GATE)).unwrap();
    let p = cluster.wait_pod(&name, "started and Ready", Duration::from_secs(30), ready);
    assert_eq!(main_status(&p)["started"], true);
    assert_eq!(main_status(&p)["restartCount"], 0);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
}

/// `(addresses, notReadyAddresses)` of a Service's Endpoints, as `ip:port`.
fn endpoints(cluster: &common::Cluster, service: &str) -> (Vec<String>, Vec<String>) {
    let e = cluster.get_json(&["endpoints", service, "-n", "default"]).unwrap_or(Value::Null);
    let mut out = (Vec::new(), Vec::new());
    for subset in e["subsets"].as_array().into_iter().flatten() {
        let port = subset["ports"][0]["port"].as_u64().unwrap_or(0);
        for (key, list) in [("addresses", &mut out.0), ("notReadyAddresses", &mut out.1)] {
            for a in subset[key].as_array().into_iter().flatten() {
                list.push(format!("{}:{port}", a["ip"].as_str().unwrap_or("")));
            }
        }
    }
    out
}

#[test]
fn a_readiness_flip_takes_the_pod_out_of_its_service_and_back() {
    let cluster = require_cluster!();
    let netns = common::netns::Netns::create("ready");
    let node = TestNode::join_at(cluster, "ready", NETNS_PORT, &cluster.registry, &[], Some(&netns));
    let id = std::process::id();
    let (name, service) = (format!("flip-{id}"), format!("flip-{id}"));
    const WEB: u16 = 18301;
    const GATE: u16 = 18311;
    // Readiness is a TCP connection to a port this test opens and closes on its side of
    // the namespace's link.
    let gate = || TcpListener::bind((netns.host_ip.as_str(), GATE)).unwrap();
    let listener = gate();
    let image = guests::publish(&cluster.registry, "http_hello", "v1", "cncf");
    let mut p = pod(&name, &node.name, &image);
    p["metadata"]["labels"] = json!({"app": &service});
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": WEB}]);
    p["spec"]["containers"][0]["readinessProbe"] = json!({"tcpSocket": {"host": &netns.host_ip, "port": GATE}, "periodSeconds": 1, "failureThreshold": 1});
    cluster.apply(&p);
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": &service, "namespace": "default"},
        "spec": {"selector": {"app": &service}, "ports": [{"port": 80, "targetPort": WEB}]},
    }));
    let endpoint = format!("{}:{WEB}", netns.node_ip);
    let wait = |what: &str, ready: bool| {
        common::wait_for(what, Duration::from_secs(60), || {
            let (ready_list, unready_list) = endpoints(cluster, &service);
            let (yes, no) = if ready { (ready_list, unready_list) } else { (unready_list, ready_list) };
            (yes.contains(&endpoint) && !no.contains(&endpoint)).then_some(())
        })
    };
    wait("the pod ready in the Service's endpoints", true);
    drop(listener);
    wait("the pod moved to notReadyAddresses", false);
    let p = cluster.get_json(&["pod", &name, "-n", "default"]).unwrap();
    assert_eq!(condition(&p, "Ready"), "False");
    assert_eq!(main_status(&p)["restartCount"], 0);
    let _listener = gate();
    wait("the pod back in the endpoints", true);
    cluster.kubectl(&["delete", "service", &service, "--wait=false"]);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
}
