//! TLS bootstrap and certificate rotation: turns a bootstrap token into the node's client
//! certificate (a kubeconfig) and its serving certificate, through CertificateSigningRequests
//! the cluster approves, and keeps both renewed while the agent runs (`rotate`).
//!
//! At start, top to bottom: sweep temporary files a crash left; finish installing any
//! certificate a crash left issued but not installed (`slot`); use the node kubeconfig if its
//! certificate is still valid, else request one with the bootstrap kubeconfig; connect
//! through a client whose transport rotation can replace (`client`); then keep the serving
//! certificate if it belongs to this node and its key, else request one (a human approves).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::certs::{self, Bundle, CertError};
use crate::config::Config;
use crate::files;

mod client;
mod csr;
mod pace;
mod rotate;
mod slot;

pub use client::ClientSwap;
pub use rotate::Rotation;

use csr::CsrRequest;
use slot::{Pending, Recovered, Target};

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
    #[error("CertificateSigningRequest {name} was issued a certificate for another key or identity")]
    CsrWrongCertificate { name: String },
    #[error(
        "CertificateSigningRequest names {first} and {first}-<hash> hold other keys; delete them with kubectl delete csr"
    )]
    CsrNamesTaken { first: String },
    #[error("{path} embeds no client certificate and key")]
    NoClientCertificate { path: PathBuf },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    File(#[from] files::FileError),
}

/// What the rest of the agent needs: a client as the node (every clone follows client
/// certificate renewals), the handle that renews it, and the cluster CA.
pub struct Credentials {
    pub client: Client,
    pub swap: ClientSwap,
    /// PEM of the cluster CA, which also signs the clients allowed to call the kubelet API.
    pub ca_pem: Vec<u8>,
    /// The cluster's API server URL.
    pub server: String,
}

/// Runs the bootstrap to completion (it may wait for a human to approve a CSR).
pub async fn run(cfg: &Config) -> Result<Credentials, BootstrapError> {
    for path in [&cfg.kubeconfig, &cfg.cert_file, &cfg.private_key_file] {
        files::sweep_temporaries(path)?;
    }
    for slot in ["client", "serving"] {
        files::sweep_temporaries(Pending::new(&cfg.config_dir(), slot).path())?;
    }
    let kubeconfig = client_kubeconfig(cfg).await?;
    let (server, ca_pem) = cluster_of(&kubeconfig, &cfg.kubeconfig)?;
    let client = connect(kubeconfig, &cfg.kubeconfig).await?;
    let (client, swap) = ClientSwap::new(client);
    serving_certificate(cfg, &client).await?;
    Ok(Credentials { client, swap, ca_pem, server })
}

/// The node kubeconfig: as found (after finishing an interrupted installation), or made
/// from a new client certificate requested with the bootstrap kubeconfig.
async fn client_kubeconfig(cfg: &Config) -> Result<Kubeconfig, BootstrapError> {
    let pending = Pending::new(&cfg.config_dir(), "client");
    let request = CsrRequest::client(&cfg.node_name);
    let recovered = match client_target(cfg) {
        Some(target) => slot::recover(&pending, &target, SystemTime::now(), |i| request.names(i))?,
        None => Recovered::Nothing,
    };
    if let Recovered::Installed(cert) = recovered {
        info!(path = %cfg.kubeconfig.display(), serial = %cert.serial, "installed the client certificate issued before the agent stopped");
    }
    if let Some(kc) = usable_kubeconfig(&cfg.kubeconfig)? {
        info!(path = %cfg.kubeconfig.display(), "using existing kubeconfig");
        return Ok(kc);
    }
    let path = &cfg.bootstrap_file;
    let unreadable = |why: String| BootstrapError::BootstrapFileUnreadable { path: path.clone(), why };
    std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    let boot = Kubeconfig::read_from(path).map_err(|e| unreadable(e.to_string()))?;
    let (server, ca_pem) = cluster_of(&boot, path)?;
    info!(bootstrap_file = %path.display(), %server, "no usable kubeconfig; starting TLS bootstrap");
    let client = connect(boot, path).await?;
    let target = Target::Kubeconfig { path: cfg.kubeconfig.clone(), server, ca_pem };
    request_and_install(&request, &client, &pending, &target).await?;
    info!(path = %cfg.kubeconfig.display(), "client certificate issued; kubeconfig written");
    Kubeconfig::read_from(&cfg.kubeconfig)
        .map_err(|e| BootstrapError::KubeconfigInvalid { path: cfg.kubeconfig.clone(), why: e.to_string() })
}

/// Where a client certificate is installed: the node kubeconfig, for the cluster it names
/// (or, before there is one, the bootstrap kubeconfig's). `None` if neither can be read.
fn client_target(cfg: &Config) -> Option<Target> {
    let cluster = |path: &Path| Kubeconfig::read_from(path).ok().and_then(|kc| cluster_of(&kc, path).ok());
    let (server, ca_pem) = cluster(&cfg.kubeconfig).or_else(|| cluster(&cfg.bootstrap_file))?;
    Some(Target::Kubeconfig { path: cfg.kubeconfig.clone(), server, ca_pem })
}

/// The node kubeconfig if it exists and its client certificate (if it has one) has not
/// expired. One about to expire is used: rotation renews it at once.
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
    if info.expired(SystemTime::now()) {
        warn!(path = %path.display(), serial = %info.serial, "client certificate expired; bootstrapping again");
        return Ok(None);
    }
    Ok(Some(kc))
}

fn current_user(kc: &Kubeconfig) -> Option<&kube::config::AuthInfo> {
    let ctx_name = kc.current_context.as_deref()?;
    let ctx = kc.contexts.iter().find(|c| c.name == ctx_name)?.context.as_ref()?;
    let user = ctx.user.as_deref()?;
    kc.auth_infos.iter().find(|a| a.name == user)?.auth_info.as_ref()
}

/// The client certificate embedded in the node kubeconfig (PEM), if it embeds one with its
/// key: the only kind the agent renews (it does not rewrite files an admin points it at).
pub(crate) fn embedded_client_cert(path: &Path) -> Option<Vec<u8>> {
    let kc = Kubeconfig::read_from(path).ok()?;
    let user = current_user(&kc)?;
    user.client_key_data.as_ref()?;
    files::decode_b64(user.client_certificate_data.as_deref()?).ok()
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

/// kube's client for a kubeconfig (its TLS, timeouts and retries).
async fn connect(kc: Kubeconfig, path: &Path) -> Result<Client, BootstrapError> {
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| BootstrapError::KubeconfigInvalid { path: path.into(), why: e.to_string() })?;
    Client::try_from(config).map_err(|e| BootstrapError::Connect { path: path.into(), source: e })
}

/// Keeps the serving certificate if it belongs to this node and to its key (one that has
/// expired too, when rotation is on: the node runs, and rotation asks for a new one at
/// once); else requests one and waits until a human approves it.
async fn serving_certificate(cfg: &Config, client: &Client) -> Result<(), BootstrapError> {
    let pending = Pending::new(&cfg.config_dir(), "serving");
    let request = CsrRequest::serving(&cfg.node_name, cfg.node_ip, &cfg.hostname);
    let target = serving_target(cfg);
    if let Recovered::Installed(cert) =
        slot::recover(&pending, &target, SystemTime::now(), |i| request.names(i))?
    {
        info!(cert_file = %cfg.cert_file.display(), serial = %cert.serial, "installed the serving certificate issued before the agent stopped");
    }
    match serving_pair(cfg, &request) {
        Ok(cert) if cert.expired(SystemTime::now()) && !cfg.rotate_certificates => {
            warn!(cert_file = %cfg.cert_file.display(), serial = %cert.serial, "serving certificate expired; requesting a new one")
        }
        Ok(cert) if cert.expired(SystemTime::now()) => {
            warn!(cert_file = %cfg.cert_file.display(), serial = %cert.serial, "serving certificate expired; kubectl logs and exec to this node fail until its renewal is approved");
            return Ok(());
        }
        Ok(_) => {
            info!(cert_file = %cfg.cert_file.display(), "using existing serving certificate");
            return Ok(());
        }
        Err(Some(why)) => {
            warn!(cert_file = %cfg.cert_file.display(), why, "requesting a new serving certificate")
        }
        Err(None) => {}
    }
    request_and_install(&request, client, &pending, &target).await?;
    info!(cert_file = %cfg.cert_file.display(), "serving certificate issued");
    Ok(())
}

pub(crate) fn serving_target(cfg: &Config) -> Target {
    Target::Pair { cert_file: cfg.cert_file.clone(), key_file: cfg.private_key_file.clone() }
}

/// The serving certificate on disk if it belongs to this node and to the key beside it;
/// else why not (`None`: there is none).
fn serving_pair(cfg: &Config, request: &CsrRequest) -> Result<certs::CertInfo, Option<String>> {
    let (Some(cert), Some(key)) = (
        files::read_if_exists(&cfg.cert_file).map_err(|e| Some(e.to_string()))?,
        files::read_if_exists(&cfg.private_key_file).map_err(|e| Some(e.to_string()))?,
    ) else {
        return Err(None);
    };
    let info =
        certs::inspect(&cert, &cfg.cert_file.display().to_string()).map_err(|e| Some(e.to_string()))?;
    match certs::key_matches(&cert, &key) {
        Ok(true) => {}
        Ok(false) => return Err(Some("the certificate is not for the key in --private-key-file".into())),
        Err(e) => return Err(Some(e.to_string())),
    }
    if !request.names(&info) {
        return Err(Some("the certificate does not name this node, its IP or its hostname".into()));
    }
    Ok(info)
}

/// The bootstrap's request: ask once, wait, install. A denial ends the agent (the
/// message says which CSR); a restart waits for the same CSR again.
async fn request_and_install(
    request: &CsrRequest,
    client: &Client,
    pending: &Pending,
    target: &Target,
) -> Result<(), BootstrapError> {
    let bundle = pending_or_new(request, pending)?;
    let api = Api::all(client.clone());
    let name = request.create_or_reuse(&api, &bundle.csr_pem, true).await?;
    if request.needs_manual_approval() {
        println!(
            "BOOTSTRAP: TLS certificate requires manual approval. Run kubectl certificate approve {name}"
        );
    }
    info!(csr = %name, signer = request.signer, "waiting for the certificate to be approved and issued");
    let cert = csr::wait_issued(&api, &name).await?;
    let issued = issued_bundle(request, &name, bundle, cert)?;
    slot::apply(&slot::install_steps(pending, &issued, target))?;
    Ok(())
}

/// The pending request if it asks for this identity, else a new key and CSR, saved before
/// the CSR is sent (so a restart sends the same one).
fn pending_or_new(request: &CsrRequest, pending: &Pending) -> Result<Bundle, BootstrapError> {
    if let Some(bundle) = pending.load()? {
        if request.matches(&bundle) {
            return Ok(Bundle { cert_pem: None, ..bundle });
        }
        warn!(file = %pending.path().display(), "the pending request names another node, IP or hostname; making a new one");
    }
    let bundle = request.new_bundle()?;
    pending.save(&bundle)?;
    Ok(bundle)
}

/// `bundle` with the certificate a CSR was issued, checked to be for its key and identity.
fn issued_bundle(
    request: &CsrRequest,
    name: &str,
    bundle: Bundle,
    cert: Vec<u8>,
) -> Result<Bundle, BootstrapError> {
    let info = certs::inspect(&cert, &format!("the certificate of CertificateSigningRequest {name}"))?;
    if !certs::key_matches(&cert, bundle.key_pem.as_bytes())? || !request.names(&info) {
        return Err(BootstrapError::CsrWrongCertificate { name: name.into() });
    }
    Ok(Bundle { cert_pem: Some(String::from_utf8_lossy(&cert).into_owned()), ..bundle })
}
