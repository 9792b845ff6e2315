//! The SPDY connection's reader task: it owns the read half, the header decompressor and the
//! table of streams, accepts the client's streams, feeds stdin and resize, answers PING, and
//! applies the client's flow-control updates.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::frame::{Frame, REFUSED_STREAM, SETTINGS_INITIAL_WINDOW_SIZE, read_frame};
use super::headers::{HeaderError, Inflater, parse_block};
use super::writer::{Out, SendWindow};
use crate::server::remotecommand::pipe::{self, Inbound, InboundReader};

/// SPDY/3's initial per-stream window.
pub(super) const INITIAL_WINDOW: i64 = 64 * 1024;
/// RST_STREAM status for a stream id out of order.
const PROTOCOL_ERROR: u32 = 1;

/// The role a client stream plays, from its `streamtype` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Kind {
    fn parse(streamtype: &str) -> Option<Kind> {
        Some(match streamtype {
            "error" => Kind::Error,
            "stdin" => Kind::Stdin,
            "stdout" => Kind::Stdout,
            "stderr" => Kind::Stderr,
            "resize" => Kind::Resize,
            _ => return None,
        })
    }
}

/// A stream the client opened, handed to whoever builds the session.
pub(super) struct Opened {
    pub(super) kind: Kind,
    pub(super) end: End,
}

/// This side's end of an opened stream.
pub(super) enum End {
    /// Data from the client (stdin, resize).
    In(InboundReader),
    /// Data to the client (stdout, stderr, error).
    Out(Arc<SendWindow>),
}

enum Stream {
    In(Inbound),
    Out(Arc<SendWindow>),
}

/// What the reader needs from the rest of the connection.
pub(super) struct Reader<R> {
    pub(super) r: R,
    pub(super) ctl: mpsc::UnboundedSender<Out>,
    pub(super) flow_control: Arc<AtomicBool>,
    pub(super) opened: mpsc::UnboundedSender<Opened>,
    pub(super) closed: CancellationToken,
}

/// Why the reader stopped before the client closed the connection cleanly.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("reading a frame: {0}")]
    Frame(#[from] super::frame::FrameError),
    #[error("reading a header block: {0}")]
    Headers(#[from] HeaderError),
}

struct State {
    inflater: Inflater,
    streams: HashMap<u32, Stream>,
    kinds: HashSet<Kind>,
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
            kinds: HashSet::new(),
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
                debug!(error = %e, "the SPDY exec connection failed");
                break;
            }
        }
        self.closed.cancel();
        for stream in state.streams.into_values() {
            if let Stream::Out(window) = stream {
                window.end();
            }
        }
    }

    async fn handle(&mut self, state: &mut State, frame: Frame) -> Result<(), ReadError> {
        match frame {
            Frame::SynStream { stream, fin, block } => {
                let headers = parse_block(&state.inflater.inflate(&block)?)?;
                self.open(state, stream, fin, &headers);
            }
            Frame::Data { stream, fin, data } => self.data(state, stream, fin, data).await,
            Frame::RstStream { stream, .. } => {
                if let Some(Stream::Out(window)) = state.streams.remove(&stream) {
                    window.end();
                }
            }
            Frame::Settings { entries } => {
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let change = value as i64 - state.initial_window;
                        state.initial_window = value as i64;
                        self.flow_control.store(true, Ordering::Release);
                        for stream in state.streams.values() {
                            if let Stream::Out(window) = stream {
                                window.grow(change);
                            }
                        }
                    }
                }
            }
            // Odd ids are the client's pings, to echo; even ones would answer ours (none sent).
            Frame::Ping { id } if !id.is_multiple_of(2) => {
                let _ = self.ctl.send(Out::Ping { id });
            }
            Frame::Ping { .. } => {}
            // The client is leaving; it may still send what it has in flight, so read on.
            Frame::GoAway { .. } => self.closed.cancel(),
            Frame::Headers { stream, fin, block } | Frame::SynReply { stream, fin, block } => {
                state.inflater.inflate(&block)?; // keeps the decompressor in step; nothing to use
                if fin {
                    self.data(state, stream, true, Bytes::new()).await;
                }
            }
            Frame::WindowUpdate { stream, delta } => {
                self.flow_control.store(true, Ordering::Release);
                if let Some(Stream::Out(window)) = state.streams.get(&stream) {
                    window.grow(delta as i64);
                }
            }
            Frame::Unknown { kind } => debug!(kind, "ignoring an unknown SPDY control frame"),
        }
        Ok(())
    }

    /// A SYN_STREAM: reply and hand the stream over, or refuse it.
    fn open(&mut self, state: &mut State, id: u32, fin: bool, headers: &[(String, String)]) {
        if id.is_multiple_of(2) || id <= state.last_id {
            let _ = self.ctl.send(Out::Reset { stream: id, status: PROTOCOL_ERROR });
            return;
        }
        state.last_id = id;
        let streamtype = headers.iter().find(|(name, _)| name == "streamtype").map(|(_, v)| v.as_str());
        let kind = match streamtype.and_then(Kind::parse) {
            Some(kind) if state.kinds.insert(kind) => kind,
            _ => {
                debug!(id, ?streamtype, "refusing an unknown or duplicate exec stream");
                let _ = self.ctl.send(Out::Reset { stream: id, status: REFUSED_STREAM });
                return;
            }
        };
        let end = match kind {
            Kind::Stdin | Kind::Resize => {
                let ctl = self.ctl.clone();
                let grant = move |n: usize| {
                    let _ = ctl.send(Out::WindowUpdate { stream: id, delta: n as u32 });
                };
                let (inbound, reader) = pipe::inbound(Some(Box::new(grant)));
                if !fin {
                    state.streams.insert(id, Stream::In(inbound));
                }
                End::In(reader)
            }
            Kind::Error | Kind::Stdout | Kind::Stderr => {
                let window = Arc::new(SendWindow::new(id, state.initial_window));
                state.streams.insert(id, Stream::Out(window.clone()));
                End::Out(window)
            }
        };
        // Queued before the session exists, so it goes out before any data on the stream.
        let _ = self.ctl.send(Out::Reply { stream: id });
        let _ = self.opened.send(Opened { kind, end });
    }

    /// Data (or a bare FIN) from the client.
    async fn data(&mut self, state: &mut State, id: u32, fin: bool, data: Bytes) {
        let len = data.len();
        let delivered = match state.streams.get(&id) {
            Some(Stream::In(inbound)) => inbound.send(data).await,
            _ => false,
        };
        // Data nobody will read still frees the client's window.
        if !delivered && len > 0 && !fin {
            let _ = self.ctl.send(Out::WindowUpdate { stream: id, delta: len as u32 });
        }
        if fin && matches!(state.streams.get(&id), Some(Stream::In(_))) {
            state.streams.remove(&id);
        }
    }
}
