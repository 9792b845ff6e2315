//! Everything this side sends on a SPDY connection: the one task that owns the write half (and
//! the header compressor), and the `AsyncWrite` of each outbound stream, which keeps to the
//! client's flow-control window.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};
use tracing::debug;

use super::frame::Frame;
use super::headers::{Deflater, HeaderError, encode_block};

/// The most one DATA frame carries.
const CHUNK: usize = 32 * 1024;
/// How much the writer gathers before writing to the socket.
const BATCH: usize = 64 * 1024;

/// A frame to send. Control frames that need no ordering against data go on the control
/// queue and window grants on the grant queue, which the writer drains first (both
/// bounded); everything else keeps its order on the data queue.
#[derive(Debug)]
pub(super) enum Out {
    /// SYN_REPLY with an empty header block.
    Reply {
        stream: u32,
    },
    Data {
        stream: u32,
        data: Bytes,
        fin: bool,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Ping {
        id: u32,
    },
    /// WINDOW_UPDATE for everything the stream owes the client when this is sent.
    Grant {
        stream: u32,
        owed: Arc<AtomicU64>,
    },
    Reset {
        stream: u32,
        status: u32,
    },
    /// Write what is queued, then shut the write half down.
    Close,
}

/// Runs the writer until `Close`, a write error (which cancels `closed`), or every sender is gone.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    mut deflater: Deflater,
    mut data: mpsc::Receiver<Out>,
    mut ctl: mpsc::Receiver<Out>,
    mut grants: mpsc::Receiver<Out>,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            biased;
            Some(out) = ctl.recv() => out,
            Some(out) = grants.recv() => out,
            Some(out) = data.recv() => out,
            else => break,
        };
        let (mut next, mut close) = (Some(first), false);
        while let Some(out) = next.take() {
            if let Out::Close = out {
                close = true;
                break;
            }
            if let Err(e) = encode(out, &mut deflater, &mut buf) {
                debug!(error = %e, "compressing a SPDY reply failed");
                closed.cancel();
                return;
            }
            if buf.len() < BATCH {
                next =
                    (ctl.try_recv().ok()).or_else(|| grants.try_recv().ok()).or_else(|| data.try_recv().ok());
            }
        }
        if let Err(e) = write(&mut w, &buf).await {
            debug!(error = %e, "writing to the SPDY client failed");
            closed.cancel();
            return;
        }
        buf.clear();
        if close {
            break;
        }
    }
    let _ = w.shutdown().await;
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

fn encode(out: Out, deflater: &mut Deflater, buf: &mut BytesMut) -> Result<(), HeaderError> {
    let frame = match out {
        Out::Reply { stream } => {
            let block = Bytes::from(deflater.deflate(&encode_block(&[]))?);
            Frame::SynReply { stream, fin: false, block }
        }
        Out::Data { stream, data, fin } => Frame::Data { stream, fin, data },
        Out::WindowUpdate { stream, delta } => Frame::WindowUpdate { stream, delta },
        Out::Grant { stream, owed } => {
            // A delta is 31 bits: a larger debt goes out in several frames.
            let mut owed = owed.swap(0, Ordering::AcqRel);
            while owed > 0 {
                let delta = owed.min(0x7fff_ffff) as u32;
                Frame::WindowUpdate { stream, delta }.encode(buf);
                owed -= u64::from(delta);
            }
            return Ok(());
        }
        Out::Ping { id } => Frame::Ping { id },
        Out::Reset { stream, status } => Frame::RstStream { stream, status },
        Out::Close => return Ok(()),
    };
    frame.encode(buf);
    Ok(())
}

/// The client's window for one outbound stream, and whether this side is done with it.
pub(super) struct SendWindow {
    id: u32,
    state: Mutex<WindowState>,
}

struct WindowState {
    /// Bytes the client will still take; below zero after a SETTINGS shrink or while flow
    /// control is not in force.
    available: i64,
    /// A writer waiting for window.
    waker: Option<Waker>,
    /// FIN sent, reset by the client, or the connection gone: no more data.
    done: bool,
}

impl SendWindow {
    pub(super) fn new(id: u32, initial: i64) -> SendWindow {
        SendWindow { id, state: Mutex::new(WindowState { available: initial, waker: None, done: false }) }
    }

    fn lock(&self) -> MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The client granted `delta` more bytes (or a SETTINGS change moved the window).
    pub(super) fn grow(&self, delta: i64) {
        let mut state = self.lock();
        state.available = state.available.saturating_add(delta);
        if state.available > 0
            && let Some(waker) = state.waker.take()
        {
            waker.wake();
        }
    }

    /// No more data may go out (reset, or connection gone); a waiting writer fails.
    pub(super) fn end(&self) {
        let mut state = self.lock();
        state.done = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Whether no more data may go out: FIN sent, reset by the client, or connection gone.
    pub(super) fn is_done(&self) -> bool {
        self.lock().done
    }

    /// Sends FIN unless this side already ended the stream.
    async fn fin(&self, data: &mpsc::Sender<Out>) {
        let first = !std::mem::replace(&mut self.lock().done, true);
        if first {
            let _ = data.send(Out::Data { stream: self.id, data: Bytes::new(), fin: true }).await;
        }
    }
}

/// Ends an outbound stream from elsewhere than its writer (exec ends stdout and stderr when
/// the command exits, whoever holds them).
pub struct FinHandle {
    window: Arc<SendWindow>,
    data: mpsc::Sender<Out>,
}

impl FinHandle {
    /// Half-closes the stream (FIN) unless that was done already.
    pub async fn fin(&self) {
        self.window.fin(&self.data).await;
    }
}

/// This side's end of an outbound stream (exec output, a forwarded connection's data).
pub struct OutStream {
    window: Arc<SendWindow>,
    tx: PollSender<Out>,
    /// The data queue itself, for [`FinHandle`]s.
    data: mpsc::Sender<Out>,
    /// Whether the client does flow control (it sent WINDOW_UPDATE or SETTINGS). client-go's
    /// spdystream does neither and relies on TCP, so windows are only enforced once it does.
    flow_control: Arc<AtomicBool>,
}

impl OutStream {
    pub(super) fn new(window: Arc<SendWindow>, tx: mpsc::Sender<Out>, flow_control: Arc<AtomicBool>) -> Self {
        OutStream { window, tx: PollSender::new(tx.clone()), data: tx, flow_control }
    }

    /// A handle that can end this stream later, wherever the stream has gone.
    pub fn fin_handle(&self) -> FinHandle {
        FinHandle { window: self.window.clone(), data: self.data.clone() }
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client is gone or closed the stream")
}

impl AsyncWrite for OutStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut n = buf.len().min(CHUNK);
        {
            let mut state = self.window.lock();
            if state.done {
                return Poll::Ready(Err(broken()));
            }
            if self.flow_control.load(Ordering::Acquire) {
                if state.available <= 0 {
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                n = n.min(state.available as usize);
            }
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken())?;
        let window = self.window.clone();
        let mut state = window.lock();
        if state.done {
            self.tx.abort_send();
            return Poll::Ready(Err(broken()));
        }
        state.available = state.available.saturating_sub(n as i64);
        let data = Bytes::copy_from_slice(&buf[..n]);
        self.tx.send_item(Out::Data { stream: window.id, data, fin: false }).map_err(|_| broken())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Each write is handed to the connection's writer, which flushes as it goes.
        Poll::Ready(Ok(()))
    }

    /// Half-closes the stream (FIN), as the kubelet does when the command closes its output.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.window.lock().done {
            return Poll::Ready(Ok(()));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken())?;
        let window = self.window.clone();
        let mut state = window.lock();
        if std::mem::replace(&mut state.done, true) {
            self.tx.abort_send();
            return Poll::Ready(Ok(()));
        }
        let fin = Out::Data { stream: window.id, data: Bytes::new(), fin: true };
        self.tx.send_item(fin).map_err(|_| broken())?;
        Poll::Ready(Ok(()))
    }
}
