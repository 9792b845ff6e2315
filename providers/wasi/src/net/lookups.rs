//! [`Lookups`]: one pod's name lookups on the node's resolver pool, under a budget — at
//! most `max_in_flight` at once, a few more waiting, each within a timeout — so that a pod
//! flooding black-holed names neither grows the pool nor delays another pod's lookups.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::resolver::{Job, LookupError, Resolver};

/// Default time one lookup may take, waiting for a slot included; past it the guest gets
/// `temporary-resolver-failure` (the resolver thread may still be stuck in it).
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many of a pod's lookups may wait for one of its `max_in_flight` slots; one more
/// fails at once with `temporary-resolver-failure`.
pub const LOOKUP_QUEUE: usize = 16;

/// A pod's handle on the node's resolver pool, from
/// [`Runtime::lookups`](crate::Runtime::lookups). Cheap to clone: every clone (every run
/// and request instance of the pod it is given to) shares the one budget.
#[derive(Clone)]
pub struct Lookups {
    inner: Arc<Budget>,
}

struct Budget {
    resolver: Resolver,
    /// One permit per lookup allowed on a resolver thread at once.
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    /// Lookups waiting for a slot.
    waiting: AtomicUsize,
    timeout: Duration,
}

impl fmt::Debug for Lookups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookups")
            .field("max_in_flight", &self.inner.max_in_flight)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Lookups {
    /// A budget of `max_in_flight` lookups at once on `resolver`: at least 1, and at most
    /// half the pool (rounded up), so one pod never holds every thread.
    pub(crate) fn new(resolver: Resolver, max_in_flight: usize, timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.clamp(1, resolver.max_threads().div_ceil(2));
        let budget = Budget {
            resolver,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            waiting: AtomicUsize::new(0),
            timeout,
        };
        Lookups { inner: Arc::new(budget) }
    }

    /// The lookups this pod may have running at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight
    }

    /// Resolves `name` to its addresses, IPv4-mapped ones turned into IPv4. An IP address
    /// is returned as is, without a lookup; a Unicode name is looked up in its IDNA (ASCII)
    /// form. The timeout starts now, not when the future is first polled. A lookup over
    /// the budget fails when first polled.
    pub(crate) fn resolve(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<IpAddr>, LookupError>> + Send + 'static {
        let deadline = Instant::now() + self.inner.timeout;
        let budget = Arc::clone(&self.inner);
        let parsed = parse_name(name);
        async move {
            let domain = match parsed? {
                Name::Ip(ip) => return Ok(vec![ip]),
                Name::Domain(domain) => domain,
            };
            let slot = match Arc::clone(&budget.slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    let _waiting = Waiting::enter(&budget).ok_or(LookupError::Busy)?;
                    let acquired =
                        tokio::time::timeout_at(deadline, Arc::clone(&budget.slots).acquire_owned());
                    acquired.await.map_err(|_| LookupError::TimedOut)?.map_err(|_| LookupError::Busy)?
                }
            };
            let (reply, answer) = oneshot::channel();
            budget.resolver.submit(Job { name: domain, reply, slot });
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(LookupError::TemporaryFailure),
                Err(_) => Err(LookupError::TimedOut),
            }
        }
    }
}

/// A place in a pod's queue of lookups waiting for a slot; given back when dropped.
struct Waiting<'a>(&'a Budget);

impl<'a> Waiting<'a> {
    fn enter(budget: &'a Budget) -> Option<Self> {
        let queued = budget.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
            (waiting < LOOKUP_QUEUE).then_some(waiting + 1)
        });
        queued.ok().map(|_| Waiting(budget))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Name {
    Ip(IpAddr),
    Domain(String),
}

/// An IP address (bare or in brackets, IPv4-mapped ones turned into IPv4) or a domain
/// name in ASCII.
fn parse_name(name: &str) -> Result<Name, LookupError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Name::Ip(ip.to_canonical()));
    }
    match url::Host::parse(name) {
        Ok(url::Host::Domain(domain)) if !domain.is_empty() => Ok(Name::Domain(domain)),
        Ok(url::Host::Ipv4(ip)) => Ok(Name::Ip(IpAddr::V4(ip))),
        Ok(url::Host::Ipv6(ip)) => Ok(Name::Ip(IpAddr::V6(ip).to_canonical())),
        _ => Err(LookupError::InvalidName),
    }
}

#[cfg(test)]
#[path = "lookups_tests.rs"]
mod tests;
