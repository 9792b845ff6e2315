//! Whom real guests may reach, and their name lookups: wasi:sockets TCP and UDP
//! (examples/guests/tcp_echo.c) and outgoing wasi:http (http_hello.c's `/fetch`) to the
//! node's loopback, directly, IPv4-mapped or through a name, under `PortRules` and under
//! rules that allow it; lookups on the pod's budget; a served listener refusing a client.

use crate::common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http::{component, get, hello, serve, try_get};
use common::rules::TestRules;
use common::{Capture, digest, runtime, wait_for};
use krustlet_wasi_provider::{ExitStatus, NetworkPolicy, RunSpec, Runtime};

/// wasi:http's `HTTP-request-denied`, as http_hello.c prints an error code.
const HTTP_REQUEST_DENIED: u8 = 15;
/// wasi:http's `DNS-error`.
const DNS_ERROR: u8 = 1;

/// Runs tcp_echo with `args` to its end; returns its exit status and output.
async fn echo(runtime: &Runtime, args: &[&str], network: NetworkPolicy) -> (ExitStatus, String) {
    let bytes = component("tcp_echo");
    let artifact = runtime.load(&bytes, &digest(&bytes)).expect("tcp_echo loads");
    let out = Capture::default();
    let argv = std::iter::once("tcp_echo").chain(args.iter().copied());
    let spec = RunSpec::new().argv(argv).network(network).stdout(out.clone());
    let mut handle = runtime.run(&artifact, spec).expect("starts");
    let status = wait_for(&mut handle, 30).await;
    (status, out.text())
}

/// A loopback TCP listener nobody should reach; [`Self::untouched`] says whether anyone did.
struct Target(TcpListener);

impl Target {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Target(listener)
    }

    fn port(&self) -> String {
        self.0.local_addr().unwrap().port().to_string()
    }

    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[tokio::test]
async fn tcp_and_udp_to_the_nodes_loopback_are_refused_mapped_or_not() {
    let runtime = runtime();
    let target = Target::new();
    let port = target.port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port().to_string();
    let refused = [
        (["connect", "127.0.0.1", &port, "x"], "connect: access-denied\n"),
        (["udp-send", "127.0.0.1", &udp_port, "x"], "send: access-denied\n"),
        // wasmtime-wasi 48 refuses an IPv4-mapped address on an IPv6 socket before any
        // check (and an IPv4 socket cannot take one).
        (["connect-ip", "::ffff:127.0.0.1", &port, "x"], "connect: invalid-argument\n"),
        (["udp-send", "::ffff:127.0.0.1", &udp_port, "x"], "send: invalid-argument\n"),
    ];
    for (args, error) in refused {
        let (status, out) = echo(&runtime, &args, NetworkPolicy::open([])).await;
        assert_eq!((status, out.as_str()), (ExitStatus::Exited(1), error), "{args:?}");
    }
    assert!(target.untouched(), "a refused connection reached the listener");
    let mut buf = [0u8; 16];
    assert!(udp.recv_from(&mut buf).is_err(), "a refused datagram arrived");
}

#[tokio::test]
async fn rules_that_allow_loopback_let_tcp_and_udp_through() {
    let runtime = runtime();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let answering = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let (stream, _) = server.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(line.to_uppercase().as_bytes()).unwrap();
    });
    let (status, out) =
        echo(&runtime, &["connect", "127.0.0.1", &port, "ping"], TestRules::open().policy()).await;
    assert_eq!((status, out.as_str()), (ExitStatus::Exited(0), "reply: PING\n"));
    answering.join().unwrap();

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port().to_string();
    let (status, out) =
        echo(&runtime, &["udp-send", "127.0.0.1", &udp_port, "hi"], TestRules::open().policy()).await;
    assert_eq!((status, out.as_str()), (ExitStatus::Exited(0), "sent\n"));
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let (len, _) = udp.recv_from(&mut buf).expect("the datagram arrives");
    assert_eq!(&buf[..len], b"hi");
}

#[tokio::test]
async fn a_udp_reply_reaches_the_guest_even_when_every_peer_is_refused() {
    let runtime = runtime();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port().to_string();
    let answering = std::thread::spawn(move || {
        udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        let (len, from) = udp.recv_from(&mut buf).expect("the question arrives");
        udp.send_to(&buf[..len].to_ascii_uppercase(), from).unwrap();
    });
    let rules = Arc::new(TestRules { refuse_every_peer: true, ..TestRules::open() });
    let policy = NetworkPolicy::with_rules(rules.clone());
    let (status, out) = echo(&runtime, &["udp-ask", "127.0.0.1", &udp_port, "who"], policy).await;
    assert_eq!((status, out.as_str()), (ExitStatus::Exited(0), "reply: WHO\n"));
    assert_eq!(rules.refused.load(Ordering::SeqCst), 0, "the reply was judged as ingress");
    answering.join().unwrap();
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_at_connect() {
    let runtime = runtime();
    let target = Target::new();
    let port = target.port();
    let policy = NetworkPolicy::open([]).lookups(runtime.lookups(2));
    let (status, out) = echo(&runtime, &["connect-name", "localhost", &port, "x"], policy).await;
    assert_eq!((status, out.as_str()), (ExitStatus::Exited(1), "connect: access-denied\n"));
    assert!(target.untouched());
}

#[tokio::test]
async fn a_guest_resolves_names_only_with_lookups() {
    let runtime = runtime();
    let with = || NetworkPolicy::open([]).lookups(runtime.lookups(2));
    let (status, out) = echo(&runtime, &["resolve", "localhost"], with()).await;
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    assert!(out.lines().any(|line| line == "127.0.0.1"), "{out}");
    // An address is returned as is (an IPv4-mapped one as the IPv4 address it maps).
    let (_, out) = echo(&runtime, &["resolve", "::ffff:10.1.2.3"], with()).await;
    assert_eq!(out, "10.1.2.3\n");
    let (_, out) = echo(&runtime, &["resolve", "not a name"], with()).await;
    assert_eq!(out, "resolve: invalid-argument\n");
    // No lookups, or lookups switched off: refused (as wasmtime-wasi refuses them).
    let (status, out) = echo(&runtime, &["resolve", "localhost"], NetworkPolicy::open([])).await;
    assert_eq!((status, out.as_str()), (ExitStatus::Exited(1), "resolve: permanent-resolver-failure\n"));
    let off = NetworkPolicy { name_lookup: false, ..with() };
    let (_, out) = echo(&runtime, &["resolve", "localhost"], off).await;
    assert_eq!(out, "resolve: permanent-resolver-failure\n");
}

#[tokio::test]
async fn outgoing_http_to_the_nodes_loopback_is_denied_however_it_is_named() {
    let runtime = runtime();
    let target = Target::new();
    let port = target.port();
    let spec = RunSpec::new().network(NetworkPolicy::default().lookups(runtime.lookups(2)));
    let (_handle, addr) = serve(&runtime, &hello(&runtime), spec);
    let denied = format!("error: no response, code {HTTP_REQUEST_DENIED}\n");
    for host in ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "[::1]", "169.254.169.254"] {
        let reply = get(addr, &format!("/fetch/{host}:{port}/")).await;
        assert_eq!((reply.status, reply.body.as_str()), (502, denied.as_str()), "{host}");
    }
    assert!(target.untouched(), "a denied request reached the listener");
    // Without lookups a name is not resolved at all.
    let (_handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new());
    let reply = get(addr, &format!("/fetch/localhost:{port}/")).await;
    assert_eq!((reply.status, reply.body), (502, format!("error: no response, code {DNS_ERROR}\n")));
    assert!(target.untouched());
}

#[tokio::test]
async fn a_served_listener_resets_a_refused_client_and_serves_the_others() {
    let runtime = runtime();
    let refused: std::net::IpAddr = [127, 0, 0, 2].into();
    let rules = TestRules { refused_peers: vec![refused], ..TestRules::open() };
    let (handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new().network(rules.policy()));
    let from_refused = from(SocketAddr::new(refused, 0), addr).await;
    assert!(from_refused.is_err(), "the refused client got an answer: {from_refused:?}");
    let reply = get(addr, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "Hello, World!\n"));
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.refused, stats.requests, stats.instantiated), (1, 1, 1));
}

/// One GET to `server` on a connection from `local`.
async fn from(local: SocketAddr, server: SocketAddr) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(local).unwrap();
    let mut stream = socket.connect(server).await.map_err(|err| format!("connect: {err}"))?;
    let exchange = async {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
        .map_err(|err| format!("read: {err}"))?;
    let head = String::from_utf8_lossy(&answer);
    match head.split(' ').nth(1).and_then(|code| code.parse().ok()) {
        Some(status) => Ok(status),
        None => Err(format!("closed without a response ({} bytes)", answer.len())),
    }
}

#[tokio::test]
async fn outgoing_http_goes_where_the_rules_allow_and_names_resolve_on_the_budget() {
    let runtime = runtime();
    let upstream = pong_server().await;
    let policy = TestRules::open().policy().lookups(runtime.lookups(2));
    let (_handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new().network(policy));
    let reply = try_get(addr, &format!("/fetch/localhost:{}/ping", upstream.port())).await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "200 pong"));
}

/// Answers one HTTP request on 127.0.0.1 with `pong`.
async fn pong_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
            head.push(byte[0]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong")
            .await
            .unwrap();
    });
    addr
}
