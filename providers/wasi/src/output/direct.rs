//! [`DirectOutput`]: one guest's stdout or stderr, written to its sink from the guest's own
//! task. wasmtime-wasi's `AsyncStdoutStream` spawns a writer task for each stream: two per
//! guest, alive as long as the guest, whether it writes or not. The agent's sinks (its log
//! files) take every write at once, so a guest's writes go straight through. The work is
//! charged to the guest's own task and its CPU. A sink that is not ready keeps the rest of
//! a write, and the guest waits for it in `ready`, as with any stream.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::Sink;

/// What `check-write` grants while nothing is left over: one write of at most this many
/// bytes.
const GRANT: usize = 64 * 1024;

/// A guest's output. Every view the guest opens on it (each `p2_stream`) shares the sink.
#[derive(Clone)]
pub(crate) struct DirectOutput(Arc<Mutex<State>>);

struct State {
    sink: Sink,
    /// Bytes a write handed over that the sink has not taken yet: until they are gone,
    /// nothing more is granted.
    left: Bytes,
    /// A flush asked for that the sink has not finished.
    flushing: bool,
    /// The sink failed: the next call gets the error, and every one after it `Closed`.
    failed: Option<io::Error>,
    closed: bool,
}

impl DirectOutput {
    pub(crate) fn new(sink: Sink) -> Self {
        DirectOutput(Arc::new(Mutex::new(State {
            sink,
            left: Bytes::new(),
            flushing: false,
            failed: None,
            closed: false,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a sink panicked mid-write; the state is still consistent.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Moves what is left over, then a flush asked for, into the sink as far as it goes.
    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.left.is_empty() && !self.closed {
            match self.sink.as_mut().poll_write(cx, &self.left) {
                Poll::Ready(Ok(0)) => self.fail(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => self.left.advance(n.min(self.left.len())),
                Poll::Ready(Err(err)) => self.fail(err),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.flushing && !self.closed {
            match self.sink.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flushing = false,
                Poll::Ready(Err(err)) => self.fail(err),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// As far as the sink goes without waiting.
    fn progress_now(&mut self) {
        let _ = self.poll_progress(&mut Context::from_waker(Waker::noop()));
    }

    fn fail(&mut self, err: io::Error) {
        tracing::debug!(%err, "guest output sink failed; the stream is closed");
        self.failed = Some(err);
        self.closed = true;
        self.left = Bytes::new();
        self.flushing = false;
    }

    fn check(&mut self) -> StreamResult<()> {
        if let Some(err) = self.failed.take() {
            return Err(StreamError::LastOperationFailed(wasmtime::Error::new(err)));
        }
        if self.closed { Err(StreamError::Closed) } else { Ok(()) }
    }

    fn idle(&self) -> bool {
        self.left.is_empty() && !self.flushing
    }
}

impl IsTerminal for DirectOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for DirectOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for DirectOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut state = self.state();
        state.check()?;
        if bytes.is_empty() {
            return Ok(());
        }
        if !state.idle() || bytes.len() > GRANT {
            return Err(StreamError::trap("write exceeded what check-write allowed"));
        }
        state.left = bytes;
        state.progress_now();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        let mut state = self.state();
        state.check()?;
        state.flushing = true;
        state.progress_now();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let mut state = self.state();
        state.progress_now();
        state.check()?;
        Ok(if state.idle() { GRANT } else { 0 })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for DirectOutput {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.state().poll_progress(cx)).await;
    }
}

/// The same sink for wasmtime-wasi's preview3 host, after anything left over.
impl AsyncWrite for DirectOutput {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        ready!(state.poll_progress(cx));
        if let Some(err) = state.failed.take() {
            return Poll::Ready(Err(err));
        }
        if state.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "output closed")));
        }
        state.sink.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        ready!(state.poll_progress(cx));
        if state.closed { Poll::Ready(Ok(())) } else { state.sink.as_mut().poll_flush(cx) }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        ready!(state.poll_progress(cx));
        if state.closed { Poll::Ready(Ok(())) } else { state.sink.as_mut().poll_shutdown(cx) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A sink that takes at most `step` bytes a call, none while `held`, and fails once
    /// `broken`.
    #[derive(Clone, Default)]
    struct Gate {
        got: Arc<Mutex<Vec<u8>>>,
        held: Arc<AtomicBool>,
        broken: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Gate {
        fn open(&self) {
            self.held.store(false, Ordering::SeqCst);
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }
        fn got(&self) -> Vec<u8> {
            self.got.lock().unwrap().clone()
        }
    }

    impl AsyncWrite for Gate {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            if self.broken.load(Ordering::SeqCst) {
                return Poll::Ready(Err(io::Error::other("disk full")));
            }
            if self.held.load(Ordering::SeqCst) {
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(4);
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_go_through_in_order_without_a_task() {
        let gate = Gate::default();
        let output = DirectOutput::new(Box::pin(gate.clone()));
        let (mut a, mut b) = (output.p2_stream(), output.p2_stream());
        assert_eq!(a.check_write().unwrap(), GRANT);
        a.write(Bytes::from_static(b"first line\n")).unwrap();
        // Nothing else ran (no task, no await): the write itself put it in the sink.
        assert_eq!(gate.got(), b"first line\n");
        b.blocking_write_and_flush(Bytes::from_static(b"second\n")).await.unwrap();
        assert_eq!(gate.got(), b"first line\nsecond\n");
    }

    #[tokio::test]
    async fn a_sink_not_ready_grants_nothing_until_it_takes_what_is_left() {
        let gate = Gate::default();
        gate.held.store(true, Ordering::SeqCst);
        let output = DirectOutput::new(Box::pin(gate.clone()));
        let mut stream = output.p2_stream();
        assert_eq!(stream.check_write().unwrap(), GRANT);
        stream.write(Bytes::from_static(b"held back\n")).unwrap();
        assert_eq!(stream.check_write().unwrap(), 0, "nothing more while bytes are left");
        assert!(stream.write(Bytes::from_static(b"x")).is_err(), "a write past the grant traps");
        let waiting = tokio::spawn(async move { stream.write_ready().await.map(|_| stream) });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        gate.open();
        let mut stream = waiting.await.unwrap().unwrap();
        assert_eq!(gate.got(), b"held back\n");
        assert_eq!(stream.check_write().unwrap(), GRANT);
    }

    #[tokio::test]
    async fn a_failed_sink_reports_once_then_is_closed() {
        let gate = Gate::default();
        let output = DirectOutput::new(Box::pin(gate.clone()));
        let mut stream = output.p2_stream();
        gate.broken.store(true, Ordering::SeqCst);
        stream.write(Bytes::from_static(b"lost\n")).unwrap();
        assert!(matches!(stream.check_write(), Err(StreamError::LastOperationFailed(_))));
        assert!(matches!(stream.check_write(), Err(StreamError::Closed)));
        assert!(matches!(output.p2_stream().write(Bytes::from_static(b"more")), Err(StreamError::Closed)));
    }
}
