//! `wasi:http/proxy` components served on loopback listeners: real HTTP/1.1 requests to
//! examples/guests/http_hello.c, the caps (500s, 503s, memory, timeout), guest output,
//! and shutdown (grace, cut, port freed).

use crate::common;

use std::net::TcpListener;
use std::time::Duration;

use common::http::{get, hello, serve, try_get, until};
use common::rules::TestRules;
use common::{Capture, runtime, wait_for};
use krustlet_wasi_provider::{ArtifactKind, Error, ExitStatus, HttpLimits, Preopen, RunSpec};

fn limits(request_timeout: Duration, max_concurrent: usize) -> HttpLimits {
    HttpLimits { request_timeout, max_concurrent }
}

#[tokio::test]
async fn hello_world_on_any_path_with_a_log_line_per_request() {
    let runtime = runtime();
    let artifact = hello(&runtime);
    assert_eq!(artifact.kind(), ArtifactKind::HttpProxy);
    let out = Capture::default();
    let (mut handle, addr) = serve(&runtime, &artifact, RunSpec::new().stdout(out.clone()));
    for path in ["/", "/some/where?x=1"] {
        let reply = get(addr, path).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "Hello, World!\n"), "{path}");
    }
    handle.shutdown(Duration::from_secs(5));
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped);
    let log = out.text();
    assert!(log.contains("GET /\n") && log.contains("GET /some/where?x=1\n"), "{log:?}");
    assert_eq!(log.lines().count(), 2, "{log:?}");
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.requests, stats.instantiated, stats.in_flight), (2, 2, 0));
}

#[tokio::test]
async fn env_and_preopened_files_reach_every_instance() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("motd.txt"), "served from a volume\n").unwrap();
    let runtime = runtime();
    let spec = RunSpec::new().env("GREETING", "hi there").preopen(Preopen::read_only(dir.path(), "/data"));
    let (_handle, addr) = serve(&runtime, &hello(&runtime), spec);
    for _ in 0..2 {
        assert_eq!(get(addr, "/env/GREETING").await.body, "hi there\n");
        assert_eq!(get(addr, "/file/data/motd.txt").await.body, "served from a volume\n");
    }
    assert_eq!(get(addr, "/env/MISSING").await.status, 404);
    assert_eq!(get(addr, "/file/data/nothing").await.status, 404);
}

#[tokio::test]
async fn a_trap_is_a_500_and_the_server_keeps_serving() {
    let runtime = runtime();
    let (handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new());
    let reply = get(addr, "/trap").await;
    assert_eq!(reply.status, 500);
    assert!(reply.body.contains("trapped"), "{}", reply.body);
    assert_eq!(get(addr, "/").await.status, 200);
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.requests, stats.trapped, stats.out_of_memory, stats.timed_out), (2, 1, 0, 0));
}

#[tokio::test]
async fn the_memory_limit_applies_to_each_request_on_its_own() {
    let runtime = runtime();
    let spec = RunSpec::new().memory_limit(48 << 20);
    let (handle, addr) = serve(&runtime, &hello(&runtime), spec);
    // Three requests of 32 MiB each: more than the limit together, within it each.
    for _ in 0..3 {
        let reply = get(addr, "/grow?mb=32").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "grew 32 MiB\n"));
    }
    let reply = get(addr, "/grow?mb=64").await;
    assert_eq!(reply.status, 500);
    assert!(reply.body.contains("out of memory"), "{}", reply.body);
    assert_eq!(get(addr, "/").await.status, 200);
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.out_of_memory, stats.trapped), (1, 0));
}

#[tokio::test]
async fn a_request_past_its_timeout_is_a_500_whether_sleeping_or_spinning() {
    let runtime = runtime();
    let spec = RunSpec::new().http(limits(Duration::from_millis(300), 10));
    let (handle, addr) = serve(&runtime, &hello(&runtime), spec);
    for path in ["/slow?ms=60000", "/spin"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 500, "{path}");
        assert!(reply.body.contains("timeout"), "{path}: {}", reply.body);
    }
    assert_eq!(get(addr, "/slow?ms=1").await.status, 200);
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.timed_out, stats.trapped), (2, 0));
}

#[tokio::test]
async fn over_the_concurrency_cap_is_a_503_at_once() {
    let runtime = runtime();
    let spec = RunSpec::new().http(limits(Duration::from_secs(60), 1));
    let (handle, addr) = serve(&runtime, &hello(&runtime), spec);
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    until(&handle, "the slow request runs", |stats| stats.in_flight == 1).await;
    let reply = get(addr, "/").await;
    assert_eq!(reply.status, 503);
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, "slept 1500 ms\n"));
    assert_eq!(get(addr, "/").await.status, 200);
    assert_eq!(handle.http_stats().unwrap().snapshot().over_capacity, 1);
}

#[tokio::test]
async fn shutdown_finishes_a_request_in_flight_and_frees_the_port() {
    let runtime = runtime();
    let (mut handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new());
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1000").await });
    until(&handle, "the slow request runs", |stats| stats.in_flight == 1).await;
    handle.shutdown(Duration::from_secs(30));
    // No new connection is accepted once shutdown began (the listener is closed).
    let mut refused = false;
    for _ in 0..500 {
        if try_get(addr, "/").await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections were still served after shutdown");
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, "slept 1000 ms\n"));
    assert_eq!(wait_for(&mut handle, 30).await, ExitStatus::Stopped);
    TcpListener::bind(addr).expect("the port is free once wait returned");
}

#[tokio::test]
async fn shutdown_cuts_what_outlives_the_grace() {
    let runtime = runtime();
    let (mut handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new());
    let slow = tokio::spawn(async move { try_get(addr, "/slow?ms=120000").await });
    until(&handle, "the slow request runs", |stats| stats.in_flight == 1).await;
    handle.shutdown(Duration::from_millis(200));
    assert_eq!(wait_for(&mut handle, 30).await, ExitStatus::Stopped);
    TcpListener::bind(addr).expect("the port is free once wait returned");
    match slow.await.unwrap() {
        Err(_) => {}
        Ok(reply) => assert_eq!(reply.status, 503, "{reply:?}"),
    }
    assert_eq!(handle.http_stats().unwrap().snapshot().in_flight, 0);
}

#[tokio::test]
async fn stop_and_drop_end_the_server_at_once() {
    let runtime = runtime();
    let artifact = hello(&runtime);
    let (mut handle, addr) = serve(&runtime, &artifact, RunSpec::new());
    assert_eq!(get(addr, "/").await.status, 200);
    handle.stopper().stop();
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped);
    TcpListener::bind(addr).expect("the port is free once wait returned");

    let (handle, addr) = serve(&runtime, &artifact, RunSpec::new());
    assert_eq!(get(addr, "/").await.status, 200);
    drop(handle);
    let mut freed = false;
    for _ in 0..500 {
        if TcpListener::bind(addr).is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "a dropped handle left its port bound");
}

#[tokio::test]
async fn a_proxy_needs_a_listener() {
    let runtime = runtime();
    let err = runtime.run(&hello(&runtime), RunSpec::new()).unwrap_err();
    assert!(matches!(err, Error::NoListener { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_preopen_fails_the_run_not_each_request() {
    let runtime = runtime();
    let spec = RunSpec::new()
        .preopen(Preopen::read_only("/nonexistent/krustlet-test", "/data"))
        .listeners(vec![TcpListener::bind("127.0.0.1:0").unwrap()]);
    let err = runtime.run(&hello(&runtime), spec).unwrap_err();
    assert!(matches!(err, Error::Preopen { .. }), "{err:?}");
}

#[tokio::test]
async fn concurrent_requests_each_get_an_instance_and_whole_log_lines() {
    let runtime = runtime();
    let out = Capture::default();
    let (mut handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new().stdout(out.clone()));
    let requests: Vec<_> =
        (0..40).map(|i| tokio::spawn(async move { get(addr, &format!("/n/{i}")).await })).collect();
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
    handle.shutdown(Duration::from_secs(5));
    wait_for(&mut handle, 20).await;
    let log = out.text();
    assert_eq!(log.lines().count(), 40, "{log}");
    for i in 0..40 {
        assert!(log.lines().any(|line| line == format!("GET /n/{i}")), "line {i} missing or broken: {log}");
    }
}

/// Answers one HTTP request on a loopback port with `pong`.
async fn pong_server() -> std::net::SocketAddr {
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
        assert!(head.starts_with(b"GET /ping HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&head));
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong")
            .await
            .unwrap();
    });
    addr
}

/// Rules that let a guest reach the test's servers on the node's loopback (the default
/// rules refuse it: tests/egress.rs).
fn reaching_loopback() -> RunSpec {
    RunSpec::new().network(TestRules::open().policy())
}

#[tokio::test]
async fn a_guest_sends_outgoing_http() {
    let runtime = runtime();
    let (_handle, addr) = serve(&runtime, &hello(&runtime), reaching_loopback());
    let upstream = pong_server().await;
    let reply = get(addr, &format!("/fetch/{upstream}/ping")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "200 pong"));
    // Nothing listens there any more: the guest gets an error, not a hang.
    let reply = get(addr, &format!("/fetch/{upstream}/ping")).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
}

#[tokio::test]
async fn outgoing_https_refuses_a_certificate_the_system_does_not_trust() {
    let runtime = runtime();
    let (_handle, addr) = serve(&runtime, &hello(&runtime), reaching_loopback());
    let upstream = self_signed_tls_server().await;
    let reply = get(addr, &format!("/fetchs/{upstream}/")).await;
    // 13: wasi:http `tls-certificate-error`.
    assert_eq!((reply.status, reply.body.as_str()), (502, "error: no response, code 13\n"));
}

/// A TLS server on loopback whose certificate no system root signed.
async fn self_signed_tls_server() -> std::net::SocketAddr {
    use tokio_rustls::rustls;
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = acceptor.accept(stream).await;
        }
    });
    addr
}

#[tokio::test]
async fn every_request_starts_from_the_components_image_also_on_a_reused_pool_slot() {
    // A pool of one slot: every request runs in the memory the one before wrote to (its
    // counter in the image's data, 24 MiB of heap), which the pool may keep resident.
    let pooled = krustlet_wasi_provider::Runtime::builder().http_pool(1).build().unwrap();
    let (handle, addr) = serve(&pooled, &hello(&pooled), RunSpec::new());
    for _ in 0..3 {
        assert_eq!(get(addr, "/count").await.body, "42\n");
        assert_eq!(get(addr, "/grow?mb=24").await.body, "grew 24 MiB\n");
    }
    assert_eq!(handle.http_stats().unwrap().snapshot().instantiated, 6);
}

#[tokio::test]
async fn a_full_instance_pool_is_a_503_and_no_pool_still_serves() {
    let pooled = krustlet_wasi_provider::Runtime::builder().http_pool(1).build().unwrap();
    let (handle, addr) = serve(&pooled, &hello(&pooled), RunSpec::new());
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    until(&handle, "the slow request runs", |stats| stats.in_flight == 1).await;
    let reply = get(addr, "/").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(get(addr, "/").await.status, 200);
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.over_capacity, stats.trapped), (1, 0));

    let unpooled = krustlet_wasi_provider::Runtime::builder().http_pool(0).build().unwrap();
    let (_handle, addr) = serve(&unpooled, &hello(&unpooled), RunSpec::new());
    assert_eq!(get(addr, "/").await.body, "Hello, World!\n");
}
