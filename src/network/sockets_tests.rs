//! Unit tests of one pod's socket rules as a guest would meet them: binds on declared,
//! claimed and others' ports, the listen address, egress to denied ranges and the agent's
//! ports, NetworkPolicy both ways (between two pods of the node too), the Events and
//! counters refusals raise, and everything freed when the pod stops.

use std::net::SocketAddr;

use krustlet_wasi_provider::{SocketRules, Transport, Verdict};
use serde_json::json;

use super::policy::{self as compile, View};
use super::*;

const TCP: Transport = Transport::Tcp;
const UDP: Transport = Transport::Udp;
const NODE: &str = "10.0.0.5";

fn pod(name: &str, labels: serde_json::Value, ports: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]},
    }))
    .unwrap()
}

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn node() -> (Network, mpsc::Receiver<Notice>) {
    Network::new(Setup {
        node_addresses: vec![NODE.parse().unwrap()],
        agent_ports: vec![(10250, "kubelet API (--port)"), (10248, "healthz endpoint (--healthz-port)")],
        ..Setup::default()
    })
}

/// The notices sent so far, as (reason, message).
fn told(rx: &mut mpsc::Receiver<Notice>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push((n.reason, n.message));
    }
    out
}

fn refused(net: &Network, direction: &str, reason: &str) -> u64 {
    let text = net.core.metrics.render(0, 0);
    let line = format!("krustlet_network_refused_total{{direction=\"{direction}\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
}

#[test]
fn binds_take_declared_ports_claim_free_ones_and_name_the_holder_of_others() {
    let (net, mut rx) = node();
    let a = pod("a", json!({}), json!([{"containerPort": 8080, "protocol": "UDP"}]));
    let b = pod("b", json!({}), json!([{"containerPort": 8080}]));
    net.admit(&a).unwrap();
    net.admit(&b).unwrap();
    let (sa, sb) = (net.sockets(&a), net.sockets(&b));
    assert_eq!(sa.bind(UDP, at("0.0.0.0:8080")), Verdict::Allow);
    assert_eq!(sa.bind(TCP, at("0.0.0.0:0")), Verdict::Allow, "a client's ephemeral port");
    assert_eq!(sa.bind(TCP, at("127.0.0.1:0")), Verdict::Allow);
    assert_eq!(sa.bind(TCP, at("0.0.0.0:8080")), Verdict::InUse, "declared for UDP only; TCP is b's");
    assert_eq!(sb.listen(at("0.0.0.0:8080")), Verdict::Allow);
    assert_eq!(sa.bind(TCP, at("127.0.0.1:18000")), Verdict::Deny, "not the listen address");
    assert_eq!(sa.listen(at("0.0.0.0:0")), Verdict::Deny);
    assert_eq!(sa.bind(TCP, at("0.0.0.0:80")), Verdict::Deny, "privileged and undeclared");
    assert_eq!(sa.bind(TCP, at("0.0.0.0:10250")), Verdict::InUse, "the agent's");
    assert_eq!(sa.bind(TCP, at("[::ffff:0.0.0.0]:18000")), Verdict::Allow, "claimed");
    assert_eq!(sa.listen(at("0.0.0.0:18000")), Verdict::Allow);
    assert_eq!(sb.bind(TCP, at("0.0.0.0:18000")), Verdict::InUse);
    let c = pod("c", json!({}), json!([{"containerPort": 18000}]));
    let err = net.admit(&c).unwrap_err().to_string();
    assert_eq!(err, "port 18000/TCP is already in use on this node by pod default/a");

    let told = told(&mut rx);
    let reasons: Vec<&str> = told.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        reasons,
        [
            "PortRefused",
            "PortRefused",
            "PortRefused",
            "PortRefused",
            "PortRefused",
            "PortClaimed",
            "PortRefused"
        ]
    );
    assert!(told[0].1.contains("port 8080/TCP is held by pod default/b"), "{told:?}");
    assert!(told[1].1.contains("pods listen on 0.0.0.0 (--pod-listen-address)"), "{told:?}");
    assert!(told[3].1.contains("port 80/TCP is below 1024"), "{told:?}");
    assert!(told[4].1.contains("held by the node agent's kubelet API (--port)"), "{told:?}");
    assert!(
        told[5].1.contains("port 18000/TCP claimed for this pod") && told[5].1.contains("containerPort"),
        "{told:?}"
    );
    assert!(told[6].1.contains("port 18000/TCP is held by pod default/a"), "{told:?}");
    assert_eq!(refused(&net, "ingress", "port"), 5);
    assert_eq!(refused(&net, "ingress", "agent-port"), 1);

    net.pod_stopped("uid-a");
    assert_eq!(sb.bind(TCP, at("0.0.0.0:18000")), Verdict::Allow, "a's claim is gone with it");
    net.admit(&pod("d", json!({}), json!([{"containerPort": 8080, "protocol": "UDP"}]))).unwrap();
}

#[test]
fn on_a_node_listening_on_one_address_a_wildcard_bind_is_told_which_address_to_bind() {
    let (net, mut rx) = Network::new(Setup { listen_address: NODE.parse().unwrap(), ..Setup::default() });
    let a = pod("a", json!({}), json!([]));
    let sa = net.sockets(&a);
    assert_eq!(sa.bind(TCP, at("0.0.0.0:18000")), Verdict::Deny);
    assert_eq!(sa.bind(TCP, at("10.0.0.5:18000")), Verdict::Allow, "claimed at the listen address");
    assert_eq!(sa.bind(TCP, at("[::]:18001")), Verdict::Deny);
    let told = told(&mut rx);
    assert_eq!(told[0].0, "PortRefused");
    assert!(
        told[0].1.ends_with("pods listen on 10.0.0.5 (--pod-listen-address); bind 10.0.0.5:18000 instead"),
        "{told:?}"
    );
    assert_eq!(told[1].0, "PortClaimed");
    assert!(
        told[2].1.ends_with("pods listen on 10.0.0.5 (--pod-listen-address)"),
        "no IPv4 hint for IPv6: {told:?}"
    );
}

#[test]
fn the_http_default_port_is_reserved_for_the_pod() {
    let (net, _rx) = node();
    let (a, b) = (pod("a", json!({}), json!([])), pod("b", json!({}), json!([])));
    net.reserve_http_default(&a).unwrap();
    net.reserve_http_default(&a).unwrap();
    let err = net.reserve_http_default(&b).unwrap_err().to_string();
    assert_eq!(err, "port 8080/TCP is already in use on this node by pod default/a");
    assert_eq!(net.sockets(&b).bind(TCP, at("0.0.0.0:8080")), Verdict::InUse);
}

#[test]
fn the_http_default_port_is_reserved_only_for_a_served_container_without_a_tcp_port() {
    let (net, _rx) = node();
    let declared = pod("a", json!({}), json!([{"containerPort": 9000}]));
    net.reserve_http_default_if_served(&declared, |_| true);
    let plain = pod("b", json!({}), json!([]));
    net.reserve_http_default_if_served(&plain, |_| false);
    let served = pod("c", json!({}), json!([{"containerPort": 53, "protocol": "UDP"}]));
    net.reserve_http_default_if_served(&served, |c| c.image.as_deref() == Some("i"));
    let err = net.reserve_http_default(&pod("d", json!({}), json!([]))).unwrap_err().to_string();
    assert_eq!(err, "port 8080/TCP is already in use on this node by pod default/c", "only c reserved it");
}

#[test]
fn egress_to_the_nodes_own_ranges_and_ports_is_refused_with_one_event_per_destination() {
    let (net, mut rx) = node();
    let s = net.sockets(&pod("a", json!({}), json!([])));
    assert_eq!(s.connect(TCP, at("127.0.0.1:6443")), Verdict::Deny);
    assert_eq!(s.connect(TCP, at("127.0.0.1:6443")), Verdict::Deny);
    assert_eq!(s.connect(TCP, at("[::ffff:127.0.0.1]:6443")), Verdict::Deny, "mapped: the same destination");
    assert_eq!(s.connect(UDP, at("169.254.169.254:80")), Verdict::Deny);
    assert_eq!(s.connect(TCP, at("10.0.0.5:10250")), Verdict::Deny);
    assert_eq!(s.connect(TCP, at("10.0.0.5:8080")), Verdict::Allow);
    assert_eq!(s.connect(TCP, at("93.184.216.34:443")), Verdict::Allow);
    assert_eq!(s.connect(UDP, at("[2001:db8::1]:53")), Verdict::Allow);
    let told = told(&mut rx);
    assert_eq!(told.len(), 3, "one Event per destination: {told:?}");
    assert!(told.iter().all(|(r, _)| *r == "EgressDenied"));
    assert_eq!(
        told[0].1,
        "connection to 127.0.0.1:6443 (TCP) refused: 127.0.0.0/8 is denied to pods on this node (--pod-egress-deny)"
    );
    assert!(told[1].1.contains("169.254.169.254:80 (UDP)"), "{told:?}");
    assert_eq!(
        told[2].1,
        "connection to 10.0.0.5:10250 (TCP) refused: it is the node agent's kubelet API (--port), which pods may not reach"
    );
    assert_eq!(refused(&net, "egress", "denied-range"), 4, "every refusal is counted");
    assert_eq!(refused(&net, "egress", "agent-port"), 1);
}

#[test]
fn a_scanning_guest_gets_a_bounded_number_of_events() {
    let (net, mut rx) = node();
    let s = net.sockets(&pod("a", json!({}), json!([])));
    for port in 1..=1000 {
        assert_eq!(s.connect(TCP, SocketAddr::new("127.0.0.1".parse().unwrap(), port)), Verdict::Deny);
    }
    let told = told(&mut rx);
    let cap = crate::config::NETWORK_EVENT_DESTINATIONS;
    assert_eq!(told.len(), cap + 1, "{told:?}");
    assert_eq!(told[cap].0, "NetworkEventsLimited");
    assert_eq!(refused(&net, "egress", "denied-range"), 1000);
}

fn publish(net: &Network, pods: &[&Pod], policies: serde_json::Value) {
    let policies = policies.as_array().unwrap().iter().map(|p| {
        let np = serde_json::from_value(p.clone()).unwrap();
        Arc::new(compile::policy(&np).unwrap())
    });
    let pods = pods
        .iter()
        .map(|p| {
            let mut p = (*p).clone();
            p.status = Some(serde_json::from_value(json!({"phase": "Running", "podIP": NODE})).unwrap());
            let (uid, info) = compile::pod_info(&p).unwrap();
            (uid, Arc::new(info))
        })
        .collect();
    net.policies().publish(View::new(policies, HashMap::new(), pods));
}

#[test]
fn network_policy_judges_peers_and_destinations_and_pods_of_the_node_as_themselves() {
    let (net, mut rx) = node();
    let web = pod("web", json!({"app": "web"}), json!([{"containerPort": 18080}]));
    let client = pod("client", json!({"app": "client"}), json!([]));
    let other = pod("other", json!({"app": "other"}), json!([]));
    for p in [&web, &client, &other] {
        net.admit(p).unwrap();
    }
    let (sw, sc, so) = (net.sockets(&web), net.sockets(&client), net.sockets(&other));
    // Open until a view says otherwise.
    assert_eq!(sw.accept(TCP, Some(18080), at("192.0.2.9:40000")), Verdict::Allow);
    publish(
        &net,
        &[&web, &client, &other],
        json!([
            {"metadata": {"name": "web-in", "namespace": "default"}, "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}, {"podSelector": {"matchLabels": {"app": "client"}}}]}],
            }},
            {"metadata": {"name": "client-out", "namespace": "default"}, "spec": {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 18080}]}],
            }},
        ]),
    );
    assert_eq!(sw.accept(TCP, Some(18080), at("192.0.2.9:40000")), Verdict::Deny);
    assert_eq!(sw.accept(TCP, Some(18080), at("198.51.100.7:40000")), Verdict::Allow);
    assert_eq!(sw.accept(TCP, Some(18080), at("127.0.0.1:40000")), Verdict::Allow, "the node itself");
    assert_eq!(sw.accept(TCP, Some(18080), at("10.0.0.5:40000")), Verdict::Allow, "the node's IP");
    assert_eq!(sc.connect(TCP, at("10.9.9.9:80")), Verdict::Deny, "client's egress allows port 18080 only");
    assert_eq!(sc.connect(TCP, at("10.9.9.9:18080")), Verdict::Allow);
    assert_eq!(sc.connect(TCP, at("10.0.0.5:18080")), Verdict::Allow, "web admits client");
    assert_eq!(so.connect(TCP, at("10.0.0.5:18080")), Verdict::Deny, "web does not admit other");
    assert_eq!(so.connect(TCP, at("10.0.0.5:9999")), Verdict::Allow, "nobody's port");
    let told = told(&mut rx);
    let find = |reason: &str, part: &str| told.iter().any(|(r, m)| *r == reason && m.contains(part));
    assert!(
        find(
            "IngressDenied",
            "connection from 192.0.2.9 to port 18080/TCP refused by NetworkPolicy: no ingress rule of the policies selecting this pod (default/web-in) allows it"
        ),
        "{told:?}"
    );
    assert!(
        find(
            "EgressDenied",
            "connection to 10.9.9.9:80 (TCP) refused by NetworkPolicy: no egress rule of the policies selecting this pod (default/client-out)"
        ),
        "{told:?}"
    );
    assert!(
        find(
            "EgressDenied",
            "it is pod default/web's port, and no ingress rule of the policies selecting that pod (default/web-in) allows this pod"
        ),
        "{told:?}"
    );
    // A UDP reply from a peer the pod sent to is not ingress; the same peer unasked is.
    assert_eq!(sw.accept(UDP, Some(18080), at("192.0.2.9:53")), Verdict::Deny);
    assert_eq!(sw.connect(UDP, at("192.0.2.9:53")), Verdict::Allow);
    assert_eq!(sw.accept(UDP, Some(18080), at("192.0.2.9:53")), Verdict::Allow);
    assert_eq!(sw.accept(UDP, Some(18080), at("192.0.2.9:54")), Verdict::Deny);
    assert_eq!(refused(&net, "ingress", "policy"), 4);
    assert_eq!(refused(&net, "egress", "policy"), 1);
}
