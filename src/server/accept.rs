//! The kubelet API's accept loop: at most `--api-max-connections` connections at once (past
//! that, new ones wait in the kernel's accept queue), and a growing pause after a failed
//! accept (EMFILE, ENFILE, ENOBUFS: the process or the system is out of something), logged
//! once per run of failures instead of spinning on the error.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tracing::{info, warn};

/// The first pause after a failed accept (Go's `net/http` waits the same).
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause: a second, so the API comes back soon after descriptors free up.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Something connections are accepted from (a `TcpListener`; a fake in tests).
pub(super) trait Accept {
    type Conn;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>> + Send {
        tokio::net::TcpListener::accept(self)
    }
}

/// The pause after each failed accept: doubling from [`FIRST_PAUSE`] up to [`MAX_PAUSE`],
/// back to the start after an accept succeeds.
#[derive(Debug, Default)]
struct Backoff {
    /// Failures since the last success.
    failures: u64,
    pause: Duration,
}

impl Backoff {
    /// A failure: how long to pause, and whether it starts a run of failures.
    fn failed(&mut self) -> (Duration, bool) {
        self.failures += 1;
        self.pause = if self.failures == 1 { FIRST_PAUSE } else { (self.pause * 2).min(MAX_PAUSE) };
        (self.pause, self.failures == 1)
    }

    /// A success: how many failures came before it, if any.
    fn succeeded(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        (failures > 0).then_some(failures)
    }
}

/// Accepts until `shutdown`, handing each connection with its slot (released when the
/// connection's task drops it) to `serve`.
pub(super) async fn run<L: Accept>(
    listener: L,
    max_connections: u32,
    mut shutdown: broadcast::Receiver<()>,
    mut serve: impl FnMut(L::Conn, SocketAddr, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let mut backoff = Backoff::default();
    // Set while at or near the limit, so a flood is logged once, not at every connection.
    let mut at_limit = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                if at_limit && slots.available_permits() >= (max_connections as usize).div_ceil(10) {
                    at_limit = false;
                    info!("kubelet API: well below the connection limit again");
                }
                slot
            }
            Err(_) => {
                if !std::mem::replace(&mut at_limit, true) {
                    warn!(
                        max_connections,
                        "kubelet API: connection limit reached (--api-max-connections); new connections wait until one closes"
                    );
                }
                let waited = tokio::select! {
                    slot = slots.clone().acquire_owned() => slot,
                    _ = shutdown.recv() => return,
                };
                let Ok(slot) = waited else { return };
                slot
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.recv() => return,
        };
        match accepted {
            Ok((conn, peer)) => {
                if let Some(failures) = backoff.succeeded() {
                    info!(failures, "kubelet API: accepting connections again");
                }
                serve(conn, peer, slot);
            }
            Err(e) => {
                let (pause, first) = backoff.failed();
                if first {
                    warn!(error = %e, "kubelet API: accepting a connection failed; retrying with a growing pause (up to 1 s), logged once until an accept succeeds");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.recv() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fails with EMFILE `failures` times, then yields connections (numbered); after 1000
    /// calls it never answers again, so a spinning loop shows as a count, not a hang.
    struct Fake {
        calls: AtomicUsize,
        failures: usize,
    }

    impl Accept for Fake {
        type Conn = usize;
        fn accept(&self) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let failures = self.failures;
            async move {
                if n >= 1000 {
                    std::future::pending::<()>().await;
                }
                if n < failures {
                    return Err(io::Error::from_raw_os_error(24)); // EMFILE
                }
                Ok((n, SocketAddr::from(([127, 0, 0, 1], 1))))
            }
        }
    }

    #[test]
    fn the_pause_doubles_up_to_a_second_and_resets_on_success() {
        let mut b = Backoff::default();
        let pauses: Vec<_> = (0..12).map(|_| b.failed()).collect();
        assert_eq!(pauses[0], (FIRST_PAUSE, true));
        assert_eq!(pauses[1], (FIRST_PAUSE * 2, false));
        assert!(pauses.iter().all(|(p, _)| *p <= MAX_PAUSE));
        assert_eq!(pauses[11], (MAX_PAUSE, false));
        assert_eq!(b.succeeded(), Some(12));
        assert_eq!(b.succeeded(), None);
        assert_eq!(b.failed(), (FIRST_PAUSE, true));
    }

    #[tokio::test(start_paused = true)]
    async fn emfile_does_not_spin_the_loop() {
        let fake = Arc::new(Fake { calls: AtomicUsize::new(0), failures: usize::MAX });
        let (stop, rx) = broadcast::channel(1);
        let listener = FakeRef(fake.clone());
        let task = tokio::spawn(run(listener, 10, rx, |_, _, _| {}));
        // Ten virtual seconds of EMFILE: a spinning loop would call accept without end.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let calls = fake.calls.load(Ordering::SeqCst);
        assert!((5..=20).contains(&calls), "accept was called {calls} times in 10 s");
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_nothing_is_accepted_until_a_connection_closes() {
        let fake = Arc::new(Fake { calls: AtomicUsize::new(0), failures: 2 });
        let held = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = broadcast::channel(1);
        let sink = held.clone();
        let task = tokio::spawn(run(FakeRef(fake.clone()), 3, rx, move |conn, _, slot| {
            sink.lock().unwrap().push((conn, slot));
        }));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let accepted = || held.lock().unwrap().iter().map(|(c, _)| *c).collect::<Vec<_>>();
        assert_eq!(accepted(), vec![2, 3, 4], "three slots, after two failed accepts");
        drop(held.lock().unwrap().remove(0));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(accepted(), vec![3, 4, 5], "a closed connection frees one slot");
        let _ = stop.send(());
        task.await.unwrap();
    }

    struct FakeRef(Arc<Fake>);

    impl Accept for FakeRef {
        type Conn = usize;
        fn accept(&self) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
            self.0.accept()
        }
    }
}
