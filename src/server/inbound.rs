//! Data coming from a kubelet API client on one stream (exec stdin and resize, a forwarded
//! connection's bytes): a byte-bounded queue from the connection's reader to an `AsyncRead`.
//! While the queue is full the reader waits, so a client that sends faster than the consumer
//! reads is held back by TCP instead of being buffered without end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{Semaphore, mpsc};

/// What the reader does with a chunk the consumer used up (SPDY: grant the client more window).
pub type OnConsumed = Box<dyn FnMut(usize) + Send>;

/// The connection's end of an inbound stream. Dropping it is end of file for the reader.
pub struct Inbound {
    tx: mpsc::UnboundedSender<Bytes>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

/// A new inbound stream holding at most `capacity` bytes unread (at least 1): the end the
/// connection feeds, and the consumer's `AsyncRead`.
pub fn inbound(capacity: usize, on_consumed: Option<OnConsumed>) -> (Inbound, InboundReader) {
    let capacity = capacity.clamp(1, u32::MAX as usize).min(Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(capacity));
    let reader =
        InboundReader { rx, pending: Bytes::new(), pending_len: 0, budget: budget.clone(), on_consumed };
    (Inbound { tx, budget, capacity }, reader)
}

impl Inbound {
    /// Queues a chunk, waiting while too much is unread. A chunk larger than the capacity is
    /// queued in copied pieces of the capacity, so what waits never pins more than that.
    /// `false` once the reader is gone (the data is dropped, as the kubelet drops it when
    /// nobody reads).
    pub async fn send(&self, data: Bytes) -> bool {
        if data.is_empty() {
            return !self.tx.is_closed();
        }
        if data.len() <= self.capacity {
            return self.queue(data).await;
        }
        for piece in data.chunks(self.capacity) {
            if !self.queue(Bytes::copy_from_slice(piece)).await {
                return false;
            }
        }
        true
    }

    async fn queue(&self, data: Bytes) -> bool {
        match self.budget.acquire_many(data.len() as u32).await {
            Ok(p) => p.forget(),
            Err(_) => return false,
        }
        self.tx.send(data).is_ok()
    }

    /// Whether the reader is gone: nothing sent any more will be read.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Reads what the client sent on one stream; end of file when the client half-closed it, reset
/// it, or went away.
pub struct InboundReader {
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
            this.budget.add_permits(len);
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
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn chunks_are_read_in_order_then_end_of_file_and_consumption_is_reported() {
        let consumed = Arc::new(Mutex::new(Vec::new()));
        let seen = consumed.clone();
        let (tx, mut rx) = inbound(MIB, Some(Box::new(move |n| seen.lock().unwrap().push(n))));
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
        let (tx, rx) = inbound(MIB, None);
        assert!(tx.send(Bytes::from(vec![0u8; MIB])).await);
        let blocked = tokio::time::timeout(Duration::from_millis(100), tx.send(Bytes::from_static(b"x")));
        assert!(blocked.await.is_err(), "the budget is spent until the reader reads");
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert!(!tx.send(Bytes::from_static(b"x")).await);
    }

    /// A chunk larger than the budget goes through in pieces as the reader reads, and never
    /// holds more than the budget unread.
    #[tokio::test]
    async fn a_chunk_larger_than_the_budget_goes_in_pieces() {
        let consumed = Arc::new(Mutex::new(Vec::new()));
        let seen = consumed.clone();
        let (tx, mut rx) = inbound(1000, Some(Box::new(move |n| seen.lock().unwrap().push(n))));
        let big: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let sender = tokio::spawn({
            let big = Bytes::from(big.clone());
            async move {
                assert!(tx.send(big).await);
            }
        });
        let mut got = vec![0u8; 2500];
        rx.read_exact(&mut got).await.unwrap();
        sender.await.unwrap();
        assert_eq!(got, big);
        assert_eq!(*consumed.lock().unwrap(), vec![1000, 1000, 500]);
    }
}
