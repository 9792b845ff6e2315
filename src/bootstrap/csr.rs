//! One CertificateSigningRequest: the key and CSR it is made of, its name, creating it (or
//! finding the one an earlier run created for the same key), and waiting until it carries a
//! certificate, or is denied, failed or gone.

use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use sha2::Digest as _;
use tracing::{info, warn};

use super::BootstrapError;
use crate::certs::{self, Bundle};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
const SERVING_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];
/// Longest name of a CSR (a DNS subdomain).
const MAX_NAME: usize = 253;

/// What to ask the cluster for: one of the node's two identities.
#[derive(Debug, Clone)]
pub struct CsrRequest {
    /// `<node>` (client) or `<node>-tls` (serving): the name the first request gets, and the
    /// stem of later ones.
    pub base: String,
    pub signer: &'static str,
    usages: &'static [&'static str],
    pub node_name: String,
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
}

impl CsrRequest {
    /// The node's client certificate (`CN=system:node:<node>`, no SANs).
    pub fn client(node_name: &str) -> Self {
        CsrRequest {
            base: node_name.to_string(),
            signer: CLIENT_SIGNER,
            usages: &CLIENT_USAGES,
            node_name: node_name.to_string(),
            ips: vec![],
            dns: vec![],
        }
    }

    /// The node's serving certificate, naming its IP and hostname.
    pub fn serving(node_name: &str, ip: IpAddr, hostname: &str) -> Self {
        CsrRequest {
            base: format!("{node_name}-tls"),
            signer: SERVING_SIGNER,
            usages: &SERVING_USAGES,
            node_name: node_name.to_string(),
            ips: vec![ip],
            dns: vec![hostname.to_string()],
        }
    }

    /// Whether the requests nobody approves automatically (the serving one).
    pub fn needs_manual_approval(&self) -> bool {
        self.signer == SERVING_SIGNER
    }

    /// `client certificate` or `serving certificate`, for messages.
    pub fn what(&self) -> &'static str {
        if self.signer == SERVING_SIGNER { "serving certificate" } else { "client certificate" }
    }

    /// A new key and its CSR.
    pub fn new_bundle(&self) -> Result<Bundle, BootstrapError> {
        let kc = certs::node_csr(&self.node_name, &self.ips, &self.dns)?;
        Ok(Bundle { key_pem: kc.key_pem, csr_pem: kc.csr_pem, cert_pem: None })
    }

    /// Whether a pending bundle's CSR asks for exactly this identity (the node's name, IP
    /// or hostname may have changed since it was made).
    pub fn matches(&self, bundle: &Bundle) -> bool {
        certs::csr_identity(&bundle.csr_pem).is_ok_and(|id| {
            names_node(&id.subject, &self.node_name) && id.ips == self.ips && id.dns == self.dns
        })
    }

    /// Whether an issued certificate names this identity.
    pub fn names(&self, info: &certs::CertInfo) -> bool {
        names_node(&info.subject, &self.node_name) && info.covers(&self.ips, &self.dns)
    }

    /// The names this CSR may have, in order. The first request of a node takes `base`
    /// (the name the bootstrap documents); renewals, and a first request whose `base` is
    /// held by another key, take `base-<hash of the CSR>`: one name per key, so a restart
    /// finds the CSR it made, and renewals never collide with earlier ones.
    pub fn names_for(&self, csr_pem: &str, first: bool) -> Vec<String> {
        let hash = hex::encode(sha2::Sha256::digest(csr_pem.as_bytes()));
        let stem: String = self.base.chars().take(MAX_NAME - 9).collect();
        let hashed = format!("{}-{}", stem.trim_end_matches(['-', '.']), &hash[..8]);
        if first { vec![self.base.clone(), hashed] } else { vec![hashed] }
    }

    /// Creates the CSR; an existing one with our exact request is reused, one holding
    /// another key (left by an earlier installation) makes us take the next name.
    pub async fn create_or_reuse(
        &self,
        api: &Api<CertificateSigningRequest>,
        csr_pem: &str,
        first: bool,
    ) -> Result<String, BootstrapError> {
        for name in self.names_for(csr_pem, first) {
            match api.create(&PostParams::default(), &self.object(&name, csr_pem)).await {
                Ok(_) => {
                    info!(csr = %name, signer = self.signer, "created CertificateSigningRequest");
                    return Ok(name);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = api
                        .get(&name)
                        .await
                        .map_err(|e| BootstrapError::CreateCsr { name: name.clone(), source: e })?;
                    if existing.spec.request.0 == csr_pem.as_bytes() {
                        info!(csr = %name, "reusing existing CertificateSigningRequest");
                        return Ok(name);
                    }
                    warn!(csr = %name, "a CertificateSigningRequest of that name holds another key; trying the next name");
                }
                Err(e) => return Err(BootstrapError::CreateCsr { name, source: e }),
            }
        }
        Err(BootstrapError::CsrNamesTaken { first: self.base.clone() })
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

/// Whether a subject (as x509-parser prints it) is `CN=system:node:<node>`'s.
fn names_node(subject: &str, node: &str) -> bool {
    let cn = format!("CN=system:node:{node}");
    subject.split(", ").any(|part| part == cn)
}

/// Watches the CSR until it carries a certificate (returned, PEM), or is denied, failed or
/// deleted (errors naming it).
pub async fn wait_issued(
    api: &Api<CertificateSigningRequest>,
    name: &str,
) -> Result<Vec<u8>, BootstrapError> {
    let settled = |obj: Option<&CertificateSigningRequest>| match obj {
        None => true,
        Some(csr) => issued_cert(csr).is_some() || final_condition(csr).is_some(),
    };
    let obj = kube::runtime::wait::await_condition(api.clone(), name, settled)
        .await
        .map_err(|e| BootstrapError::WatchCsr { name: name.into(), source: e })?
        .ok_or_else(|| BootstrapError::CsrDeleted { name: name.into() })?;
    if let Some(cert) = issued_cert(&obj) {
        return Ok(cert.to_vec());
    }
    let (kind, reason, message) = final_condition(&obj).unwrap_or(("Failed", "NoReason", ""));
    let (name, reason, message) = (name.to_string(), reason.to_string(), message.to_string());
    Err(match kind {
        "Denied" => BootstrapError::CsrDenied { name, reason, message },
        _ => BootstrapError::CsrFailed { name, reason, message },
    })
}

/// Whether the CSR has been approved or carries its certificate already (a failed read
/// counts as not approved).
pub async fn approved(api: &Api<CertificateSigningRequest>, name: &str) -> bool {
    let Ok(Some(csr)) = api.get_opt(name).await else { return false };
    let approved = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| conds.iter().any(|c| c.type_ == "Approved" && c.status == "True"));
    approved || issued_cert(&csr).is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_request_takes_the_documented_name_and_renewals_one_per_key() {
        let serving = CsrRequest::serving("wasm-1", "10.0.0.5".parse().unwrap(), "wasm-1");
        let a = serving.new_bundle().unwrap();
        let b = serving.new_bundle().unwrap();
        let first = serving.names_for(&a.csr_pem, true);
        assert_eq!(first[0], "wasm-1-tls");
        let renewal = serving.names_for(&a.csr_pem, false);
        assert_eq!(renewal, [first[1].clone()]);
        assert!(renewal[0].starts_with("wasm-1-tls-") && renewal[0].len() == "wasm-1-tls-".len() + 8);
        assert_eq!(serving.names_for(&a.csr_pem, false), renewal, "the same key, the same name");
        assert_ne!(serving.names_for(&b.csr_pem, false), renewal, "another key, another name");
        let long = CsrRequest::client(&"n".repeat(253));
        assert!(long.names_for(&a.csr_pem, false)[0].len() <= MAX_NAME);
    }

    #[test]
    fn a_pending_csr_is_reused_only_for_the_same_identity() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let serving = CsrRequest::serving("wasm-1", ip, "wasm-1");
        let bundle = serving.new_bundle().unwrap();
        assert!(serving.matches(&bundle));
        assert!(!CsrRequest::serving("wasm-1", "10.0.0.6".parse().unwrap(), "wasm-1").matches(&bundle));
        assert!(!CsrRequest::serving("wasm-1", ip, "other").matches(&bundle));
        assert!(!CsrRequest::serving("wasm-2", ip, "wasm-1").matches(&bundle));
        assert!(!CsrRequest::serving("wasm-", ip, "wasm-1").matches(&bundle));
        let client = CsrRequest::client("wasm-1");
        assert!(client.matches(&client.new_bundle().unwrap()));
        assert!(!client.matches(&bundle));
    }
}
