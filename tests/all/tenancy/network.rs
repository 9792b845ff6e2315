//! Pods' network, provoked from outside on a node in a network namespace of its own (its
//! IP not loopback): a guest cannot reach the node's loopback services nor the agent's
//! kubelet port; ports are owned by (protocol, port, address), an undeclared port is
//! claimed for the pod that binds it first; NetworkPolicy refuses ingress from the test
//! host's address unless an ipBlock allows it (to a guest listener and to a wasi:http
//! port), and egress to what no rule allows; an outgoing wasi:http request cannot reach
//! the node's loopback, IPv4-mapped or not.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Cluster, guests, netns::Netns, node::TestNode, node::phase, node::pod};

/// This module's agent port (healthz on +1000); tenancy network tests use 10500-10514.
const PORT: u16 = 10500;

/// The node every test here shares, in its own network namespace.
struct Net {
    cluster: &'static Cluster,
    netns: Netns,
    node: TestNode,
}

/// The shared node, made once from a thread that lives as long as the process (what it
/// starts dies with the thread that started it).
fn net() -> Option<&'static Net> {
    static NET: OnceLock<&'static Net> = OnceLock::new();
    let cluster = common::cluster()?;
    Some(NET.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let netns = Netns::create("net");
            let node = TestNode::join_at(cluster, "net", PORT, &cluster.registry, &[], Some(&netns));
            common::forget_at_exit(cluster, &node);
            netns.forget_at_exit();
            tx.send(&*Box::leak(Box::new(Net { cluster, netns, node }))).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the network test node joined")
    }))
}

/// The shared node; returns from the test (skipping it) when there is no control plane
/// outside CI.
macro_rules! require_net {
    () => {
        match net() {
            Some(n) => n,
            None => return,
        }
    };
}

fn id() -> u32 {
    std::process::id()
}

/// A pod of `image` on the node with `args`, `ports` and the label `kw-net: <name>`.
fn guest(n: &Net, name: &str, image: &str, args: &[&str], ports: Value, restart: &str) -> Value {
    labelled(n, name, name, image, args, ports, restart)
}

/// Like [`guest`], labelled `kw-net: <label>`.
fn labelled(
    n: &Net,
    name: &str,
    label: &str,
    image: &str,
    args: &[&str],
    ports: Value,
    restart: &str,
) -> Value {
    let mut p = pod(name, &n.node.name, image);
    p["metadata"]["labels"] = json!({"kw-net": label});
    p["spec"]["restartPolicy"] = json!(restart);
    p["spec"]["containers"][0]["args"] = json!(args);
    p["spec"]["containers"][0]["ports"] = ports;
    n.cluster.apply(&p);
    p
}

/// Waits until the pod's phase is `want`; returns its logs.
fn finished(n: &Net, name: &str, want: &str) -> String {
    n.cluster.wait_pod(name, want, Duration::from_secs(120), |p| phase(p) == want);
    n.cluster.kubectl_ok(&["logs", "-n", "default", name])
}

/// Waits for an Event of the pod with `reason` whose message holds every one of `parts`.
fn event(n: &Net, name: &str, reason: &str, parts: &[&str]) -> String {
    common::wait_for_explained(
        &format!("a {reason} Event of pod {name} saying {parts:?}"),
        Duration::from_secs(30),
        || {
            let events = n.cluster.pod_events(name);
            events
                .into_iter()
                .find(|(r, m)| r == reason && parts.iter().all(|p| m.contains(p)))
                .map(|(_, m)| m)
        },
        || format!("{:?}", n.cluster.pod_events(name)),
    )
}

fn delete(n: &Net, what: &str, names: &[&str]) {
    let mut args = vec!["delete", what, "-n", "default", "--wait=false", "--ignore-not-found"];
    args.extend_from_slice(names);
    n.cluster.kubectl(&args);
}

/// Sends a line to an echo server and reads it back; false when the connection is
/// refused, reset or answers nothing.
fn echoes(host: &str, port: u16) -> bool {
    let Ok(mut tcp) =
        TcpStream::connect_timeout(&format!("{host}:{port}").parse().unwrap(), Duration::from_secs(3))
    else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(3)));
    let mut back = [0u8; 5];
    tcp.write_all(b"ping\n").is_ok() && tcp.read_exact(&mut back).is_ok() && &back == b"ping\n"
}

/// `curl http://HOST:PORT/PATH`: (status, body), or `None` when the connection is refused
/// or closed before an answer.
fn http(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{host}:{port}{path}");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n')?;
    out.status.success().then_some(())?;
    Some((status.trim().parse().ok()?, body.to_string()))
}

/// The node's `/metrics` line for refusals of `direction` and `reason`.
fn refused(n: &Net, direction: &str, reason: &str) -> u64 {
    let text =
        n.cluster.kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/metrics", n.node.name)]);
    let line = format!("krustlet_network_refused_total{{direction=\"{direction}\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn a_guest_cannot_reach_the_nodes_loopback_nor_the_agents_port() {
    let n = require_net!();
    let image = guests::publish(&n.cluster.registry, "tcp_echo", "v1", "cncf");
    let node_ip = n.netns.node_ip.clone();
    let kubelet = PORT.to_string();
    // The API server is carried into the namespace at its 127.0.0.1:6443: a real listener
    // on the node's loopback.
    let cases = [
        (
            format!("egress-lo-{}", id()),
            vec!["connect", "127.0.0.1", "6443", "hi"],
            "127.0.0.1:6443 (TCP)",
            "--pod-egress-deny",
        ),
        (format!("egress-kubelet-{}", id()), vec!["connect", &node_ip, &kubelet, "hi"], "", "(--port)"),
    ];
    // IPv4-mapped: wasmtime-wasi refuses it on an IPv6 socket before any rule is asked.
    let mapped = format!("egress-mapped-{}", id());
    guest(n, &mapped, &image, &["connect-ip", "::ffff:127.0.0.1", "6443", "hi"], json!([]), "Never");
    // Names resolve (on the pod's lookup budget); what they resolve to is judged as dialled.
    let named = format!("egress-named-{}", id());
    guest(n, &named, &image, &["connect-name", "localhost", "6443", "hi"], json!([]), "Never");
    // A datagram to the metadata service's link-local address.
    let udp = format!("egress-udp-{}", id());
    guest(n, &udp, &image, &["udp-send", "169.254.169.254", "53", "hi"], json!([]), "Never");
    for (name, args, _, _) in &cases {
        guest(n, name, &image, args, json!([]), "Never");
    }
    for (name, _, dest, flag) in &cases {
        let logs = finished(n, name, "Failed");
        assert!(logs.contains("connect: access-denied"), "{name}: {logs}");
        let dest = if dest.is_empty() { format!("{node_ip}:{PORT} (TCP)") } else { dest.to_string() };
        event(n, name, "EgressDenied", &[&dest, flag]);
    }
    let logs = finished(n, &mapped, "Failed");
    assert!(logs.contains("connect: invalid-argument") || logs.contains("connect: access-denied"), "{logs}");
    let logs = finished(n, &named, "Failed");
    assert!(logs.contains("connect: access-denied"), "{logs}");
    event(n, &named, "EgressDenied", &[":6443 (TCP) refused", "--pod-egress-deny"]);
    let logs = finished(n, &udp, "Failed");
    assert!(logs.contains("send: access-denied"), "{logs}");
    event(
        n,
        &udp,
        "EgressDenied",
        &["169.254.169.254:53 (UDP) refused: 169.254.0.0/16", "--pod-egress-deny"],
    );
    assert!(refused(n, "egress", "denied-range") >= 1);
    assert!(refused(n, "egress", "agent-port") >= 1);
    for (name, _, _, _) in &cases {
        delete(n, "pod", &[name]);
    }
    delete(n, "pod", &[&mapped, &named, &udp]);
}

#[test]
fn an_outgoing_wasi_http_request_cannot_reach_the_nodes_loopback_even_mapped() {
    let n = require_net!();
    let image = guests::publish(&n.cluster.registry, "http_hello", "v1", "cncf");
    let name = format!("fetch-lo-{}", id());
    const WEB: u16 = 18515;
    guest(n, &name, &image, &[], json!([{"containerPort": WEB}]), "Always");
    n.cluster.wait_pod(&name, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    let ip = n.netns.node_ip.clone();
    common::wait_for("the wasi:http pod answering", Duration::from_secs(30), || {
        http(&ip, WEB, "/").map(|_| ())
    });
    for target in ["[::ffff:127.0.0.1]:6443", "127.0.0.1:6443"] {
        let (status, body) = http(&ip, WEB, &format!("/fetch/{target}/")).expect("an answer");
        assert_eq!(status, 502, "{target}: {body}");
        assert!(body.starts_with("error:"), "{target}: {body}");
    }
    // Both are one destination: the mapped address was judged as what it maps.
    event(n, &name, "EgressDenied", &["connection to 127.0.0.1:6443 (TCP) refused", "--pod-egress-deny"]);
    let events = n.cluster.pod_events(&name);
    assert_eq!(events.iter().filter(|(r, _)| r == "EgressDenied").count(), 1, "{events:?}");
    delete(n, "pod", &[&name]);
}

#[test]
fn a_port_declared_for_udp_is_not_a_tcp_port_while_another_pod_declares_it() {
    let n = require_net!();
    let tool = guests::publish(&n.cluster.registry, "tool", "v1", "cncf");
    let echo = guests::publish(&n.cluster.registry, "tcp_echo", "v1", "cncf");
    let (tcp, udp) = (format!("port-tcp-{}", id()), format!("port-udp-{}", id()));
    // A module that declares TCP 18510 but never listens: the port is free at the OS,
    // and only the agent keeps another pod off it.
    guest(n, &tcp, &tool, &["serve"], json!([{"containerPort": 18510}]), "Always");
    n.cluster.wait_pod(&tcp, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    guest(
        n,
        &udp,
        &echo,
        &["bind-other", "18510"],
        json!([{"containerPort": 18510, "protocol": "UDP"}]),
        "Never",
    );
    let logs = finished(n, &udp, "Failed");
    assert!(
        logs.contains("bind 18510: access-denied") || logs.contains("bind 18510: address-in-use"),
        "{logs}"
    );
    event(n, &udp, "PortRefused", &[&format!("port 18510/TCP is held by pod default/{tcp}")]);
    delete(n, "pod", &[&tcp, &udp]);
}

#[test]
fn an_undeclared_port_is_claimed_by_the_first_pod_that_binds_it() {
    let n = require_net!();
    let image = guests::publish(&n.cluster.registry, "tcp_echo", "v1", "cncf");
    let (first, second, declares, later) = (
        format!("claim-a-{}", id()),
        format!("claim-b-{}", id()),
        format!("claim-c-{}", id()),
        format!("claim-d-{}", id()),
    );
    // The guide's pod: no ports declared, it binds one.
    guest(n, &first, &image, &["echo", "18511"], json!([]), "Always");
    n.cluster.wait_pod(&first, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    common::wait_for("the claimed port to echo from the test host", Duration::from_secs(30), || {
        echoes(&n.netns.node_ip, 18511).then_some(())
    });
    event(n, &first, "PortClaimed", &["port 18511/TCP claimed for this pod", "containerPort"]);

    guest(n, &second, &image, &["bind-other", "18511"], json!([]), "Never");
    let logs = finished(n, &second, "Failed");
    assert!(
        logs.contains("bind 18511: access-denied") || logs.contains("bind 18511: address-in-use"),
        "{logs}"
    );
    event(n, &second, "PortRefused", &[&format!("port 18511/TCP is held by pod default/{first}")]);

    // A claim is a port in use for admission too.
    guest(n, &declares, &image, &["echo", "18511"], json!([{"containerPort": 18511}]), "Never");
    let failed = n.cluster.wait_pod(&declares, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(failed["status"]["reason"], "NodePorts");
    let message = failed["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("port 18511/TCP is already in use on this node by pod default/{first}")),
        "{message}"
    );

    // Freed when the claiming pod stops.
    n.cluster.kubectl_ok(&["delete", "pod", "-n", "default", &first, "--wait=true", "--timeout=60s"]);
    guest(n, &later, &image, &["bind-other", "18511"], json!([]), "Never");
    let logs = finished(n, &later, "Succeeded");
    assert!(logs.contains("bound 18511"), "{logs}");
    delete(n, "pod", &[&second, &declares, &later]);
}

/// A NetworkPolicy of pods labelled `kw-net: <label>`.
fn policy(name: &str, label: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["podSelector"] = json!({"matchLabels": {"kw-net": label}});
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

#[test]
fn network_policy_refuses_ingress_from_the_test_host_unless_an_ip_block_allows_it() {
    let n = require_net!();
    let image = guests::publish(&n.cluster.registry, "tcp_echo", "v1", "cncf");
    let web_image = guests::publish(&n.cluster.registry, "http_hello", "v1", "cncf");
    let (name, web) = (format!("ingress-{}", id()), format!("ingress-web-{}", id()));
    const ECHO: u16 = 18512;
    const WEB: u16 = 18516;
    guest(n, &name, &image, &["echo", &ECHO.to_string()], json!([{"containerPort": ECHO}]), "Always");
    // A wasi:http pod the same policies select: the agent's listener asks the same rules.
    labelled(n, &web, &name, &web_image, &[], json!([{"containerPort": WEB}]), "Always");
    for pod in [&name, &web] {
        n.cluster.wait_pod(pod, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    }
    let ip = n.netns.node_ip.clone();
    let served = || http(&ip, WEB, "/").is_some_and(|(status, _)| status == 200);
    let both = |want: bool| (echoes(&ip, ECHO) == want && served() == want).then_some(());
    common::wait_for("both pods answering the test host", Duration::from_secs(30), || both(true));

    let (deny, allow) = (format!("deny-{name}"), format!("allow-{name}"));
    n.cluster.apply(&policy(&deny, &name, json!({"policyTypes": ["Ingress"]})));
    common::wait_for("the policy to refuse the test host", Duration::from_secs(30), || both(false));
    let from = format!("connection from {}", n.netns.host_ip);
    event(n, &name, "IngressDenied", &[&from, &format!("port {ECHO}/TCP"), &format!("(default/{deny})")]);
    event(n, &web, "IngressDenied", &[&from, &format!("port {WEB}/TCP"), &format!("(default/{deny})")]);
    assert!(refused(n, "ingress", "policy") >= 2);

    let block = json!({"ingress": [{"from": [{"ipBlock": {"cidr": format!("{}/32", n.netns.host_ip)}}]}]});
    n.cluster.apply(&policy(&allow, &name, block));
    common::wait_for("the ipBlock to let the test host in", Duration::from_secs(30), || both(true));

    // An except that names the host takes it out of the block again.
    let except = json!({"ingress": [{"from": [{"ipBlock": {
        "cidr": "10.201.0.0/16", "except": [format!("{}/32", n.netns.host_ip)],
    }}]}]});
    n.cluster.apply(&policy(&allow, &name, except));
    common::wait_for("the except to refuse the test host", Duration::from_secs(30), || both(false));
    delete(n, "networkpolicy", &[&deny, &allow]);
    delete(n, "pod", &[&name, &web]);
}

#[test]
fn an_egress_policy_refuses_a_destination_no_rule_allows() {
    let n = require_net!();
    let image = guests::publish(&n.cluster.registry, "tcp_echo", "v1", "cncf");
    // A line server on the test host's end of the link.
    let listener = TcpListener::bind((n.netns.host_ip.as_str(), 18513)).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut line = [0u8; 64];
            let got = conn.read(&mut line).unwrap_or(0);
            let _ = conn.write_all(&line[..got]);
        }
    });
    let (open, shut) = (format!("egress-open-{}", id()), format!("egress-shut-{}", id()));
    let host = n.netns.host_ip.clone();
    guest(n, &open, &image, &["connect", &host, "18513", "hello"], json!([]), "Never");
    let logs = finished(n, &open, "Succeeded");
    assert!(logs.contains("reply: hello"), "{logs}");

    let name = format!("egress-{shut}");
    let only =
        json!({"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]});
    n.cluster.apply(&policy(&name, &shut, only));
    // Restarted until a run meets the policy (the watch may see the pod before it).
    guest(n, &shut, &image, &["connect", &host, "18513", "hello"], json!([]), "Always");
    event(
        n,
        &shut,
        "EgressDenied",
        &[
            &format!("connection to {host}:18513 (TCP) refused by NetworkPolicy"),
            &format!("(default/{name})"),
        ],
    );
    assert!(refused(n, "egress", "policy") >= 1);
    delete(n, "networkpolicy", &[&name]);
    delete(n, "pod", &[&open, &shut]);
}
