//! The kubelet API's connection limits against a real TLS listener in-process: a client that
//! trickles its headers or sits idle is disconnected, and clients without a certificate get
//! a 503 past their cap while certificate holders are still served.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ServerState, authz, run, tls};
use crate::config::ApiLimits;

/// A CA, a serving certificate from it (files under `dir`), and a client certificate.
struct Pki {
    ca_pem: String,
    client: (String, String),
}

fn pki(dir: &Path) -> Pki {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let issue = |params: CertificateParams| {
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
    };
    let (cert, key) = issue(CertificateParams::new(vec!["localhost".to_string()]).unwrap());
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let mut client = CertificateParams::default();
    client.distinguished_name.push(DnType::CommonName, "system:node:test");
    Pki { ca_pem: ca.pem(), client: issue(client) }
}

/// A kubelet API with `limits` on 127.0.0.1 (standalone: every authorization is refused).
async fn serve(limits: ApiLimits) -> (SocketAddr, Pki, broadcast::Sender<()>, tempfile::TempDir) {
    serve_pods(limits, Default::default(), false).await
}

/// [`serve`] knowing `pods`; with `anonymous_localhost`, loopback clients without a
/// certificate may use the API (`--allow-anonymous-localhost`).
async fn serve_pods(
    limits: ApiLimits,
    pods: crate::pods::directory::Directory,
    anonymous_localhost: bool,
) -> (SocketAddr, Pki, broadcast::Sender<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (config, authn) =
        tls::server_config(&dir.path().join("tls.crt"), &dir.path().join("tls.key"), pki.ca_pem.as_bytes())
            .unwrap();
    let state = Arc::new(ServerState {
        node_name: "test".into(),
        authn,
        authz: authz::Authorizer::new(None, "test"),
        pods,
        metrics: Default::default(),
        logs: crate::logs::LogRegistry::new(),
        allow_anonymous_localhost: anonymous_localhost,
        limits,
        cpu_rates: Default::default(),
        pod_address: std::net::Ipv4Addr::LOCALHOST.into(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = broadcast::channel(1);
    tokio::spawn(run(listener, config, state, rx));
    (addr, pki, stop, dir)
}

/// A TLS client of `addr`, with the client certificate if `cert`.
async fn connect(addr: SocketAddr, pki: &Pki, cert: bool) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if cert {
        let chain = vec![CertificateDer::from_pem_slice(pki.client.0.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.client.1.as_bytes()).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// Sends a request and reads its answer's status line and headers (keeps the connection).
async fn ask(conn: &mut TlsStream<TcpStream>, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    // A refused connection may be closed before the request is written: read the answer.
    let _ = conn.write_all(request.as_bytes()).await;
    read_some(conn).await
}

/// What the server sends next (empty at end of stream or on a reset).
async fn read_some(conn: &mut TlsStream<TcpStream>) -> String {
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits (generously) until the server closes the connection; what it sent before.
async fn closed_by_server(conn: &mut TlsStream<TcpStream>) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    String::from_utf8_lossy(&seen).into_owned()
}

fn limits(max: u32, anonymous: u32) -> ApiLimits {
    ApiLimits {
        read_header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        max_connections: max,
        max_anonymous_connections: anonymous,
        ..ApiLimits::default()
    }
}

#[tokio::test]
async fn half_a_header_or_nothing_at_all_is_cut_at_the_header_deadline() {
    let (addr, pki, _stop, _dir) = serve(limits(10, 5)).await;
    let mut slow = connect(addr, &pki, true).await;
    slow.write_all(b"GET /pods HTTP/1.1\r\nhost: local").await.unwrap();
    assert_eq!(closed_by_server(&mut slow).await, "", "closed without an answer");
    // Not even a TLS handshake.
    let mut mute = TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(60), mute.read(&mut [0u8; 64])).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle_after_its_answer() {
    let (addr, pki, _stop, _dir) = serve(limits(10, 5)).await;
    let mut conn = connect(addr, &pki, true).await;
    let answer = ask(&mut conn, "/pods").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // A second request on the same connection within the idle timeout works.
    let answer = ask(&mut conn, "/pods").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(closed_by_server(&mut conn).await, "");
}

#[tokio::test]
async fn past_the_anonymous_cap_a_503_and_certificate_holders_still_get_in() {
    let limits = ApiLimits { idle_timeout: Duration::from_secs(3600), ..limits(10, 2) };
    let (addr, pki, _stop, _dir) = serve(limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = connect(addr, &pki, false).await;
        let answer = ask(&mut conn, "/pods").await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        held.push(conn);
    }
    let mut third = connect(addr, &pki, false).await;
    let refused = closed_by_server(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections without a client certificate"), "{refused}");

    let mut node = connect(addr, &pki, true).await;
    assert!(ask(&mut node, "/pods").await.starts_with("HTTP/1.1 403"), "a certificate holder is served");
    // An anonymous connection that closes frees its slot.
    drop(held.pop());
    let answer = wait_for_anonymous_slot(addr, &pki).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// Asks anonymously until the answer is not a 503 (the server notices a close a moment
/// after the client makes it).
async fn wait_for_anonymous_slot(addr: SocketAddr, pki: &Pki) -> String {
    for _ in 0..200 {
        let mut conn = connect(addr, pki, false).await;
        let answer = ask(&mut conn, "/pods").await;
        if !answer.starts_with("HTTP/1.1 503") {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the anonymous slot was never freed");
}

/// A port-forward session is never idle, however quiet, and holds its connection's slot
/// for as long as it lasts.
#[tokio::test]
async fn a_quiet_port_forward_session_outlives_the_idle_timeout_and_keeps_its_slot() {
    use crate::server::spdy::test_client::Client;
    let (pods, _pod) = crate::server::portforward::test_pod();
    let (addr, pki, _stop, _dir) = serve_pods(limits(10, 1), pods, true).await;
    let mut conn = connect(addr, &pki, false).await;
    let upgrade = "POST /portForward/default/web HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\n\
                   upgrade: SPDY/3.1\r\nx-stream-protocol-version: portforward.k8s.io\r\n\r\n";
    conn.write_all(upgrade.as_bytes()).await.unwrap();
    // The answer's head, byte by byte so nothing after it is taken from the SPDY client.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(conn.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-stream-protocol-version: portforward.k8s.io"), "{head}");

    tokio::time::sleep(Duration::from_millis(1500)).await; // past the idle timeout (600 ms)
    // The only anonymous slot is still the session's.
    let mut other = connect(addr, &pki, false).await;
    assert!(ask(&mut other, "/pods").await.starts_with("HTTP/1.1 503"));

    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port().to_string();
    tokio::spawn(async move {
        let (mut tcp, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = tcp.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let mut client = Client::new(conn);
    let error = client.open_with(&[("streamType", "error"), ("port", &port), ("requestID", "0")]).await;
    let data = client.open_with(&[("streamType", "data"), ("port", &port), ("requestID", "0")]).await;
    client.data(data, b"still forwarding", true).await;
    assert_eq!(client.read_to_fin(&[data, error]).await[&data], b"still forwarding");
}
