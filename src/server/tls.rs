//! TLS of the kubelet API: the serving certificate (reloaded when its file changes, so a
//! renewed certificate is used without a restart) and client certificates, which the
//! handshake only requires to be *possessed*; whether the cluster CA signed them is
//! decided per request (`authenticate`), so a foreign certificate gets a 401, not a reset.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("the cluster CA is not usable: {0}")]
    Ca(String),
    #[error("the serving key does not fit rustls: {0}")]
    Key(String),
}

/// Who a verified client certificate says the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The certificate's CN.
    pub user: String,
    /// The certificate's O values.
    pub groups: Vec<String>,
}

/// Verifies client certificates against the cluster CA, per request.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Authenticator {
    /// The caller's identity, or why there is none (no certificate, another CA, expired).
    pub fn authenticate(&self, peer: &[CertificateDer<'static>]) -> Result<Identity, String> {
        let (end, intermediates) = peer.split_first().ok_or("no client certificate")?;
        self.verifier
            .verify_client_cert(end, intermediates, UnixTime::now())
            .map_err(|e| format!("client certificate not accepted: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(end.as_ref()).map_err(|e| e.to_string())?;
        let subject = cert.subject();
        let user = subject.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_string();
        let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(String::from).collect();
        if user.is_empty() {
            return Err("client certificate has no common name".into());
        }
        Ok(Identity { user, groups })
    }
}

/// The server TLS configuration and the matching per-request authenticator.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    ca_pem: &[u8],
) -> Result<(Arc<ServerConfig>, Authenticator), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| TlsError::Ca(e.to_string()))?).map_err(|e| TlsError::Ca(e.to_string()))?;
    }
    let hints = roots.subjects();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    let resolver = ReloadingCert::new(cert_file, key_file, provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_client_cert_verifier(Arc::new(PossessionOnly {
            hints,
            algs: provider.signature_verification_algorithms,
        }))
        .with_cert_resolver(Arc::new(resolver));
    // Upgrades (exec over SPDY and WebSocket) are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), Authenticator { verifier }))
}

/// Asks for a client certificate and checks the client holds its key; the chain is
/// checked later, per request, so the answer can be an HTTP 401.
#[derive(Debug)]
struct PossessionOnly {
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PossessionOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The serving certificate, re-read when the certificate file changes (its mtime, inode or
/// size: a file replaced within the filesystem's mtime granularity is still seen).
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<(Arc<CertifiedKey>, Option<Stamp>)>,
}

impl ReloadingCert {
    fn new(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let key = load(cert_file, key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            provider,
            current: Mutex::new((Arc::new(key), stamp(cert_file))),
        })
    }
}

/// What identifies one version of a file: mtime, inode, size.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.ino(), meta.len()))
}

fn load(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read { path: p.into(), why: e.to_string() });
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read { path: cert_file.into(), why: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
        .map_err(|e| TlsError::Read { path: key_file.into(), why: e.to_string() })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key(e.to_string()))
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ReloadingCert {
    /// The pair to serve: the files' if the certificate file changed since the last load
    /// and the pair loads and matches, else the one loaded last. A renewal writes the key
    /// first and the certificate second, each by an atomic rename: between the two the
    /// certificate file is unchanged, so nothing is reloaded; a pair caught in any other
    /// order (a hand-made one) fails rustls' key check and is tried again at the next
    /// handshake, since its stamp is not recorded.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.cert_file);
        if now != current.1 {
            match load(&self.cert_file, &self.key_file, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert_file = %self.cert_file.display(), "serving certificate changed; using the new one");
                    *current = (Arc::new(key), now);
                }
                // Half-written or mismatched files: keep serving the old one.
                Err(e) => tracing::warn!(error = %e, "serving certificate changed but cannot be loaded yet"),
            }
        }
        current.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a new self-signed pair; returns (certificate PEM, key PEM).
    fn pair() -> (String, String) {
        crate::certs::self_signed("wasm-1", &[]).unwrap()
    }

    fn served(cert: &ReloadingCert) -> Vec<u8> {
        cert.current().cert[0].as_ref().to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
    }

    #[test]
    fn a_renewed_pair_is_served_once_whole_and_never_a_mismatched_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("krustlet.crt"), dir.path().join("krustlet.key"));
        let write = |p: &Path, s: &str| crate::files::write_atomic(p, s.as_bytes(), 0o600).unwrap();
        let (a_cert, a_key) = pair();
        write(&key_file, &a_key);
        write(&cert_file, &a_cert);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = ReloadingCert::new(&cert_file, &key_file, provider).unwrap();
        assert_eq!(served(&resolver), der(&a_cert));

        // Renewal order: key, then certificate. Between the two, the old pair stays.
        let (b_cert, b_key) = pair();
        write(&key_file, &b_key);
        assert_eq!(served(&resolver), der(&a_cert));
        write(&cert_file, &b_cert);
        assert_eq!(served(&resolver), der(&b_cert));

        // The other order: the new certificate with the old key is refused, not served,
        // and the pair is taken once its key arrives.
        let (c_cert, c_key) = pair();
        write(&cert_file, &c_cert);
        assert_eq!(served(&resolver), der(&b_cert));
        write(&key_file, &c_key);
        assert_eq!(served(&resolver), der(&c_cert));
        assert!(resolver.current().keys_match().is_ok());
    }
}
