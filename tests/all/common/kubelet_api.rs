//! A raw client of a test node's kubelet API, as hostile clients talk to it: TLS that
//! trusts the cluster CA, with the admin's client certificate or none, and HTTP/1.1 by hand.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::{ClientConnection, StreamOwned};

use super::Cluster;

/// A TLS connection to a node's kubelet API.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// The control plane's PKI: the cluster CA (which signs node serving certificates) and the
/// admin's client certificate.
pub fn pki(cluster: &Cluster) -> PathBuf {
    cluster.logs.parent().expect("KRUSTLET_CP_DIR").join("pki")
}

/// A TLS client of the node: trusts the cluster CA; presents the admin's certificate if
/// `admin`, else none.
pub fn tls_config(cluster: &Cluster, admin: bool) -> Arc<rustls::ClientConfig> {
    let pki = pki(cluster);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if admin {
        let chain =
            CertificateDer::pem_file_iter(pki.join("admin.crt")).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// A TLS connection to the node's API, handshake done.
pub fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = StreamOwned::new(ClientConnection::new(config.clone(), name).unwrap(), tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// Sends `GET path` and reads the whole answer (status, headers, and a Content-Length or
/// chunked body).
/// A connection the server refused may be closed before the request goes out: the answer
/// it sent first is still read.
pub fn ask(tls: &mut Tls, path: &str) -> String {
    let _ = tls.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes());
    let _ = tls.flush();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            });
            let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
            let complete = match length {
                Some(n) => body.len() >= n,
                None => !chunked || body.ends_with("0\r\n\r\n"),
            };
            if complete {
                return text;
            }
        }
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the server closes the connection; what it sent meanwhile. Panics if it is
/// still open after two minutes.
pub fn read_until_closed(stream: &mut impl Read) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the server left the connection open; it sent {:?}", String::from_utf8_lossy(&seen))
            }
            Err(_) => break, // reset, or closed without close_notify
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}
