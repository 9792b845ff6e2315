//! A node that joined earlier, made without its bootstrap: its client and serving
//! certificates signed here with the cluster CA for lifetimes a test chooses (the controller
//! manager signs for a year and 1.20 has no CSR `expirationSeconds`), written where the
//! agent keeps them; the CSRs the node made, and the certificate its port presents.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use krustlet_wasi::certs::{self, CertInfo};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;

use super::{Agent, Cluster, kubelet_api, node};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The config dir of a node as its earlier run left it, and the flags that start it.
pub struct SeededNode {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
    /// The certificates written at seeding.
    pub client: CertInfo,
    pub serving: CertInfo,
    cluster: &'static Cluster,
}

impl SeededNode {
    /// A node `kw-<tag>-<pid>` on `port` whose client and serving certificates, valid from
    /// now, expire after the given lifetimes.
    pub fn new(
        cluster: &'static Cluster,
        tag: &str,
        port: u16,
        client_life: Duration,
        serving_life: Duration,
    ) -> SeededNode {
        let name = format!("kw-{tag}-{}", std::process::id());
        cluster.forget_node(&name);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("data/config");
        std::fs::create_dir_all(&config).unwrap();
        let pki = kubelet_api::pki(cluster);
        let ca_pem = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
        let ca = Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("the cluster CA signs for the test");

        let (cert, key) = sign(&ca, &name, client_life, None);
        let kubeconfig = certs::render_kubeconfig(&api_server(cluster), ca_pem.as_bytes(), &cert, &key);
        write(&config.join("kubeconfig"), kubeconfig.as_bytes(), 0o600);
        let client = certs::inspect(&cert, "seeded client certificate").unwrap();
        let (cert, key) = sign(&ca, &name, serving_life, Some(&name));
        write(&config.join("krustlet.key"), &key, 0o600);
        write(&config.join("krustlet.crt"), &cert, 0o644);
        let serving = certs::inspect(&cert, "seeded serving certificate").unwrap();

        let bootstrap = cluster.bootstrap_file(dir.path());
        let args = [
            "--node-ip",
            "127.0.0.1",
            "--node-name",
            &name,
            "--hostname",
            &name,
            "--port",
            &port.to_string(),
            "--healthz-port",
            &(port + 1000).to_string(),
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
            "--bootstrap-file",
            &bootstrap.to_string_lossy(),
            "--insecure-registries",
            &cluster.registry,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        SeededNode { name, port, dir, args, client, serving, cluster }
    }

    /// Starts the agent on the seeded config dir; returns once the node is Ready and
    /// schedulable (no CSR is needed to get there).
    pub fn start(&self) -> Agent {
        let mut agent = Agent::start(&self.dir.path().join("logs"), &self.args);
        agent.wait_output("node registered and Ready", Duration::from_secs(60));
        node::wait_schedulable(self.cluster, &self.name);
        agent
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("data/config")
    }

    /// The CSRs this node made with `signer`, as `kubectl get csr -o json` lists them.
    pub fn csrs(&self, signer: &str) -> Vec<Value> {
        let user = format!("system:node:{}", self.name);
        let all = self.cluster.get_json(&["csr"]).unwrap_or(Value::Null);
        let items = all["items"].as_array().cloned().unwrap_or_default();
        items
            .into_iter()
            .filter(|c| c["spec"]["username"] == user && c["spec"]["signerName"] == signer)
            .collect()
    }

    /// The certificate the node's port presents to a client that trusts the cluster CA, as
    /// the API server does (`--kubelet-certificate-authority`); why not, if the handshake
    /// fails (an expired certificate, nobody listening).
    pub fn presented(&self) -> Result<CertificateDer<'static>, String> {
        let config = kubelet_api::tls_config(self.cluster, true);
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let mut conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        let peer = conn.peer_certificates().and_then(|c| c.first()).ok_or("no certificate")?;
        Ok(peer.clone().into_owned())
    }
}

impl Drop for SeededNode {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("KRUSTLET_TEST_SHOW_LOGS").is_some() {
            self.show_agent_logs();
        }
        self.cluster.forget_node(&self.name);
        let names: Vec<String> = [CLIENT_SIGNER, SERVING_SIGNER]
            .iter()
            .flat_map(|s| self.csrs(s))
            .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
            .collect();
        if !names.is_empty() {
            let mut args = vec!["delete", "csr", "--ignore-not-found"];
            args.extend(names.iter().map(String::as_str));
            self.cluster.kubectl(&args);
        }
    }
}

impl SeededNode {
    /// Prints the last lines of every agent run's log (a failed test says what it did).
    fn show_agent_logs(&self) {
        let mut runs: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        runs.sort();
        for run in runs.iter().filter(|p| p.extension().is_some_and(|e| e == "err")) {
            let text = std::fs::read_to_string(run).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("---- {} ({}) ----\n{tail}", run.display(), self.name);
        }
    }
}

/// The certificate a CSR was issued (DER), if it carries one.
pub fn issued(csr: &Value) -> Option<CertificateDer<'static>> {
    use base64::Engine as _;
    let b64 = csr["status"]["certificate"].as_str().filter(|s| !s.is_empty())?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    CertificateDer::from_pem_slice(&pem).ok()
}

/// The `type` and `reason` of the CSR's conditions.
pub fn conditions(csr: &Value) -> Vec<(String, String)> {
    let conds = csr["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conds
        .iter()
        .map(|c| (c["type"].as_str().unwrap_or("").into(), c["reason"].as_str().unwrap_or("").into()))
        .collect()
}

pub fn csr_name(csr: &Value) -> String {
    csr["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// The serial of a DER certificate, in hex.
pub fn serial(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("an X.509 certificate");
    cert.raw_serial_as_string().replace(':', "").to_uppercase()
}

/// Sleeps until the wall clock is past `t` (a certificate's `notAfter`) by a second.
pub fn sleep_past(t: SystemTime) {
    if let Ok(left) = (t + Duration::from_secs(1)).duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
}

/// The node's certificate as the controller manager would sign it: `CN=system:node:<name>,
/// O=system:nodes`, for client auth, or (naming `serving_dns` and 127.0.0.1) server auth.
/// (certificate PEM, key PEM).
fn sign(
    ca: &Issuer<'_, KeyPair>,
    name: &str,
    life: Duration,
    serving_dns: Option<&str>,
) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("system:node:{name}"));
    params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(1);
    params.not_after = now + life;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    match serving_dns {
        Some(dns) => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.subject_alt_names = vec![
                SanType::DnsName(dns.try_into().unwrap()),
                SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
            ];
        }
        None => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

/// The API server URL of the admin kubeconfig.
fn api_server(cluster: &Cluster) -> String {
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let kc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    kc["clusters"][0]["cluster"]["server"].as_str().expect("the admin kubeconfig names a server").to_string()
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
