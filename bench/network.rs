//! Pod networking benchmark: what NetworkPolicy enforcement costs at cluster scale. Builds
//! the policy view of N pods (default 10,000) in 100 namespaces with 2 policies each, as the
//! watch does, and times the socket verdicts a guest's connections get. Prints numbers only.
//!
//! Usage: bench-network [PODS]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use krustlet_wasi::network::policy::{self, PodInfo, View};
use krustlet_wasi::network::{Network, Setup};
use krustlet_wasi_provider::{PortRules, SocketRules, Transport, Verdict, canonical};
use serde_json::json;

const NAMESPACES: usize = 100;

fn ip_of(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8))
}

fn pod(i: usize) -> Result<Pod> {
    let p = json!({
        "metadata": {
            "name": format!("pod-{i}"), "namespace": format!("ns-{}", i % NAMESPACES), "uid": format!("uid-{i}"),
            "labels": {"app": format!("app-{}", i % 50), "tier": if (i / NAMESPACES).is_multiple_of(2) { "web" } else { "db" },
                       "pod-template-hash": format!("{:x}", i * 7919)},
        },
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip_of(i).to_string()},
    });
    Ok(serde_json::from_value(p)?)
}

fn policies() -> Result<Vec<NetworkPolicy>> {
    let mut out = Vec::new();
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        out.push(serde_json::from_value(json!({
            "metadata": {"name": "web-from-db", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"tier": "web"}}, "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"tier": "db"}}},
                         {"namespaceSelector": {"matchLabels": {"team": format!("t{}", n % 5)}},
                          "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["app-1", "app-2"]}]}}],
                "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}],
            }]},
        }))?);
        out.push(serde_json::from_value(json!({
            "metadata": {"name": "egress", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.200.0.0/16"]}}]},
                {"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]},
            ]},
        }))?);
    }
    Ok(out)
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Mean nanoseconds of `f` over `n` calls.
fn per_call(n: u32, mut f: impl FnMut(u32) -> Verdict, want: Verdict) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        assert_eq!(f(i), want);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() -> Result<()> {
    let pods: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(10_000);
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _guard = tokio.enter();
    let namespaces: HashMap<String, Arc<policy::selector::Labels>> = (0..NAMESPACES)
        .filter_map(|n| {
            let ns: Namespace = serde_json::from_value(
                json!({"metadata": {"name": format!("ns-{n}"), "labels": {"team": format!("t{}", n % 5)}}}),
            )
            .ok()?;
            policy::namespace_labels(&ns).map(|(name, labels)| (name, Arc::new(labels)))
        })
        .collect();
    let compiled: Vec<Arc<policy::Policy>> =
        policies()?.iter().filter_map(policy::policy).map(Arc::new).collect();

    let before = rss_kib()?;
    let start = Instant::now();
    let mut reduced: HashMap<String, Arc<PodInfo>> = HashMap::new();
    for i in 0..pods {
        if let Some((uid, info)) = policy::pod_info(&pod(i)?) {
            reduced.insert(uid, Arc::new(info));
        }
    }
    let reduce_ms = start.elapsed().as_secs_f64() * 1e3;
    let rounds = 20;
    let start = Instant::now();
    let mut view = View::default();
    for _ in 0..rounds {
        view = View::new(compiled.iter().cloned(), namespaces.clone(), reduced.clone());
    }
    let rebuild_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(rounds);
    let held_kib = rss_kib()?.saturating_sub(before);
    println!("pods {pods}, namespaces {NAMESPACES}, policies {}", view.policy_count());
    println!("reduce {pods} pods to what evaluation keeps (JSON -> Pod -> info): {reduce_ms:.1} ms");
    println!("rebuild the view (published after each burst of changes): {rebuild_ms:.2} ms");
    println!(
        "memory of reduced pods + view: {held_kib} KiB ({:.0} bytes per pod)",
        held_kib as f64 * 1024.0 / pods as f64
    );

    let (network, _notices) = Network::new(Setup {
        node_addresses: vec!["192.168.0.5".parse()?],
        agent_ports: vec![(10250, "kubelet API (--port)")],
        ..Setup::default()
    });
    network.policies().publish(view);
    let web = network.sockets(&pod(0)?); // ns-0, tier=web: isolated for ingress and egress
    let open: Pod =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "other", "uid": "x"}}))?;
    let open = network.sockets(&open);
    let db_peer = SocketAddr::new(ip_of(NAMESPACES), 40000); // ns-0, tier=db
    let n = 200_000;
    let at = |port: u16| SocketAddr::new(ip_of(5), port);
    println!("verdict cost, ns per call (mean of {n}):");
    println!(
        "  connect, pod no policy selects:      {:.0}",
        per_call(n, |_| open.connect(Transport::Tcp, at(443)), Verdict::Allow)
    );
    println!(
        "  connect, allowed by an egress rule:  {:.0}",
        per_call(n, |_| web.connect(Transport::Tcp, at(443)), Verdict::Allow)
    );
    let loopback = SocketAddr::from(([127, 0, 0, 1], 6443));
    println!(
        "  connect, denied range (counted, Event limited): {:.0}",
        per_call(n, |_| web.connect(Transport::Tcp, loopback), Verdict::Deny)
    );
    println!(
        "  accept, allowed by podSelector peer: {:.0}",
        per_call(n, |_| web.accept(Transport::Tcp, Some(8080), db_peer), Verdict::Allow)
    );
    let outside = SocketAddr::from(([203, 0, 113, 9], 40000));
    println!(
        "  accept, denied by policy:            {:.0}",
        per_call(n, |_| web.accept(Transport::Tcp, Some(8080), outside), Verdict::Deny)
    );
    egress_beside_connect(n)
}

/// The provider's own egress check of one outgoing connection (the address made canonical,
/// then the node's base rules), beside what the connection itself costs: a TCP connect and
/// accept on loopback.
fn egress_beside_connect(n: u32) -> Result<()> {
    let rules = PortRules::new([]);
    let mapped = SocketAddr::new("::ffff:10.0.0.1".parse()?, 80);
    let check = per_call(n, |_| rules.connect(Transport::Tcp, canonical(mapped)), Verdict::Allow);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let connects = 2_000;
    let start = Instant::now();
    for _ in 0..connects {
        let stream = std::net::TcpStream::connect(addr)?;
        drop(listener.accept()?);
        drop(stream);
    }
    let connect = start.elapsed().as_nanos() as f64 / f64::from(connects);
    println!("egress check of an IPv4-mapped address (canonical + base rules): {check:.0} ns");
    println!("  beside a loopback TCP connect + accept: {connect:.0} ns");
    Ok(())
}
