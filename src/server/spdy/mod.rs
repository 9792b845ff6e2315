//! SPDY/3.1 connections of the kubelet API, for exec and port-forward alike: after the HTTP
//! upgrade the client opens streams whose headers say what each is for. This module reads and
//! writes the frames, keeps the header compression, flow control and bounded queues, asks
//! the caller what to make of each new stream ([`Decision`]), and hands the accepted ones over
//! with an `AsyncRead` for what the client sends and an `AsyncWrite` for what goes back.
//!
//! Bounds: answers wait in a queue of [`CONTROL_QUEUE`] (then the client is not read until it
//! reads), data in a queue of 64 frames of at most 32 KiB, each inbound stream holds what its
//! [`Decision`] allows, and at most [`Limits::max_streams`] streams are open at once (more are
//! refused with RST_STREAM).

mod frame;
mod headers;
mod reader;
#[cfg(test)]
pub(crate) mod test_client;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inbound::InboundReader;
pub use headers::HeaderError;
use tokio_util::task::AbortOnDropHandle;
use writer::Out;
pub use writer::{FinHandle, OutStream};

/// The `Upgrade` header value of a SPDY request and of the 101 answer.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The header carrying the offered (request) and chosen (101 answer) protocol versions.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// Answers (replies, resets, pings, window updates) that may wait to be written: past this,
/// the connection's reader stops reading until the client reads (HTTP/2 servers bound their
/// control frames the same way, against PING and RST floods).
const CONTROL_QUEUE: usize = 64;
/// Frames of data (each at most 32 KiB) that may wait to be written, for all streams.
const DATA_QUEUE: usize = 64;
/// Accepted streams waiting for the caller to take them; the reader waits beyond that.
const ACCEPTED_QUEUE: usize = 8;
/// How long [`Link::close`] waits for what is queued to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The headers of a stream the client opened: names lowercased, values as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What to make of a stream the client opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer RST_STREAM (REFUSED_STREAM): the stream is not used.
    Refuse,
    /// Reply and hand the stream over. `inbound`: read what the client sends, holding at
    /// most that many bytes unread (`None`: what it sends is dropped and its window given
    /// back). `outbound`: this side writes to the client on it.
    Accept { inbound: Option<usize>, outbound: bool },
}

/// Caps of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams open at once (not yet ended both ways); more are refused.
    pub max_streams: usize,
}

/// A stream the client opened and the caller accepted.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; end of file when it half-closes or resets the stream, or
    /// goes away. Dropping it drops what comes later.
    pub inbound: Option<InboundReader>,
    /// What this side sends; `shutdown` half-closes the stream (FIN).
    pub outbound: Option<OutStream>,
}

/// A SPDY connection being served.
pub struct Connection {
    /// Accepted streams, in the order the client opened them.
    pub accepted: mpsc::Receiver<Stream>,
    /// Cancelled when the client goes away (connection closed or broken, or GOAWAY).
    pub closed: CancellationToken,
    /// This side's hold on the connection.
    pub link: Link,
}

/// This side's hold on a connection: dropping it ends the connection at once.
pub struct Link {
    data: mpsc::Sender<Out>,
    writer: AbortOnDropHandle<()>,
    _reader: AbortOnDropHandle<()>,
}

impl Connection {
    /// Starts serving an upgraded connection: one task reads (and answers what needs an
    /// answer), one writes. `decide` is asked about each stream the client opens, with its id
    /// and headers.
    pub fn start<IO>(
        io: IO,
        limits: Limits,
        decide: impl FnMut(u32, &Headers) -> Decision + Send + 'static,
    ) -> Result<Connection, HeaderError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let deflater = headers::Deflater::new()?;
        let (r, w) = tokio::io::split(io);
        let closed = CancellationToken::new();
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let (ctl, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
        let (grants, grants_rx) = mpsc::channel(2);
        let (accepted_tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let flow_control = Arc::new(AtomicBool::new(false));
        let writer = AbortOnDropHandle::new(tokio::spawn(writer::run(
            w,
            deflater,
            data_rx,
            ctl_rx,
            grants_rx,
            closed.clone(),
        )));
        let reader = reader::Reader {
            r,
            ctl,
            grants,
            data: data.clone(),
            flow_control,
            accepted: accepted_tx,
            decide: Box::new(decide),
            limits,
            closed: closed.clone(),
        };
        let reader = AbortOnDropHandle::new(tokio::spawn(reader.run()));
        Ok(Connection { accepted, closed, link: Link { data, writer, _reader: reader } })
    }
}

impl Link {
    /// Writes what is queued, then shuts the connection down (waiting at most a second).
    pub async fn close(mut self) {
        let close = async {
            let _ = self.data.send(Out::Close).await;
            let _ = (&mut self.writer).await;
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
    }
}
