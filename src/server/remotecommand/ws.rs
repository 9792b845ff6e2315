//! Remote command over a WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io` and the older and
//! base64 encodings): every message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3
//! error, 4 resize); v5 adds the CLOSE signal `[255, channel]` that half-closes a channel.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

use super::pipe::{self, Inbound};
use super::session::{Abort, Finisher};
use super::{Protocol, RemoteCommandError, Session, Wanted};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` means the client is done writing on `channel`.
const CLOSE: u8 = 255;
/// The most one message carries.
const CHUNK: usize = 32 * 1024;
/// How long `finish` waits for the client to answer the close.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// A message to send.
enum WsOut {
    Data {
        channel: u8,
        data: Bytes,
    },
    /// Close the WebSocket normally (1000): the client's readers see end of file.
    Close,
}

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
    sink.send(encode(protocol, first, &[]))
        .await
        .map_err(|e| RemoteCommandError::AnnounceStreams(e.to_string()))?;

    let closed = CancellationToken::new();
    let (tx, rx) = mpsc::channel(64);
    let writer = Abort(tokio::spawn(write_loop(sink, rx, protocol, closed.clone())));
    let (stdin, stdin_reader) = pipe::inbound(None);
    let (resize, resize_reader) = pipe::inbound(None);
    let inputs = Inputs { stdin: wanted.stdin.then_some(stdin), resize: wanted.tty.then_some(resize) };
    let reader = Abort(tokio::spawn(read_loop(stream, protocol, inputs, closed.clone())));

    let done = Arc::new(AtomicBool::new(false));
    let output = |channel| ChannelWriter { channel, tx: PollSender::new(tx.clone()), done: done.clone() };
    Ok(Session {
        protocol,
        stdin: wanted.stdin.then(|| Box::new(stdin_reader) as _),
        stdout: wanted.stdout.then(|| Box::new(output(STDOUT)) as _),
        stderr: wanted.stderr.then(|| Box::new(output(STDERR)) as _),
        resize: wanted.tty.then(|| pipe::resize_events(resize_reader)),
        closed: closed.clone(),
        finish: Finisher::Ws(Finish { tx, done, closed, _writer: writer, reader }),
    })
}

/// One message: the channel byte and the data, or for base64 protocols the channel digit and
/// the data in base64, as text.
fn encode(protocol: Protocol, channel: u8, data: &[u8]) -> Message {
    if protocol.base64() {
        let text = format!("{}{}", char::from(b'0' + channel), STANDARD.encode(data));
        return Message::text(text);
    }
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    Message::binary(message)
}

/// Reads one client message as (channel, data); `None` for what carries no channel data.
fn decode(protocol: Protocol, message: Message) -> Option<(u8, Bytes)> {
    match message {
        Message::Binary(bytes) if !protocol.base64() => {
            let channel = *bytes.first()?;
            Some((channel, bytes.slice(1..)))
        }
        Message::Text(text) if protocol.base64() => {
            let text = text.as_str();
            let channel = text.as_bytes().first()?.checked_sub(b'0')?;
            let data = STANDARD.decode(&text[1..]).ok()?;
            Some((channel, Bytes::from(data)))
        }
        _ => None,
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<WsOut>,
    protocol: Protocol,
    closed: CancellationToken,
) {
    while let Some(out) = rx.recv().await {
        let sent = match out {
            WsOut::Data { channel, data } => sink.send(encode(protocol, channel, &data)).await,
            WsOut::Close => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
                return;
            }
        };
        if sent.is_err() {
            closed.cancel();
            return;
        }
    }
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
        let Some((channel, data)) = decode(protocol, message) else { continue };
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

/// The guest's end of stdout or stderr.
struct ChannelWriter {
    channel: u8,
    tx: PollSender<WsOut>,
    /// Set by `finish`: nothing may follow the status.
    done: Arc<AtomicBool>,
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the exec client is gone or the session finished")
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.done.load(Ordering::Acquire) {
            return Poll::Ready(Err(broken()));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken())?;
        let n = buf.len().min(CHUNK);
        let data = WsOut::Data { channel: self.channel, data: Bytes::copy_from_slice(&buf[..n]) };
        self.tx.send_item(data).map_err(|_| broken())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// WebSocket channels have no half-close towards the client; the session's close ends them.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// How a WebSocket session ends.
pub(super) struct Finish {
    tx: mpsc::Sender<WsOut>,
    done: Arc<AtomicBool>,
    closed: CancellationToken,
    _writer: Abort,
    reader: Abort,
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
            let _ = (&mut self.reader.0).await;
        };
        if tokio::time::timeout(FINISH_GRACE, end).await.is_err() {
            tracing::debug!("the WebSocket exec client did not answer the close in time");
        }
        self.closed.cancel();
    }
}
