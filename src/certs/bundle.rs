//! The one file a pending certificate request lives in (its private key, its CSR and, once
//! issued, the certificate) and the checks made on what comes back: whether a certificate
//! belongs to a key, and whom a CSR names.

use std::net::IpAddr;

use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::CertError;

/// A pending request as kept on disk. The file is always rewritten whole, so a crash leaves
/// it without a certificate (requested) or with one (issued), never in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub key_pem: String,
    pub csr_pem: String,
    /// The issued certificate (its chain, PEM), once the CSR carries one.
    pub cert_pem: Option<String>,
}

impl Bundle {
    /// Key, CSR, then the certificate if there is one, each a PEM block.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for block in [Some(&self.key_pem), Some(&self.csr_pem), self.cert_pem.as_ref()].into_iter().flatten()
        {
            out.push_str(block.trim_end());
            out.push('\n');
        }
        out
    }

    /// Reads what [`Bundle::render`] wrote; `what` (the file) names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Bundle, CertError> {
        let bad = |why: &str| CertError::Pem { what: what.to_string(), why: why.to_string() };
        let (mut key, mut csr, mut certs) = (None, None, Vec::new());
        for (label, block) in blocks(text).map_err(bad)? {
            match label {
                l if l.ends_with("PRIVATE KEY") => key = Some(block),
                "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => csr = Some(block),
                "CERTIFICATE" => certs.push(block),
                other => return Err(bad(&format!("unexpected PEM block {other:?}"))),
            }
        }
        Ok(Bundle {
            key_pem: key.ok_or_else(|| bad("no private key"))?,
            csr_pem: csr.ok_or_else(|| bad("no certificate request"))?,
            cert_pem: (!certs.is_empty()).then(|| certs.concat()),
        })
    }
}

/// The PEM blocks of `text`: (label, the block's text with its BEGIN and END lines).
fn blocks(text: &str) -> Result<Vec<(&str, String)>, &'static str> {
    let mut out = Vec::new();
    let mut open: Option<(&str, String)> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            if open.is_some() {
                return Err("a PEM block begins inside another");
            }
            open = Some((label, format!("{line}\n")));
        } else if let Some(label) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
            match open.take() {
                Some((begun, mut block)) if begun == label => {
                    block.push_str(line);
                    block.push('\n');
                    out.push((begun, block));
                }
                _ => return Err("a PEM block ends that did not begin"),
            }
        } else if let Some((_, block)) = open.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    if open.is_some() {
        return Err("a PEM block does not end (the file is cut short)");
    }
    Ok(out)
}

/// Whether the first certificate of `cert_pem` carries the public key of `key_pem`: a pair
/// that does not match cannot be served or presented.
pub fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CertError> {
    let bad = |what: &str, why: String| CertError::Pem { what: what.into(), why };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad("private key", e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad("private key", e.to_string()))?;
    let spki = signer.public_key().ok_or_else(|| bad("private key", "its public key is unknown".into()))?;
    let (_, key_info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
        .map_err(|e| bad("private key", e.to_string()))?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem).map_err(|e| bad("certificate", e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad("certificate", e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data == key_info.subject_public_key.data)
}

/// Whom a CSR names: its subject and its IP and DNS SANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrIdentity {
    pub subject: String,
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
}

/// Reads the subject and SANs of a PEM CSR.
pub fn csr_identity(csr_pem: &str) -> Result<CsrIdentity, CertError> {
    let bad = |why: String| CertError::Pem { what: "certificate request".into(), why };
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).map_err(|e| bad(e.to_string()))?;
    let mut id = CsrIdentity {
        subject: csr.certification_request_info.subject.to_string(),
        ips: Vec::new(),
        dns: Vec::new(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else { continue };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => id.dns.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        id.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        id.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::super::{node_csr, testing};
    use super::*;

    #[test]
    fn a_bundle_reads_back_what_was_written_with_and_without_its_certificate() {
        let kc = node_csr("wasm-1", &[], &[]).unwrap();
        let requested = Bundle { key_pem: kc.key_pem.clone(), csr_pem: kc.csr_pem.clone(), cert_pem: None };
        assert_eq!(Bundle::parse(&requested.render(), "f").unwrap(), requested);
        let cert = testing::sign_aged(&kc.csr_pem, 0, 600);
        let issued = Bundle { cert_pem: Some(cert), ..requested };
        assert_eq!(Bundle::parse(&issued.render(), "f").unwrap(), issued);
    }

    #[test]
    fn a_cut_or_foreign_bundle_is_an_error_naming_the_file() {
        let kc = node_csr("wasm-1", &[], &[]).unwrap();
        let whole = Bundle { key_pem: kc.key_pem, csr_pem: kc.csr_pem, cert_pem: None }.render();
        for (text, why) in [
            (&whole[..whole.len() - 20], "does not end"),
            (&whole[whole.find("-----BEGIN CERTIFICATE REQUEST").unwrap()..], "no private key"),
            ("-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n", "unexpected PEM block"),
            ("", "no private key"),
        ] {
            let err = Bundle::parse(text, "/cfg/serving.pending.pem").unwrap_err().to_string();
            assert!(err.contains("/cfg/serving.pending.pem") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_certificate_matches_its_own_key_only() {
        let mine = node_csr("wasm-1", &[], &[]).unwrap();
        let other = node_csr("wasm-1", &[], &[]).unwrap();
        let cert = testing::sign_aged(&mine.csr_pem, 0, 600);
        assert!(key_matches(cert.as_bytes(), mine.key_pem.as_bytes()).unwrap());
        assert!(!key_matches(cert.as_bytes(), other.key_pem.as_bytes()).unwrap());
        assert!(key_matches(b"junk", mine.key_pem.as_bytes()).is_err());
        assert!(key_matches(cert.as_bytes(), b"junk").is_err());
    }

    #[test]
    fn a_csr_tells_whom_it_names() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let kc = node_csr("wasm-1", &[ip], &["wasm-1.example".into()]).unwrap();
        let id = csr_identity(&kc.csr_pem).unwrap();
        assert_eq!(id.ips, [ip]);
        assert_eq!(id.dns, ["wasm-1.example"]);
        assert!(id.subject.contains("CN=system:node:wasm-1"), "{}", id.subject);
    }
}
