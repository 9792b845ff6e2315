//! Kubernetes' channel WebSocket messages (exec's `v4.channel.k8s.io` family, port-forward's
//! channels): binary messages start with their channel byte; base64 ones are text starting
//! with the channel as a digit, then the data in base64. Also the task that sends them and
//! the `AsyncWrite` of one channel.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

/// The most one client message may carry (client-go writes 32 KiB chunks): larger ones end
/// the session instead of being buffered whole.
pub const WS_MAX_MESSAGE: usize = 1 << 20;
/// The most one message this side sends carries.
const CHUNK: usize = 32 * 1024;

/// Why a client message cannot be read; the session is closed with 1007 and this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("a base64 message must start with a channel digit")]
    Channel,
    #[error("the data of a base64 message on channel {0} is not base64")]
    Base64(u8),
}

/// One message: the channel byte and the data, or (`base64`) the channel digit and the data
/// in base64, as text. A base64 channel is one digit: channels above 9 are sent as 9.
pub fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let text = format!("{}{}", char::from(b'0' + channel.min(9)), STANDARD.encode(data));
        return Message::text(text);
    }
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    Message::binary(message)
}

/// Reads one client message as (channel, data); `Ok(None)` for what carries no channel
/// data (control messages, empty messages, the other encoding's message type).
pub fn decode(base64: bool, message: Message) -> Result<Option<(u8, Bytes)>, Malformed> {
    match message {
        Message::Binary(bytes) if !base64 => Ok(bytes.first().map(|&channel| (channel, bytes.slice(1..)))),
        Message::Text(text) if base64 => {
            let Some((&first, data)) = text.as_bytes().split_first() else { return Ok(None) };
            let channel = match first {
                b'0'..=b'9' => first - b'0',
                _ => return Err(Malformed::Channel),
            };
            let data = STANDARD.decode(data).map_err(|_| Malformed::Base64(channel))?;
            Ok(Some((channel, Bytes::from(data))))
        }
        _ => Ok(None),
    }
}

/// A message to send.
pub enum WsOut {
    Data {
        channel: u8,
        data: Bytes,
    },
    /// Close the WebSocket normally (1000): the client's readers see end of file.
    Close,
    /// Close it because the client broke the protocol (1007, with the reason), then end
    /// the session.
    Fail(String),
}

/// Sends what `rx` carries until a close, a send error (which cancels `closed`), or every
/// sender is gone.
pub async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<WsOut>,
    base64: bool,
    closed: CancellationToken,
) {
    while let Some(out) = rx.recv().await {
        let sent = match out {
            WsOut::Data { channel, data } => sink.send(encode(base64, channel, &data)).await,
            WsOut::Close => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
                return;
            }
            WsOut::Fail(reason) => {
                let frame = CloseFrame { code: close_code::INVALID, reason: reason.into() };
                let _ = sink.send(Message::Close(Some(frame))).await;
                closed.cancel();
                return;
            }
        };
        if sent.is_err() {
            closed.cancel();
            return;
        }
    }
}

/// This side's end of one channel: each write is a message of at most 32 KiB, waiting while
/// the send queue is full.
pub struct ChannelWriter {
    channel: u8,
    tx: PollSender<WsOut>,
    /// Once set (exec: the status is sent), nothing more may be written.
    done: Arc<AtomicBool>,
}

impl ChannelWriter {
    pub fn new(channel: u8, tx: mpsc::Sender<WsOut>, done: Arc<AtomicBool>) -> ChannelWriter {
        ChannelWriter { channel, tx: PollSender::new(tx), done }
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client is gone or the session finished")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_by_their_encoding_and_malformed_ones_say_why() {
        let text = |t: &str| decode(true, Message::text(t));
        assert_eq!(text("0YWJj"), Ok(Some((0, Bytes::from_static(b"abc")))));
        assert_eq!(text("4"), Ok(Some((4, Bytes::new()))));
        assert_eq!(text(""), Ok(None));
        assert_eq!(text("é"), Err(Malformed::Channel), "a multibyte first character");
        assert_eq!(text("0é"), Err(Malformed::Base64(0)));
        assert_eq!(text("xYWJj"), Err(Malformed::Channel));
        assert_eq!(text("1!!"), Err(Malformed::Base64(1)));
        let binary = |b: &'static [u8]| decode(false, Message::binary(b));
        assert_eq!(binary(b"\x00hi"), Ok(Some((0, Bytes::from_static(b"hi")))));
        assert_eq!(binary(b""), Ok(None));
        assert_eq!(decode(false, Message::text("0YWJj")), Ok(None), "the other encoding");
        assert_eq!(decode(true, Message::binary(&b"\x00x"[..])), Ok(None));
    }

    #[test]
    fn what_is_encoded_decodes_back() {
        for base64 in [false, true] {
            for channel in [0u8, 3, 9] {
                let message = encode(base64, channel, b"\x00\xffdata");
                assert_eq!(decode(base64, message), Ok(Some((channel, Bytes::from_static(b"\x00\xffdata")))));
            }
        }
        assert_eq!(decode(false, encode(false, 255, b"x")), Ok(Some((255, Bytes::from_static(b"x")))));
        assert_eq!(decode(true, encode(true, 200, b"x")), Ok(Some((9, Bytes::from_static(b"x")))));
    }

    #[test]
    fn odd_messages_never_panic() {
        let alphabet = ['0', '4', '9', 'A', '=', '/', '+', 'é', '\u{1F600}', '\0', ' ', 'ÿ'];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = decode(true, Message::text(text.clone()));
            let _ = decode(false, Message::binary(text.into_bytes()));
        }
    }
}
