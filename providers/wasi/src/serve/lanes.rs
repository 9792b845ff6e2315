//! Lanes: how many of a served artifact's requests may be starting or running their
//! instance at once. The rest wait their turn in order, holding no instance yet, so that
//! under load a few of the node's pool slots are used over and over (their pages and the
//! caches stay warm) instead of one per connection, each cold when its turn comes.
//!
//! A lane bounds work on the CPU, not requests: a request gives its lane up as soon as its
//! guest stops executing wasm to wait (for its request body, an outgoing call, a timer,
//! a throttled CPU quota), and at its first yield after [`LANE_LEASE`] when it computes,
//! and then runs on without one. So a slow client (a body trickled a byte at a time)
//! or a long request holds a lane for at most about [`LANE_LEASE`] and one epoch tick; it
//! never keeps the pod's other requests waiting. The per-pod caps still bound what runs:
//! the concurrency cap counts waiting requests too (one beyond it gets a 503 at once), a
//! wait ends at the request timeout (a 500), and the pod's memory limit is charged by
//! instances whether they hold a lane or not.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ticker::WasmProbe;

/// How long a request's guest may keep its lane while it computes: at its first yield
/// (every epoch tick, 10 ms by default) after this long it gives it up and runs on without
/// one. A request that needs more CPU than this then shares the CPU as all do, without
/// keeping the next request from starting.
pub const LANE_LEASE: Duration = Duration::from_millis(5);

/// A served artifact's lanes (`None`: unbounded, every request starts at once).
pub(crate) struct Lanes(Option<Arc<Semaphore>>);

/// A request's lane, while it holds it.
pub(crate) struct Lane {
    permit: Option<OwnedSemaphorePermit>,
    since: Instant,
}

impl Lanes {
    /// `count` lanes; 0 for no bound.
    pub(crate) fn new(count: usize) -> Self {
        Lanes((count > 0).then(|| Arc::new(Semaphore::new(count))))
    }

    /// Waits for a lane (first come, first served).
    pub(crate) async fn enter(&self) -> Lane {
        let permit = match &self.0 {
            // The semaphore is never closed: a failure would only mean no lane to wait for.
            Some(lanes) => Arc::clone(lanes).acquire_owned().await.ok(),
            None => None,
        };
        Lane { permit, since: Instant::now() }
    }
}

impl Lane {
    /// Runs `guest` (whose executing wasm or not `probe` tells) until it ends, giving the
    /// lane up at the first suspension where the guest waits outside wasm or has held the
    /// lane for [`LANE_LEASE`]. The lane (if still held) goes back when `self` is dropped.
    pub(crate) async fn hold<F: Future>(&mut self, probe: &WasmProbe, guest: F) -> F::Output {
        let mut guest = pin!(guest);
        std::future::poll_fn(|cx| {
            let polled = guest.as_mut().poll(cx);
            if polled.is_pending()
                && self.permit.is_some()
                && (!probe.executing() || self.since.elapsed() >= LANE_LEASE)
            {
                self.permit = None;
            }
            polled
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Poll;

    /// A guest that is pending until `done` is set.
    async fn guest(done: &AtomicBool) -> &'static str {
        std::future::poll_fn(|_| {
            if done.load(Ordering::SeqCst) { Poll::Ready("finished") } else { Poll::Pending }
        })
        .await
    }

    /// Polls `future` once.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
    }

    fn free(lanes: &Lanes) -> usize {
        lanes.0.as_ref().map_or(usize::MAX, |lanes| lanes.available_permits())
    }

    #[tokio::test]
    async fn a_request_beyond_the_lanes_waits_until_one_comes_back() {
        let lanes = Arc::new(Lanes::new(1));
        let first = lanes.enter().await;
        let waiting = Arc::clone(&lanes);
        let second = tokio::spawn(async move { waiting.enter().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "waits while the only lane is taken");
        drop(first);
        let lane = tokio::time::timeout(Duration::from_secs(10), second).await;
        assert!(lane.is_ok_and(|lane| lane.is_ok()), "gets the lane once it is back");
    }

    #[tokio::test]
    async fn no_lanes_means_no_waiting() {
        let lanes = Lanes::new(0);
        let _held: Vec<Lane> = vec![lanes.enter().await, lanes.enter().await, lanes.enter().await];
    }

    #[tokio::test]
    async fn a_guest_waiting_outside_wasm_gives_its_lane_up_and_runs_on() {
        let lanes = Lanes::new(1);
        let done = AtomicBool::new(false);
        let probe = WasmProbe::fixed(false);
        let mut lane = lanes.enter().await;
        let mut running = Box::pin(lane.hold(&probe, guest(&done)));
        assert!(poll_once(&mut running).await.is_pending());
        assert_eq!(free(&lanes), 1, "waiting in a host call, the guest holds no lane");
        done.store(true, Ordering::SeqCst);
        assert_eq!(poll_once(&mut running).await, Poll::Ready("finished"));
    }

    #[tokio::test]
    async fn a_computing_guest_keeps_its_lane_until_its_lease_ends_and_then_runs_on() {
        let lanes = Lanes::new(1);
        let done = AtomicBool::new(false);
        let probe = WasmProbe::fixed(true);
        let mut lane = lanes.enter().await;
        let mut running = Box::pin(lane.hold(&probe, guest(&done)));
        assert!(poll_once(&mut running).await.is_pending());
        assert_eq!(free(&lanes), 0, "a yield within the lease keeps the lane");
        tokio::time::sleep(LANE_LEASE).await;
        assert!(poll_once(&mut running).await.is_pending());
        assert_eq!(free(&lanes), 1, "the first yield after the lease gives it up");
        done.store(true, Ordering::SeqCst);
        assert_eq!(poll_once(&mut running).await, Poll::Ready("finished"));
    }

    #[tokio::test]
    async fn a_lane_comes_back_when_its_request_ends() {
        let lanes = Lanes::new(1);
        let done = AtomicBool::new(true);
        let probe = WasmProbe::fixed(true);
        let mut lane = lanes.enter().await;
        assert_eq!(lane.hold(&probe, guest(&done)).await, "finished");
        assert_eq!(free(&lanes), 0, "held until the request lets its lane go");
        drop(lane);
        assert_eq!(free(&lanes), 1);
    }
}
