//! Port-forward over a WebSocket, as the kubelet serves it: the ports come from the query
//! (`?port=8080&port=9090`, or `port=8080,9090`), one forwarded connection each for the
//! WebSocket's lifetime. For the i-th port, channel 2i carries data both ways and channel
//! 2i+1 this side's error message; the first message on each is the port, two bytes little
//! endian. Subprotocols `v4.channel.k8s.io` (binary), `v4.base64.channel.k8s.io` (text), or
//! none (binary). The WebSocket closes once every connection has ended.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use axum::http::StatusCode;
use futures::StreamExt;
use futures::stream::SplitStream;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::forward::forward;
use super::{Failure, Target};
use crate::server::channels::{ChannelWriter, WsOut, decode, write_loop};
use crate::server::inbound::{self, Inbound};
use tokio_util::task::AbortOnDropHandle;

/// What one port's data channel holds from the client that the pod has not read; past it
/// the WebSocket is not read until the pod reads.
const DATA_BUFFER: usize = 64 * 1024;
/// How long the close waits for the client's answer.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How messages are encoded, from the negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `v4.channel.k8s.io`, or no subprotocol at all.
    Binary(Option<&'static str>),
    /// `v4.base64.channel.k8s.io`.
    Base64,
}

impl Encoding {
    /// The subprotocol to answer with, if any.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Encoding::Binary(name) => name,
            Encoding::Base64 => Some(BASE64),
        }
    }

    fn base64(self) -> bool {
        self == Encoding::Base64
    }

    /// The most ports one WebSocket can carry: a channel is one byte (binary) or one digit
    /// (base64), two per port.
    fn max_ports(self) -> usize {
        if self.base64() { 5 } else { 128 }
    }
}

const BINARY: &str = "v4.channel.k8s.io";
const BASE64: &str = "v4.base64.channel.k8s.io";

/// Picks the first subprotocol offered that the kubelet knows; with none offered, binary.
pub fn negotiate(offered: &[String]) -> Result<Encoding, Failure> {
    if offered.is_empty() {
        return Ok(Encoding::Binary(None));
    }
    for protocol in offered {
        match protocol.as_str() {
            BINARY => return Ok(Encoding::Binary(Some(BINARY))),
            BASE64 => return Ok(Encoding::Base64),
            _ => {}
        }
    }
    let message =
        format!("requested protocol(s) are not supported: {offered:?}; supports [\"{BINARY}\" \"{BASE64}\"]");
    Err((StatusCode::FORBIDDEN, message))
}

/// The `port` query parameters, checked as the kubelet checks them.
pub fn ports(query: &str) -> Result<Vec<u16>, Failure> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let values: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| v.into_owned())
        .collect();
    if values.is_empty() {
        return Err(bad("query parameter \"port\" is required".into()));
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err(bad("query parameter \"port\" cannot be empty".into()));
        }
        for part in value.split(',') {
            match part.parse::<u16>() {
                Ok(0) => return Err(bad(format!("port {value:?} must be > 0"))),
                Ok(port) => ports.push(port),
                Err(e) => return Err(bad(format!("unable to parse {value:?} as a port: {e}"))),
            }
            if ports.len() > 128 {
                return Err(bad("more than 128 ports in one request".into()));
            }
        }
    }
    Ok(ports)
}

/// Refuses more ports than the encoding has channels for, or than the session cap.
pub fn check_count(ports: &[u16], encoding: Encoding, max: usize) -> Result<(), Failure> {
    let most = encoding.max_ports().min(max);
    if ports.len() > most {
        let message = format!(
            "{} ports asked for; one port-forward WebSocket carries at most {most} \
             (two channels per port; --port-forward-max-connections={max})",
            ports.len()
        );
        return Err((StatusCode::BAD_REQUEST, message));
    }
    Ok(())
}

/// Serves the forwarded connections of one WebSocket until all have ended or the client
/// goes away.
pub async fn serve(socket: WebSocket, encoding: Encoding, ports: Vec<u16>, target: Target) {
    let (sink, stream) = socket.split();
    let closed = CancellationToken::new();
    let (tx, rx) = mpsc::channel(64);
    let writer =
        AbortOnDropHandle::new(tokio::spawn(write_loop(sink, rx, encoding.base64(), closed.clone())));
    let mut feeds = Vec::new();
    let mut forwards = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for channel in [data, error] {
            let announce = WsOut::Data { channel, data: port.to_le_bytes().to_vec().into() };
            if tx.send(announce).await.is_err() {
                return;
            }
        }
        let (feed, mut from_client) = inbound::inbound(DATA_BUFFER, None);
        feeds.push(Some(feed));
        let mut to_client = ChannelWriter::new(data, tx.clone(), Arc::new(AtomicBool::new(false)));
        let mut errors = ChannelWriter::new(error, tx.clone(), Arc::new(AtomicBool::new(false)));
        let target = target.clone();
        forwards.spawn(async move {
            if let Err(e) = forward(&target, port, &mut from_client, &mut to_client).await {
                debug!(port, error = %e, "port-forward connection failed");
                let _ = errors.write_all(target.failed(port, &e).as_bytes()).await;
            }
        });
    }
    let mut reader = AbortOnDropHandle::new(tokio::spawn(read_loop(
        stream,
        encoding.base64(),
        feeds,
        tx.clone(),
        closed.clone(),
    )));
    tokio::select! {
        _ = async { while forwards.join_next().await.is_some() {} } => {
            let _ = tx.send(WsOut::Close).await;
            // The client answers the close, and the reader sees the end.
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
        }
        _ = closed.cancelled() => forwards.abort_all(),
    }
    drop(writer);
}

/// Routes the client's data to each port's connection; a message on an error channel, or on
/// a channel of no port, is dropped, as the kubelet drops it.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    base64: bool,
    mut feeds: Vec<Option<Inbound>>,
    out: mpsc::Sender<WsOut>,
    closed: CancellationToken,
) {
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(Message::Close(_)) => {
                // Keep polling so the library answers the close; the stream then ends.
                closed.cancel();
                continue;
            }
            Ok(message) => message,
            Err(_) => break,
        };
        let (channel, data) = match decode(base64, message) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => continue,
            Err(why) => {
                debug!(%why, "closing a port-forward WebSocket: malformed message");
                if out.send(WsOut::Fail(why.to_string())).await.is_err() {
                    closed.cancel();
                }
                return;
            }
        };
        if channel % 2 != 0 {
            continue;
        }
        if let Some(slot) = feeds.get_mut(usize::from(channel / 2))
            && let Some(feed) = slot
            && !feed.send(data).await
        {
            *slot = None;
        }
    }
    closed.cancel();
}
