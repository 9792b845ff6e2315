//! The spare instance of a served artifact: one instance made ahead of the next request
//! (while the current one runs, on another guest thread when one is free), so that the
//! next request starts in a ready instance instead of waiting for its instantiation.
//!
//! Every request still gets an instance of its own, used once: a spare is what that
//! request would have instantiated, made a little earlier. A server has a spare only
//! while it is busy: none before its first request, and the spare is dropped when no
//! request took it for [`SPARE_IDLE`], so an idle served pod holds no instance, no pool
//! slot and no timer. At most one spare is being made at a time, and only once the
//! request that asks for it has its own instance, so a spare never takes the last slot of
//! the node's instance pool from the request that made room for it; a request that finds
//! no spare instantiates its own, as without spares. (A spare made while the pool is
//! nearly full can still hold a slot another pod's request then misses: one per busy
//! served artifact.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::instrument::WithSubscriber;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::Server;
use crate::host::ProxyHost;
use crate::runtime::lock;
use crate::usage::Metered;

/// A spare that no request took for this long is dropped, and with it its memory (charged
/// to the run's cgroup, like a request's) and its slot in the node's instance pool. The
/// server makes the next one at its next request. A busy server keeps one spare; an idle
/// one costs nothing after this long.
pub(crate) const SPARE_IDLE: Duration = Duration::from_secs(5);

/// A server's spare: the ready instance, if any, and what is being done about it.
pub(crate) struct Spare {
    state: Mutex<State>,
    /// Counts the makes that ended (with a spare or not), for requests that wait for one.
    made: watch::Sender<u64>,
}

impl Default for Spare {
    fn default() -> Self {
        Spare { state: Mutex::default(), made: watch::channel(0).0 }
    }
}

#[derive(Default)]
struct State {
    ready: Option<Ready>,
    /// A task is making the next spare.
    making: bool,
    /// A request waits for the spare being made (only one does: the others would wait
    /// for an instance all but one of them do not get).
    awaited: bool,
    /// A task drops the spare once it goes untaken for [`SPARE_IDLE`].
    reaping: bool,
    /// How many spares requests took so far.
    taken: u64,
}

/// An instance made ahead of its request.
pub(crate) struct Ready {
    pub(crate) store: Store<ProxyHost>,
    pub(crate) proxy: Proxy,
    /// How long its instantiation took (from building the store).
    pub(crate) took: Duration,
}

impl Spare {
    /// The ready instance, if there is one; while one is being made, the first request
    /// to ask waits for it rather than instantiate beside it (the spare could hold the
    /// pool slot or the memory that request needs); later ones make their own.
    pub(crate) async fn take(&self) -> Option<Ready> {
        let mut ended = {
            let mut state = lock(&self.state);
            if let Some(ready) = state.take() {
                return Some(ready);
            }
            if !state.making || state.awaited {
                return None;
            }
            state.awaited = true;
            // Subscribed while `making` holds: the make ends (and counts) after this.
            self.made.subscribe()
        };
        let _ = ended.changed().await;
        lock(&self.state).take()
    }

    /// Drops the ready instance (the server has stopped).
    pub(crate) fn clear(&self) {
        let ready = lock(&self.state).ready.take();
        drop(ready);
    }
}

impl State {
    fn take(&mut self) -> Option<Ready> {
        let ready = self.ready.take();
        if ready.is_some() {
            self.taken += 1;
        }
        ready
    }
}

/// Starts making the next spare on the server's tracker, unless one is ready or being
/// made, or the server drains. Its CPU is metered into the run like a request's.
pub(crate) fn refill(server: &Arc<Server>) {
    {
        let mut state = lock(&server.spare.state);
        if state.ready.is_some() || state.making || server.draining.is_cancelled() {
            return;
        }
        state.making = true;
    }
    let task = Metered::new(make(Arc::clone(server)), server.template.meter.clone());
    server.tracker.spawn(task.with_current_subscriber());
}

/// Makes a spare; then, if no task does yet, drops it once it goes untaken for
/// [`SPARE_IDLE`].
async fn make(server: Arc<Server>) {
    let made = tokio::select! {
        biased;
        () = server.draining.cancelled() => None,
        () = server.cut.cancelled() => None,
        made = instantiate(&server) => made,
    };
    let reap = {
        let mut state = lock(&server.spare.state);
        state.making = false;
        state.awaited = false;
        match made {
            Some(ready) if !server.draining.is_cancelled() => {
                state.ready = Some(ready);
                !std::mem::replace(&mut state.reaping, true)
            }
            _ => false,
        }
    };
    server.spare.made.send_modify(|ended| *ended += 1);
    if reap {
        reap_when_idle(&server).await;
    }
}

/// A new instance under the request timeout; `None` (logged) when it could not be made:
/// the next request then instantiates its own and reports why.
async fn instantiate(server: &Server) -> Option<Ready> {
    let started = Instant::now();
    let deadline = started + server.limits.request_timeout;
    let mut store = match server.template.store(server.pre.engine(), deadline) {
        Ok(store) => store,
        Err(err) => {
            tracing::debug!(digest = %server.digest, %err, "no spare instance: its store failed");
            return None;
        }
    };
    match server.pre.instantiate_async(&mut store).await {
        Ok(proxy) => Some(Ready { store, proxy, took: started.elapsed() }),
        Err(err) => {
            tracing::debug!(digest = %server.digest, error = %format!("{err:#}"),
                "no spare instance: instantiation failed");
            None
        }
    }
}

/// Every [`SPARE_IDLE`], drops the spare if no request took one since the last look, and
/// then ends (the next spare made starts a new watch).
async fn reap_when_idle(server: &Server) {
    loop {
        let seen = lock(&server.spare.state).taken;
        tokio::select! {
            biased;
            () = server.draining.cancelled() => return,
            () = server.cut.cancelled() => return,
            () = tokio::time::sleep(SPARE_IDLE) => {}
        }
        let mut state = lock(&server.spare.state);
        if state.taken == seen || state.ready.is_none() {
            let idle = state.ready.take();
            state.reaping = false;
            drop(state);
            drop(idle);
            return;
        }
    }
}
