//! Table-driven tests of NetworkPolicy evaluation: isolation and policy types, every kind
//! of peer (ipBlock with except, podSelector, namespaceSelector, both), every kind of port
//! (number, named, endPort, protocol), several policies together, and pods sharing an IP.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::super::{Policy, View, compile};
use super::*;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

fn labels(v: Value) -> Labels {
    serde_json::from_value(v).unwrap()
}

fn pod(uid: &str, ns: &str, l: Value, ip: &str, ports: Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({
        "metadata": {"name": uid, "namespace": ns, "uid": uid, "labels": l},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .unwrap()
}

/// prod (team=a): web 10.0.0.1 (http 8080/TCP, dns 53/UDP), db 10.0.0.2 (pg 5432/TCP);
/// dev (team=b): tool 10.0.1.1; x (dev) and y (other) share their node's IP 10.0.2.1.
fn view(policies: &[Value]) -> View {
    let namespaces = [("prod", json!({"team": "a"})), ("dev", json!({"team": "b"})), ("other", json!({}))];
    let namespaces = namespaces
        .iter()
        .map(|(name, l)| {
            let ns = serde_json::from_value(json!({"metadata": {"name": name, "labels": l}})).unwrap();
            let (name, labels) = compile::namespace_labels(&ns).unwrap();
            (name, Arc::new(labels))
        })
        .collect();
    let pods = [
        pod(
            "web",
            "prod",
            json!({"app": "web"}),
            "10.0.0.1",
            json!([{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
        ),
        pod("db", "prod", json!({"app": "db"}), "10.0.0.2", json!([{"name": "pg", "containerPort": 5432}])),
        pod("tool", "dev", json!({"app": "tool"}), "10.0.1.1", json!([])),
        pod("x", "dev", json!({"app": "x"}), "10.0.2.1", json!([])),
        pod("y", "other", json!({"app": "y"}), "10.0.2.1", json!([])),
    ];
    let pods: HashMap<String, Arc<PodInfo>> =
        pods.iter().filter_map(compile::pod_info).map(|(uid, info)| (uid, Arc::new(info))).collect();
    let policies: Vec<Arc<Policy>> = policies
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let np = json!({"metadata": {"name": format!("p{i}"), "namespace": "prod"}, "spec": spec});
            Arc::new(compile::policy(&serde_json::from_value(np).unwrap()).unwrap())
        })
        .collect();
    View::new(policies, namespaces, pods)
}

/// What is asked of the view about pod `web`.
#[derive(Debug, Clone, Copy)]
enum Ask {
    In(&'static str, Option<(Protocol, u16)>),
    Out(&'static str, Protocol, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Open,
    Allow,
    Deny,
}

fn ask(view: &View, subject: &Subject<'_>, a: Ask) -> Want {
    let d = match a {
        Ask::In(ip, port) => view.ingress(subject, Peer::Address(ip.parse().unwrap()), port),
        Ask::Out(ip, protocol, port) => view.egress(subject, ip.parse().unwrap(), (protocol, port)),
    };
    match d {
        Decision::Open => Want::Open,
        Decision::Allowed => Want::Allow,
        Decision::Denied(names) => {
            assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("prod/p")), "{names:?}");
            Want::Deny
        }
    }
}

fn web_labels() -> Labels {
    labels(json!({"app": "web"}))
}

#[test]
fn isolation_and_policy_types() {
    use Ask::*;
    use Want::*;
    let web = Some((TCP, 8080));
    let deny_in = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
    let cases: Vec<(&str, Vec<Value>, Ask, Want)> = vec![
        ("no policy: open both ways", vec![], In("8.8.8.8", web), Open),
        ("no policy: egress open", vec![], Out("8.8.8.8", TCP, 53), Open),
        (
            "a policy for other pods",
            vec![json!({"podSelector": {"matchLabels": {"app": "db"}}})],
            In("8.8.8.8", web),
            Open,
        ),
        ("deny-all ingress", vec![deny_in.clone()], In("10.0.0.2", web), Deny),
        ("deny-all ingress leaves egress open", vec![deny_in.clone()], Out("8.8.8.8", TCP, 53), Open),
        ("no policyTypes: Ingress", vec![json!({"podSelector": {}})], In("10.0.0.2", web), Deny),
        (
            "no policyTypes with egress rules: both",
            vec![json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}]}]})],
            In("10.0.0.2", web),
            Deny,
        ),
        (
            "no policyTypes with egress rules: egress by its rules",
            vec![json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}]}]})],
            Out("8.8.8.8", TCP, 53),
            Allow,
        ),
        (
            "no policyTypes with egress rules: other destinations",
            vec![json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}]}]})],
            Out("1.1.1.1", TCP, 53),
            Deny,
        ),
        (
            "Egress without rules denies all egress",
            vec![json!({"podSelector": {}, "policyTypes": ["Egress"]})],
            Out("10.0.0.2", TCP, 5432),
            Deny,
        ),
        (
            "Egress only leaves ingress open",
            vec![json!({"podSelector": {}, "policyTypes": ["Egress"]})],
            In("10.0.0.2", web),
            Open,
        ),
        (
            "an empty rule allows everything",
            vec![json!({"podSelector": {}, "ingress": [{}]})],
            In("8.8.8.8", web),
            Allow,
        ),
        (
            "policies add up: one denies all, another allows",
            vec![
                deny_in.clone(),
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "8.8.8.8/32"}}]}]}),
            ],
            In("8.8.8.8", web),
            Allow,
        ),
        (
            "selected by expression",
            vec![
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}}),
            ],
            In("8.8.8.8", web),
            Deny,
        ),
    ];
    run(cases);
}

#[test]
fn peers() {
    use Ask::*;
    use Want::*;
    let web = Some((TCP, 8080));
    let from = |peers: Value| vec![json!({"podSelector": {}, "ingress": [{"from": peers}]})];
    let cases: Vec<(&str, Vec<Value>, Ask, Want)> = vec![
        (
            "ipBlock",
            from(json!([{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}])),
            In("192.168.2.3", web),
            Allow,
        ),
        (
            "ipBlock except",
            from(json!([{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}])),
            In("192.168.1.5", web),
            Deny,
        ),
        (
            "ipBlock outside",
            from(json!([{"ipBlock": {"cidr": "192.168.0.0/16"}}])),
            In("10.0.0.2", web),
            Deny,
        ),
        (
            "ipBlock of a mapped peer",
            from(json!([{"ipBlock": {"cidr": "192.168.0.0/16"}}])),
            In("::ffff:192.168.7.7", web),
            Allow,
        ),
        (
            "podSelector: a pod of the namespace",
            from(json!([{"podSelector": {"matchLabels": {"app": "db"}}}])),
            In("10.0.0.2", web),
            Allow,
        ),
        (
            "podSelector: another pod",
            from(json!([{"podSelector": {"matchLabels": {"app": "db"}}}])),
            In("10.0.1.1", web),
            Deny,
        ),
        (
            "podSelector: only the policy's namespace",
            from(json!([{"podSelector": {"matchLabels": {"app": "tool"}}}])),
            In("10.0.1.1", web),
            Deny,
        ),
        (
            "podSelector {}: every pod of the namespace",
            from(json!([{"podSelector": {}}])),
            In("10.0.0.2", web),
            Allow,
        ),
        (
            "podSelector: not an address of no pod",
            from(json!([{"podSelector": {}}])),
            In("8.8.8.8", web),
            Deny,
        ),
        (
            "namespaceSelector",
            from(json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}])),
            In("10.0.1.1", web),
            Allow,
        ),
        (
            "namespaceSelector: other namespaces",
            from(json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}])),
            In("10.0.0.2", web),
            Deny,
        ),
        (
            "namespaceSelector {}: every pod",
            from(json!([{"namespaceSelector": {}}])),
            In("10.0.0.2", web),
            Allow,
        ),
        (
            "namespaceSelector {}: not outside addresses",
            from(json!([{"namespaceSelector": {}}])),
            In("8.8.8.8", web),
            Deny,
        ),
        (
            "namespaceSelector by name label",
            from(json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}])),
            In("10.0.1.1", web),
            Allow,
        ),
        (
            "both selectors: the pod must match in the namespace",
            from(
                json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "db"}}}]),
            ),
            In("10.0.1.1", web),
            Deny,
        ),
        (
            "both selectors: matching",
            from(
                json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "tool"}}}]),
            ),
            In("10.0.1.1", web),
            Allow,
        ),
        (
            "a shared node IP matches when one of its pods does",
            from(json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "y"}}}])),
            In("10.0.2.1", web),
            Allow,
        ),
        ("empty from: any peer", from(json!([])), In("8.8.8.8", web), Allow),
        (
            "a bad CIDR matches nothing",
            from(json!([{"ipBlock": {"cidr": "nope"}}])),
            In("8.8.8.8", web),
            Deny,
        ),
        (
            "egress to a pod by selector",
            vec![
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
            ],
            Out("10.0.0.2", TCP, 5432),
            Allow,
        ),
        (
            "egress to another address",
            vec![
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
            ],
            Out("10.0.1.1", TCP, 5432),
            Deny,
        ),
    ];
    run(cases);
}

#[test]
fn ports() {
    use Ask::*;
    use Want::*;
    let on = |ports: Value| vec![json!({"podSelector": {}, "ingress": [{"ports": ports}]})];
    let out = |ports: Value| {
        vec![
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": ports}]}),
        ]
    };
    let cases: Vec<(&str, Vec<Value>, Ask, Want)> = vec![
        ("a number", on(json!([{"port": 8080}])), In("8.8.8.8", Some((TCP, 8080))), Allow),
        ("another number", on(json!([{"port": 8080}])), In("8.8.8.8", Some((TCP, 8081))), Deny),
        ("TCP by default", on(json!([{"port": 8080}])), In("8.8.8.8", Some((UDP, 8080))), Deny),
        (
            "an unknown port allows only rules without ports",
            on(json!([{"port": 8080}])),
            In("8.8.8.8", None),
            Deny,
        ),
        ("no ports: any, even unknown", on(json!([])), In("8.8.8.8", None), Allow),
        ("named", on(json!([{"port": "http"}])), In("8.8.8.8", Some((TCP, 8080))), Allow),
        ("named, another port", on(json!([{"port": "http"}])), In("8.8.8.8", Some((TCP, 9090))), Deny),
        ("named UDP", on(json!([{"port": "dns", "protocol": "UDP"}])), In("8.8.8.8", Some((UDP, 53))), Allow),
        ("named, wrong protocol", on(json!([{"port": "dns"}])), In("8.8.8.8", Some((TCP, 53))), Deny),
        ("named, no such name", on(json!([{"port": "grpc"}])), In("8.8.8.8", Some((TCP, 8080))), Deny),
        ("endPort", on(json!([{"port": 8000, "endPort": 8100}])), In("8.8.8.8", Some((TCP, 8100))), Allow),
        (
            "endPort, past it",
            on(json!([{"port": 8000, "endPort": 8100}])),
            In("8.8.8.8", Some((TCP, 8101))),
            Deny,
        ),
        (
            "endPort, before it",
            on(json!([{"port": 8000, "endPort": 8100}])),
            In("8.8.8.8", Some((TCP, 7999))),
            Deny,
        ),
        ("a protocol without port", on(json!([{"protocol": "UDP"}])), In("8.8.8.8", Some((UDP, 9))), Allow),
        (
            "a protocol without port, another protocol",
            on(json!([{"protocol": "UDP"}])),
            In("8.8.8.8", Some((TCP, 9))),
            Deny,
        ),
        (
            "SCTP matches nothing here",
            on(json!([{"protocol": "SCTP", "port": 8080}])),
            In("8.8.8.8", Some((TCP, 8080))),
            Deny,
        ),
        ("one of several", on(json!([{"port": 1}, {"port": 8080}])), In("8.8.8.8", Some((TCP, 8080))), Allow),
        ("egress: peer and port", out(json!([{"port": 5432}])), Out("10.0.0.2", TCP, 5432), Allow),
        ("egress: another port", out(json!([{"port": 5432}])), Out("10.0.0.2", TCP, 80), Deny),
        ("egress: another peer", out(json!([{"port": 5432}])), Out("8.8.8.8", TCP, 5432), Deny),
        (
            "egress: named on the destination pod",
            out(json!([{"port": "pg"}])),
            Out("10.0.0.2", TCP, 5432),
            Allow,
        ),
        ("egress: named, another port", out(json!([{"port": "pg"}])), Out("10.0.0.2", TCP, 5433), Deny),
        ("egress: named, not that pod's", out(json!([{"port": "pg"}])), Out("10.0.1.1", TCP, 5432), Deny),
        (
            "egress: endPort",
            out(json!([{"port": 30000, "endPort": 32767}])),
            Out("10.0.1.1", TCP, 31000),
            Allow,
        ),
    ];
    run(cases);
}

fn run(cases: Vec<(&str, Vec<Value>, Ask, Want)>) {
    let own = web_labels();
    let ports = compile::named_ports(pod("web", "prod", json!({}), "10.0.0.1", json!([{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}])).spec.as_ref());
    let subject = Subject { uid: "web", namespace: "prod", labels: &own, ports: &ports };
    let mut failed = Vec::new();
    for (what, policies, a, want) in cases {
        let got = ask(&view(&policies), &subject, a);
        if got != want {
            failed.push(format!("{what}: {a:?} is {got:?}, want {want:?}"));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

#[test]
fn a_pod_of_this_node_is_matched_as_itself_and_labels_come_from_the_view() {
    let v = view(&[
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
    ]);
    let node_ip = "10.9.9.9".parse().unwrap();
    let (db, tool) = (labels(json!({"app": "db"})), labels(json!({"app": "tool"})));
    // Its own labels say nothing the policy selects; the view has it as app=web.
    let stale = labels(json!({"app": "old"}));
    let subject = Subject { uid: "web", namespace: "prod", labels: &stale, ports: &[] };
    let from = |namespace, labels| Peer::Pod { ip: node_ip, namespace, labels };
    assert_eq!(v.ingress(&subject, from("prod", &db), None), Decision::Allowed);
    assert_eq!(v.ingress(&subject, from("dev", &db), None), Decision::Denied(vec!["prod/p0".into()]));
    assert_eq!(v.ingress(&subject, from("prod", &tool), None), Decision::Denied(vec!["prod/p0".into()]));
    assert_eq!(v.ingress(&subject, Peer::Address(node_ip), None), Decision::Denied(vec!["prod/p0".into()]));
    // A pod the view does not know is judged by its own labels.
    let unknown = Subject { uid: "static-1", namespace: "prod", labels: &stale, ports: &[] };
    assert_eq!(v.ingress(&unknown, Peer::Address(node_ip), None), Decision::Open);
    // Before the first complete view, everything is open.
    assert_eq!(View::default().ingress(&subject, Peer::Address(node_ip), None), Decision::Open);
    assert_eq!(v.policy_count(), 1);
}
