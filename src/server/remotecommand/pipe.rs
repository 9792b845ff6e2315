//! Data coming from the client (stdin, resize events): a byte-bounded queue from the connection's
//! reader to an `AsyncRead`, and the decoder that turns the resize stream into terminal sizes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{Semaphore, mpsc};

/// How many bytes from the client may wait unread before the connection's reader stops
/// reading (so a client that floods stdin of a guest that never reads it is held back by TCP).
const BUFFERED: usize = 1 << 20;

/// What the reader does with a chunk the guest consumed (SPDY: grant the client more window).
pub(super) type OnConsumed = Box<dyn FnMut(usize) + Send>;

/// The connection's end of an inbound stream. Dropping it is end of file for the reader.
pub(super) struct Inbound {
    tx: mpsc::UnboundedSender<Bytes>,
    budget: Arc<Semaphore>,
}

/// A new inbound stream: the end the connection feeds, and the guest's `AsyncRead`.
pub(super) fn inbound(on_consumed: Option<OnConsumed>) -> (Inbound, InboundReader) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(BUFFERED));
    let reader =
        InboundReader { rx, pending: Bytes::new(), pending_len: 0, budget: budget.clone(), on_consumed };
    (Inbound { tx, budget }, reader)
}

impl Inbound {
    /// Queues a chunk, waiting while too much is unread. `false` once the reader is gone (the
    /// data is dropped, as the kubelet drops it when nobody reads).
    pub(super) async fn send(&self, data: Bytes) -> bool {
        if data.is_empty() {
            return !self.tx.is_closed();
        }
        let permits = data.len().min(BUFFERED) as u32;
        match self.budget.acquire_many(permits).await {
            Ok(p) => p.forget(),
            Err(_) => return false,
        }
        self.tx.send(data).is_ok()
    }
}

/// Reads what the client sent on one stream; end of file when the client half-closed it, reset
/// it, or went away.
pub(super) struct InboundReader {
    rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
    pending_len: usize,
    budget: Arc<Semaphore>,
    on_consumed: Option<OnConsumed>,
}

impl AsyncRead for InboundReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(chunk) => {
                    this.pending_len = chunk.len();
                    this.pending = chunk;
                }
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        if this.pending.is_empty() {
            let len = std::mem::take(&mut this.pending_len);
            this.budget.add_permits(len.min(BUFFERED));
            if let Some(f) = this.on_consumed.as_mut() {
                f(len);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for InboundReader {
    fn drop(&mut self) {
        // Wake a connection reader waiting for budget: nobody will read any more.
        self.budget.close();
    }
}

/// A terminal size from the resize stream, as client-go encodes `TerminalSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Decodes the resize stream (JSON objects one after another, split anywhere) into sizes. Ends
/// when the stream ends, the receiver is dropped, or the client sends something that is not a
/// size (the kubelet stops reading resizes then too).
pub(super) fn resize_events(mut stream: InboundReader) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            let mut used = 0;
            while let Some(value) = values.next() {
                match value {
                    Ok(size) => {
                        used = values.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_eof() => break,
                    Err(_) => return,
                }
            }
            buf.drain(..used);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn chunks_are_read_in_order_then_end_of_file_and_consumption_is_reported() {
        let consumed = Arc::new(Mutex::new(Vec::new()));
        let seen = consumed.clone();
        let (tx, mut rx) = inbound(Some(Box::new(move |n| seen.lock().unwrap().push(n))));
        assert!(tx.send(Bytes::from_static(b"hello ")).await);
        assert!(tx.send(Bytes::from_static(b"world")).await);
        drop(tx);
        let mut small = [0u8; 4];
        assert_eq!(rx.read(&mut small).await.unwrap(), 4);
        assert!(consumed.lock().unwrap().is_empty(), "reported only once a chunk is used up");
        let mut rest = Vec::new();
        rx.read_to_end(&mut rest).await.unwrap();
        assert_eq!([&small[..], &rest].concat(), b"hello world");
        assert_eq!(*consumed.lock().unwrap(), vec![6, 5]);
    }

    #[tokio::test]
    async fn a_flood_waits_for_the_reader_and_a_gone_reader_releases_it() {
        let (tx, rx) = inbound(None);
        assert!(tx.send(Bytes::from(vec![0u8; BUFFERED])).await);
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(100), tx.send(Bytes::from_static(b"x")));
        assert!(blocked.await.is_err(), "the budget is spent until the reader reads");
        drop(rx);
        assert!(!tx.send(Bytes::from_static(b"x")).await);
    }

    #[tokio::test]
    async fn resize_events_are_decoded_across_chunk_boundaries() {
        let (tx, rx) = inbound(None);
        let mut sizes = resize_events(rx);
        assert!(tx.send(Bytes::from_static(b"{\"Width\":80,\"Hei")).await);
        assert!(tx.send(Bytes::from_static(b"ght\":24}\n{\"Width\":120,\"Height\":40}\n")).await);
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 80, height: 24 }));
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 120, height: 40 }));
        assert!(tx.send(Bytes::from_static(b"not json")).await);
        assert_eq!(sizes.recv().await, None, "garbage ends the events");
    }
}
