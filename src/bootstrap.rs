//! TLS bootstrap: turns a bootstrap token into the node's client certificate (a kubeconfig)
//! and its serving certificate, through CertificateSigningRequests the cluster approves.
//!
//! Steps, top to bottom: use the node kubeconfig if its certificate is still good, else
//! request one with the bootstrap kubeconfig; then reuse the serving certificate if it is
//! good for this node's IP and hostname, else request one (a human approves it).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::certs::{self, CertError, KeyAndCsr};
use crate::config::{CERT_RENEW_MARGIN, Config};
use crate::files;

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
const SERVING_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];
/// A 409 on a CSR that is not ours makes us try `<name>-2`, `<name>-3`, ... up to this.
const MAX_NAME_ATTEMPTS: u32 = 5;

/// Errors of the bootstrap, each naming the step and file involved.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--bootstrap-file {path}: {why} (create one with bootstrap/bootstrap.sh)")]
    BootstrapFileUnreadable { path: PathBuf, why: String },
    #[error("kubeconfig {path}: {why}")]
    KubeconfigInvalid { path: PathBuf, why: String },
    #[error("connecting with {path} failed: {source}")]
    Connect { path: PathBuf, source: kube::Error },
    #[error("creating CertificateSigningRequest {name} failed: {source}")]
    CreateCsr { name: String, source: kube::Error },
    #[error("watching CertificateSigningRequest {name} failed: {source}")]
    WatchCsr { name: String, source: kube::runtime::wait::Error },
    #[error("CertificateSigningRequest {name} was deleted before it was issued")]
    CsrDeleted { name: String },
    #[error("CertificateSigningRequest {name} was denied ({reason}): {message}")]
    CsrDenied { name: String, reason: String, message: String },
    #[error("CertificateSigningRequest {name} failed ({reason}): {message}")]
    CsrFailed { name: String, reason: String, message: String },
    #[error(
        "CertificateSigningRequest names {first}..{first}-{MAX_NAME_ATTEMPTS} all hold other keys; delete them with kubectl delete csr"
    )]
    CsrNamesTaken { first: String },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    File(#[from] files::FileError),
}

/// What the rest of the agent needs: a client as the node, and the serving certificate.
pub struct Credentials {
    pub client: Client,
    /// PEM of the cluster CA, which also signs the clients allowed to call the kubelet API.
    pub ca_pem: Vec<u8>,
    pub serving_cert_pem: Vec<u8>,
    pub serving_key_pem: Vec<u8>,
}

/// Runs the bootstrap to completion (it may wait for a human to approve a CSR).
pub async fn run(cfg: &Config) -> Result<Credentials, BootstrapError> {
    let kubeconfig = match usable_kubeconfig(&cfg.kubeconfig)? {
        Some(kc) => {
            info!(path = %cfg.kubeconfig.display(), "using existing kubeconfig");
            kc
        }
        None => request_client_kubeconfig(cfg).await?,
    };
    let (_, ca_pem) = cluster_of(&kubeconfig, &cfg.kubeconfig)?;
    let client = connect(kubeconfig, &cfg.kubeconfig).await?;
    let (serving_cert_pem, serving_key_pem) = serving_certificate(cfg, &client).await?;
    Ok(Credentials { client, ca_pem, serving_cert_pem, serving_key_pem })
}

/// The node kubeconfig if it exists and its client certificate (if it has one) is fresh.
fn usable_kubeconfig(path: &Path) -> Result<Option<Kubeconfig>, BootstrapError> {
    if !path.exists() {
        return Ok(None);
    }
    let invalid = |why: String| BootstrapError::KubeconfigInvalid { path: path.into(), why };
    let kc = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
    let user = current_user(&kc);
    let cert_pem = match (user.and_then(|u| u.client_certificate_data.as_deref()), user) {
        (Some(data), _) => Some(files::decode_b64(data).map_err(|e| invalid(e.to_string()))?),
        (None, Some(u)) => match u.client_certificate.as_deref() {
            Some(file) => Some(files::read(Path::new(file))?),
            None => None,
        },
        (None, None) => None,
    };
    // Token or exec users (e.g. an admin's kubeconfig) are taken as they are.
    let Some(cert_pem) = cert_pem else { return Ok(Some(kc)) };
    let info = certs::inspect(&cert_pem, &path.display().to_string())?;
    if info.fresh(SystemTime::now(), CERT_RENEW_MARGIN) {
        Ok(Some(kc))
    } else {
        warn!(path = %path.display(), "client certificate expired or about to; bootstrapping again");
        Ok(None)
    }
}

fn current_user(kc: &Kubeconfig) -> Option<&kube::config::AuthInfo> {
    let ctx_name = kc.current_context.as_deref()?;
    let ctx = kc.contexts.iter().find(|c| c.name == ctx_name)?.context.as_ref()?;
    let user = ctx.user.as_deref()?;
    kc.auth_infos.iter().find(|a| a.name == user)?.auth_info.as_ref()
}

/// The current context's server URL and CA (PEM).
fn cluster_of(kc: &Kubeconfig, path: &Path) -> Result<(String, Vec<u8>), BootstrapError> {
    let invalid = |why: &str| BootstrapError::KubeconfigInvalid { path: path.into(), why: why.into() };
    let ctx_name = kc.current_context.as_deref().ok_or_else(|| invalid("no current-context"))?;
    let ctx = (kc.contexts.iter().find(|c| c.name == ctx_name).and_then(|c| c.context.as_ref()))
        .ok_or_else(|| invalid("current-context names no context"))?;
    let cluster = (kc.clusters.iter().find(|c| c.name == ctx.cluster).and_then(|c| c.cluster.as_ref()))
        .ok_or_else(|| invalid("the current context names no cluster"))?;
    let server = cluster.server.clone().ok_or_else(|| invalid("the cluster has no server"))?;
    let ca = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(data), _) => files::decode_b64(data).map_err(|e| invalid(&e.to_string()))?,
        (None, Some(file)) => files::read(Path::new(file))?,
        (None, None) => return Err(invalid("the cluster has no certificate-authority(-data)")),
    };
    Ok((server, ca))
}

async fn connect(kc: Kubeconfig, path: &Path) -> Result<Client, BootstrapError> {
    let connect_err = |e: kube::Error| BootstrapError::Connect { path: path.into(), source: e };
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| BootstrapError::KubeconfigInvalid { path: path.into(), why: e.to_string() })?;
    Client::try_from(config).map_err(connect_err)
}

/// Asks for the node's client certificate with the bootstrap token, writes the kubeconfig.
async fn request_client_kubeconfig(cfg: &Config) -> Result<Kubeconfig, BootstrapError> {
    let path = &cfg.bootstrap_file;
    let unreadable = |why: String| BootstrapError::BootstrapFileUnreadable { path: path.clone(), why };
    std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    let boot = Kubeconfig::read_from(path).map_err(|e| unreadable(e.to_string()))?;
    let (server, ca_pem) = cluster_of(&boot, path)?;
    info!(bootstrap_file = %path.display(), %server, "no usable kubeconfig; starting TLS bootstrap");
    let client = connect(boot, path).await?;
    let request = CsrRequest {
        name: cfg.node_name.clone(),
        signer: CLIENT_SIGNER,
        usages: &CLIENT_USAGES,
        node_name: &cfg.node_name,
        ips: vec![],
        dns: vec![],
        pending_dir: cfg.config_dir(),
        announce: false,
    };
    let (cert_pem, key_pem) = request.issue(&client).await?;
    let yaml = certs::render_kubeconfig(&server, &ca_pem, &cert_pem, key_pem.as_bytes());
    files::write_atomic(&cfg.kubeconfig, yaml.as_bytes(), 0o600)?;
    info!(path = %cfg.kubeconfig.display(), "client certificate issued; kubeconfig written");
    Kubeconfig::read_from(&cfg.kubeconfig)
        .map_err(|e| BootstrapError::KubeconfigInvalid { path: cfg.kubeconfig.clone(), why: e.to_string() })
}

/// Reuses the serving certificate if it is fresh and names this node, else requests one.
async fn serving_certificate(cfg: &Config, client: &Client) -> Result<(Vec<u8>, Vec<u8>), BootstrapError> {
    let ips = vec![cfg.node_ip];
    let dns = vec![cfg.hostname.clone()];
    if cfg.cert_file.exists() && cfg.private_key_file.exists() {
        let cert = files::read(&cfg.cert_file)?;
        let info = certs::inspect(&cert, &cfg.cert_file.display().to_string())?;
        if info.fresh(SystemTime::now(), CERT_RENEW_MARGIN) && info.covers(&ips, &dns) {
            info!(cert_file = %cfg.cert_file.display(), "using existing serving certificate");
            return Ok((cert, files::read(&cfg.private_key_file)?));
        }
        warn!(cert_file = %cfg.cert_file.display(), "serving certificate expired or does not name this node; requesting a new one");
    }
    let request = CsrRequest {
        name: format!("{}-tls", cfg.node_name),
        signer: SERVING_SIGNER,
        usages: &SERVING_USAGES,
        node_name: &cfg.node_name,
        ips,
        dns,
        pending_dir: cfg.config_dir(),
        announce: true,
    };
    let (cert_pem, key_pem) = request.issue(client).await?;
    files::write_atomic(&cfg.private_key_file, key_pem.as_bytes(), 0o600)?;
    files::write_atomic(&cfg.cert_file, &cert_pem, 0o644)?;
    info!(cert_file = %cfg.cert_file.display(), "serving certificate issued");
    Ok((cert_pem, key_pem.into_bytes()))
}

/// One certificate to ask the cluster for.
struct CsrRequest<'a> {
    name: String,
    signer: &'static str,
    usages: &'a [&'a str],
    node_name: &'a str,
    ips: Vec<std::net::IpAddr>,
    dns: Vec<String>,
    /// Where the key and CSR wait (so a restart reuses the same pending request).
    pending_dir: PathBuf,
    /// Print the `kubectl certificate approve` line: nobody approves this one automatically.
    announce: bool,
}

impl CsrRequest<'_> {
    /// Creates (or reuses) the CSR, waits until it is issued, returns (cert PEM, key PEM).
    async fn issue(&self, client: &Client) -> Result<(Vec<u8>, String), BootstrapError> {
        let api: Api<CertificateSigningRequest> = Api::all(client.clone());
        let pending = self.pending_key_and_csr()?;
        let name = self.create_or_reuse(&api, &pending).await?;
        if self.announce {
            println!(
                "BOOTSTRAP: TLS certificate requires manual approval. Run kubectl certificate approve {name}"
            );
        }
        info!(csr = %name, signer = self.signer, "waiting for the certificate to be approved and issued");
        let cert = wait_issued(&api, &name).await?;
        files::remove_if_exists(&self.pending_path("key"))?;
        files::remove_if_exists(&self.pending_path("csr"))?;
        Ok((cert, pending.key_pem))
    }

    fn pending_path(&self, ext: &str) -> PathBuf {
        self.pending_dir.join(format!("{}.pending.{ext}", self.name))
    }

    /// The key and CSR of an earlier, unfinished run, or new ones saved before use.
    fn pending_key_and_csr(&self) -> Result<KeyAndCsr, BootstrapError> {
        let (key_path, csr_path) = (self.pending_path("key"), self.pending_path("csr"));
        if let (Ok(key_pem), Ok(csr_pem)) =
            (std::fs::read_to_string(&key_path), std::fs::read_to_string(&csr_path))
        {
            return Ok(KeyAndCsr { key_pem, csr_pem });
        }
        let fresh = certs::node_csr(self.node_name, &self.ips, &self.dns)?;
        files::write_atomic(&key_path, fresh.key_pem.as_bytes(), 0o600)?;
        files::write_atomic(&csr_path, fresh.csr_pem.as_bytes(), 0o644)?;
        Ok(fresh)
    }

    /// Creates the CSR; an existing one with our exact request is reused, one holding
    /// another key (left by an earlier installation) makes us pick the next free name.
    async fn create_or_reuse(
        &self,
        api: &Api<CertificateSigningRequest>,
        pending: &KeyAndCsr,
    ) -> Result<String, BootstrapError> {
        for attempt in 1..=MAX_NAME_ATTEMPTS {
            let name = match attempt {
                1 => self.name.clone(),
                n => format!("{}-{n}", self.name),
            };
            let csr = self.object(&name, &pending.csr_pem);
            match api.create(&PostParams::default(), &csr).await {
                Ok(_) => {
                    info!(csr = %name, signer = self.signer, "created CertificateSigningRequest");
                    return Ok(name);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = api
                        .get(&name)
                        .await
                        .map_err(|e| BootstrapError::CreateCsr { name: name.clone(), source: e })?;
                    if existing.spec.request.0 == pending.csr_pem.as_bytes() {
                        info!(csr = %name, "reusing existing CertificateSigningRequest");
                        return Ok(name);
                    }
                    warn!(csr = %name, "a CertificateSigningRequest of that name holds another key; trying the next name");
                }
                Err(e) => return Err(BootstrapError::CreateCsr { name, source: e }),
            }
        }
        Err(BootstrapError::CsrNamesTaken { first: self.name.clone() })
    }

    fn object(&self, name: &str, csr_pem: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
            spec: CertificateSigningRequestSpec {
                request: ByteString(csr_pem.as_bytes().to_vec()),
                signer_name: self.signer.to_string(),
                usages: Some(self.usages.iter().map(|u| u.to_string()).collect()),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        }
    }
}

/// Watches the CSR until it carries a certificate, or is denied, failed or deleted.
async fn wait_issued(api: &Api<CertificateSigningRequest>, name: &str) -> Result<Vec<u8>, BootstrapError> {
    let settled = |obj: Option<&CertificateSigningRequest>| match obj {
        None => true,
        Some(csr) => issued_cert(csr).is_some() || final_condition(csr).is_some(),
    };
    let obj = kube::runtime::wait::await_condition(api.clone(), name, settled)
        .await
        .map_err(|e| BootstrapError::WatchCsr { name: name.into(), source: e })?
        .ok_or_else(|| BootstrapError::CsrDeleted { name: name.into() })?;
    if let Some((kind, reason, message)) = final_condition(&obj) {
        let (name, reason, message) = (name.to_string(), reason.to_string(), message.to_string());
        return Err(match kind {
            "Denied" => BootstrapError::CsrDenied { name, reason, message },
            _ => BootstrapError::CsrFailed { name, reason, message },
        });
    }
    Ok(issued_cert(&obj).map(<[u8]>::to_vec).unwrap_or_default())
}

fn issued_cert(csr: &CertificateSigningRequest) -> Option<&[u8]> {
    let cert = &csr.status.as_ref()?.certificate.as_ref()?.0;
    (!cert.is_empty()).then_some(cert.as_slice())
}

/// A Denied or Failed condition: (type, reason, message).
fn final_condition(csr: &CertificateSigningRequest) -> Option<(&str, &str, &str)> {
    let conds = csr.status.as_ref()?.conditions.as_ref()?;
    conds.iter().filter(|c| c.status == "True").find_map(|c| {
        let kind = c.type_.as_str();
        matches!(kind, "Denied" | "Failed")
            .then(|| (kind, c.reason.as_deref().unwrap_or("NoReason"), c.message.as_deref().unwrap_or("")))
    })
}
