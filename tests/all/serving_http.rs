//! End to end, on the real control plane: Wasm pods serve traffic. A `wasi:http`
//! component answers on its containerPort (or on 8080 when it declares none), its output
//! is in `kubectl logs`, a request that traps, runs out of memory or runs past its timeout
//! gets a 500 while the pod keeps running, one over the concurrency cap gets a 503, the
//! counters are in `/metrics`, and a delete lets a request in flight finish and frees the
//! port. A `wasi:sockets` command listens on its declared ports and cannot bind another
//! pod's. A preview1 module
//! that declares a port gets a Warning. Through `kubectl port-forward` (1.32 and 1.20)
//! both kinds are reached, and a node in a network namespace backs a Service.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::forward::Forward;
use common::guests;
use common::node::{TestNode, main_status, phase, pod};
use serde_json::{Value, json};

/// The test nodes' kubelet API ports (healthz on +1000).
const PORT: u16 = 10383;
const NETNS_PORT: u16 = 10384;

/// `curl http://HOST:PORT/PATH`: (status, body). `None` when the connection is refused
/// or closed before an answer.
fn http(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{host}:{port}{path}");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}", &url])
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n')?;
    Some((status.trim().parse().ok()?, body.to_string()))
}

/// A Running pod of the `wasi:http` example guest; returns it as the API shows it.
fn http_pod(
    cluster: &common::Cluster,
    node: &TestNode,
    name: &str,
    port: Option<u16>,
    extra: Value,
) -> Value {
    let image = guests::publish(&cluster.registry, "http_hello", "v1", "cncf");
    let mut p = pod(name, &node.name, &image);
    if let Some(port) = port {
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": port, "hostPort": port}]);
    }
    merge(&mut p, extra);
    cluster.apply(&p);
    cluster.wait_pod(name, "Running", Duration::from_secs(120), |p| phase(p) == "Running")
}

/// Merges `from` into `into`: objects by key, arrays by index.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in b.into_iter().enumerate() {
                match a.get_mut(i) {
                    Some(slot) => merge(slot, v),
                    None => a.push(v),
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The node's `/metrics`, read through the API server's node proxy.
fn metrics(cluster: &common::Cluster, node: &str) -> String {
    cluster.kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/metrics")])
}

/// The value of one metric line that starts with `prefix` (labels included).
fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_wasi_http_pod_serves_and_survives_its_failing_requests() {
    let cluster = require_cluster!();
    let node = common::shared_node("http", PORT).unwrap();
    let name = format!("http-{}", std::process::id());
    const WEB: u16 = 18290;
    let extra = json!({
        "metadata": {"annotations": {
            "krustlet-wasi.dev/http-max-concurrent": "1",
            "krustlet-wasi.dev/http-request-timeout": "2s",
        }},
        "spec": {"containers": [{"name": "main", "resources": {"limits": {"memory": "32Mi"}}}]},
    });
    let running = http_pod(cluster, node, &name, Some(WEB), extra);
    assert_eq!(running["status"]["podIP"], "127.0.0.1");
    let events = cluster.pod_events(&name);
    assert!(
        events.iter().any(|(r, m)| r == "Listening" && m.contains(&format!("port(s) {WEB}"))),
        "{events:?}"
    );

    assert_eq!(http("127.0.0.1", WEB, "/hello"), Some((200, "Hello, World!\n".into())));
    common::wait_for("the request's line in kubectl logs", Duration::from_secs(20), || {
        let logs = cluster.kubectl_ok(&["logs", "-n", "default", &name]);
        logs.contains("GET /hello").then_some(())
    });

    let (status, body) = http("127.0.0.1", WEB, "/trap").expect("an answer to a trapping request");
    assert_eq!(status, 500, "{body}");
    let (status, body) = http("127.0.0.1", WEB, "/grow?mb=64").expect("an answer past the memory limit");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("memory"), "{body}");
    let (status, body) = http("127.0.0.1", WEB, "/spin").expect("an answer past the request timeout");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("timeout"), "{body}");

    // One request in flight is the cap: the next gets 503 at once.
    let slow = std::thread::spawn(move || http("127.0.0.1", WEB, "/slow?ms=1500"));
    let in_flight = format!("krustlet_http_requests_in_flight{{namespace=\"default\",pod=\"{name}\"");
    common::wait_for("the slow request in flight", Duration::from_secs(20), || {
        (metric(&metrics(cluster, &node.name), &in_flight) == Some(1)).then_some(())
    });
    let (status, _) = http("127.0.0.1", WEB, "/").expect("an answer over the cap");
    assert_eq!(status, 503);
    assert_eq!(slow.join().unwrap(), Some((200, "slept 1500 ms\n".into())));

    let text = metrics(cluster, &node.name);
    let labels = format!("namespace=\"default\",pod=\"{name}\",container=\"main\"");
    for cause in ["trap", "out_of_memory", "timeout", "over_capacity"] {
        let line = format!("krustlet_http_errors_total{{{labels},cause=\"{cause}\"}}");
        assert_eq!(metric(&text, &line), Some(1), "{cause} in\n{text}");
    }
    assert!(metric(&text, &format!("krustlet_http_requests_total{{{labels}}}")).unwrap_or(0) >= 6, "{text}");
    let pod = cluster.get_json(&["pod", &name, "-n", "default"]).unwrap();
    assert_eq!(phase(&pod), "Running");
    assert_eq!(main_status(&pod)["restartCount"], 0, "failing requests never restart the pod");

    // Delete: no new connections at once, the request in flight finishes, the port is
    // free once the pod is gone.
    let slow = std::thread::spawn(move || http("127.0.0.1", WEB, "/slow?ms=1800"));
    common::wait_for("the slow request in flight", Duration::from_secs(20), || {
        (metric(&metrics(cluster, &node.name), &in_flight) == Some(1)).then_some(())
    });
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
    common::wait_for("the listener closed", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", WEB)).is_err().then_some(())
    });
    assert_eq!(slow.join().unwrap(), Some((200, "slept 1800 ms\n".into())), "the request in flight finishes");
    common::wait_for("the pod gone", Duration::from_secs(60), || {
        cluster.get_json(&["pod", &name, "-n", "default"]).is_none().then_some(())
    });
    let again = format!("{name}-again");
    http_pod(cluster, node, &again, Some(WEB), json!({}));
    assert_eq!(http("127.0.0.1", WEB, "/").map(|r| r.0), Some(200));
    cluster.kubectl(&["delete", "pod", &again, "--wait=false"]);
}

#[test]
fn a_wasi_http_pod_without_ports_is_served_on_8080_and_says_so() {
    let cluster = require_cluster!();
    let node = common::shared_node("http", PORT).unwrap();
    let _port = common::turns::host_8080();
    let name = format!("http-default-{}", std::process::id());
    http_pod(cluster, node, &name, None, json!({}));
    let events = cluster.pod_events(&name);
    assert!(
        events.iter().any(|(r, m)| r == "Listening" && m.contains("port 8080") && m.contains("default")),
        "{events:?}"
    );
    assert_eq!(http("127.0.0.1", 8080, "/"), Some((200, "Hello, World!\n".into())));

    // A second such pod cannot have 8080: its container fails to start, saying why.
    let second = format!("{name}-b");
    let image = guests::publish(&cluster.registry, "http_hello", "v1", "cncf");
    cluster.apply(&pod(&second, &node.name, &image));
    let waiting = cluster.wait_pod(&second, "CreateContainerError", Duration::from_secs(60), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "CreateContainerError"
    });
    let message = main_status(&waiting)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("8080") && message.contains(&format!("pod default/{name}")), "{message}");
    cluster.kubectl_ok(&["delete", "pod", &name, &second, "--wait=true", "--timeout=60s"]);
}

#[test]
fn a_sockets_command_listens_on_its_ports_not_on_another_pods_and_a_module_is_warned() {
    let cluster = require_cluster!();
    let node = common::shared_node("http", PORT).unwrap();
    const ECHO: u16 = 18291;
    let image = guests::publish(&cluster.registry, "tcp_echo", "v1", "cncf");
    let id = std::process::id();
    let (echo, other) = (format!("echo-{id}"), format!("bind-other-{id}"));
    let mut p = pod(&echo, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["echo", ECHO.to_string()]);
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": ECHO}]);
    cluster.apply(&p);
    cluster.wait_pod(&echo, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    let mut tcp = common::poll_until(
        "the echo server listening",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || TcpStream::connect(("127.0.0.1", ECHO)).ok(),
        || cluster.kubectl_ok(&["logs", "-n", "default", &echo]),
    );
    tcp.write_all(b"ping\n").unwrap();
    let mut back = [0u8; 5];
    tcp.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping\n");

    let mut p = pod(&other, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    // The echo pod's port: another pod's, whether or not its listener is up.
    p["spec"]["containers"][0]["args"] = json!(["bind-other", ECHO.to_string()]);
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 18293}]);
    cluster.apply(&p);
    let failed = cluster.wait_pod(&other, "Failed", Duration::from_secs(120), |p| phase(p) == "Failed");
    assert_eq!(main_status(&failed)["state"]["terminated"]["exitCode"], 1);
    let logs = cluster.kubectl_ok(&["logs", "-n", "default", &other]);
    let refused = |e: &str| logs.contains(&format!("bind {ECHO}: {e}"));
    assert!(refused("access-denied") || refused("address-in-use"), "{logs}");
    assert!(node.agent.logs().contains(&format!("port {ECHO}/TCP is held by pod default/{echo}")));

    // A preview1 module cannot listen: it runs, and a Warning says what can.
    let module = format!("module-port-{id}");
    let tool = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let mut p = pod(&module, &node.name, &tool);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 18294}]);
    cluster.apply(&p);
    cluster.wait_pod(&module, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let events = cluster.pod_events(&module);
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "ModuleCannotListen" && m.contains("18294") && m.contains("wasm32-wasip2")),
        "{events:?}"
    );
    cluster.kubectl(&["delete", "pod", &echo, &other, &module, "--wait=false"]);
}

#[test]
fn kubectl_port_forward_reaches_an_http_pod_and_a_sockets_pod() {
    let cluster = require_cluster!();
    let node = common::shared_node("http", PORT).unwrap();
    let id = std::process::id();
    const WEB: u16 = 18295;
    const ECHO: u16 = 18296;
    let web = format!("pf-web-{id}");
    http_pod(cluster, node, &web, Some(WEB), json!({}));
    let echo = format!("pf-echo-{id}");
    let image = guests::publish(&cluster.registry, "tcp_echo", "v1", "cncf");
    let mut p = pod(&echo, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["echo", ECHO.to_string()]);
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": ECHO}]);
    cluster.apply(&p);
    cluster.wait_pod(&echo, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    common::wait_for("the echo server listening", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", ECHO)).ok()
    });
    for (i, kubectl) in common::kubectls().iter().enumerate() {
        let local = 18270 + 2 * i as u16;
        let _web = Forward::start(kubectl, &cluster.kubeconfig, &web, local, WEB);
        let answer = http("127.0.0.1", local, "/through-the-forward");
        assert_eq!(answer, Some((200, "Hello, World!\n".into())), "{}", kubectl.display());
        let _echo = Forward::start(kubectl, &cluster.kubeconfig, &echo, local + 1, ECHO);
        let mut tcp = TcpStream::connect(("127.0.0.1", local + 1)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.write_all(b"forwarded\n").unwrap();
        let mut back = [0u8; 10];
        tcp.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"forwarded\n", "{}", kubectl.display());
    }
    let logs = cluster.kubectl_ok(&["logs", "-n", "default", &web]);
    assert!(logs.contains("GET /through-the-forward"), "{logs}");
    cluster.kubectl(&["delete", "pod", &web, &echo, "--wait=false"]);
}

#[test]
fn a_service_sends_traffic_to_a_wasi_http_pod_at_the_node_ip() {
    let cluster = require_cluster!();
    let netns = common::netns::Netns::create("web");
    let node = TestNode::join_at(cluster, "web", NETNS_PORT, &cluster.registry, &[], Some(&netns));
    let id = std::process::id();
    let (name, service) = (format!("svc-web-{id}"), format!("web-{id}"));
    const WEB: u16 = 18297;
    let running =
        http_pod(cluster, &node, &name, Some(WEB), json!({"metadata": {"labels": {"app": &service}}}));
    assert_eq!(running["status"]["podIP"], netns.node_ip.as_str());
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": &service, "namespace": "default"},
        "spec": {"selector": {"app": &service}, "ports": [{"port": 80, "targetPort": WEB}]},
    }));
    let endpoint = format!("{}:{WEB}", netns.node_ip);
    common::wait_for("the pod in the Service's endpoints", Duration::from_secs(60), || {
        let out = cluster.kubectl_ok(&["get", "endpoints", "-n", "default", &service]);
        out.contains(&endpoint).then_some(())
    });
    // The endpoint the Service lists answers from this host.
    assert_eq!(http(&netns.node_ip, WEB, "/via-service"), Some((200, "Hello, World!\n".into())));
    cluster.kubectl(&["delete", "service", &service, "--wait=false"]);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
}
