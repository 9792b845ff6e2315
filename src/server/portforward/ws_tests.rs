//! Port-forward over a WebSocket, end to end on loopback: an axum server running the
//! transport for a test pod, a tokio-tungstenite client, and loopback TCP servers as the
//! pod's ports.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Target;
use super::tests::{UID, closed_port, echo, target};
use super::ws::{self, Encoding};

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn upgrade(
    State(target): State<Target>,
    Query(query): Query<Vec<(String, String)>>,
    ws: WebSocketUpgrade,
    headers: axum::http::HeaderMap,
) -> Response {
    let query: String = query.iter().map(|(k, v)| format!("{k}={v}&")).collect();
    let ports = ws::ports(&query).unwrap();
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .collect();
    let encoding = ws::negotiate(&offered).unwrap();
    let ws = match encoding.name() {
        Some(name) => ws.protocols([name]),
        None => ws,
    };
    ws.on_upgrade(move |socket| ws::serve(socket, encoding, ports, target))
}

/// Connects to a server forwarding `ports` of the test pod, offering `protocol`.
async fn connect(ports: &[u16], protocol: Option<&str>) -> Client {
    let (target, pods, _pod) = target();
    std::mem::forget(pods); // the directory lives as long as the test
    let app = Router::new().route("/pf", get(upgrade)).with_state(target);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let query: Vec<String> = ports.iter().map(|p| format!("port={p}")).collect();
    let mut request = format!("ws://{addr}/pf?{}", query.join("&")).into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(protocol).unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next message, failing the test after 5 s.
async fn next(client: &mut Client) -> Message {
    let message =
        tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("a message in time");
    message.expect("the server closed").unwrap()
}

/// The next binary message as (channel, data).
async fn binary(client: &mut Client) -> (u8, Vec<u8>) {
    match next(client).await {
        Message::Binary(bytes) => (bytes[0], bytes[1..].to_vec()),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

#[tokio::test]
async fn each_port_gets_a_data_and_an_error_channel_announcing_it() {
    let (echo_port, refused) = (echo().await, closed_port().await);
    let mut client = connect(&[echo_port, refused], Some("v4.channel.k8s.io")).await;
    let mut announced = Vec::new();
    for _ in 0..4 {
        announced.push(binary(&mut client).await);
    }
    let le = |p: u16| p.to_le_bytes().to_vec();
    assert_eq!(
        announced,
        vec![(0, le(echo_port)), (1, le(echo_port)), (2, le(refused)), (3, le(refused))],
        "the first message of every channel is its port, little endian"
    );
    let expected = format!(
        "error forwarding port {refused} to pod {UID}: dial tcp4 127.0.0.1:{refused}: connect: connection refused"
    );
    assert_eq!(binary(&mut client).await, (3, expected.into_bytes()));
    client.send(Message::binary(b"\x00hello".to_vec())).await.unwrap();
    assert_eq!(binary(&mut client).await, (0, b"hello".to_vec()));
    // Data on an error channel or a channel of no port is dropped; the session goes on.
    client.send(Message::binary(b"\x01ignored".to_vec())).await.unwrap();
    client.send(Message::binary(b"\x09ignored".to_vec())).await.unwrap();
    client.send(Message::binary(b"\x00again".to_vec())).await.unwrap();
    assert_eq!(binary(&mut client).await, (0, b"again".to_vec()));
}

#[tokio::test]
async fn the_websocket_closes_once_every_connection_has_ended() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"goodbye").await.unwrap();
    });
    let mut client = connect(&[port], None).await;
    assert_eq!(binary(&mut client).await, (0, port.to_le_bytes().to_vec()));
    assert_eq!(binary(&mut client).await, (1, port.to_le_bytes().to_vec()));
    assert_eq!(binary(&mut client).await, (0, b"goodbye".to_vec()));
    match next(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test]
async fn base64_channels_are_text_with_a_digit() {
    let port = echo().await;
    let mut client = connect(&[port], Some("v4.base64.channel.k8s.io")).await;
    let text = |m: Message| match m {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    };
    let announce = format!("0{}", STANDARD.encode(port.to_le_bytes()));
    assert_eq!(text(next(&mut client).await), announce);
    assert_eq!(text(next(&mut client).await), format!("1{}", STANDARD.encode(port.to_le_bytes())));
    client.send(Message::text(format!("0{}", STANDARD.encode(b"echo me")))).await.unwrap();
    assert_eq!(text(next(&mut client).await), format!("0{}", STANDARD.encode(b"echo me")));
    // Text that is not base64 closes the session with 1007, naming the problem.
    client.send(Message::text("0!!!")).await.unwrap();
    match next(&mut client).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1007);
            assert!(frame.reason.contains("not base64"), "{}", frame.reason);
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(Encoding::Base64.name(), Some("v4.base64.channel.k8s.io"));
}
