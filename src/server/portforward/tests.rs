//! Port-forward sessions over SPDY against a test client that behaves as client-go does
//! (an error stream, then a data stream, per connection, with `requestID`), forwarding to
//! echo servers on loopback; and the query and subprotocol rules of the WebSocket transport.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Target;
use super::ws::{Encoding, check_count, negotiate, ports};
use crate::pods::directory::{ContainerEntry, Directory};
use crate::server::spdy::test_client::{Client, Frame, REFUSED_STREAM, read_frame};

pub(super) const UID: &str = "0b6c1c1e-5f4a-4c1e-9c55-2f0e4d1b7a10";

/// A directory with pod default/web (UID [`UID`]) and its running container.
pub(crate) fn pods() -> (Directory, Arc<Pod>) {
    let pods = Directory::default();
    let mut pod = Pod::default();
    pod.metadata.name = Some("web".into());
    pod.metadata.namespace = Some("default".into());
    pod.metadata.uid = Some(UID.into());
    let pod = Arc::new(pod);
    pods.upsert_pod(pod.clone(), "/nonexistent".into());
    let running = ContainerEntry {
        run: 0,
        running: true,
        exec: None,
        env: Vec::new(),
        mounts: Vec::new(),
        memory_limit: None,
        max_handles: 1024,
        started: std::time::SystemTime::now(),
        usage: None,
        group: None,
        stdin: None,
    };
    pods.set_container(&pod, "main", running);
    (pods, pod)
}

pub(super) fn target() -> (Target, Directory, Arc<Pod>) {
    let (pods, pod) = pods();
    let target = Target::find(&pods, "default", "web", Some(UID)).unwrap_or_else(|(_, e)| panic!("{e}"));
    (target, pods, pod)
}

/// An echo server on an ephemeral loopback port: each connection gets back what it sends,
/// and its end of file when the client half-closes.
pub(super) async fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A loopback port with nothing listening on it.
pub(super) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A session forwarding at most `max` connections, and its client.
fn session(target: Target, max: usize) -> Client {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(super::spdy::serve(server_io, target, max));
    Client::new(client_io)
}

/// Opens a connection's error and data streams as kubectl does; returns their ids.
async fn connect(client: &mut Client, port: u16, request: &str) -> (u32, u32) {
    let port = port.to_string();
    let error = client.open_with(&[("streamType", "error"), ("port", &port), ("requestID", request)]).await;
    let data = client.open_with(&[("streamType", "data"), ("port", &port), ("requestID", request)]).await;
    (error, data)
}

#[tokio::test]
async fn concurrent_connections_are_paired_by_request_id_and_echo_both_ways() {
    let (target, _pods, _pod) = target();
    let port = echo().await;
    let mut client = session(target, 8);
    // Opened interleaved: two errors, then the data streams in the other order.
    let p = port.to_string();
    let e0 = client.open_with(&[("streamType", "error"), ("port", &p), ("requestID", "0")]).await;
    let e1 = client.open_with(&[("streamType", "error"), ("port", &p), ("requestID", "1")]).await;
    let d1 = client.open_with(&[("streamType", "data"), ("port", &p), ("requestID", "1")]).await;
    let d0 = client.open_with(&[("streamType", "data"), ("port", &p), ("requestID", "0")]).await;
    client.data(d0, b"zero", true).await;
    client.data(d1, b"one", true).await;
    let got = client.read_to_fin(&[d0, d1, e0, e1]).await;
    assert_eq!(got[&d0], b"zero");
    assert_eq!(got[&d1], b"one");
    assert!(got.get(&e0).is_none_or(Vec::is_empty), "no error: {:?}", got.get(&e0));
    assert!(got.get(&e1).is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn a_large_transfer_goes_both_ways_intact() {
    let (target, _pods, _pod) = target();
    let mut client = session(target, 8);
    let (error, data) = connect(&mut client, echo().await, "big").await;
    let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    // Reading and writing at once, as kubectl does.
    let Client { mut r, mut w, .. } = client;
    let reader = tokio::spawn(async move {
        let (mut echoed, mut ended) = (Vec::new(), 0);
        while ended < 2 {
            match read_frame(&mut r).await.unwrap().expect("the server closed early") {
                Frame::Data { stream, fin, data: bytes } => {
                    if stream == data {
                        echoed.extend_from_slice(&bytes);
                    }
                    ended += usize::from(fin && (stream == data || stream == error));
                }
                Frame::WindowUpdate { .. } => {} // what the echo server read is granted back
                other => panic!("unexpected {other:?}"),
            }
        }
        echoed
    });
    for chunk in sent.chunks(32 * 1024).map(Some).chain([None]) {
        let frame = match chunk {
            Some(chunk) => Frame::Data { stream: data, fin: false, data: Bytes::copy_from_slice(chunk) },
            None => Frame::Data { stream: data, fin: true, data: Bytes::new() },
        };
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        w.write_all(&buf).await.unwrap();
    }
    let echoed = tokio::time::timeout(Duration::from_secs(60), reader).await.unwrap().unwrap();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "the echo is intact");
}

#[tokio::test]
async fn a_port_with_nothing_listening_is_reported_on_the_error_stream() {
    let (target, _pods, _pod) = target();
    let port = closed_port().await;
    let mut client = session(target, 8);
    let (error, data) = connect(&mut client, port, "0").await;
    let got = client.read_to_fin(&[error, data]).await;
    let message = String::from_utf8_lossy(&got[&error]).into_owned();
    assert_eq!(
        message,
        format!(
            "error forwarding port {port} to pod {UID}: dial tcp4 127.0.0.1:{port}: connect: connection refused"
        )
    );
    assert!(got.get(&data).is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn pods_listening_on_one_address_are_dialled_there() {
    let (target, _pods, _pod) = target();
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"from 127.0.0.2").await.unwrap();
    });
    let mut client = session(target.clone().at("127.0.0.2".parse().unwrap()), 8);
    let (error, data) = connect(&mut client, port, "0").await;
    let got = client.read_to_fin(&[error, data]).await;
    assert_eq!(got[&data], b"from 127.0.0.2");
    // Not on loopback: a target dialling 127.0.0.1 finds nothing there.
    let mut client = session(target, 8);
    let (error, _) = connect(&mut client, port, "0").await;
    let got = client.read_to_fin(&[error]).await;
    assert!(String::from_utf8_lossy(&got[&error]).contains("dial tcp4 127.0.0.1:"), "{got:?}");
}

#[tokio::test]
async fn streams_without_a_valid_port_or_type_are_refused() {
    let (target, _pods, _pod) = target();
    let mut client = session(target, 8);
    let cases: [&[(&str, &str)]; 5] = [
        &[("streamType", "error"), ("requestID", "0")],
        &[("streamType", "error"), ("port", "0"), ("requestID", "0")],
        &[("streamType", "data"), ("port", "65536"), ("requestID", "0")],
        &[("streamType", "data"), ("port", "http"), ("requestID", "0")],
        &[("streamType", "stdout"), ("port", "80"), ("requestID", "0")],
    ];
    for headers in cases {
        let id = client.syn(headers).await;
        assert_eq!(
            client.frame().await,
            Frame::RstStream { stream: id, status: REFUSED_STREAM },
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn connections_past_the_cap_get_a_message_and_the_others_carry_on() {
    let (target, _pods, _pod) = target();
    let port = echo().await;
    let mut client = session(target, 1);
    let (e0, d0) = connect(&mut client, port, "0").await;
    let p = port.to_string();
    let e1 = client.open_with(&[("streamType", "error"), ("port", &p), ("requestID", "1")]).await;
    // The message may come before the data stream's reply.
    let d1 = client.syn(&[("streamType", "data"), ("port", &p), ("requestID", "1")]).await;
    let got = client.read_to_fin(&[e1, d1]).await;
    let message = String::from_utf8_lossy(&got[&e1]).into_owned();
    assert!(message.contains("too many forwarded connections in this session (at most 1"), "{message}");
    // The first still works; once it ends, a new one is taken.
    client.data(d0, b"still here", true).await;
    let got = client.read_to_fin(&[d0, e0]).await;
    assert_eq!(got[&d0], b"still here");
    let (e2, d2) = connect(&mut client, port, "2").await;
    client.data(d2, b"again", true).await;
    assert_eq!(client.read_to_fin(&[d2, e2]).await[&d2], b"again");
}

#[tokio::test]
async fn a_duplicate_stream_is_reported_on_its_pairs_error_stream() {
    let (target, _pods, _pod) = target();
    let mut client = session(target, 8);
    let error = client.open_with(&[("streamType", "error"), ("port", "80"), ("requestID", "7")]).await;
    let twin = client.open_with(&[("streamType", "error"), ("port", "80"), ("requestID", "7")]).await;
    // The message comes on the first error stream, then the duplicate is closed.
    let got = client.read_to_fin(&[twin]).await;
    assert_eq!(got[&twin], b"");
    assert_eq!(got[&error], b"error processing stream for request 7: Error stream already assigned");
}

#[tokio::test(start_paused = true)]
async fn half_a_pair_times_out_with_a_message() {
    let (target, _pods, _pod) = target();
    let mut client = session(target, 8);
    let error = client.open_with(&[("streamType", "error"), ("port", "80"), ("requestID", "lonely")]).await;
    tokio::time::sleep(super::spdy::STREAM_CREATION_TIMEOUT + Duration::from_secs(1)).await;
    let got = client.read_to_fin(&[error]).await;
    assert_eq!(got[&error], b"request lonely: timed out waiting for streams");
}

#[tokio::test]
async fn old_clients_without_request_ids_are_paired_by_stream_id() {
    let (target, _pods, _pod) = target();
    let port = echo().await.to_string();
    let mut client = session(target, 8);
    let error = client.open_with(&[("streamType", "error"), ("port", &port)]).await;
    let data = client.open_with(&[("streamType", "data"), ("port", &port)]).await;
    assert_eq!(data, error + 2);
    client.data(data, b"legacy", true).await;
    assert_eq!(client.read_to_fin(&[data, error]).await[&data], b"legacy");
}

#[tokio::test]
async fn a_pod_gone_since_the_session_began_is_reported() {
    let (target, pods, pod) = target();
    let port = echo().await;
    let mut client = session(target, 8);
    pods.remove_pod(&pod);
    let (error, data) = connect(&mut client, port, "0").await;
    let got = client.read_to_fin(&[error, data]).await;
    let message = String::from_utf8_lossy(&got[&error]).into_owned();
    assert!(message.ends_with("pod default/web is not running on this node any more"), "{message}");
}

/// The pod's side closing ends the forward at once, whatever the client still has open;
/// the client's half-close reaches the pod as end of file, and the pod's answer still comes.
#[tokio::test]
async fn each_side_ending_is_passed_on() {
    let (target, _pods, _pod) = target();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // First connection: greet and close. Second: read to end of file, then answer.
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"bye").await.unwrap();
        drop(tcp);
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        tcp.read_to_end(&mut all).await.unwrap();
        tcp.write_all(format!("read {}", all.len()).as_bytes()).await.unwrap();
    });
    let mut client = session(target, 8);
    let (error, data) = connect(&mut client, port, "0").await;
    let got = client.read_to_fin(&[data, error]).await;
    assert_eq!(got[&data], b"bye", "the client never closed its side");
    let (error, data) = connect(&mut client, port, "1").await;
    client.data(data, b"12345", true).await;
    assert_eq!(client.read_to_fin(&[data, error]).await[&data], b"read 5");
}

#[tokio::test]
async fn the_pod_is_found_as_the_kubelet_finds_it() {
    let (pods, pod) = pods();
    let code = |uid: Option<&str>, name: &str| {
        Target::find(&pods, "default", name, uid).err().map(|(c, m)| (c.as_u16(), m))
    };
    assert_eq!(code(None, "web"), None);
    assert_eq!(code(Some(UID), "web"), None);
    assert_eq!(code(None, "other"), Some((404, "pod does not exist".into())));
    assert_eq!(code(Some("another-uid"), "web"), Some((404, "pod not found".into())));
    pods.container_stopped(&pod, "main");
    let (status, message) = code(None, "web").unwrap();
    assert_eq!((status, message.as_str()), (400, "pod default/web has no running container"));
}

#[test]
fn websocket_ports_are_checked_as_the_kubelet_checks_them() {
    assert_eq!(ports("port=8080&port=9090,7070").unwrap(), vec![8080, 9090, 7070]);
    let error = |query: &str| ports(query).unwrap_err();
    assert_eq!(error("").1, "query parameter \"port\" is required");
    assert_eq!(error("port=").1, "query parameter \"port\" cannot be empty");
    assert_eq!(error("port=0").1, "port \"0\" must be > 0");
    assert!(error("port=http").1.starts_with("unable to parse \"http\" as a port"));
    assert!(error("port=70000").1.starts_with("unable to parse \"70000\" as a port"));
    assert!(error(&"port=1&".repeat(200)).1.contains("more than 128"));
    assert!(error("port=1,,2").1.starts_with("unable to parse \"1,,2\""));
    assert_eq!(error("port=0").0.as_u16(), 400);
}

#[test]
fn websocket_subprotocols_and_port_counts() {
    let offer = |p: &[&str]| negotiate(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(offer(&[]).unwrap(), Encoding::Binary(None));
    assert_eq!(offer(&["v4.channel.k8s.io"]).unwrap(), Encoding::Binary(Some("v4.channel.k8s.io")));
    assert_eq!(offer(&["x", "v4.base64.channel.k8s.io", "v4.channel.k8s.io"]).unwrap(), Encoding::Base64);
    assert_eq!(offer(&["v5.channel.k8s.io"]).unwrap_err().0.as_u16(), 403);
    let ports: Vec<u16> = (1..=6).collect();
    assert!(check_count(&ports, Encoding::Binary(None), 128).is_ok());
    assert!(check_count(&ports, Encoding::Base64, 128).is_err(), "one digit per channel: 5 ports");
    assert!(check_count(&ports, Encoding::Binary(None), 4).is_err(), "the session cap");
}

/// Streams with every kind of odd header, data on streams that exist or not, resets and
/// window updates at random: each is refused, reported or ignored, never a panic, and the
/// session still forwards a good connection afterwards.
#[tokio::test]
async fn odd_streams_and_frames_never_break_the_session() {
    for round in 0..20u64 {
        odd_session(0x2545_f491_4f6c_dd1d ^ (round << 32)).await;
    }
}

async fn odd_session(mut seed: u64) {
    let (target, _pods, _pod) = target();
    let (echo_port, closed) = (echo().await.to_string(), closed_port().await.to_string());
    let mut client = session(target, 64);
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let types = ["error", "data", "Data", "", "stdin"];
    let ports = ["1", "0", "65535", "65536", "-1", "", "x", echo_port.as_str(), closed.as_str()];
    let ids = ["a", "b", "c", "", "0", "1"];
    for _ in 0..40 {
        let mut headers = vec![("streamType", types[next(types.len())]), ("port", ports[next(ports.len())])];
        match next(3) {
            0 => {}
            1 => headers.push(("requestID", ids[next(ids.len())])),
            _ => headers.retain(|_| next(2) == 0),
        }
        client.syn(&headers).await;
        for _ in 0..next(4) {
            // Stream 0 would break the protocol itself: that ends the connection (frame tests).
            let stream = 1 + next(client.next_id as usize + 4) as u32;
            let frame = match next(4) {
                0 => Frame::Data { stream, fin: next(2) == 0, data: Bytes::from(vec![7u8; next(3000)]) },
                1 => Frame::RstStream { stream, status: next(12) as u32 },
                2 => Frame::WindowUpdate { stream, delta: 0x7fff_ffff },
                _ => Frame::Ping { id: next(9) as u32 },
            };
            client.send(frame).await;
        }
    }
    let error = client.syn(&[("streamType", "error"), ("port", &echo_port), ("requestID", "good")]).await;
    let data = client.syn(&[("streamType", "data"), ("port", &echo_port), ("requestID", "good")]).await;
    client.data(data, b"survived", true).await;
    let mut echoed = Vec::new();
    loop {
        match client.frame().await {
            Frame::Data { stream, fin, data: bytes } if stream == data => {
                echoed.extend_from_slice(&bytes);
                if fin {
                    break;
                }
            }
            Frame::Data { stream, data: bytes, .. } if stream == error => {
                panic!("the good connection failed: {}", String::from_utf8_lossy(&bytes))
            }
            _ => {}
        }
    }
    assert_eq!(echoed, b"survived");
}
