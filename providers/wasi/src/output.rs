//! Guest output. [`SharedOutput`]: one stdout or stderr sink written by many guest
//! instances at once (an HTTP server's instance per request), through a bounded queue and
//! one writer task. [`DirectOutput`] (`direct.rs`): one guest's sink, written from its own
//! task.
//!
//! wasmtime-wasi's `AsyncStdoutStream` serves one instance: a second writer at the same
//! moment traps. Here every instance gets its own stream that queues whole lines (a
//! line longer than 64 KiB goes in pieces; an unfinished last line goes when the
//! instance ends), so instances never trap each other and their lines never mix,
//! even when the preview1 adapter splits one `printf` into several writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

mod direct;
pub(crate) use direct::DirectOutput;

/// A sink for a guest's standard output or error.
pub type Sink = Pin<Box<dyn AsyncWrite + Send + 'static>>;

/// How long a finished guest's buffered output may take to reach its sinks.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest chunk one guest write puts on the queue.
const CHUNK: usize = 64 * 1024;

/// Chunks queued before writers wait: with [`CHUNK`], at most 1 MiB per sink.
const QUEUE: usize = 16;

/// A sink shared by concurrent instances. Cloning is cheap: every clone feeds the same
/// writer task, which ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct SharedOutput {
    queue: mpsc::Sender<Bytes>,
}

/// The task that writes the queue to the caller's sink.
pub(crate) struct Writer(JoinHandle<()>);

impl SharedOutput {
    /// Starts the writer task for `sink` (or one that discards, for `None`).
    pub(crate) fn spawn(sink: Option<Sink>) -> (SharedOutput, Writer) {
        let (queue, chunks) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_all(sink, chunks));
        (SharedOutput { queue }, Writer(writer))
    }
}

impl Writer {
    /// Waits (bounded) until every queued chunk reached the sink. Call it after the
    /// last `SharedOutput` clone was dropped.
    pub(crate) async fn drain(self, within: Duration) {
        let mut task = self.0;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::debug!("guest output not drained within {within:?}");
            task.abort();
        }
    }
}

async fn write_all(sink: Option<Sink>, mut chunks: mpsc::Receiver<Bytes>) {
    let Some(mut sink) = sink else {
        while chunks.recv().await.is_some() {}
        return;
    };
    let mut failed = false;
    while let Some(chunk) = chunks.recv().await {
        if failed {
            continue; // keep draining so that writers never wait on a dead sink
        }
        if let Err(err) = sink.write_all(&chunk).await.and(sink.flush().await) {
            tracing::warn!(%err, "guest output sink failed; dropping further output");
            failed = true;
        }
    }
    let _ = sink.shutdown().await;
}

impl IsTerminal for SharedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SharedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Stream { queue: self.queue.clone(), permit: None, closed: false, line: BytesMut::new() })
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(AsyncStream(PollSender::new(self.queue.clone())))
    }
}

/// One instance's view: a reserved queue slot is what `check-write` grants; bytes after
/// the last newline wait in `line` (always shorter than [`CHUNK`]).
struct Stream {
    queue: mpsc::Sender<Bytes>,
    permit: Option<mpsc::OwnedPermit<Bytes>>,
    closed: bool,
    line: BytesMut,
}

impl Stream {
    /// Reserves a slot without waiting; false when the queue is full.
    fn try_reserve(&mut self) -> StreamResult<bool> {
        if self.permit.is_some() {
            return Ok(true);
        }
        match self.queue.clone().try_reserve_owned() {
            Ok(permit) => {
                self.permit = Some(permit);
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.closed = true;
                Err(StreamError::Closed)
            }
        }
    }
}

impl OutputStream for Stream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.line.len() + bytes.len() > CHUNK || !self.try_reserve()? {
            return Err(StreamError::trap("write exceeded what check-write allowed"));
        }
        self.line.extend_from_slice(&bytes);
        let whole = match self.line.iter().rposition(|byte| *byte == b'\n') {
            Some(newline) => newline + 1,
            None if self.line.len() == CHUNK => CHUNK,
            None => return Ok(()), // keep the slot for the rest of the line
        };
        if let Some(permit) = self.permit.take() {
            permit.send(self.line.split_to(whole).freeze());
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Whole lines are queued and reach the sink in order; an unfinished line waits
        // for its end (or the instance's), so that lines of instances never mix.
        if self.closed { Err(StreamError::Closed) } else { Ok(()) }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(if self.try_reserve()? { CHUNK - self.line.len() } else { 0 })
    }
}

impl Drop for Stream {
    /// The instance ended: its unfinished last line goes too, if there is room.
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let rest = self.line.split().freeze();
        match self.permit.take() {
            Some(permit) => {
                permit.send(rest);
            }
            None => {
                let _ = self.queue.try_send(rest);
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Stream {
    async fn ready(&mut self) {
        if self.permit.is_some() || self.closed {
            return;
        }
        match self.queue.clone().reserve_owned().await {
            Ok(permit) => self.permit = Some(permit),
            Err(_) => self.closed = true,
        }
    }
}

/// The same queue as an `AsyncWrite` (for wasmtime-wasi's preview3 host).
struct AsyncStream(PollSender<Bytes>);

impl AsyncWrite for AsyncStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "output closed");
        ready!(self.0.poll_reserve(cx)).map_err(|_| closed())?;
        let len = buf.len().min(CHUNK);
        self.0.send_item(Bytes::copy_from_slice(&buf[..len])).map_err(|_| closed())?;
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl AsyncWrite for Collect {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn many_streams_write_whole_chunks_to_one_sink() {
        let sink = Collect::default();
        let (output, writer) = SharedOutput::spawn(Some(Box::pin(sink.clone())));
        let mut streams: Vec<_> = (0..3).map(|_| output.p2_stream()).collect();
        for round in 0..40 {
            for (i, stream) in streams.iter_mut().enumerate() {
                let line = Bytes::from(format!("stream {i} line {round}\n"));
                stream.blocking_write_and_flush(line).await.unwrap();
            }
        }
        drop(streams);
        drop(output);
        writer.drain(Duration::from_secs(5)).await;
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 120);
        assert!(text.lines().all(|line| line.starts_with("stream ")), "{text}");
    }

    #[tokio::test]
    async fn a_full_queue_grants_nothing_until_drained() {
        let (queue, mut chunks) = mpsc::channel(1);
        let mut stream = Stream { queue, permit: None, closed: false, line: BytesMut::new() };
        assert_eq!(stream.check_write().unwrap(), CHUNK);
        stream.write(Bytes::from_static(b"a\n")).unwrap();
        assert_eq!(stream.check_write().unwrap(), 0);
        assert_eq!(chunks.recv().await.unwrap(), Bytes::from_static(b"a\n"));
        stream.ready().await;
        assert_eq!(stream.check_write().unwrap(), CHUNK);
        drop(chunks);
        stream.permit = None;
        assert!(matches!(stream.check_write(), Err(StreamError::Closed)));
    }

    #[tokio::test]
    async fn lines_are_kept_whole_and_the_last_goes_at_the_end() {
        let (queue, mut chunks) = mpsc::channel(8);
        let mut stream = Stream { queue, permit: None, closed: false, line: BytesMut::new() };
        for piece in ["GET /a", "\nGET", " /b", "\n", "tail"] {
            assert!(stream.check_write().unwrap() > 0);
            stream.write(Bytes::from_static(piece.as_bytes())).unwrap();
        }
        assert_eq!(chunks.recv().await.unwrap(), Bytes::from_static(b"GET /a\n"));
        assert_eq!(chunks.recv().await.unwrap(), Bytes::from_static(b"GET /b\n"));
        assert!(chunks.try_recv().is_err());
        drop(stream);
        assert_eq!(chunks.recv().await.unwrap(), Bytes::from_static(b"tail"));
    }

    #[tokio::test]
    async fn a_long_line_goes_in_chunks() {
        let (queue, mut chunks) = mpsc::channel(8);
        let mut stream = Stream { queue, permit: None, closed: false, line: BytesMut::new() };
        let mut written = 0;
        while written < CHUNK + 10 {
            let room = stream.check_write().unwrap().min(4096);
            stream.write(Bytes::from(vec![b'x'; room])).unwrap();
            written += room;
        }
        assert_eq!(chunks.recv().await.unwrap().len(), CHUNK);
        drop(stream);
        assert_eq!(chunks.recv().await.unwrap().len(), written - CHUNK);
    }
}
