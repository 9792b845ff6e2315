//! WasmEdge-socket modules through the public API: a listener closed when the run is
//! stopped, a link error that says so, and the guide's HTTP server (tokio_wasi + warp_wasi,
//! built by examples/guide/build.sh) serving as its readers run it.

use crate::common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::http::{Reply, get};
use common::{Capture, digest, fixture, runtime, wait_for};
use krustlet_wasi_provider::{Error, ExitStatus, NetworkPolicy, RunHandle, RunSpec, Runtime};

/// The port tests/fixtures/wasmedge_listen.wat listens on (the test range is 18080-18099).
const LISTEN_PORT: u16 = 18096;
/// The guide's program listens on 8080, as the guide writes it.
const GUIDE_PORT: u16 = 8080;
/// Set in the child run inside a network namespace of its own.
const IN_NETNS: &str = "KRUSTLET_TEST_IN_NETNS";

/// Connects to `port` until something accepts, failing if the guest ends first.
async fn connect(handle: &RunHandle, port: u16, out: &Capture) -> TcpStream {
    for _ in 0..3000 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            return stream;
        }
        assert!(!handle.is_finished(), "the guest ended: {}", out.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {port} after 30 s: {}", out.text());
}

#[tokio::test]
async fn a_guests_listener_is_closed_when_the_run_is_stopped() {
    let runtime = runtime();
    let bytes = fixture("wasmedge_listen.wat");
    let artifact = runtime.load(&bytes, &digest(&bytes)).expect("links with WasmEdge sockets");
    assert!(artifact.uses_wasmedge_sockets());
    let out = Capture::default();
    let spec = RunSpec::new().network(NetworkPolicy::open([LISTEN_PORT])).stderr(out.clone());
    let mut handle = runtime.run(&artifact, spec).expect("starts");
    let mut stream = connect(&handle, LISTEN_PORT, &out).await;
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let read = tokio::task::spawn_blocking(move || stream.read(&mut [0u8; 1])).await.unwrap();
    assert_eq!(read.unwrap(), 0, "the guest accepted and closed the connection");
    handle.shutdown(Duration::from_secs(5));
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped);
    TcpListener::bind(("127.0.0.1", LISTEN_PORT)).expect("the port is free once wait returned");
}

#[tokio::test]
async fn a_module_without_socket_imports_does_not_use_sockets() {
    let bytes = common::wat(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
             (memory (export "memory") 1)
             (func (export "_start")))"#,
    );
    let artifact = runtime().load(&bytes, &digest(&bytes)).expect("links");
    assert!(!artifact.uses_wasmedge_sockets());
}

#[tokio::test]
async fn an_unknown_import_is_a_link_error_naming_it() {
    let runtime = runtime();
    let bytes = common::wat(
        r#"(module
             (import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "epoll_oneoff" (func (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "_start")))"#,
    );
    let err = runtime.load(&bytes, &digest(&bytes)).expect_err("does not link");
    assert!(matches!(err, Error::Link { .. }), "{err:?}");
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    assert!(message.starts_with("link error"), "{message}");
    assert!(message.contains("wasi_snapshot_preview1::epoll_oneoff"), "{message}");
}

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guide's module, built (once, then cached) by examples/guide/build.sh; `None` when
/// Debian's toolchain is missing outside CI.
fn guide_module() -> Option<Vec<u8>> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !Path::new("/usr/bin/rustc").exists() && !in_ci {
        eprintln!("skipped: Debian's rustc is missing; run examples/guide/build.sh (as root it installs it)");
        return None;
    }
    let build = Command::new("bash").arg(repo().join("examples/guide/build.sh")).output().expect("bash");
    assert!(
        build.status.success(),
        "examples/guide/build.sh failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let stdout = String::from_utf8_lossy(&build.stdout);
    let path = stdout.lines().last().expect("build.sh prints the module's path").trim().to_owned();
    Some(std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}")))
}

/// Runs this test again inside a network namespace of its own (port 8080 is the guide's,
/// and other work on this machine may hold the host's): `Some(passed)`, or `None` when
/// namespaces are not available here.
fn in_own_network(test: &str) -> Option<bool> {
    if std::env::var_os(IN_NETNS).is_some() {
        return None;
    }
    let unshare = Command::new("unshare").args(["-rn", "ip", "link", "set", "lo", "up"]).output();
    if !unshare.is_ok_and(|out| out.status.success()) {
        eprintln!("no network namespace here (unshare -rn, ip): using the host's port {GUIDE_PORT}");
        return None;
    }
    let exe = std::env::current_exe().expect("test binary");
    // Test names are paths below the crate: `wasmedge::<test>`.
    let (_, module) = module_path!().split_once("::").expect("a module of the test crate");
    let test = format!("{module}::{test}");
    let status = Command::new("unshare")
        .args(["-rn", "sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .status()
        .expect("unshare");
    Some(status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_http_server_runs_unchanged() {
    // Built (or found built) before entering the namespace, which cannot reach crates.io.
    let Some(bytes) = guide_module() else { return };
    if let Some(passed) = in_own_network("the_guides_http_server_runs_unchanged") {
        assert!(passed, "the test failed in its network namespace (output above)");
        return;
    }
    let runtime = Runtime::builder().build().expect("runtime");
    let artifact =
        tokio::task::block_in_place(|| runtime.load(&bytes, "test:guide-http-server")).expect("links");
    let out = Capture::default();
    let spec = RunSpec::new()
        .argv(["http-server.wasm"])
        .network(NetworkPolicy::open([GUIDE_PORT]))
        .stdout(out.clone())
        .stderr(out.clone());
    let mut handle = runtime.run(&artifact, spec).expect("starts");
    drop(connect(&handle, GUIDE_PORT, &out).await);
    let addr = SocketAddr::from(([127, 0, 0, 1], GUIDE_PORT));

    let hello = get(addr, "/").await;
    assert_eq!((hello.status, hello.body.as_str()), (200, "Hello, World!"));
    let missing = get(addr, "/no/such/path").await;
    assert_eq!((missing.status, missing.body.as_str()), (404, ""), "warp's 404");

    // 2,000 requests, 16 connections at a time, each keeping its connection alive.
    let clients: Vec<_> = (0..16).map(|_| tokio::spawn(keep_alive_gets(addr, 125))).collect();
    let mut answered = 0;
    for client in clients {
        for reply in client.await.expect("client task") {
            assert_eq!((reply.status, reply.body.as_str()), (200, "Hello, World!"));
            answered += 1;
        }
    }
    assert_eq!(answered, 2000);

    handle.shutdown(Duration::from_secs(5));
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped, "{}", out.text());
    TcpListener::bind(("0.0.0.0", GUIDE_PORT)).expect("port 8080 is free once the run is stopped");
}

/// `n` GETs of `/` over one kept-alive connection.
async fn keep_alive_gets(addr: SocketAddr, n: usize) -> Vec<Reply> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.expect("handshake");
    tokio::spawn(connection);
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let request = hyper::Request::get("/")
            .header("host", addr.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let exchange = async {
            let response = sender.send_request(request).await.expect("request");
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.expect("body").to_bytes();
            Reply { status, body: String::from_utf8_lossy(&body).into_owned() }
        };
        replies.push(
            tokio::time::timeout(Duration::from_secs(30), exchange).await.expect("answered within 30 s"),
        );
    }
    replies
}
