//! End to end: the kubelet API on a joined node lets nobody in without a certificate from
//! the cluster CA, asks the API server (SubjectAccessReview) before serving, refuses paths
//! that try to leave the log store, and answers /healthz on plain HTTP.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PORT: u16 = 10291;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A P-256 client certificate for `cn`, signed by `ca` (crt, key); returns (crt, key).
fn client_cert(dir: &Path, name: &str, cn: &str, ca: (&Path, &Path)) -> (PathBuf, PathBuf) {
    let (key, csr, crt) =
        (dir.join(format!("{name}.key")), dir.join(format!("{name}.csr")), dir.join(format!("{name}.crt")));
    let s = |p: &Path| p.to_string_lossy().to_string();
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &s(&key)]);
    openssl(&["req", "-new", "-key", &s(&key), "-subj", &format!("/CN={cn}"), "-out", &s(&csr)]);
    // A v3 client certificate, as any real one is.
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(ca.0),
        "-CAkey",
        &s(ca.1),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&crt),
    ]);
    (crt, key)
}

/// A throwaway CA the cluster has never heard of.
fn foreign_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, crt) = (dir.join("foreign-ca.key"), dir.join("foreign-ca.crt"));
    let s = |p: &Path| p.to_string_lossy().to_string();
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &s(&key)]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &s(&key),
        "-subj",
        "/CN=foreign-ca",
        "-days",
        "1",
        "-out",
        &s(&crt),
    ]);
    (crt, key)
}

/// `curl` against the node's API; returns (HTTP status, body). Status 0: no HTTP answer.
fn get(path: &str, cert: Option<&(PathBuf, PathBuf)>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--path-as-is", "-w", "\n%{http_code}", "--max-time", "20"]);
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = cmd.arg(format!("https://127.0.0.1:{PORT}{path}")).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn cluster_ca() -> (PathBuf, PathBuf) {
    let env = Command::new("bash")
        .arg(Path::new(common::REPO).join("bootstrap/cluster.sh"))
        .arg("env")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&env.stdout).to_string();
    let dir = text
        .lines()
        .find_map(|l| {
            l.trim_start_matches("export ")
                .strip_prefix("KRUSTLET_CP_DIR=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .expect("cluster.sh env prints KRUSTLET_CP_DIR");
    (PathBuf::from(&dir).join("pki/ca.crt"), PathBuf::from(&dir).join("pki/ca.key"))
}

#[test]
fn only_cluster_certificates_with_rbac_get_in() {
    let _cluster = require_cluster!();
    let _node = common::shared_node("server", PORT).unwrap();
    let dir = common::sweep::test_dir();
    let ca = cluster_ca();

    assert_eq!(get("/pods", None).0, 401, "no client certificate");
    let foreign = foreign_ca(dir.path());
    let stranger = client_cert(dir.path(), "stranger", "system:masters-impostor", (&foreign.0, &foreign.1));
    assert_eq!(get("/pods", Some(&stranger)).0, 401, "a certificate from another CA");

    // Signed by the cluster CA, but a user with no RBAC at all: 403, named.
    let nobody = client_cert(dir.path(), "nobody", "krustlet-test-nobody", (&ca.0, &ca.1));
    let (code, body) = get("/pods", Some(&nobody));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("user=krustlet-test-nobody") && body.contains("subresource=proxy"), "{body}");
    assert_eq!(get("/containerLogs/default/p/c", Some(&nobody)).0, 403);

    // The admin (system:masters) gets in; traversal is refused even for the admin.
    let admin = (ca.0.parent().unwrap().join("admin.crt"), ca.0.parent().unwrap().join("admin.key"));
    let (code, body) = get("/pods", Some(&admin));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"kind\":\"PodList\""), "{body}");
    let (code, body) = get("/containerLogs/default/no-such-pod/main", Some(&admin));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("default/no-such-pod"), "the message names the pod: {body}");
    assert_eq!(get("/containerLogs/default/p/c?tailLines=minus-one", Some(&admin)).0, 400, "malformed query");
    let (code, body) = get("/metrics", Some(&admin));
    assert_eq!(code, 200, "{body}");
    for metric in [
        "krustlet_running_pods ",
        "krustlet_container_starts_total ",
        "krustlet_pod_start_seconds_bucket",
        // Its series appear with the node's first start; the family is always described.
        "# TYPE krustlet_pod_start_phase_seconds histogram",
    ] {
        assert!(body.contains(metric), "missing {metric}: {body}");
    }
    assert_eq!(get("/metrics", Some(&nobody)).0, 403, "metrics need nodes/metrics");
    for path in [
        "/containerLogs/default/../../../etc/passwd",
        "/containerLogs/default%2F..%2F/p/c",
        "/containerLogs/a/..%2F..%2Fetc/c",
    ] {
        assert_eq!(get(path, Some(&admin)).0, 400, "{path}");
    }
}

#[test]
fn healthz_answers_on_plain_http_on_localhost() {
    let _cluster = require_cluster!();
    let _node = common::shared_node("server", PORT).unwrap();
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/healthz", PORT + 1000)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
}

/// The subject of the certificate the server at `port` presents.
fn served_subject(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-skv", "-o", "/dev/null", &format!("https://127.0.0.1:{port}/pods")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    err.lines().find_map(|l| l.trim().strip_prefix("*  subject: ").map(String::from)).unwrap_or(err)
}

#[test]
fn a_renewed_serving_certificate_is_used_without_a_restart() {
    let dir = common::sweep::test_dir();
    let (manifests, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    let port = 10293;
    let args = common::standalone_args(&manifests, &data, "before", port);
    let mut agent = common::Agent::start(&dir.path().join("logs"), &args);
    agent.wait_output("running standalone", std::time::Duration::from_secs(30));
    common::wait_for("the API to answer", std::time::Duration::from_secs(10), || {
        served_subject(port).contains("before@krustlet-wasi").then_some(())
    });
    // Renewed in place (key first, each file replaced whole), as a rotation would.
    let (cert, key) = krustlet_wasi::certs::self_signed("after", &["127.0.0.1".parse().unwrap()]).unwrap();
    let config = data.join("config");
    for (name, pem) in [("krustlet.key", key), ("krustlet.crt", cert)] {
        std::fs::write(config.join(format!("{name}.new")), pem).unwrap();
        std::fs::rename(config.join(format!("{name}.new")), config.join(name)).unwrap();
    }
    assert!(served_subject(port).contains("after@krustlet-wasi"), "{}", served_subject(port));
    agent.wait_output("serving certificate changed; using the new one", std::time::Duration::from_secs(5));
}
