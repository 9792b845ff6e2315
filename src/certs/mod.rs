//! Pure certificate helpers: keys and CSRs for the node's identities, checks of issued
//! certificates (validity, SANs, the key they belong to), the bundle a pending request is
//! kept in, when to renew, and the kubeconfig the bootstrap writes.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use x509_parser::extensions::GeneralName;

mod bundle;
mod schedule;
#[cfg(test)]
pub(crate) mod testing;

pub use bundle::{Bundle, csr_identity, key_matches};
pub use schedule::{jitter, rotation_deadline};

/// Errors from building or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a key or CSR failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what} is not a PEM certificate: {why}")]
    ParseCertificate { what: String, why: String },
    #[error("{0:?} is not a valid DNS name for a certificate")]
    BadDnsName(String),
    #[error("{what}: {why}")]
    Pem { what: String, why: String },
}

/// A private key and the PEM CSR made from it, kept together until the CSR is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Subject `CN=system:node:<node>, O=system:nodes`, the identity every kubelet certificate
/// carries; `ips` and `dns` become SANs (used for the serving certificate).
pub fn node_csr(node_name: &str, ips: &[IpAddr], dns: &[String]) -> Result<KeyAndCsr, CertError> {
    let key = KeyPair::generate()?;
    let csr_pem = node_csr_for_key(&key, node_name, ips, dns)?;
    Ok(KeyAndCsr { key_pem: key.serialize_pem(), csr_pem })
}

/// A new CSR for an existing key (PEM), e.g. a pending key whose CSR file was lost.
pub fn node_csr_for_key(
    key: &KeyPair,
    node_name: &str,
    ips: &[IpAddr],
    dns: &[String],
) -> Result<String, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("system:node:{node_name}"));
    dn.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name = dn;
    for name in dns {
        let ia5 = name.clone().try_into().map_err(|_| CertError::BadDnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params.subject_alt_names.extend(ips.iter().copied().map(SanType::IpAddress));
    Ok(params.serialize_request(key)?.pem()?)
}

/// A self-signed serving certificate for standalone mode, naming `hostname`, `localhost`,
/// the given IPs and 127.0.0.1: (certificate PEM, key PEM).
pub fn self_signed(hostname: &str, ips: &[IpAddr]) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("{hostname}@krustlet-wasi"));
    for name in [hostname, "localhost"] {
        let ia5 = name.to_string().try_into().map_err(|_| CertError::BadDnsName(name.to_string()))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    let mut all: Vec<IpAddr> = ips.to_vec();
    all.push(IpAddr::from([127, 0, 0, 1]));
    all.dedup();
    params.subject_alt_names.extend(all.into_iter().map(SanType::IpAddress));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What the bootstrap needs to know about an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The serial number in hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
    pub subject: String,
}

/// Reads the first certificate of a PEM bundle.
pub fn inspect(pem: &[u8], what: &str) -> Result<CertInfo, CertError> {
    let bad = |why: String| CertError::ParseCertificate { what: what.to_string(), why };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let at = |t: x509_parser::time::ASN1Time| UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    let mut info = CertInfo {
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        ips: Vec::new(),
        dns: Vec::new(),
        subject: cert.subject().to_string(),
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => info.dns.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        info.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        info.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(info)
}

impl CertInfo {
    /// Past its `notAfter` at `now`: every peer refuses it.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// Its lifetime (`notAfter - notBefore`).
    pub fn lifetime(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }

    /// Names every IP and DNS name given.
    pub fn covers(&self, ips: &[IpAddr], dns: &[String]) -> bool {
        ips.iter().all(|ip| self.ips.contains(ip)) && dns.iter().all(|d| self.dns.contains(d))
    }
}

/// Renders a kubeconfig with one cluster, one client-certificate user and one context,
/// everything embedded so the file alone is enough.
pub fn render_kubeconfig(server: &str, ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{"name": "default-auth", "user": {
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster",
            "user": "default-auth",
        }}],
        "current-context": "default-context",
    });
    // Serializing cannot fail on a JSON value built from strings.
    serde_saphyr::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs a CSR with a throwaway CA, valid from an hour ago for a day.
    fn sign(csr_pem: &str) -> String {
        let now = time::OffsetDateTime::now_utc();
        testing::sign(csr_pem, now - time::Duration::hours(1), now + time::Duration::days(1))
    }

    #[test]
    fn node_csr_carries_the_node_identity_and_sans() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let kc = node_csr("wasm-1", &[ip], &["wasm-1".into()]).unwrap();
        assert!(kc.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(kc.key_pem.contains("PRIVATE KEY"));
        let info = inspect(sign(&kc.csr_pem).as_bytes(), "test").unwrap();
        assert!(info.subject.contains("CN=system:node:wasm-1"), "{}", info.subject);
        assert!(info.subject.contains("O=system:nodes"), "{}", info.subject);
        assert!(info.covers(&[ip], &["wasm-1".into()]));
        assert!(!info.covers(&["127.0.0.10".parse().unwrap()], &[]));
        assert!(!info.expired(SystemTime::now()));
        assert!(info.expired(SystemTime::now() + Duration::from_secs(2 * 86_400)));
        assert_eq!(info.lifetime(), Duration::from_secs(86_400 + 3600));
    }

    #[test]
    fn garbage_is_a_parse_error_naming_the_file() {
        let err = inspect(b"not a cert", "/x/krustlet.crt").unwrap_err();
        assert!(err.to_string().contains("/x/krustlet.crt"));
    }

    #[test]
    fn rendered_kubeconfig_is_read_back_by_kube() {
        let yaml = render_kubeconfig("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY");
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("default-context"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate_data.as_deref(), Some("Q0VSVA=="));
    }
}
