//! The node-wide resolver pool: a few dedicated OS threads, made on demand, that run
//! guests' name lookups (`getaddrinfo`), never tokio's blocking pool, which runs every
//! guest's file I/O and the agent's image pulls. A thread stuck in a black-holed lookup
//! keeps counting against the pool until it returns, so the pool never grows past its size.

use std::collections::VecDeque;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// Default number of resolver threads on the node: how many lookups of all pods together
/// run at once.
pub const DEFAULT_RESOLVER_THREADS: usize = 16;

/// Why a lookup gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    /// The run may not look names up (its policy has no [`Lookups`](super::Lookups)).
    #[error("name lookups are not allowed")]
    NotAllowed,
    /// Not a domain name or an IP address.
    #[error("not a valid name")]
    InvalidName,
    /// The name does not exist or has no address.
    #[error("name unresolvable")]
    NameUnresolvable,
    /// The resolver failed for now (`EAI_AGAIN`).
    #[error("temporary resolver failure")]
    TemporaryFailure,
    /// The resolver failed for good (`EAI_FAIL`).
    #[error("permanent resolver failure")]
    PermanentFailure,
    /// The pod already has `max_in_flight` lookups running and the queue behind them is full.
    #[error("too many name lookups in flight")]
    Busy,
    /// No answer within the lookup timeout.
    #[error("the name lookup timed out")]
    TimedOut,
}

/// A resolver thread with nothing to do for this long ends (the next lookup makes one).
const IDLE_THREAD_LINGER: Duration = Duration::from_secs(10);

/// What turns a name into addresses: the system resolver, or a test's stand-in.
pub(crate) type ResolveFn = dyn Fn(&str) -> Result<Vec<IpAddr>, LookupError> + Send + Sync;

/// One lookup waiting for, or running on, a resolver thread. It holds its pod's lookup
/// slot until the thread is done with it, however long that takes.
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) reply: oneshot::Sender<Result<Vec<IpAddr>, LookupError>>,
    pub(crate) slot: OwnedSemaphorePermit,
}

/// The pool. Cheap to clone; every clone shares the threads.
#[derive(Clone)]
pub(crate) struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    resolve: Arc<ResolveFn>,
    max_threads: usize,
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads alive: idle, resolving, or stuck in a lookup.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
}

impl Resolver {
    /// A pool of at most `max_threads` (at least 1) threads using the system resolver.
    pub(crate) fn new(max_threads: usize) -> Self {
        Self::with_resolve(max_threads, Arc::new(system_resolve))
    }

    /// A pool whose threads call `resolve` instead of the system resolver (tests).
    pub(crate) fn with_resolve(max_threads: usize, resolve: Arc<ResolveFn>) -> Self {
        let shared = Shared {
            resolve,
            max_threads: max_threads.max(1),
            state: Mutex::default(),
            work: Condvar::new(),
        };
        Resolver { shared: Arc::new(shared) }
    }

    /// How many threads the pool may have.
    pub(crate) fn max_threads(&self) -> usize {
        self.shared.max_threads
    }

    /// Threads alive now (idle, busy or stuck).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        lock(&self.shared.state).threads
    }

    /// Queues `job`; a thread picks it up in order, made now if none is free and the pool
    /// is not full.
    pub(crate) fn submit(&self, job: Job) {
        let mut state = lock(&self.shared.state);
        state.queue.push_back(job);
        if state.queue.len() > state.idle && state.threads < self.shared.max_threads {
            state.threads += 1;
            let shared = Arc::clone(&self.shared);
            let spawned =
                std::thread::Builder::new().name("krustlet-resolver".into()).spawn(move || work(&shared));
            if let Err(err) = spawned {
                state.threads -= 1;
                tracing::warn!(%err, threads = state.threads,
                    "could not start a resolver thread; the lookup waits for a busy one");
            }
        }
        drop(state);
        self.shared.work.notify_one();
    }
}

/// A resolver thread: runs queued jobs in order, ends after lingering idle.
fn work(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            // A guest that gave up (timed out, dropped the lookup) needs no answer.
            if !job.reply.is_closed() {
                let answer = (shared.resolve)(&job.name);
                let _ = job.reply.send(answer);
            }
            drop(job.slot);
            state = lock(&shared.state);
            continue;
        }
        state.idle += 1;
        let (woken, waited) =
            shared.work.wait_timeout(state, IDLE_THREAD_LINGER).unwrap_or_else(PoisonError::into_inner);
        state = woken;
        state.idle -= 1;
        if waited.timed_out() && state.queue.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The system resolver (`getaddrinfo`, as configured by the node's `/etc/nsswitch.conf`,
/// `/etc/hosts` and `/etc/resolv.conf`): each address once, in the resolver's order,
/// IPv4-mapped IPv6 addresses turned into IPv4.
fn system_resolve(name: &str) -> Result<Vec<IpAddr>, LookupError> {
    let found = (name, 0).to_socket_addrs().map_err(|err| resolver_error(name, &err))?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for addr in found {
        let ip = addr.ip().to_canonical();
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    if addrs.is_empty() {
        return Err(LookupError::NameUnresolvable);
    }
    Ok(addrs)
}

/// What a failed `getaddrinfo` means for the guest. The standard library keeps only the
/// resolver's message (`gai_strerror`), so the kind is read from glibc's wording.
fn resolver_error(name: &str, err: &std::io::Error) -> LookupError {
    let message = err.to_string();
    tracing::debug!(name, error = %message, "guest name lookup failed");
    if message.contains("Temporary failure") {
        LookupError::TemporaryFailure
    } else if message.contains("Non-recoverable failure") {
        LookupError::PermanentFailure
    } else {
        LookupError::NameUnresolvable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_resolver_reads_the_hosts_file() {
        let addrs = system_resolve("localhost").unwrap();
        assert!(addrs.iter().all(|ip| ip.is_loopback()), "{addrs:?}");
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
    }

    #[test]
    fn a_resolver_message_becomes_the_guest_error() {
        let io = |text: &str| std::io::Error::other(text.to_owned());
        let named = |text| resolver_error("x", &io(text));
        assert_eq!(
            named("failed to lookup address information: Temporary failure in name resolution"),
            LookupError::TemporaryFailure
        );
        assert_eq!(
            named("failed to lookup address information: Name or service not known"),
            LookupError::NameUnresolvable
        );
        assert_eq!(
            named("failed to lookup address information: Non-recoverable failure in name resolution"),
            LookupError::PermanentFailure
        );
    }
}
