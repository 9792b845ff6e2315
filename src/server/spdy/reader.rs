//! The SPDY connection's reader task: it owns the read half, the header decompressor and the
//! table of open streams; it asks the caller about each new stream, feeds what the client
//! sends to the accepted streams, answers PING, and applies the client's flow-control
//! updates. What it answers (replies, resets, pings, window updates) waits in a bounded
//! queue: a client that sends control frames without reading the answers is not read from
//! until it does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::frame::{Frame, REFUSED_STREAM, SETTINGS_INITIAL_WINDOW_SIZE, read_frame};
use super::headers::{HeaderError, Inflater, parse_block};
use super::writer::{Out, OutStream, SendWindow};
use super::{Decision, Headers, Limits, Stream};
use crate::server::inbound::{self, Inbound, OnConsumed};

/// SPDY/3's initial per-stream window.
pub(super) const INITIAL_WINDOW: i64 = 64 * 1024;
/// RST_STREAM status for a stream id out of order.
const PROTOCOL_ERROR: u32 = 1;

/// Asks the caller what to make of a new stream.
pub(super) type Decide = Box<dyn FnMut(u32, &Headers) -> Decision + Send>;

/// The reader's view of one open stream.
struct Entry {
    /// Where the client's data goes, until it half-closes or resets the stream.
    inbound: Option<Inbound>,
    /// What this side sends, for the client's window updates and resets.
    outbound: Option<Arc<SendWindow>>,
}

impl Entry {
    /// Whether either direction can still carry data.
    fn live(&self) -> bool {
        self.inbound.as_ref().is_some_and(|i| !i.is_closed())
            || self.outbound.as_ref().is_some_and(|w| !w.is_done())
    }
}

/// What the reader needs from the rest of the connection.
pub(super) struct Reader<R> {
    pub(super) r: R,
    /// Answers to the client, bounded ([`super::CONTROL_QUEUE`]).
    pub(super) ctl: mpsc::Sender<Out>,
    /// Window a consumer gave back by reading: at most one [`Out::Grant`] per inbound stream
    /// is queued at a time, so it needs room for two.
    pub(super) grants: mpsc::Sender<Out>,
    /// The data queue, for the outbound ends of accepted streams.
    pub(super) data: mpsc::Sender<Out>,
    pub(super) flow_control: Arc<AtomicBool>,
    pub(super) accepted: mpsc::Sender<Stream>,
    pub(super) decide: Decide,
    pub(super) limits: Limits,
    pub(super) closed: CancellationToken,
}

/// Why the reader stopped before the client closed the connection cleanly.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("reading a frame: {0}")]
    Frame(#[from] super::frame::FrameError),
    #[error("reading a header block: {0}")]
    Headers(#[from] HeaderError),
    #[error("the connection's writer is gone")]
    WriterGone,
}

struct State {
    inflater: Inflater,
    streams: HashMap<u32, Entry>,
    last_id: u32,
    initial_window: i64,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads until the client closes the connection or breaks the protocol; then cancels
    /// `closed`, ends every inbound stream (end of file) and fails every outbound one.
    pub(super) async fn run(mut self) {
        let mut state = State {
            inflater: Inflater::new(),
            streams: HashMap::new(),
            last_id: 0,
            initial_window: INITIAL_WINDOW,
        };
        loop {
            let step = match read_frame(&mut self.r).await {
                Ok(Some(frame)) => self.handle(&mut state, frame).await,
                Ok(None) => break,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = step {
                debug!(error = %e, "the SPDY connection failed");
                break;
            }
        }
        self.closed.cancel();
        for entry in state.streams.into_values() {
            if let Some(window) = entry.outbound {
                window.end();
            }
        }
    }

    async fn handle(&mut self, state: &mut State, frame: Frame) -> Result<(), ReadError> {
        match frame {
            Frame::SynStream { stream, fin, block } => {
                let headers = Headers(parse_block(&state.inflater.inflate(&block)?)?);
                self.open(state, stream, fin, headers).await?;
            }
            Frame::Data { stream, fin, data } => self.data(state, stream, fin, data).await?,
            Frame::RstStream { stream, .. } => {
                if let Some(entry) = state.streams.remove(&stream)
                    && let Some(window) = entry.outbound
                {
                    window.end();
                }
            }
            Frame::Settings { entries } => {
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let change = value as i64 - state.initial_window;
                        state.initial_window = value as i64;
                        self.flow_control.store(true, Ordering::Release);
                        for window in state.streams.values().filter_map(|e| e.outbound.as_ref()) {
                            window.grow(change);
                        }
                    }
                }
            }
            // Odd ids are the client's pings, to echo; even ones would answer ours (none sent).
            Frame::Ping { id } if !id.is_multiple_of(2) => self.answer(Out::Ping { id }).await?,
            Frame::Ping { .. } => {}
            // The client is leaving; it may still send what it has in flight, so read on.
            Frame::GoAway { .. } => self.closed.cancel(),
            Frame::Headers { stream, fin, block } | Frame::SynReply { stream, fin, block } => {
                state.inflater.inflate(&block)?; // keeps the decompressor in step; nothing to use
                if fin {
                    self.data(state, stream, true, Bytes::new()).await?;
                }
            }
            Frame::WindowUpdate { stream, delta } => {
                self.flow_control.store(true, Ordering::Release);
                if let Some(window) = state.streams.get(&stream).and_then(|e| e.outbound.as_ref()) {
                    window.grow(delta as i64);
                }
            }
            Frame::Unknown { kind } => debug!(kind, "ignoring an unknown SPDY control frame"),
        }
        Ok(())
    }

    /// Queues an answer, waiting while the queue is full (the client is not reading).
    async fn answer(&mut self, out: Out) -> Result<(), ReadError> {
        self.ctl.send(out).await.map_err(|_| ReadError::WriterGone)
    }

    /// A SYN_STREAM: reply and hand the stream over, or refuse it.
    async fn open(
        &mut self,
        state: &mut State,
        id: u32,
        fin: bool,
        headers: Headers,
    ) -> Result<(), ReadError> {
        if id.is_multiple_of(2) || id <= state.last_id {
            return self.answer(Out::Reset { stream: id, status: PROTOCOL_ERROR }).await;
        }
        state.last_id = id;
        if state.streams.len() >= self.limits.max_streams {
            state.streams.retain(|_, entry| entry.live());
        }
        let decision = if self.accepted.is_closed() {
            Decision::Refuse // nobody takes streams any more
        } else if state.streams.len() >= self.limits.max_streams {
            debug!(id, max = self.limits.max_streams, "refusing a SPDY stream: too many open");
            Decision::Refuse
        } else {
            (self.decide)(id, &headers)
        };
        let Decision::Accept { inbound, outbound } = decision else {
            return self.answer(Out::Reset { stream: id, status: REFUSED_STREAM }).await;
        };
        let (feed, reader) = match inbound {
            Some(capacity) if !fin => {
                let (feed, reader) = inbound::inbound(capacity, Some(grant(id, self.grants.clone())));
                (Some(feed), Some(reader))
            }
            // Already half-closed by the client: an empty stream.
            Some(_) => (None, Some(inbound::inbound(1, None).1)),
            None => (None, None),
        };
        let window = outbound.then(|| Arc::new(SendWindow::new(id, state.initial_window)));
        let entry = Entry { inbound: feed, outbound: window.clone() };
        state.streams.insert(id, entry);
        // Queued before the stream is handed over, so it goes out before any data on it.
        self.answer(Out::Reply { stream: id }).await?;
        let outbound = window.map(|w| OutStream::new(w, self.data.clone(), self.flow_control.clone()));
        // Fails only once the caller stopped taking streams: the stream then goes unused.
        let _ = self.accepted.send(Stream { id, headers, inbound: reader, outbound }).await;
        Ok(())
    }

    /// Data (or a bare FIN) from the client.
    async fn data(&mut self, state: &mut State, id: u32, fin: bool, data: Bytes) -> Result<(), ReadError> {
        let len = data.len();
        let delivered = match state.streams.get(&id).and_then(|e| e.inbound.as_ref()) {
            Some(inbound) => inbound.send(data).await,
            None => false,
        };
        if fin && let Some(entry) = state.streams.get_mut(&id) {
            entry.inbound = None;
        }
        // Data nobody will read still frees the client's window.
        if !delivered && len > 0 && !fin {
            self.answer(Out::WindowUpdate { stream: id, delta: len as u32 }).await?;
        }
        Ok(())
    }
}

/// What an inbound stream's reader calls as the consumer reads: the bytes are added to what
/// the stream owes the client, and a [`Out::Grant`] is queued only when none is pending, so
/// grants never pile up however the consumer reads; the writer sends all that is owed when
/// it takes the grant.
fn grant(stream: u32, grants: mpsc::Sender<Out>) -> OnConsumed {
    let owed = Arc::new(AtomicU64::new(0));
    Box::new(move |n: usize| {
        if owed.fetch_add(n as u64, Ordering::AcqRel) == 0 {
            let _ = grants.try_send(Out::Grant { stream, owed: owed.clone() });
        }
    })
}
