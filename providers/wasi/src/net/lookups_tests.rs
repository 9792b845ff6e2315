//! The lookup budget against a stand-in resolver: black-holed names (a resolver that
//! blocks until the test lets it go) and names that answer at once.

use std::pin::pin;
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use super::*;
use crate::net::resolver::ResolveFn;

/// A stand-in resolver: names starting with `hole` block until [`Gate::open`]; any other
/// name answers 10.0.0.1. Counts the lookups that reached a thread.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    fn resolver(self: &Arc<Self>, threads: usize) -> Resolver {
        let gate = Arc::clone(self);
        let resolve: Arc<ResolveFn> = Arc::new(move |name: &str| {
            gate.entered.fetch_add(1, Ordering::SeqCst);
            if name.starts_with("hole") {
                let mut open = gate.open.lock().unwrap();
                while !*open {
                    open = gate.opened.wait(open).unwrap();
                }
            }
            Ok(vec![IpAddr::from([10, 0, 0, 1])])
        });
        Resolver::with_resolve(threads, resolve)
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits until `n` lookups reached a resolver thread.
    async fn entered(&self, n: usize) {
        while self.entered.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits until `n` of the pod's lookups are queued for a slot.
async fn queued(lookups: &Lookups, n: usize) {
    while lookups.inner.waiting.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ten() -> Vec<IpAddr> {
    vec![IpAddr::from([10, 0, 0, 1])]
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_pod_flooding_black_holed_names_does_not_delay_another_pod() {
    let gate = Arc::new(Gate::default());
    let resolver = gate.resolver(4);
    let flooding = Lookups::new(resolver.clone(), 2, LONG);
    let other = Lookups::new(resolver.clone(), 2, LONG);
    let mut held = Vec::new();
    for i in 0..2 + LOOKUP_QUEUE {
        held.push(tokio::spawn(flooding.resolve(&format!("hole{i}.example"))));
    }
    gate.entered(2).await;
    queued(&flooding, LOOKUP_QUEUE).await;
    // The flood is over its budget: more fail at once.
    assert_eq!(flooding.resolve("hole-more.example").await, Err(LookupError::Busy));
    // Another pod's lookup is answered while the flood's threads are still stuck (were it
    // behind them, it would run into its timeout instead).
    assert_eq!(other.resolve("fine.example").await, Ok(ten()));
    assert_eq!(resolver.threads(), 3);
    gate.open();
    for lookup in held {
        assert_eq!(lookup.await.unwrap(), Ok(ten()));
    }
}

#[tokio::test]
async fn a_lookup_over_the_queue_fails_when_first_polled() {
    let gate = Arc::new(Gate::default());
    let lookups = Lookups::new(gate.resolver(4), 1, LONG);
    let mut held = Vec::new();
    for i in 0..1 + LOOKUP_QUEUE {
        held.push(tokio::spawn(lookups.resolve(&format!("hole{i}.example"))));
    }
    gate.entered(1).await;
    queued(&lookups, LOOKUP_QUEUE).await;
    let mut over = pin!(lookups.resolve("hole-over.example"));
    let polled = over.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(matches!(polled, Poll::Ready(Err(LookupError::Busy))), "{polled:?}");
    gate.open();
    for lookup in held {
        assert_eq!(lookup.await.unwrap(), Ok(ten()));
    }
    // Slots and queue places were all given back.
    assert_eq!(lookups.resolve("fine.example").await, Ok(ten()));
}

#[tokio::test]
async fn a_lookup_past_its_timeout_fails_and_its_stuck_thread_still_counts() {
    let gate = Arc::new(Gate::default());
    let resolver = gate.resolver(1);
    let timeout = Duration::from_millis(100);
    let stuck = Lookups::new(resolver.clone(), 1, timeout);
    assert_eq!(stuck.resolve("hole.example").await, Err(LookupError::TimedOut));
    // The one thread is still in the black-holed lookup: no second thread is made, so
    // this lookup waits in the pool's queue and times out too.
    let other = Lookups::new(resolver.clone(), 1, timeout);
    assert_eq!(other.resolve("fine.example").await, Err(LookupError::TimedOut));
    assert_eq!(resolver.threads(), 1);
    // The stuck pod's slot is still held by its lookup.
    assert_eq!(stuck.resolve("fine.example").await, Err(LookupError::TimedOut));
    gate.open();
    let after = Lookups::new(resolver.clone(), 1, LONG);
    assert_eq!(after.resolve("fine.example").await, Ok(ten()));
    assert_eq!(resolver.threads(), 1);
}

#[tokio::test]
async fn addresses_skip_the_pool_and_names_are_checked() {
    let resolve: Arc<ResolveFn> = Arc::new(|name: &str| panic!("{name} reached the resolver"));
    let lookups = Lookups::new(Resolver::with_resolve(1, resolve), 1, LONG);
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    assert_eq!(lookups.resolve("10.1.2.3").await, Ok(vec![ip("10.1.2.3")]));
    assert_eq!(lookups.resolve("::ffff:127.0.0.1").await, Ok(vec![ip("127.0.0.1")]));
    assert_eq!(lookups.resolve("[::1]").await, Ok(vec![ip("::1")]));
    for bad in ["", "bad name", "a/b", "x:80"] {
        assert_eq!(lookups.resolve(bad).await, Err(LookupError::InvalidName), "{bad:?}");
    }
    assert!(matches!(parse_name("bücher.example"), Ok(Name::Domain(d)) if d == "xn--bcher-kva.example"));
}

#[test]
fn one_pod_never_holds_more_than_half_the_pool() {
    let resolver = Resolver::new(16);
    assert_eq!(Lookups::new(resolver.clone(), 100, LONG).max_in_flight(), 8);
    assert_eq!(Lookups::new(resolver.clone(), 0, LONG).max_in_flight(), 1);
    assert_eq!(Lookups::new(resolver, 4, LONG).max_in_flight(), 4);
    assert_eq!(Lookups::new(Resolver::new(1), 4, LONG).max_in_flight(), 1);
}
