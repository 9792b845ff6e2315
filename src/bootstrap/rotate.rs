//! Renewal of the node's two certificates while the agent runs, as the kubelet renews its
//! own: at a jittered 70–90% of the current certificate's lifetime, a new key and CSR; the
//! old certificate stays in use until the new one is issued; then it is installed through
//! the journal (`slot`) and swapped in without a restart. The client certificate goes into
//! the kubeconfig and the shared client's transport (`client`); the serving certificate
//! into `--cert-file`/`--private-key-file`, which the kubelet API's TLS re-reads on the
//! next handshake.
//!
//! The serving CSR needs a human: the agent logs and posts an Event naming the command to
//! run, reminds with a back-off, and says so plainly if the old certificate expires first.

use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::utils::Backoff as _;
use kube::runtime::watcher::DefaultBackoff;
use kube::{Api, Client};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use super::csr::{self, CsrRequest};
use super::pace::{Reminders, next_wait, paced, stopped_after, wait_until};
use super::slot::{self, Pending, Target};
use super::{BootstrapError, ClientSwap};
use crate::base::time::rfc3339_of;
use crate::certs::{self, CertInfo};
use crate::config::Config;
use crate::events::{Kind, Recorder};
use crate::files;

/// What renewing the node's certificates needs.
#[derive(Clone)]
pub struct Rotation {
    pub cfg: Config,
    /// The shared node client (renewal CSRs are made as the node).
    pub client: Client,
    pub swap: ClientSwap,
    pub recorder: Recorder,
    /// The cluster the node kubeconfig names.
    pub server: String,
    pub ca_pem: Vec<u8>,
}

/// Which certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    Client,
    Serving,
}

/// How a renewal attempt ended.
enum Flow {
    Renewed,
    Stopped,
}

impl Rotation {
    /// Keeps the client certificate renewed until `shutdown`. A kubeconfig that does not
    /// embed its certificate and key (an admin's, pointing at files, or a token) is left
    /// alone.
    pub async fn client(self, shutdown: broadcast::Receiver<()>) {
        if super::embedded_client_cert(&self.cfg.kubeconfig).is_none() {
            info!(path = %self.cfg.kubeconfig.display(), "the kubeconfig does not embed a client certificate and key; client certificate rotation is off");
            return;
        }
        self.keep_renewed(Identity::Client, shutdown).await;
    }

    /// Keeps the serving certificate renewed until `shutdown`.
    pub async fn serving(self, shutdown: broadcast::Receiver<()>) {
        self.keep_renewed(Identity::Serving, shutdown).await;
    }

    async fn keep_renewed(self, id: Identity, mut shutdown: broadcast::Receiver<()>) {
        let (request, pending) = (self.request(id), self.pending(id));
        let mut backoff = DefaultBackoff::default();
        // Paces renewals whose new certificate is due at once (a signer that caps lifetimes,
        // a CA about to expire): never a CSR after another in a loop.
        let mut hurried = Reminders::new();
        let mut just_renewed = false;
        loop {
            let current = match self.current(id) {
                Ok(c) => c,
                Err(e) => {
                    warn!(
                        certificate = request.what(),
                        error = %e, "cannot read the current certificate; renewal waits"
                    );
                    match stopped_after(next_wait(&mut backoff), &mut shutdown).await {
                        true => return,
                        false => continue,
                    }
                }
            };
            let resumed = pending.load().ok().flatten().is_some_and(|b| request.matches(&b));
            if resumed {
                info!(certificate = request.what(), "resuming the renewal started before the agent stopped");
            } else {
                let deadline =
                    certs::rotation_deadline(current.not_before, current.not_after, certs::jitter());
                let due = paced(deadline, SystemTime::now(), just_renewed, &mut hurried);
                if due != deadline {
                    warn!(certificate = request.what(), serial = %current.serial, "the renewed certificate is already due for renewal (the signer issues short lifetimes); asking again later");
                }
                info!(certificate = request.what(), serial = %current.serial, not_after = %rfc3339_of(current.not_after), renew_at = %rfc3339_of(due), "certificate renewal scheduled");
                if wait_until(due, &mut shutdown).await {
                    return;
                }
            }
            match self.renew(id, &request, &pending, &current, &mut shutdown).await {
                Flow::Renewed => backoff.reset(),
                Flow::Stopped => return,
            }
            just_renewed = true;
        }
    }

    /// One renewal: ask (again after each failure), wait, install, swap in.
    async fn renew(
        &self,
        id: Identity,
        request: &CsrRequest,
        pending: &Pending,
        current: &CertInfo,
        shutdown: &mut broadcast::Receiver<()>,
    ) -> Flow {
        let mut backoff = DefaultBackoff::default();
        let mut refused = Reminders::new();
        let mut expiry_told = false;
        loop {
            let asked = async {
                let bundle = super::pending_or_new(request, pending)?;
                let api: Api<_> = Api::all(self.api_client(id, current).await?);
                let name = request.create_or_reuse(&api, &bundle.csr_pem, false).await?;
                Ok::<_, BootstrapError>((bundle, api, name))
            };
            let (bundle, api, name) = match asked.await {
                Ok(asked) => asked,
                Err(e) => {
                    let wait = next_wait(&mut backoff);
                    warn!(certificate = request.what(), error = %e, retry_in = ?wait, "asking for a renewed certificate failed");
                    match stopped_after(wait, shutdown).await {
                        true => return Flow::Stopped,
                        false => continue,
                    }
                }
            };
            self.announce(request, &api, &name, current).await;
            let mut reminders = Reminders::new();
            let wait = csr::wait_issued(&api, &name);
            tokio::pin!(wait);
            let outcome = loop {
                let expires = current.not_after.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::select! {
                    r = &mut wait => break r,
                    _ = tokio::time::sleep(expires), if !expiry_told => {
                        expiry_told = true;
                        self.tell_expired(request, &name, current).await;
                    }
                    _ = tokio::time::sleep_until(reminders.next), if request.needs_manual_approval() => {
                        reminders.advance();
                        self.announce(request, &api, &name, current).await;
                    }
                    _ = shutdown.recv() => return Flow::Stopped,
                }
            };
            let failure = match outcome.and_then(|cert| super::issued_bundle(request, &name, bundle, cert)) {
                Ok(issued) => match self.install(id, pending, &issued).await {
                    Ok(info) => {
                        let message = format!(
                            "{} renewed: serial {}, valid until {} (CertificateSigningRequest {name})",
                            capitalized(request.what()),
                            info.serial,
                            rfc3339_of(info.not_after)
                        );
                        info!(csr = %name, "{message}");
                        self.publish(Kind::Normal, "CertificateRotated", &message).await;
                        return Flow::Renewed;
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            let wait = match &failure {
                BootstrapError::CsrDenied { .. }
                | BootstrapError::CsrFailed { .. }
                | BootstrapError::CsrWrongCertificate { .. } => {
                    // A human or the signer said no: ask again with a new key, not at once.
                    let wait = refused.advance();
                    let message = format!(
                        "{failure}; the old certificate stays in use and a new request follows in {}s",
                        wait.as_secs()
                    );
                    warn!(certificate = request.what(), "{message}");
                    self.publish(Kind::Warning, "CertificateRenewalRefused", &message).await;
                    if let Err(e) = pending.clear() {
                        warn!(error = %e, "cannot remove the refused request");
                    }
                    wait
                }
                _ => {
                    let wait = next_wait(&mut backoff);
                    warn!(certificate = request.what(), error = %failure, retry_in = ?wait, "renewing the certificate failed; retrying");
                    wait
                }
            };
            if stopped_after(wait, shutdown).await {
                return Flow::Stopped;
            }
        }
    }

    /// Records the issued certificate, installs it, and swaps it in. A client certificate
    /// is first made into the client that will present it, so one that cannot be used is
    /// refused before anything on disk changes (disk and memory never disagree).
    async fn install(
        &self,
        id: Identity,
        pending: &Pending,
        issued: &certs::Bundle,
    ) -> Result<CertInfo, BootstrapError> {
        let cert = issued.cert_pem.as_deref().unwrap_or_default().as_bytes();
        let info = certs::inspect(cert, "the renewed certificate")?;
        let next = match id {
            Identity::Client => Some(self.client_for(cert, issued.key_pem.as_bytes()).await?),
            Identity::Serving => None,
        };
        slot::apply(&slot::install_steps(pending, issued, &self.target(id)))?;
        if let Some(next) = next {
            // Every holder of the node client sends its next request with the new certificate.
            self.swap.replace(next);
            info!(path = %self.cfg.kubeconfig.display(), "the node client now presents the renewed certificate");
        }
        Ok(info)
    }

    /// The client the kubeconfig with this pair will make (what a restart would use).
    async fn client_for(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Client, BootstrapError> {
        let path = &self.cfg.kubeconfig;
        let yaml = certs::render_kubeconfig(&self.server, &self.ca_pem, cert_pem, key_pem);
        let kc = kube::config::Kubeconfig::from_yaml(&yaml)
            .map_err(|e| BootstrapError::KubeconfigInvalid { path: path.clone(), why: e.to_string() })?;
        super::connect(kc, path).await
    }

    /// The client a renewal CSR is made with: the node's own, or, once its certificate has
    /// expired (the API server refuses it), the bootstrap kubeconfig's, as the kubelet does.
    async fn api_client(&self, id: Identity, current: &CertInfo) -> Result<Client, BootstrapError> {
        if id == Identity::Serving || !current.expired(SystemTime::now()) {
            return Ok(self.client.clone());
        }
        let path = &self.cfg.bootstrap_file;
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
            BootstrapError::BootstrapFileUnreadable {
                path: path.clone(),
                why: format!(
                    "the client certificate has expired and the bootstrap kubeconfig cannot be read: {e}"
                ),
            }
        })?;
        super::connect(kc, path).await
    }

    /// Says which CSR waits, and what to run if a human must approve it (unless one has:
    /// a CSR approved while the agent was down, or one the signer is slow to sign).
    async fn announce(
        &self,
        request: &CsrRequest,
        api: &Api<CertificateSigningRequest>,
        name: &str,
        current: &CertInfo,
    ) {
        if !request.needs_manual_approval() || csr::approved(api, name).await {
            info!(csr = %name, serial = %current.serial, "waiting for the renewed {} to be approved and issued", request.what());
            return;
        }
        let message = format!(
            "Serving certificate (serial {}) expires at {}: approve its renewal with kubectl certificate approve {name}",
            current.serial,
            rfc3339_of(current.not_after)
        );
        warn!(csr = %name, "{message}");
        self.publish(Kind::Warning, "CertificateApprovalNeeded", &message).await;
    }

    /// The old certificate expired before the new one was issued.
    async fn tell_expired(&self, request: &CsrRequest, name: &str, current: &CertInfo) {
        let consequence = match request.needs_manual_approval() {
            true => "kubectl logs, exec and the API server's other calls to this node fail",
            false => "the API server refuses the node's requests (Lease, status, pods)",
        };
        let message = format!(
            "{} (serial {}) expired at {} before its renewal was issued: {consequence} until CertificateSigningRequest {name} is approved (kubectl certificate approve {name})",
            capitalized(request.what()),
            current.serial,
            rfc3339_of(current.not_after)
        );
        error!(csr = %name, "{message}");
        self.publish(Kind::Warning, "CertificateExpired", &message).await;
    }

    async fn publish(&self, kind: Kind, reason: &str, message: &str) {
        let node = crate::node::node_ref(&self.cfg.node_name);
        self.recorder.publish(&node, kind, reason, message).await;
    }

    fn request(&self, id: Identity) -> CsrRequest {
        match id {
            Identity::Client => CsrRequest::client(&self.cfg.node_name),
            Identity::Serving => {
                CsrRequest::serving(&self.cfg.node_name, self.cfg.node_ip, &self.cfg.hostname)
            }
        }
    }

    fn pending(&self, id: Identity) -> Pending {
        Pending::new(&self.cfg.config_dir(), if id == Identity::Client { "client" } else { "serving" })
    }

    fn target(&self, id: Identity) -> Target {
        match id {
            Identity::Client => Target::Kubeconfig {
                path: self.cfg.kubeconfig.clone(),
                server: self.server.clone(),
                ca_pem: self.ca_pem.clone(),
            },
            Identity::Serving => super::serving_target(&self.cfg),
        }
    }

    /// The certificate in use now, as on disk.
    fn current(&self, id: Identity) -> Result<CertInfo, BootstrapError> {
        let (pem, path) = match id {
            Identity::Client => {
                let path = &self.cfg.kubeconfig;
                let pem = super::embedded_client_cert(path)
                    .ok_or_else(|| BootstrapError::NoClientCertificate { path: path.clone() })?;
                (pem, path)
            }
            Identity::Serving => (files::read(&self.cfg.cert_file)?, &self.cfg.cert_file),
        };
        Ok(certs::inspect(&pem, &path.display().to_string())?)
    }
}

fn capitalized(what: &str) -> String {
    let mut chars = what.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
