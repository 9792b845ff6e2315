//! End to end on the real control plane: `kubectl port-forward pod/X LOCAL:REMOTE` to a Wasm
//! pod with the installed kubectl 1.32 (which tries SPDY tunnelled in a WebSocket first) and
//! Debian's kubectl 1.20 (plain SPDY): several connections open at once and a large transfer
//! each way through the forward, and kubectl printing the node's error for a port with
//! nothing listening. Then the WebSocket channel protocol, as clients other than kubectl
//! speak it, through the API server (`?ports=`).
//!
//! The pod's declared port is served here by an echo server this test owns on loopback,
//! which echoes many connections at once (the Wasm echo guest takes one at a time): the
//! node dials 127.0.0.1:PORT for a forwarded connection, whoever listens there.
//! `tests/serving_http.rs` forwards to Wasm servers themselves.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use common::guests;
use common::node::{TestNode, phase, pod};
use serde_json::json;

/// The test node's kubelet API port (healthz on +1000).
const PORT: u16 = 10401;
/// The pod's port: this test's echo server listens there.
const ECHO: u16 = 18100;
/// A port nothing listens on.
const NOTHING: u16 = 18101;
/// kubectl's local ports: two per kubectl (traffic, error).
const LOCAL: u16 = 18102;

/// A Running pod on the test node, declaring the echo port or no port at all (one node port
/// can belong to one pod only); returns its name and UID.
fn echo_pod(cluster: &common::Cluster, node: &TestNode, tag: &str, declare: bool) -> (String, String) {
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("pf-{tag}-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    if declare {
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": ECHO}]);
    }
    cluster.apply(&p);
    let running = cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let uid = running["metadata"]["uid"].as_str().unwrap().to_string();
    (name, uid)
}

/// An echo server on 127.0.0.1:[`ECHO`] for the whole test process: each connection gets
/// back what it sends, and end of file after the client's.
fn echo_server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let listener = TcpListener::bind(("127.0.0.1", ECHO)).expect("the echo port 18100 is free");
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = tcp.try_clone().unwrap();
                    let mut r = tcp;
                    let _ = std::io::copy(&mut r, &mut w);
                    let _ = w.shutdown(Shutdown::Write);
                });
            }
        });
    });
}

/// A running `kubectl port-forward`; killed when dropped.
struct Forward {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Forward {
    /// Starts `kubectl port-forward pod/NAME LOCAL:REMOTE` and waits until it listens.
    fn start(kubectl: &Path, kubeconfig: &Path, dir: &Path, pod: &str, local: u16, remote: u16) -> Forward {
        let (out, err) = (dir.join(format!("pf-{local}.out")), dir.join(format!("pf-{local}.err")));
        let child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["port-forward", "-n", "default", &format!("pod/{pod}"), &format!("{local}:{remote}")])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("kubectl starts");
        let mut forward = Forward { child, out, err };
        let listening = format!("Forwarding from 127.0.0.1:{local} -> {remote}");
        forward.wait_for(&forward.out.clone(), &listening);
        forward
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until `file` contains `needle`; panics with kubectl's output if it exits first.
    fn wait_for(&mut self, file: &Path, needle: &str) {
        let start = Instant::now();
        loop {
            // Whether it exited is asked first: then the file has all it will ever have.
            let exited = self.child.try_wait().unwrap();
            if std::fs::read_to_string(file).unwrap_or_default().contains(needle) {
                return;
            }
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(60),
                "kubectl port-forward ({exited:?}) did not print {needle:?}:\nstdout: {}\nstderr: {}",
                std::fs::read_to_string(&self.out).unwrap_or_default(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes no two connections share and a reordering would change: xorshift from `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn connect(local: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", local)).expect("kubectl listens");
    tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    tcp
}

/// Sends `data` on `tcp` while reading as many bytes back; returns what came back.
fn round_trip(tcp: &TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = tcp.try_clone().unwrap();
    let len = data.len();
    let writer = std::thread::spawn(move || w.write_all(&data).expect("writing through the forward"));
    let mut back = vec![0u8; len];
    (&*tcp).read_exact(&mut back).expect("reading the echo through the forward");
    writer.join().unwrap();
    back
}

/// `n` connections through the forward, all open at once, each echoing its own bytes.
fn concurrent_connections(local: u16, n: usize, which: &str) {
    let barrier = Arc::new(Barrier::new(n));
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let tcp = connect(local);
                let hello = format!("hello from {i}\n").into_bytes();
                assert_eq!(round_trip(&tcp, hello.clone()), hello);
                // Every connection is open and has carried data before any goes on.
                barrier.wait();
                let data = pattern(i as u64 + 1, 256 * 1024);
                assert!(round_trip(&tcp, data.clone()) == data, "connection {i}: the echo differs");
            })
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        w.join().unwrap_or_else(|_| panic!("{which}: connection {i} failed"));
    }
}

#[test]
fn kubectl_port_forward_carries_traffic_and_reports_a_closed_port() {
    let cluster = require_cluster!();
    echo_server();
    assert!(
        TcpStream::connect(("127.0.0.1", NOTHING)).is_err(),
        "port {NOTHING} must have nothing listening"
    );
    let node: &TestNode = common::shared_node("portfwd", PORT).unwrap();
    let (name, uid) = echo_pod(cluster, node, "kubectl", true);
    let dir = tempfile::tempdir().unwrap();

    for (i, kubectl) in common::kubectls().into_iter().enumerate() {
        let which = kubectl.display().to_string();
        let (traffic, closed) = (LOCAL + 2 * i as u16, LOCAL + 2 * i as u16 + 1);
        let transports_before = node.agent.logs().matches("port-forward").count();
        let forward = Forward::start(&kubectl, &cluster.kubeconfig, dir.path(), &name, traffic, ECHO);
        concurrent_connections(traffic, 8, &which);

        let big = pattern(42, 16 << 20);
        let start = Instant::now();
        let back = round_trip(&connect(traffic), big.clone());
        eprintln!("{which}: 16 MiB each way through the forward in {:?}", start.elapsed());
        assert!(back == big, "{which}: the large transfer came back altered");
        drop(forward);

        // The agent saw the transport each kubectl speaks: 1.32 tunnels SPDY in a WebSocket.
        let logs = node.agent.logs();
        let transport = if i == 0 { "SPDY in WebSocket" } else { "transport=\"SPDY\"" };
        assert!(logs.matches("port-forward").count() > transports_before, "{which}: no port-forward logged");
        assert!(logs.contains(transport), "{which}: expected {transport:?} in the agent's log");

        let mut forward = Forward::start(&kubectl, &cluster.kubeconfig, dir.path(), &name, closed, NOTHING);
        let mut tcp = connect(closed);
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest); // kubectl closes the connection after the error
        let expected = format!(
            "error forwarding port {NOTHING} to pod {uid}: dial tcp4 127.0.0.1:{NOTHING}: connect: connection refused"
        );
        let err = forward.err.clone();
        forward.wait_for(&err, &expected);
        assert!(forward.stderr().contains(&format!("an error occurred forwarding {closed} -> {NOTHING}")));
    }
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
}

/// The next WebSocket message as (channel, data), failing the test after a minute.
async fn channel_message(ws: &mut WsClient) -> (u8, Vec<u8>) {
    use futures::StreamExt;
    let next = tokio::time::timeout(Duration::from_secs(60), ws.next()).await.expect("a message in time");
    match next.expect("the WebSocket closed").expect("reading the WebSocket") {
        Message::Binary(bytes) if !bytes.is_empty() => (bytes[0], bytes[1..].to_vec()),
        other => panic!("expected a channel message, got {other:?}"),
    }
}

type WsClient = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
use tokio_tungstenite::tungstenite::Message;

/// The WebSocket protocol (`v4.channel.k8s.io`) as a client other than kubectl speaks it,
/// through the API server's `pods/portforward?ports=...`: each port announced on its data
/// and error channels, the echo on the data channel, the node's error on the other port's
/// error channel. The pod declares no port: as on the kubelet, any port may be forwarded.
#[test]
fn websocket_channels_through_the_api_server() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let cluster = require_cluster!();
    echo_server();
    let node: &TestNode = common::shared_node("portfwd", PORT).unwrap();
    let (name, uid) = echo_pod(cluster, node, "ws", false);
    let server = cluster.kubectl_ok(&["config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let authority = server.trim().trim_start_matches("https://").to_string();
    let config = common::kubelet_api::tls_config(cluster, true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&authority).await.expect("the API server listens");
        let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(&authority).to_string();
        let server_name = rustls::pki_types::ServerName::try_from(host).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await.expect("TLS to the API server");
        let url = format!(
            "wss://{authority}/api/v1/namespaces/default/pods/{name}/portforward?ports={ECHO}&ports={NOTHING}"
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "v4.channel.k8s.io".parse().unwrap());
        let (mut ws, answer) = tokio_tungstenite::client_async(request, tls).await.expect("the upgrade");
        assert_eq!(answer.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");

        let mut announced = Vec::new();
        for _ in 0..4 {
            announced.push(channel_message(&mut ws).await);
        }
        let le = |p: u16| p.to_le_bytes().to_vec();
        assert_eq!(announced, vec![(0, le(ECHO)), (1, le(ECHO)), (2, le(NOTHING)), (3, le(NOTHING))]);
        let refused = format!(
            "error forwarding port {NOTHING} to pod {uid}: dial tcp4 127.0.0.1:{NOTHING}: connect: connection refused"
        );
        assert_eq!(channel_message(&mut ws).await, (3, refused.into_bytes()));

        // 1 MiB in 32 KiB messages on the data channel, echoed back whole and in order.
        let sent = pattern(7, 1 << 20);
        let mut echoed = Vec::new();
        for chunk in sent.chunks(32 * 1024) {
            let mut message = vec![0u8];
            message.extend_from_slice(chunk);
            ws.send(Message::binary(message)).await.unwrap();
        }
        while echoed.len() < sent.len() {
            let (channel, data) = channel_message(&mut ws).await;
            assert_eq!(channel, 0, "the echo comes on the data channel");
            echoed.extend_from_slice(&data);
        }
        assert!(echoed == sent, "the echo through the WebSocket is intact");
        ws.close(None).await.unwrap();
    });
    assert!(node.agent.logs().contains("transport=\"WebSocket\""), "the API server passed the WebSocket on");
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
}
