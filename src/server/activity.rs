//! What one kubelet API connection is doing, for its timeouts: waiting for a request's
//! headers (the read-header timeout), idle between requests (the idle timeout), serving a
//! request whose response may stream for hours, or upgraded to an exec stream (neither
//! times out). The IO wrapper reports bytes read; the service wrapper reports requests and
//! the end of their responses; [`Activity::expired`] says when the connection must close.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

/// Why a connection is closed by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The handshake and request headers did not arrive within the read-header timeout.
    Headers,
    /// No request came within the idle timeout.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests, since then; the next request's first byte has not come.
    Idle { since: Instant },
    /// A request's headers are coming and must be complete by then.
    Headers { deadline: Instant },
    /// This many requests are being served (their responses not yet fully sent).
    Busy { requests: usize },
    /// Handed over to an exec stream: this connection's HTTP timeouts are over.
    Upgraded,
}

/// `wait` after `from`, or a date too far to matter when that is beyond what `Instant` holds
/// (a timeout flag of a million hours must not panic).
pub fn after(from: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    const DAY: Duration = Duration::from_secs(86_400);
    (from.checked_add(wait.min(CENTURY))).or_else(|| from.checked_add(DAY)).unwrap_or(from)
}

/// The shared state of one connection.
pub struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Activity {
    /// A new connection: its first request's headers (the TLS handshake included) are due
    /// within `header_timeout` from now.
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Headers { deadline: after(Instant::now(), header_timeout) }),
            changed: Notify::new(),
            header_timeout,
            idle_timeout,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.lock() = phase;
        self.changed.notify_waiters();
    }

    /// Bytes arrived: on an idle connection, they begin a request whose headers are due.
    fn read(&self) {
        let mut phase = self.lock();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Headers { deadline: after(Instant::now(), self.header_timeout) };
            drop(phase);
            self.changed.notify_waiters();
        }
    }

    /// A request's headers are read: the connection is busy until the returned guard (moved
    /// into the response body) is dropped.
    pub fn begin(self: &Arc<Self>) -> Request {
        let requests = match *self.lock() {
            Phase::Busy { requests } => requests + 1,
            Phase::Upgraded => return Request(None),
            _ => 1,
        };
        self.set(Phase::Busy { requests });
        Request(Some(self.clone()))
    }

    /// The response switched protocols: nothing here times out any more.
    pub fn upgraded(&self) {
        self.set(Phase::Upgraded);
    }

    /// Resolves when the connection must be closed, and why. Never resolves while a request
    /// is served or after an upgrade.
    pub async fn expired(&self) -> Expiry {
        loop {
            // Registered before the phase is read, so no change is missed.
            let changed = self.changed.notified();
            let phase = *self.lock();
            let (deadline, why) = match phase {
                Phase::Idle { since } => (after(since, self.idle_timeout), Expiry::Idle),
                Phase::Headers { deadline } => (deadline, Expiry::Headers),
                Phase::Busy { .. } | Phase::Upgraded => {
                    changed.await;
                    continue;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if *self.lock() == phase {
                        return why;
                    }
                }
                _ = changed => {}
            }
        }
    }
}

/// One request being served; dropping it (when the response body is done or dropped) makes
/// the connection idle once no other request is in progress.
pub struct Request(Option<Arc<Activity>>);

impl Drop for Request {
    fn drop(&mut self) {
        let Some(activity) = self.0.take() else { return };
        let next = match *activity.lock() {
            Phase::Busy { requests } if requests > 1 => Phase::Busy { requests: requests - 1 },
            Phase::Busy { .. } => Phase::Idle { since: Instant::now() },
            _ => return,
        };
        activity.set(next);
    }
}

/// A response body that holds its request's [`Request`] guard until it ends.
pub fn tracked(body: Body, request: Request) -> Body {
    Body::new(Tracked { body, request: Some(request) })
}

struct Tracked {
    body: Body,
    request: Option<Request>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.request = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream that tells its [`Activity`] when bytes arrive, and holds the
/// connection's places under the connection caps until it is dropped: after an upgrade the
/// exec session owns it, so a session counts against the caps for as long as it lasts.
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
    _slots: Vec<OwnedSemaphorePermit>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, activity: Arc<Activity>, slots: Vec<OwnedSemaphorePermit>) -> Self {
        Watched { io, activity, _slots: slots }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(90);

    /// Whether the connection has expired after `wait` more (virtual) time.
    async fn expires_within(activity: &Activity, wait: Duration) -> Option<Expiry> {
        tokio::time::timeout(wait, activity.expired()).await.ok()
    }

    #[tokio::test]
    async fn the_stream_holds_its_slots_until_dropped() {
        let caps = Arc::new(tokio::sync::Semaphore::new(2));
        let slots = vec![caps.clone().try_acquire_owned().unwrap()];
        let (io, _peer) = tokio::io::duplex(64);
        let watched = Watched::new(io, Activity::new(HEADERS, IDLE), slots);
        assert_eq!(caps.available_permits(), 1);
        drop(watched);
        assert_eq!(caps.available_permits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_timeouts_are_far_deadlines_not_a_panic() {
        let a = Activity::new(Duration::MAX, Duration::MAX);
        drop(a.begin());
        a.read();
        assert_eq!(expires_within(&a, Duration::from_secs(3600)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_headers_in_time() {
        let a = Activity::new(HEADERS, IDLE);
        assert_eq!(expires_within(&a, HEADERS + Duration::from_millis(1)).await, Some(Expiry::Headers));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_after_the_idle_timeout_and_a_new_request_restarts_the_clock() {
        let a = Activity::new(HEADERS, IDLE);
        drop(a.begin());
        assert_eq!(expires_within(&a, IDLE - Duration::from_secs(1)).await, None);
        // A byte of the next request: its headers are now due within the header timeout.
        a.read();
        assert_eq!(expires_within(&a, HEADERS + Duration::from_millis(1)).await, Some(Expiry::Headers));
        let a = Activity::new(HEADERS, IDLE);
        drop(a.begin());
        assert_eq!(expires_within(&a, IDLE + Duration::from_millis(1)).await, Some(Expiry::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_response_or_an_upgrade_never_expires() {
        let a = Activity::new(HEADERS, IDLE);
        let request = a.begin();
        a.read(); // a pipelined byte while busy changes nothing
        assert_eq!(expires_within(&a, Duration::from_secs(4 * 3600)).await, None);
        let second = a.begin();
        drop(request);
        assert_eq!(expires_within(&a, IDLE * 2).await, None, "one request still runs");
        drop(second);
        assert_eq!(expires_within(&a, IDLE + Duration::from_millis(1)).await, Some(Expiry::Idle));

        let a = Activity::new(HEADERS, IDLE);
        let request = a.begin();
        a.upgraded();
        drop(request);
        a.read();
        assert_eq!(expires_within(&a, Duration::from_secs(24 * 3600)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_guard_ends_the_request_when_the_body_ends() {
        let a = Activity::new(HEADERS, IDLE);
        let body = tracked(Body::from("done"), a.begin());
        assert_eq!(expires_within(&a, IDLE * 2).await, None, "busy while the body is unsent");
        assert_eq!(axum::body::to_bytes(body, 100).await.unwrap(), "done");
        assert_eq!(expires_within(&a, IDLE + Duration::from_millis(1)).await, Some(Expiry::Idle));
    }
}
