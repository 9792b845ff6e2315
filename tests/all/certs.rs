//! End to end: the node's client and serving certificates are renewed while the agent runs,
//! on the real control plane. Each node starts from a config dir seeded with short-lived
//! certificates signed by the cluster CA (as a node that joined earlier would have them),
//! and what a user sees is checked with kubectl: the renewal CSRs, the node staying Ready
//! past the old certificates' expiry, `kubectl logs` and `exec` after the serving
//! certificate changed, the certificate on the agent's port, the Events, and an agent
//! killed while its CSR waited finishing the renewal from its journal.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::node::{phase, pod};
use common::seeded::{
    CLIENT_SIGNER, SERVING_SIGNER, SeededNode, conditions, csr_name, issued, serial, sleep_past,
};
use common::{Agent, Cluster, guests, wait_for};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};

const ROTATE_PORT: u16 = 10411;
const UNAPPROVED_PORT: u16 = 10412;
const CRASH_PORT: u16 = 10413;
const JOURNAL_PORT: u16 = 10414;
const DENIED_PORT: u16 = 10415;
/// Renewals start between 70% and 90% of a lifetime: well within these waits.
const RENEWAL_WAIT: Duration = Duration::from_secs(120);

/// A pod printing `serving` then a line every 200 ms, Running on `node`.
fn start_pod(cluster: &Cluster, node: &str, tag: &str) -> String {
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("cert-{tag}-{}", std::process::id());
    let mut p = pod(&name, node, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    cluster.apply(&p);
    cluster.wait_pod(&name, "Running", Duration::from_secs(90), |p| phase(p) == "Running");
    name
}

/// The node's Events as (type, reason, message), oldest first.
fn node_events(cluster: &Cluster, node: &str) -> Vec<(String, String, String)> {
    let sel = format!("involvedObject.kind=Node,involvedObject.name={node}");
    let ev = cluster.get_json(&["events", "-n", "default", "--field-selector", &sel]).unwrap_or(Value::Null);
    let mut items = ev["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| e["firstTimestamp"].as_str().unwrap_or("").to_string());
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or("").to_string();
    items.iter().map(|e| (text(e, "type"), text(e, "reason"), text(e, "message"))).collect()
}

fn event_with(cluster: &Cluster, node: &str, reason: &str) -> Option<(String, String)> {
    node_events(cluster, node).into_iter().rev().find(|e| e.1 == reason).map(|(t, _, m)| (t, m))
}

fn kubectl_exec(cluster: &Cluster, pod: &str, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["exec", "-n", "default", pod, "--"])
        .args(args)
        .output()
        .unwrap()
}

/// Whether the node's Lease was renewed after `t`.
fn lease_renewed_after(cluster: &Cluster, node: &str, t: SystemTime) -> bool {
    let lease = cluster.get_json(&["lease", node, "-n", "kube-node-lease"]).unwrap_or(Value::Null);
    let renewed =
        lease["spec"]["renewTime"].as_str().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    renewed.is_some_and(|r| SystemTime::from(r) > t)
}

fn node_ready(cluster: &Cluster, node: &str) -> bool {
    let n = cluster.get_json(&["node", node]).unwrap_or(Value::Null);
    let conds = n["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conds.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The first certificate of a PEM file the agent wrote.
fn file_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The client certificate embedded in the node kubeconfig.
fn kubeconfig_cert(path: &Path) -> CertificateDer<'static> {
    use base64::Engine as _;
    let kc: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let b64 = kc["users"][0]["user"]["client-certificate-data"].as_str().expect("an embedded certificate");
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    CertificateDer::from_pem_slice(&pem).unwrap()
}

#[test]
fn both_certificates_are_renewed_and_the_node_logs_and_exec_outlive_the_old_ones() {
    let cluster = require_cluster!();
    let life = Duration::from_secs(60);
    let seeded = SeededNode::new(cluster, "certrot", ROTATE_PORT, life, life);
    let agent = seeded.start();
    let first = seeded.presented().expect("the seeded serving certificate is presented");
    assert_eq!(serial(&first), seeded.serving.serial);
    let pod = start_pod(cluster, &seeded.name, "rot");

    // The client renewal is made as the node and approved by the cluster itself
    // (bootstrap.sh binds system:nodes to selfnodeclient): nobody approves it here.
    let client_csr = wait_for("the node's client renewal CSR to be issued", RENEWAL_WAIT, || {
        seeded.csrs(CLIENT_SIGNER).into_iter().find(|c| issued(c).is_some())
    });
    assert!(
        conditions(&client_csr).contains(&("Approved".into(), "AutoApproved".into())),
        "{:?}",
        conditions(&client_csr)
    );
    assert_ne!(csr_name(&client_csr), seeded.name, "a renewal takes a name of its own");

    // The serving renewal waits for a human: approve it as an admin would.
    let serving_csr = wait_for("the node's serving renewal CSR", RENEWAL_WAIT, || {
        seeded.csrs(SERVING_SIGNER).into_iter().next()
    });
    assert!(conditions(&serving_csr).is_empty(), "nobody approves serving CSRs automatically");
    cluster.kubectl_ok(&["certificate", "approve", &csr_name(&serving_csr)]);
    let renewed = wait_for("the serving CSR to be issued", Duration::from_secs(60), || {
        seeded.csrs(SERVING_SIGNER).iter().find_map(issued)
    });
    wait_for("the port to present the renewed certificate", Duration::from_secs(30), || {
        seeded.presented().ok().filter(|c| *c == renewed)
    });
    assert_ne!(serial(&renewed), seeded.serving.serial);
    assert_eq!(file_cert(&seeded.config_dir().join("krustlet.crt")), renewed);
    let client = issued(&client_csr).unwrap();
    wait_for("the kubeconfig to hold the renewed client certificate", Duration::from_secs(30), || {
        (kubeconfig_cert(&seeded.config_dir().join("kubeconfig")) == client).then_some(())
    });

    // Past the old certificates' expiry the node still talks to the API server (its Lease
    // is renewed with the new client certificate) and stays Ready.
    sleep_past(seeded.client.not_after.max(seeded.serving.not_after));
    wait_for("a Lease renewal after the old client certificate expired", Duration::from_secs(45), || {
        lease_renewed_after(cluster, &seeded.name, seeded.client.not_after).then_some(())
    });
    assert!(node_ready(cluster, &seeded.name), "the node is Ready past the old certificates' expiry");

    // The API server, which checks the node's serving certificate against the cluster CA,
    // still reaches the pod: logs and exec.
    let logs = cluster.kubectl(&["logs", "-n", "default", &pod]);
    assert!(logs.status.success(), "kubectl logs: {}", String::from_utf8_lossy(&logs.stderr));
    assert!(String::from_utf8_lossy(&logs.stdout).contains("serving"));
    let out = kubectl_exec(cluster, &pod, &["tool", "echo", "renewed"]);
    assert!(out.status.success(), "kubectl exec: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "renewed\n");

    // Both renewals are Events on the Node.
    let rotated: Vec<String> = node_events(cluster, &seeded.name)
        .into_iter()
        .filter(|(t, r, _)| t == "Normal" && r == "CertificateRotated")
        .map(|(_, _, m)| m)
        .collect();
    for (what, csr) in [("Client certificate", &client_csr), ("Serving certificate", &serving_csr)] {
        assert!(
            rotated.iter().any(|m| m.starts_with(what) && m.contains(&csr_name(csr))),
            "no CertificateRotated Event for {what}: {rotated:?}"
        );
    }
    assert!(agent.alive(), "{}", agent.logs());
    cluster.kubectl(&["delete", "pod", &pod, "-n", "default", "--timeout=60s"]);
}

#[test]
fn a_serving_renewal_nobody_approves_is_a_warning_naming_the_command_and_approving_it_heals() {
    let cluster = require_cluster!();
    let seeded = SeededNode::new(
        cluster,
        "certwait",
        UNAPPROVED_PORT,
        Duration::from_secs(3600),
        Duration::from_secs(30),
    );
    let agent = seeded.start();
    let pod = start_pod(cluster, &seeded.name, "wait");

    let (kind, message) = wait_for("a CertificateApprovalNeeded Event", RENEWAL_WAIT, || {
        event_with(cluster, &seeded.name, "CertificateApprovalNeeded")
    });
    assert_eq!(kind, "Warning");
    let csr = seeded.csrs(SERVING_SIGNER).into_iter().next().expect("the renewal CSR exists");
    let command = format!("kubectl certificate approve {}", csr_name(&csr));
    assert!(message.contains(&command), "{message:?} names {command:?}");
    assert!(message.contains(&seeded.serving.serial), "{message:?} names the old certificate");

    // Once the old certificate expires the API server refuses the node for logs, and the
    // node says so.
    sleep_past(seeded.serving.not_after);
    let (kind, message) = wait_for("a CertificateExpired Event", Duration::from_secs(30), || {
        event_with(cluster, &seeded.name, "CertificateExpired")
    });
    assert_eq!(kind, "Warning");
    assert!(message.contains(&command), "{message:?}");
    let logs = cluster.kubectl(&["logs", "-n", "default", &pod]);
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(!logs.status.success() && stderr.contains("x509"), "kubectl logs: {stderr}");

    // Running the command from the Event is all it takes: no restart.
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    cluster.kubectl_ok(&args);
    let renewed = wait_for("the serving CSR to be issued", Duration::from_secs(60), || {
        seeded.csrs(SERVING_SIGNER).iter().find_map(issued)
    });
    wait_for("the port to present the renewed certificate", Duration::from_secs(30), || {
        seeded.presented().ok().filter(|c| *c == renewed)
    });
    let logs = cluster.kubectl(&["logs", "-n", "default", &pod]);
    assert!(logs.status.success(), "kubectl logs: {}", String::from_utf8_lossy(&logs.stderr));
    assert!(agent.alive(), "{}", agent.logs());
    cluster.kubectl(&["delete", "pod", &pod, "-n", "default", "--timeout=60s"]);
}

#[test]
fn an_agent_killed_while_its_serving_csr_waits_installs_that_certificate_after_restart() {
    let cluster = require_cluster!();
    let seeded =
        SeededNode::new(cluster, "certcrash", CRASH_PORT, Duration::from_secs(3600), Duration::from_secs(40));
    let mut agent = seeded.start();
    let journal = seeded.config_dir().join("serving.pending.pem");
    let csr = wait_for("a serving renewal CSR and its journal", RENEWAL_WAIT, || {
        let csr = seeded.csrs(SERVING_SIGNER).into_iter().next()?;
        journal.exists().then_some(csr)
    });

    // Killed with the CSR pending; an admin approves it while the agent is down.
    let pid = agent.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    agent.wait_exit(Duration::from_secs(10));
    assert!(journal.exists(), "the pending key survives the crash");
    cluster.kubectl_ok(&["certificate", "approve", &csr_name(&csr)]);
    let renewed = wait_for("the serving CSR to be issued", Duration::from_secs(60), || {
        seeded.csrs(SERVING_SIGNER).iter().find_map(issued)
    });

    let mut agent = Agent::start(&seeded.dir.path().join("logs"), &seeded.args);
    agent.wait_output("node registered and Ready", Duration::from_secs(60));
    wait_for(
        "the port to present the certificate the killed agent asked for",
        Duration::from_secs(60),
        || seeded.presented().ok().filter(|c| *c == renewed),
    );
    assert_eq!(file_cert(&seeded.config_dir().join("krustlet.crt")), renewed);
    assert!(!journal.exists(), "the journal is gone once the certificate is installed");
    let names: Vec<String> = seeded.csrs(SERVING_SIGNER).iter().map(csr_name).collect();
    assert_eq!(names, [csr_name(&csr)], "the restarted agent asked for nothing new");
    wait_for("a CertificateRotated Event", Duration::from_secs(30), || {
        event_with(cluster, &seeded.name, "CertificateRotated").filter(|(_, m)| m.contains(&csr_name(&csr)))
    });
    assert!(agent.try_exit().is_none(), "{}", agent.logs());
}

#[test]
fn an_agent_killed_while_installing_a_renewal_finishes_it_from_its_journal_alone() {
    let cluster = require_cluster!();
    let seeded = SeededNode::new(
        cluster,
        "certjrnl",
        JOURNAL_PORT,
        Duration::from_secs(3600),
        Duration::from_secs(40),
    );
    let mut agent = seeded.start();
    // A disk fault from outside: the key file cannot be replaced (a directory stands in its
    // way), so installing the renewal fails after the journal has recorded the certificate.
    let key_file = seeded.config_dir().join("krustlet.key");
    std::fs::remove_file(&key_file).unwrap();
    std::fs::create_dir(&key_file).unwrap();
    let csr =
        wait_for("a serving renewal CSR", RENEWAL_WAIT, || seeded.csrs(SERVING_SIGNER).into_iter().next());
    cluster.kubectl_ok(&["certificate", "approve", &csr_name(&csr)]);
    let renewed = wait_for("the serving CSR to be issued", Duration::from_secs(60), || {
        seeded.csrs(SERVING_SIGNER).iter().find_map(issued)
    });
    let journal = seeded.config_dir().join("serving.pending.pem");
    wait_for("the journal to record the issued certificate", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&journal).ok()?;
        text.contains("-----BEGIN CERTIFICATE-----").then_some(())
    });

    // Killed mid-install; the CSR then goes (the cluster's cleaner deletes issued ones), so
    // the journal is the only copy of the certificate; the fault is repaired.
    let pid = agent.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    agent.wait_exit(Duration::from_secs(10));
    cluster.kubectl_ok(&["delete", "csr", &csr_name(&csr)]);
    std::fs::remove_dir(&key_file).unwrap();

    let mut agent = Agent::start(&seeded.dir.path().join("logs"), &seeded.args);
    agent.wait_output("node registered and Ready", Duration::from_secs(60));
    let presented = seeded.presented().expect("the journal's certificate and key are served");
    assert_eq!(presented, renewed);
    assert_eq!(file_cert(&seeded.config_dir().join("krustlet.crt")), renewed);
    assert!(!journal.exists(), "the journal is gone once the certificate is installed");
    assert!(seeded.csrs(SERVING_SIGNER).is_empty(), "the restarted agent asked for nothing new");
    assert!(agent.try_exit().is_none(), "{}", agent.logs());
}

#[test]
fn a_denied_serving_renewal_is_a_warning_and_is_asked_again_with_a_new_key() {
    let cluster = require_cluster!();
    let seeded =
        SeededNode::new(cluster, "certdeny", DENIED_PORT, Duration::from_secs(3600), Duration::from_secs(30));
    let agent = seeded.start();
    let first =
        wait_for("a serving renewal CSR", RENEWAL_WAIT, || seeded.csrs(SERVING_SIGNER).into_iter().next());
    cluster.kubectl_ok(&["certificate", "deny", &csr_name(&first)]);
    let (kind, message) = wait_for("a CertificateRenewalRefused Event", Duration::from_secs(30), || {
        event_with(cluster, &seeded.name, "CertificateRenewalRefused")
    });
    assert_eq!(kind, "Warning");
    assert!(message.contains(&csr_name(&first)) && message.contains("denied"), "{message:?}");

    // After its back-off the agent asks again, with a new key (so a new name); approved,
    // that one is served.
    let second = wait_for("a second serving renewal CSR", RENEWAL_WAIT, || {
        seeded.csrs(SERVING_SIGNER).into_iter().find(|c| csr_name(c) != csr_name(&first))
    });
    assert_ne!(second["spec"]["request"], first["spec"]["request"]);
    cluster.kubectl_ok(&["certificate", "approve", &csr_name(&second)]);
    let renewed = wait_for("the second CSR to be issued", Duration::from_secs(60), || {
        seeded.csrs(SERVING_SIGNER).iter().find(|c| csr_name(c) == csr_name(&second)).and_then(issued)
    });
    wait_for("the port to present the renewed certificate", Duration::from_secs(30), || {
        seeded.presented().ok().filter(|c| *c == renewed)
    });
    assert!(agent.alive(), "{}", agent.logs());
}
