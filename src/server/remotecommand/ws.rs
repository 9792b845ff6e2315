//! Remote command over a WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io` and the older and
//! base64 encodings): every message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3
//! error, 4 resize); v5 adds the CLOSE signal `[255, channel]` that half-closes a channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session::Finisher;
use super::{Protocol, RemoteCommandError, Session, Wanted, resize};
use crate::server::channels::{ChannelWriter, WsOut, decode, encode, write_loop};
use crate::server::inbound::{self, Inbound};
use tokio_util::task::AbortOnDropHandle;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` means the client is done writing on `channel`.
const CLOSE: u8 = 255;
/// How long `finish` waits for the client to answer the close.
const FINISH_GRACE: Duration = Duration::from_secs(5);
/// The most stdin (or the resize stream) holds that the command has not read.
const INBOUND_BUFFER: usize = 1 << 20;

/// Runs an exec session on an accepted WebSocket (from axum's `WebSocketUpgrade`, whose
/// `protocols` should have been set to the one [`super::negotiate_ws`] chose).
pub async fn ws_session(
    socket: WebSocket,
    protocol: Protocol,
    wanted: Wanted,
) -> Result<Session, RemoteCommandError> {
    let wanted = wanted.normalized();
    let (mut sink, stream) = socket.split();
    // As the kubelet: an empty message on the lowest writable channel says the streams are up.
    let first = if wanted.stdout {
        STDOUT
    } else if wanted.stderr {
        STDERR
    } else {
        ERROR
    };
    sink.send(encode(protocol.base64(), first, &[]))
        .await
        .map_err(|e| RemoteCommandError::AnnounceStreams(e.to_string()))?;

    let closed = CancellationToken::new();
    let (tx, rx) = mpsc::channel(64);
    let writer =
        AbortOnDropHandle::new(tokio::spawn(write_loop(sink, rx, protocol.base64(), closed.clone())));
    let (stdin, stdin_reader) = inbound::inbound(INBOUND_BUFFER, None);
    let (resize, resize_reader) = inbound::inbound(INBOUND_BUFFER, None);
    let inputs = Inputs { stdin: wanted.stdin.then_some(stdin), resize: wanted.tty.then_some(resize) };
    let reader =
        AbortOnDropHandle::new(tokio::spawn(read_loop(stream, protocol, inputs, tx.clone(), closed.clone())));

    let done = Arc::new(AtomicBool::new(false));
    let output = |channel| ChannelWriter::new(channel, tx.clone(), done.clone());
    Ok(Session {
        protocol,
        stdin: wanted.stdin.then(|| Box::new(stdin_reader) as _),
        stdout: wanted.stdout.then(|| Box::new(output(STDOUT)) as _),
        stderr: wanted.stderr.then(|| Box::new(output(STDERR)) as _),
        resize: wanted.tty.then(|| resize::resize_events(resize_reader)),
        closed: closed.clone(),
        finish: Box::new(Finish { tx, done, closed, _writer: writer, reader }),
    })
}

/// Where client data goes; a channel's input is dropped (end of file) when it is closed.
struct Inputs {
    stdin: Option<Inbound>,
    resize: Option<Inbound>,
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    protocol: Protocol,
    mut inputs: Inputs,
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
        let (channel, data) = match decode(protocol.base64(), message) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => continue,
            Err(why) => {
                tracing::debug!(%why, "closing an exec WebSocket: malformed message");
                // The writer sends the close and then ends the session.
                if out.send(WsOut::Fail(why.to_string())).await.is_err() {
                    closed.cancel();
                }
                return;
            }
        };
        let input = match channel {
            STDIN => &mut inputs.stdin,
            RESIZE => &mut inputs.resize,
            CLOSE => {
                match data.first() {
                    Some(&STDIN) => inputs.stdin = None,
                    Some(&RESIZE) => inputs.resize = None,
                    _ => {}
                }
                continue;
            }
            _ => continue,
        };
        if let Some(inbound) = input
            && !inbound.send(data).await
        {
            *input = None;
        }
    }
    closed.cancel();
}

/// How a WebSocket session ends.
pub(super) struct Finish {
    tx: mpsc::Sender<WsOut>,
    done: Arc<AtomicBool>,
    closed: CancellationToken,
    _writer: AbortOnDropHandle<()>,
    reader: AbortOnDropHandle<()>,
}

impl Finisher for Finish {
    fn finish(self: Box<Self>, status: Vec<u8>) -> BoxFuture<'static, ()> {
        Box::pin(Finish::finish(*self, status))
    }
}

impl Finish {
    /// Writes the status on the error channel, closes the WebSocket normally and waits for the
    /// client's answer (or the grace period).
    pub(super) async fn finish(mut self, status: Vec<u8>) {
        self.done.store(true, Ordering::Release);
        let end = async {
            if !status.is_empty() {
                let _ = self.tx.send(WsOut::Data { channel: ERROR, data: Bytes::from(status) }).await;
            }
            let _ = self.tx.send(WsOut::Close).await;
            let _ = (&mut self.reader).await;
        };
        if tokio::time::timeout(FINISH_GRACE, end).await.is_err() {
            tracing::debug!("the WebSocket exec client did not answer the close in time");
        }
        self.closed.cancel();
    }
}
