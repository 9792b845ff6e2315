//! wasi:sockets for command components (examples/guests/tcp_echo.c): binding and
//! listening only on the policy's ports, a bind the rules say is taken, connecting where
//! the rules allow (never to the node's loopback under `PortRules`), nothing without a
//! policy.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::component;
use common::rules::TestRules;
use common::{Capture, digest, runtime, wait_for};
use krustlet_wasi_provider::{ExitStatus, NetworkPolicy, RunHandle, RunSpec, Runtime};

/// Ports of this test file (the test range is 18080-18099).
const ECHO_PORT: u16 = 18091;
const DECLARED_PORT: u16 = 18092;
const UNDECLARED_PORT: u16 = 18093;
const CLOSED_PORT: u16 = 18094;

fn run_echo(runtime: &Runtime, args: &[&str], network: NetworkPolicy, out: &Capture) -> RunHandle {
    let bytes = component("tcp_echo");
    let artifact = runtime.load(&bytes, &digest(&bytes)).expect("tcp_echo loads");
    let argv = std::iter::once("tcp_echo").chain(args.iter().copied());
    runtime.run(&artifact, RunSpec::new().argv(argv).network(network).stdout(out.clone())).expect("starts")
}

/// Everything logged at WARN while the guard lives on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_guest_serves_tcp_on_its_declared_port() {
    let runtime = runtime();
    let out = Capture::default();
    let port = ECHO_PORT.to_string();
    let mut handle = run_echo(&runtime, &["echo", &port], NetworkPolicy::open([ECHO_PORT]), &out);
    let mut stream = None;
    for _ in 0..2000 {
        if let Ok(connected) = TcpStream::connect(("127.0.0.1", ECHO_PORT)) {
            stream = Some(connected);
            break;
        }
        assert!(!handle.is_finished(), "the guest ended: {}", out.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stream = stream.expect("the guest listens on its port");
    let echoed = tokio::task::spawn_blocking(move || {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        (&stream).write_all(b"hello over wasi:sockets\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(echoed, "hello over wasi:sockets\n");
    assert_eq!(out.text(), format!("listening on {ECHO_PORT}\n"));
    handle.shutdown(Duration::from_secs(10));
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped);
    TcpListener::bind(("0.0.0.0", ECHO_PORT)).expect("the port is free once the guest stopped");
}

#[tokio::test]
async fn binding_an_undeclared_port_fails_in_the_guest_and_is_logged() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let runtime = runtime();
    let out = Capture::default();
    let port = UNDECLARED_PORT.to_string();
    let mut handle = run_echo(&runtime, &["bind-other", &port], NetworkPolicy::open([DECLARED_PORT]), &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(1));
    assert_eq!(out.text(), format!("bind {UNDECLARED_PORT}: access-denied\n"));
    let logged = logs.text();
    assert!(logged.contains("WARN") && logged.contains(&format!("port {UNDECLARED_PORT} ")), "{logged}");
    // The port was never taken.
    TcpListener::bind(("0.0.0.0", UNDECLARED_PORT)).expect("the refused port stays free");

    // The declared one binds.
    let out = Capture::default();
    let port = DECLARED_PORT.to_string();
    let mut handle = run_echo(&runtime, &["bind-other", &port], NetworkPolicy::open([DECLARED_PORT]), &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), format!("bound {DECLARED_PORT}\n"));
}

#[tokio::test]
async fn without_a_policy_there_are_no_sockets() {
    let runtime = runtime();
    let out = Capture::default();
    let port = CLOSED_PORT.to_string();
    let mut handle = run_echo(&runtime, &["bind-other", &port], NetworkPolicy::default(), &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(1));
    assert_eq!(out.text(), "socket: access-denied\n");
}

#[tokio::test]
async fn a_bind_the_rules_say_is_taken_is_address_in_use() {
    let runtime = runtime();
    let out = Capture::default();
    let port = UNDECLARED_PORT.to_string();
    let rules = TestRules { in_use: vec![UNDECLARED_PORT], ..TestRules::open() };
    let mut handle = run_echo(&runtime, &["bind-other", &port], rules.policy(), &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(1));
    assert_eq!(out.text(), format!("bind {UNDECLARED_PORT}: address-in-use\n"));

    // UDP too (here the rules say even an ephemeral port is taken).
    let out = Capture::default();
    let rules = TestRules { in_use: vec![0], ..TestRules::open() };
    let mut handle = run_echo(&runtime, &["udp-send", "10.0.0.1", "9", "x"], rules.policy(), &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(1));
    assert_eq!(out.text(), "bind: address-in-use\n");
}

/// A loopback server answering one line with it in upper case, on a thread.
fn upper_case_server() -> (String, std::thread::JoinHandle<()>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let answering = std::thread::spawn(move || {
        let (stream, _) = server.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(line.to_uppercase().as_bytes()).unwrap();
    });
    (port, answering)
}

#[tokio::test]
async fn a_guest_connects_where_its_rules_allow_without_declaring_a_port() {
    let (port, answering) = upper_case_server();
    let runtime = runtime();
    let out = Capture::default();
    let policy = TestRules::open().policy();
    let mut handle = run_echo(&runtime, &["connect", "127.0.0.1", &port, "ping"], policy, &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(0), "{}", out.text());
    assert_eq!(out.text(), "reply: PING\n");
    answering.join().unwrap();
}

#[tokio::test]
async fn port_rules_refuse_a_connection_to_the_nodes_loopback() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let runtime = runtime();
    let out = Capture::default();
    let mut handle =
        run_echo(&runtime, &["connect", "127.0.0.1", &port, "ping"], NetworkPolicy::open([]), &out);
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Exited(1));
    assert_eq!(out.text(), "connect: access-denied\n");
    let accepted = server.accept().map(|(_, peer)| peer);
    assert!(matches!(&accepted, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock), "{accepted:?}");
}
