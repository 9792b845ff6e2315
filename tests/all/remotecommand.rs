//! Exec sessions end to end over real sockets: a fake API server (axum on 127.0.0.1:0) that
//! answers `GET pod` and upgrades `pods/p/exec` to SPDY or WebSocket with the remotecommand
//! module, in front of a fake container whose commands are `echo CODE`, `head N`, `big N`
//! and `wait`. Clients: tokio-tungstenite, and the real kubectl 1.20 (SPDY) and 1.32
//! (WebSocket v5) when they are installed.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State, ws::WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use krustlet_wasi::server::remotecommand::{self as rc, Session, Wanted};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

/// What the fake server saw: the transport and protocol of each exec, and guest events.
type Events = Arc<Mutex<Vec<String>>>;

async fn serve() -> (SocketAddr, Events) {
    let events = Events::default();
    let app = Router::new()
        .route("/api", get(|| async { axum::Json(json!({"kind": "APIVersions", "versions": ["v1"]})) }))
        .route("/apis", get(|| async { axum::Json(json!({"kind": "APIGroupList", "groups": []})) }))
        .route("/api/v1", get(resources))
        .route("/api/v1/namespaces/default/pods/p", get(pod))
        .route("/api/v1/namespaces/default/pods/p/exec", any(exec))
        .with_state(events.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, events)
}

/// Discovery, which kubectl reads to know what `pods` is.
async fn resources() -> impl IntoResponse {
    axum::Json(json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
        ],
    }))
}

async fn pod() -> impl IntoResponse {
    axum::Json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "wasm"}]},
        "status": {"phase": "Running"},
    }))
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
}

/// The exec handler, as the agent's will be: negotiate, answer the upgrade, build the session.
async fn exec(State(events): State<Events>, mut req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let wanted = Wanted::from_query(&query);
    let command: Vec<String> =
        query.split('&').filter_map(|p| p.strip_prefix("command=")).map(str::to_string).collect();
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if upgrade.eq_ignore_ascii_case("websocket") {
        let Some(protocol) = rc::negotiate_ws(&header_values(req.headers(), "sec-websocket-protocol")) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let (mut parts, _) = req.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        events.lock().unwrap().push(format!("ws {}", protocol.name()));
        return ws.protocols([protocol.name()]).on_upgrade(move |socket| async move {
            let session = rc::ws_session(socket, protocol, wanted).await.expect("websocket session");
            container(session, command, events).await;
        });
    }
    let Some(protocol) = rc::negotiate_spdy(&header_values(req.headers(), rc::PROTOCOL_HEADER)) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    events.lock().unwrap().push(format!("spdy {}", protocol.name()));
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = TokioIo::new(upgraded.await.expect("upgrade"));
        let session = rc::spdy_session(io, protocol, wanted).await.expect("spdy session");
        container(session, command, events).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, rc::SPDY_UPGRADE)
        .header(rc::PROTOCOL_HEADER, protocol.name())
        .body(Body::empty())
        .unwrap()
}

/// The fake container: runs `command` on the session's streams.
async fn container(mut s: Session, command: Vec<String>, events: Events) {
    let arg = |i: usize| command.get(i).and_then(|a| a.parse::<usize>().ok()).unwrap_or(0);
    let (mut stdout, mut stderr) = (s.stdout.take(), s.stderr.take());
    let exit = match command.first().map(String::as_str) {
        Some("echo") => {
            let mut input = Vec::new();
            s.stdin.take().unwrap().read_to_end(&mut input).await.unwrap();
            stdout.as_mut().unwrap().write_all(&input).await.unwrap();
            stderr.as_mut().unwrap().write_all(b"to stderr\n").await.unwrap();
            Ok(arg(1) as i32)
        }
        Some("head") => {
            let mut input = vec![0u8; arg(1)];
            s.stdin.take().unwrap().read_exact(&mut input).await.unwrap();
            stdout.as_mut().unwrap().write_all(&input).await.unwrap();
            Ok(0)
        }
        Some("big") => {
            let pattern: Vec<u8> = (0..arg(1)).map(|i| b'a' + (i % 26) as u8).collect();
            stdout.as_mut().unwrap().write_all(&pattern).await.unwrap();
            Ok(0)
        }
        Some("wait") => {
            stdout.as_mut().unwrap().write_all(b"waiting\n").await.unwrap();
            if tokio::time::timeout(Duration::from_secs(5), s.closed.cancelled()).await.is_ok() {
                events.lock().unwrap().push("closed".into());
            }
            Ok(0)
        }
        other => Err(format!("{other:?}: no such command")),
    };
    s.finish(exit).await;
}

/// A WebSocket exec client: connects with `protocols`, returns the socket and the chosen one.
async fn ws_connect(
    addr: SocketAddr,
    query: &str,
    protocols: &str,
) -> Result<(
    tokio_tungstenite::WebSocketStream<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
    String,
)> {
    let url = format!("ws://{addr}/api/v1/namespaces/default/pods/p/exec?{query}");
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocols.parse()?);
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let chosen = response.headers().get("sec-websocket-protocol").context("no protocol chosen")?;
    Ok((socket, chosen.to_str()?.to_string()))
}

/// Reads messages until the server closes: what each channel carried, and the close code.
async fn ws_read_all(
    socket: &mut (impl futures::Stream<Item = tokio_tungstenite::tungstenite::Result<Message>> + Unpin),
    base64: bool,
) -> Result<([Vec<u8>; 5], Option<CloseCode>)> {
    let mut channels: [Vec<u8>; 5] = Default::default();
    let deadline = Duration::from_secs(10);
    while let Some(message) = tokio::time::timeout(deadline, socket.next()).await? {
        let (channel, data) = match message? {
            Message::Binary(b) if !base64 => (b[0], b[1..].to_vec()),
            Message::Text(t) if base64 => {
                use base64::Engine;
                let t = t.as_str();
                (t.as_bytes()[0] - b'0', base64::engine::general_purpose::STANDARD.decode(&t[1..])?)
            }
            Message::Close(frame) => return Ok((channels, frame.map(|f| f.code))),
            other => anyhow::bail!("unexpected {other:?}"),
        };
        channels[channel as usize].extend_from_slice(&data);
    }
    anyhow::bail!("the connection ended without a close")
}

#[tokio::test]
async fn websocket_v5_carries_stdin_with_its_close_signal_and_reports_the_exit_code() -> Result<()> {
    let (addr, events) = serve().await;
    let query = "command=echo&command=3&stdin=true&stdout=true&stderr=true";
    let (mut socket, chosen) = ws_connect(addr, query, "v4.channel.k8s.io, v5.channel.k8s.io").await?;
    assert_eq!(chosen, "v5.channel.k8s.io");
    // The server announces the streams with an empty message on stdout.
    assert_eq!(socket.next().await.context("closed")??, Message::binary(vec![1u8]));
    socket.send(Message::binary(b"\x00hello ".to_vec())).await?;
    socket.send(Message::binary(b"\x00world".to_vec())).await?;
    socket.send(Message::binary(vec![255u8, 0])).await?; // CLOSE stdin
    let (channels, close) = ws_read_all(&mut socket, false).await?;
    assert_eq!(channels[1], b"hello world");
    assert_eq!(channels[2], b"to stderr\n");
    let status: Value = serde_json::from_slice(&channels[3])?;
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(*events.lock().unwrap(), vec!["ws v5.channel.k8s.io".to_string()]);
    Ok(())
}

#[tokio::test]
async fn websocket_v4_and_its_base64_encoding_report_success() -> Result<()> {
    let (addr, _) = serve().await;
    let query = "command=head&command=5&stdin=true&stdout=true";
    let (mut socket, chosen) = ws_connect(addr, query, "v4.channel.k8s.io").await?;
    assert_eq!(chosen, "v4.channel.k8s.io");
    socket.send(Message::binary(b"\x00abcde".to_vec())).await?;
    let (channels, close) = ws_read_all(&mut socket, false).await?;
    assert_eq!(channels[1], b"abcde");
    assert_eq!(serde_json::from_slice::<Value>(&channels[3])?, json!({"metadata": {}, "status": "Success"}));
    assert_eq!(close, Some(CloseCode::Normal));

    let (mut socket, chosen) = ws_connect(addr, query, "v4.base64.channel.k8s.io").await?;
    assert_eq!(chosen, "v4.base64.channel.k8s.io");
    socket.send(Message::text("0YWJjZGU=")).await?; // "abcde" on channel '0'
    let (channels, _) = ws_read_all(&mut socket, true).await?;
    assert_eq!(channels[1], b"abcde");
    assert_eq!(serde_json::from_slice::<Value>(&channels[3])?["status"], "Success");
    Ok(())
}

#[tokio::test]
async fn a_websocket_client_closing_resolves_closed() -> Result<()> {
    let (addr, events) = serve().await;
    let (mut socket, _) = ws_connect(addr, "command=wait&stdout=true", "v5.channel.k8s.io").await?;
    let mut seen = Vec::new();
    while !seen.ends_with(b"waiting\n") {
        match socket.next().await.context("closed")?? {
            Message::Binary(b) => seen.extend_from_slice(&b[1..]),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    socket.close(None).await?;
    drop(socket);
    for _ in 0..40 {
        if events.lock().unwrap().contains(&"closed".to_string()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the session never saw the client go: {:?}", events.lock().unwrap())
}

/// Runs a real kubectl against the fake server; `None` when that kubectl is not installed.
async fn kubectl(
    binary: &str,
    addr: SocketAddr,
    args: &[&str],
    stdin: &[u8],
) -> Option<std::process::Output> {
    let is_path = binary.contains('/');
    if is_path && !std::path::Path::new(binary).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but {binary} is missing (bootstrap/cluster.sh install unpacks it)"
        );
        eprintln!("SKIPPED: {binary} is not installed; run bootstrap/cluster.sh install to enable");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\n\
         users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: fake, user: u, namespace: default}}}}]\n\
         current-context: c\n"
    );
    std::fs::write(&config, kubeconfig).unwrap();
    let mut child = tokio::process::Command::new(binary)
        .arg("--kubeconfig")
        .arg(&config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await;
    Some(output.expect("kubectl hung").unwrap())
}

const KUBECTL_SPDY: &str = "/var/cache/krustlet-wasi/k8s-1.20.2/bin/kubectl-1.20";
/// The installed kubectl (1.32), from PATH.
const KUBECTL_WS: &str = "kubectl";

async fn kubectl_echo_and_big(binary: &str, transport: &str) {
    let (addr, events) = serve().await;
    let Some(out) = kubectl(binary, addr, &["exec", "-i", "p", "--", "echo", "3"], b"hello\n").await else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "stderr: {stderr}");
    assert!(stderr.contains("to stderr"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "kubectl exits with the command's code; stderr: {stderr}");

    let out = kubectl(binary, addr, &["exec", "p", "--", "big", "3000000"], b"").await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().enumerate().all(|(i, b)| *b == b'a' + (i % 26) as u8));
    assert_eq!(*events.lock().unwrap(), vec![transport.to_string(); 2], "the transport used");
}

#[tokio::test]
async fn kubectl_1_20_execs_over_spdy() {
    kubectl_echo_and_big(KUBECTL_SPDY, "spdy v4.channel.k8s.io").await;
}

#[tokio::test]
async fn kubectl_1_32_execs_over_websocket_v5() {
    kubectl_echo_and_big(KUBECTL_WS, "ws v5.channel.k8s.io").await;
}

#[tokio::test]
async fn a_malformed_base64_message_closes_the_session_with_1007_and_a_reason() -> Result<()> {
    let (addr, events) = serve().await;
    for bad in ["é", "\u{1F600}AAAA", "xQUJD", "0not base64!"] {
        let query = "command=wait&stdin=true&stdout=true";
        let (mut socket, chosen) = ws_connect(addr, query, "base64.channel.k8s.io").await?;
        assert_eq!(chosen, "base64.channel.k8s.io");
        socket.send(Message::text(bad)).await?;
        let (_, close) = ws_read_all(&mut socket, true).await?;
        assert_eq!(close, Some(CloseCode::Invalid), "{bad:?}");
    }
    // Each session saw its client go (the command stops), none ran to its end.
    assert_eq!(events.lock().unwrap().iter().filter(|e| *e == "closed").count(), 4);
    Ok(())
}
