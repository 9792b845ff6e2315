//! End to end: a node joins the real control plane through both CSRs, registers with the
//! promised labels, taints, addresses and nodeInfo, keeps its Lease, survives a restart
//! without new CSRs, and stops cleanly. Also: bad flags and a denied CSR.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{AGENT, Agent, wait_for};
use serde_json::{Value, json};

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("kw-{tag}-{}-{:x}", std::process::id(), nanos % 0xffff)
}

fn agent_args(name: &str, port: u16, dir: &std::path::Path, bootstrap: &std::path::Path) -> Vec<String> {
    [
        "--node-ip",
        "127.0.0.1",
        "--node-name",
        name,
        "--hostname",
        name,
        "--port",
        &port.to_string(),
        "--max-pods",
        "42",
        "--data-dir",
        &dir.join("data").to_string_lossy(),
        "--bootstrap-file",
        &bootstrap.to_string_lossy(),
        "--node-labels",
        "team=wasm,example.com/tier=gold",
        // Two of these agents run at once: they cannot both have the default 10248.
        "--healthz-port",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn approve_line(name: &str) -> String {
    format!("BOOTSTRAP: TLS certificate requires manual approval. Run kubectl certificate approve {name}-tls")
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_ready(node: &Value) -> bool {
    condition(node, "Ready").is_some_and(|c| c["status"] == "True")
}

fn our_taints() -> Vec<Value> {
    ["NoSchedule", "NoExecute"]
        .iter()
        .map(|e| json!({"key": "kubernetes.io/arch", "value": "wasm32-wasi", "effect": e}))
        .collect()
}

fn taints(node: &Value) -> Vec<Value> {
    let mut t: Vec<Value> = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
    for taint in &mut t {
        taint.as_object_mut().unwrap().remove("timeAdded");
    }
    t
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn node_joins_through_both_csrs_stays_ready_and_restarts_without_new_csrs() {
    let cluster = require_cluster!();
    let name = unique("join");
    cluster.forget_node(&name);
    let dir = common::sweep::test_dir();
    let bootstrap = cluster.bootstrap_file(dir.path());
    let args = agent_args(&name, 10261, dir.path(), &bootstrap);

    let mut agent = Agent::start(&dir.path().join("logs"), &args);
    agent.wait_output(&approve_line(&name), Duration::from_secs(90));

    // The client CSR: bootstrap token user, kubelet client signer, auto-approved and issued.
    let client_csr = cluster.get_json(&["csr", &name]).expect("client CSR exists");
    assert_eq!(client_csr["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet");
    assert_eq!(client_csr["spec"]["usages"], json!(["digital signature", "key encipherment", "client auth"]));
    assert!(
        client_csr["spec"]["username"].as_str().unwrap().starts_with("system:bootstrap:"),
        "{client_csr}"
    );
    let cert = common_cert(&client_csr);
    assert!(
        cert.subject.contains(&format!("CN=system:node:{name}")) && cert.subject.contains("O=system:nodes")
    );

    // The serving CSR: asked by the node itself, waiting for a human.
    let tls = format!("{name}-tls");
    let serving_csr = cluster.get_json(&["csr", &tls]).expect("serving CSR exists");
    assert_eq!(serving_csr["spec"]["signerName"], "kubernetes.io/kubelet-serving");
    assert_eq!(
        serving_csr["spec"]["usages"],
        json!(["digital signature", "key encipherment", "server auth"])
    );
    assert_eq!(serving_csr["spec"]["username"], format!("system:node:{name}"));
    assert!(serving_csr["status"]["certificate"].is_null(), "not issued before approval");
    assert!(cluster.get_json(&["node", &name]).is_none(), "no Node before the serving cert");

    let approved = Instant::now();
    cluster.kubectl_ok(&["certificate", "approve", &tls]);
    let node = wait_for("the node to be Ready", Duration::from_secs(60), || {
        cluster.get_json(&["node", &name]).filter(is_ready)
    });
    eprintln!("approval -> node Ready: {:?}", approved.elapsed());
    let serving = common::inspect_file(&dir.path().join("data/config/krustlet.crt"));
    assert!(serving.ips.contains(&"127.0.0.1".parse().unwrap()) && serving.dns.contains(&name));
    assert_eq!(mode(&dir.path().join("data/config/kubeconfig")), 0o600);
    assert_eq!(mode(&dir.path().join("data/config/krustlet.key")), 0o600);

    // Exactly the promised labels, taints, addresses, endpoint and nodeInfo.
    let labels = node["metadata"]["labels"].as_object().unwrap();
    let mut expected = serde_json::Map::new();
    for k in ["kubernetes.io/os", "beta.kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/arch"] {
        expected.insert(k.into(), json!("wasm32-wasi"));
    }
    expected.insert("type".into(), json!("krustlet"));
    expected.insert("kubernetes.io/hostname".into(), json!(name));
    expected.insert("team".into(), json!("wasm"));
    expected.insert("example.com/tier".into(), json!("gold"));
    assert_eq!(labels, &expected);
    // The node lifecycle controller may add a not-ready taint until it sees Ready.
    let node = wait_for("exactly our taints", Duration::from_secs(30), || {
        cluster.get_json(&["node", &name]).filter(|n| taints(n) == our_taints())
    });
    let status = &node["status"];
    assert_eq!(
        status["addresses"],
        json!([{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}])
    );
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10261);
    assert_eq!(status["capacity"]["pods"], "42");
    assert_eq!(status["allocatable"]["pods"], "42");
    assert!(status["capacity"]["cpu"].as_str().unwrap().parse::<u32>().unwrap() >= 1);
    assert!(status["capacity"]["memory"].as_str().unwrap().ends_with("Ki"));
    assert!(status["capacity"]["ephemeral-storage"].as_str().unwrap().ends_with("Ki"));
    let info = &status["nodeInfo"];
    assert_eq!(info["architecture"], "wasm-wasi");
    assert_eq!(info["operatingSystem"], "linux");
    assert!(info["containerRuntimeVersion"].as_str().unwrap().starts_with("wasmtime://48.0."), "{info}");
    assert!(info["kubeletVersion"].as_str().unwrap().contains("krustlet-wasi"));
    for (t, reason) in [
        ("Ready", "KubeletReady"),
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        assert_eq!(condition(&node, t).unwrap()["reason"], reason, "{t}");
    }

    // The Lease is owned by the Node, renews, and the node stays Ready past the
    // node lifecycle controller's 40 s grace period.
    let lease = cluster.get_json(&["-n", "kube-node-lease", "lease", &name]).expect("lease exists");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], node["metadata"]["uid"]);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let first = lease["spec"]["renewTime"].clone();
    wait_for("the lease to renew", Duration::from_secs(25), || {
        let l = cluster.get_json(&["-n", "kube-node-lease", "lease", &name])?;
        (l["spec"]["renewTime"] != first).then_some(())
    });
    while approved.elapsed() < Duration::from_secs(55) {
        std::thread::sleep(Duration::from_secs(1));
    }
    let node = cluster.get_json(&["node", &name]).unwrap();
    assert!(is_ready(&node), "node lost Ready: {}", node["status"]["conditions"]);
    assert_eq!(taints(&node), our_taints(), "the lifecycle controller tainted the node");

    // SIGTERM: clean exit within 5 s.
    let (status, took) = agent.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Someone removes a label and a taint; a restart creates no CSR and restores the
    // label. NodeRestriction forbids a node to touch its taints, so the node says so.
    cluster.kubectl_ok(&["label", "node", &name, "type-"]);
    cluster.kubectl_ok(&["taint", "node", &name, "kubernetes.io/arch=wasm32-wasi:NoSchedule-"]);
    let csrs_before = csr_names(cluster, &name);
    let mut agent = Agent::start(&dir.path().join("logs"), &args);
    agent.wait_output("node registered and Ready", Duration::from_secs(30));
    assert!(!agent.output().contains("BOOTSTRAP:"), "no approval asked on restart");
    assert_eq!(csr_names(cluster, &name), csrs_before, "a restart must not create CSRs");
    let node = cluster.get_json(&["node", &name]).unwrap();
    assert_eq!(node["metadata"]["labels"]["type"], "krustlet");
    let events = cluster
        .get_json(&[
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={name},reason=TaintsMissing"),
        ])
        .unwrap();
    let note = events["items"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(
        note.contains(&format!("kubectl taint nodes {name} kubernetes.io/arch=wasm32-wasi:NoSchedule")),
        "event: {events}"
    );
    assert_eq!(events["items"][0]["type"], "Warning");

    let (status, _) = agent.terminate();
    assert!(status.success());
    cluster.forget_node(&name);
}

#[test]
fn a_denied_serving_csr_ends_the_agent_with_a_clear_message() {
    let cluster = require_cluster!();
    let name = unique("deny");
    cluster.forget_node(&name);
    let dir = common::sweep::test_dir();
    let bootstrap = cluster.bootstrap_file(dir.path());
    let mut agent = Agent::start(&dir.path().join("logs"), &agent_args(&name, 10262, dir.path(), &bootstrap));
    agent.wait_output(&approve_line(&name), Duration::from_secs(90));
    cluster.kubectl_ok(&["certificate", "deny", &format!("{name}-tls")]);
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let err = agent.logs();
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("CertificateSigningRequest {name}-tls was denied")), "{err}");
    assert!(cluster.get_json(&["node", &name]).is_none(), "a denied node must not register");
    cluster.forget_node(&name);
}

#[test]
fn bad_flags_exit_non_zero_with_one_line_naming_the_flag() {
    let dir = common::sweep::test_dir();
    let data = dir.path().to_string_lossy().to_string();
    let cases: [(&[&str], &str, i32); 7] = [
        (&["--node-ip", "300.1.1.1"], "--node-ip", 2),
        (&["--eviction-hard", "nodefs.available<lots"], "--eviction-hard", 2),
        (&["--port", "http"], "--port", 2),
        (&["--node-labels", "a=b,broken"], "--node-labels", 2),
        (&["--node-name", "Not_A_Name"], "--node-name", 2),
        (&["--no-such-flag"], "--no-such-flag", 2),
        (
            &["--node-ip", "127.0.0.1", "--bootstrap-file", "/nonexistent/boot.conf"],
            "--bootstrap-file /nonexistent/boot.conf",
            1,
        ),
    ];
    for (args, flag, code) in cases {
        let out = Command::new(AGENT)
            .args(args)
            .args(["--data-dir", &data, "--hostname", "box"])
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line, got {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn a_crossed_eviction_threshold_is_disk_pressure_and_the_cluster_stops_scheduling() {
    let cluster = require_cluster!();
    // Less than all of the disk free: always crossed, whatever this machine has.
    let node = common::node::TestNode::join_with(
        cluster,
        "pressure",
        10264,
        &cluster.registry,
        &["--eviction-hard", "nodefs.available<100%"],
    );
    let tainted = wait_for("the disk-pressure taint", Duration::from_secs(30), || {
        let n = cluster.get_json(&["node", &node.name])?;
        taints(&n).iter().any(|t| t["key"] == "node.kubernetes.io/disk-pressure").then_some(n)
    });
    let disk = condition(&tainted, "DiskPressure").unwrap();
    assert_eq!(
        (disk["status"].as_str(), disk["reason"].as_str()),
        (Some("True"), Some("KubeletHasDiskPressure"))
    );
    assert_eq!(condition(&tainted, "MemoryPressure").unwrap()["status"], "False");
    // The Node's event says which threshold and by how much.
    let sel = format!("involvedObject.name={},reason=NodeHasDiskPressure", node.name);
    let event = wait_for("the NodeHasDiskPressure event", Duration::from_secs(10), || {
        let ev = cluster.get_json(&["events", "-n", "default", "--field-selector", &sel])?;
        ev["items"].as_array()?.first().cloned()
    });
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("nodefs.available") && message.contains("< 100% of"), "{message}");
    assert!(node.agent.logs().contains("reporting DiskPressure"), "{}", node.agent.logs());
}

fn csr_names(cluster: &common::Cluster, name: &str) -> Vec<String> {
    let all = cluster.get_json(&["csr"]).unwrap();
    let mut names: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
        .filter(|n| n.starts_with(name))
        .collect();
    names.sort();
    names
}

fn common_cert(csr: &Value) -> krustlet_wasi::certs::CertInfo {
    use base64::Engine as _;
    let b64 = csr["status"]["certificate"].as_str().expect("issued certificate");
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    krustlet_wasi::certs::inspect(&pem, "issued certificate").unwrap()
}
