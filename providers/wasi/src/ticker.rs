//! The one epoch ticker per engine: a thread that bumps the engine's epoch at a fixed
//! interval so guests executing wasm yield to tokio (and can be stopped) between ticks.
//!
//! Ticks matter only while some guest is executing wasm: a guest waiting in a host call
//! (a sleep, a read, an HTTP handler awaiting its body) reaches no epoch check. So each
//! store tells the ticker when its guest enters and leaves wasm (a call hook, see
//! [`track_wasm`]), and the thread sleeps while no guest is in wasm: ten thousand sleeping
//! guests, or none, cost no wake-ups at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::{CallHook, Engine, Store};

use crate::error::{Error, Result};

/// What the ticker thread and the guests share.
#[derive(Default)]
struct Shared {
    /// Stores whose guest is executing wasm now.
    in_wasm: AtomicUsize,
    /// The thread is (about to be) parked until a guest enters wasm.
    parked: AtomicBool,
    stop: AtomicBool,
}

/// Owns the ticker thread; dropping the last `Arc<Ticker>` stops and joins it.
/// Running guests hold an `Arc` too, so the ticker lives while any guest does.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engine: Engine, every: Duration) -> Result<Self> {
        Self::ticking(move || engine.increment_epoch(), every)
    }

    /// A ticker calling `tick` every `every` while a guest is in wasm.
    fn ticking(tick: impl Fn() + Send + 'static, every: Duration) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wasi-epoch-ticker".into())
            .spawn(move || {
                while !s.stop.load(SeqCst) {
                    if s.in_wasm.load(SeqCst) == 0 {
                        // Say so first, then look again: a guest entering wasm either is
                        // seen here or sees `parked` and unparks the thread.
                        s.parked.store(true, SeqCst);
                        if s.in_wasm.load(SeqCst) == 0 && !s.stop.load(SeqCst) {
                            std::thread::park();
                        }
                        s.parked.store(false, SeqCst);
                        continue;
                    }
                    std::thread::park_timeout(every);
                    tick();
                }
            })
            .map_err(Error::TickerSpawn)?;
        Ok(Ticker { shared, thread: Some(thread) })
    }

    /// The handle a store tells of its guest's entries into wasm with.
    pub(crate) fn activity(&self) -> Activity {
        let thread = self.thread.as_ref().map(|t| t.thread().clone());
        Activity { shared: Arc::clone(&self.shared), thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread looks at `stop` at once; it cannot panic.
            let _ = thread.join();
        }
    }
}

/// Where stores tell the ticker their guest entered wasm (see [`InWasm`]).
#[derive(Clone)]
pub(crate) struct Activity {
    shared: Arc<Shared>,
    thread: Option<Thread>,
}

/// The part of a store's data that follows its guest in and out of wasm. Dropped with the
/// store, so a guest stopped in the middle of wasm is not counted for ever.
///
/// A guest that sleeps in an epoch yield (throttled for CPU, see `cgroup::cpu`) is still
/// "in wasm" for its store, but executes nothing: a [`Pause`] lends its count away for the
/// sleep, so that the ticker may park when every such guest sleeps. The state is shared
/// with the pause so that whichever of the two ends first settles the count exactly once,
/// whatever order they are dropped in.
pub(crate) struct InWasm {
    activity: Activity,
    state: Arc<AtomicU8>,
}

/// [`InWasm`] states.
const OUTSIDE: u8 = 0;
const INSIDE: u8 = 1;
/// Inside, with the count lent to a [`Pause`].
const LENT: u8 = 2;

impl InWasm {
    pub(crate) fn new(activity: Activity) -> Self {
        InWasm { activity, state: Arc::new(AtomicU8::new(OUTSIDE)) }
    }

    fn set(&mut self, inside: bool) {
        if inside {
            if self.state.compare_exchange(OUTSIDE, INSIDE, SeqCst, SeqCst).is_ok() {
                self.activity.enter();
            }
        } else if self.state.swap(OUTSIDE, SeqCst) == INSIDE {
            self.activity.shared.in_wasm.fetch_sub(1, SeqCst);
        }
    }

    /// What code outside the store asks whether its guest is executing wasm with.
    pub(crate) fn probe(&self) -> WasmProbe {
        WasmProbe(Arc::clone(&self.state))
    }

    /// What a future running in this store's epoch yield pauses the count with.
    pub(crate) fn pauser(&self) -> Pauser {
        Pauser { activity: self.activity.clone(), state: Arc::clone(&self.state) }
    }
}

impl Drop for InWasm {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl Activity {
    fn enter(&self) {
        self.shared.in_wasm.fetch_add(1, SeqCst);
        if self.shared.parked.load(SeqCst)
            && let Some(thread) = &self.thread
        {
            thread.unpark();
        }
    }
}

/// Tells, from outside a store, whether its guest is executing wasm: false while it is in
/// a host call (waiting for I/O, say) or asleep in a throttled epoch yield.
#[derive(Clone)]
pub(crate) struct WasmProbe(Arc<AtomicU8>);

impl WasmProbe {
    pub(crate) fn executing(&self) -> bool {
        self.0.load(SeqCst) == INSIDE
    }

    /// A probe of no store, answering as told.
    #[cfg(test)]
    pub(crate) fn fixed(executing: bool) -> Self {
        WasmProbe(Arc::new(AtomicU8::new(if executing { INSIDE } else { OUTSIDE })))
    }
}

/// Lends a store's in-wasm count away while its guest sleeps in an epoch yield.
pub(crate) struct Pauser {
    activity: Activity,
    state: Arc<AtomicU8>,
}

impl Pauser {
    /// Stops counting the store as in wasm until the [`Pause`] is dropped (nothing if the
    /// store is not in wasm, or already paused).
    pub(crate) fn pause(&self) -> Pause<'_> {
        let lent = self.state.compare_exchange(INSIDE, LENT, SeqCst, SeqCst).is_ok();
        if lent {
            self.activity.shared.in_wasm.fetch_sub(1, SeqCst);
        }
        Pause { pauser: self, lent }
    }
}

/// A store's in-wasm count lent away; given back (waking the ticker) when dropped.
pub(crate) struct Pause<'a> {
    pauser: &'a Pauser,
    lent: bool,
}

impl Drop for Pause<'_> {
    fn drop(&mut self) {
        let state = &self.pauser.state;
        if self.lent && state.compare_exchange(LENT, INSIDE, SeqCst, SeqCst).is_ok() {
            self.pauser.activity.enter();
        }
    }
}

/// Store data that carries an [`InWasm`].
pub(crate) trait TracksWasm {
    fn in_wasm(&mut self) -> &mut InWasm;
}

/// Installs the call hook that keeps the ticker told when `store`'s guest is in wasm.
pub(crate) fn track_wasm<T: TracksWasm + 'static>(store: &mut Store<T>) {
    store.call_hook(|mut ctx, hook| {
        let inside = matches!(hook, CallHook::CallingWasm | CallHook::ReturningFromHost);
        ctx.data_mut().in_wasm().set(inside);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting() -> (Ticker, Arc<AtomicUsize>) {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&ticks);
        let ticker = Ticker::ticking(move || _ = t.fetch_add(1, SeqCst), Duration::from_millis(1)).unwrap();
        (ticker, ticks)
    }

    fn ticks_over(ticks: &AtomicUsize, ms: u64) -> usize {
        let before = ticks.load(SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        ticks.load(SeqCst) - before
    }

    #[test]
    fn the_ticker_ticks_only_while_a_guest_is_in_wasm() {
        let (ticker, ticks) = counting();
        assert_eq!(ticks_over(&ticks, 50), 0, "no guest in wasm: no ticks");
        let mut a = InWasm::new(ticker.activity());
        let mut b = InWasm::new(ticker.activity());
        a.set(true);
        b.set(true);
        assert!(ticks_over(&ticks, 50) > 5, "a guest in wasm: ticks");
        a.set(false);
        assert!(ticks_over(&ticks, 50) > 5, "another still in wasm: ticks");
        drop(b); // a store dropped while its guest was in wasm
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(ticks_over(&ticks, 50), 0, "none left: quiet again");
        a.set(true);
        assert!(ticks_over(&ticks, 50) > 5, "woken again");
        drop(ticker); // stops and joins while a guest is in wasm
    }

    #[test]
    fn a_paused_guest_lets_the_ticker_park_and_is_counted_once() {
        let (ticker, ticks) = counting();
        let count = || ticker.shared.in_wasm.load(SeqCst);
        let mut a = InWasm::new(ticker.activity());
        a.set(true);
        let pauser = a.pauser();
        {
            let _pause = pauser.pause();
            assert_eq!(count(), 0);
            assert!(!pauser.pause().lent, "already paused");
            std::thread::sleep(Duration::from_millis(10));
            assert_eq!(ticks_over(&ticks, 50), 0, "a sleeping guest: no ticks");
        }
        assert_eq!(count(), 1, "the pause gave the count back");
        assert!(ticks_over(&ticks, 50) > 5, "running again: ticks");
        // The store goes while paused (a stopped guest), then the pause: counted once.
        let pause = pauser.pause();
        drop(a);
        assert_eq!(count(), 0);
        drop(pause);
        assert_eq!(count(), 0);
        // A store not in wasm cannot be paused.
        let b = InWasm::new(ticker.activity());
        let pauser = b.pauser();
        drop(pauser.pause());
        assert_eq!(count(), 0);
    }
}
