//! The guest threads: a tokio multi-thread runtime the provider owns, on which every guest
//! runs (commands, modules, HTTP servers and each request's instance, and the tasks that
//! carry their stdio), never on the caller's threads, so that the caller's own work is
//! never queued behind a busy guest. Its threads run at a lower scheduling priority
//! ([`GUEST_NICE`]), so that the kernel prefers the caller's threads when cores are
//! contended, and its blocking pool (the guests' file I/O) is capped.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::process::{getpriority_process, setpriority_process};
use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{Error, Result};

/// How much lower than the thread that builds the [`Runtime`](crate::Runtime) the guest
/// threads are scheduled: their nice value is that thread's plus 10 (at most 19, the
/// least priority), set on each guest thread as it starts (`setpriority`, which on Linux
/// applies to one thread).
pub const GUEST_NICE: i32 = 10;

/// Default cap on the guest threads' blocking pool, which runs the guests' file I/O
/// (wasmtime-wasi hands each filesystem call to it): past this many calls at once, the
/// next wait for a thread. The caller's own blocking pool is not shared with guests.
pub const DEFAULT_GUEST_BLOCKING_THREADS: usize = 64;

/// The guest threads' names: `wasi-guest-<n>` (workers and blocking threads alike).
const THREAD_NAME: &str = "wasi-guest";

/// Guest polls between two looks at the timers and I/O (tokio's `event_interval`, 61 by
/// default) and at the queue of tasks woken from other threads (`global_queue_interval`,
/// tuned by tokio to at least 2 and 61 at first). A busy guest's poll lasts its epoch ticks
/// (10 ms or more), so tokio's defaults would let a guest whose timer fired, whose I/O is
/// ready or that was just started wait behind dozens of busy guests' slices — seconds.
/// At 1 it waits for at most the slice running on its thread. The cost is a non-blocking
/// `epoll_wait` and a lock per guest poll.
const POLLS_BETWEEN_LOOKS: u32 = 1;

/// Owns the guests' tokio runtime; dropping it stops every guest on it without waiting,
/// from any thread, in async code too.
pub(crate) struct GuestThreads(Option<Runtime>);

impl GuestThreads {
    /// Starts `workers` worker threads (at least 1) and a blocking pool of up to
    /// `blocking` threads (at least 1), all at the lower priority.
    pub(crate) fn start(workers: usize, blocking: usize) -> Result<Self> {
        let nice = getpriority_process(None).unwrap_or(0).saturating_add(GUEST_NICE).min(19);
        let started = AtomicUsize::new(0);
        let runtime = Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .max_blocking_threads(blocking.max(1))
            .event_interval(POLLS_BETWEEN_LOOKS)
            .global_queue_interval(POLLS_BETWEEN_LOOKS)
            .thread_name_fn(move || format!("{THREAD_NAME}-{}", started.fetch_add(1, Ordering::Relaxed)))
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()
            .map_err(Error::GuestThreads)?;
        Ok(GuestThreads(Some(runtime)))
    }

    /// Where guest tasks are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        match &self.0 {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the guest runtime is taken only when dropped"),
        }
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // Not `drop`: that waits for the blocking pool, which panics in async code.
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value (on Linux `setpriority(PRIO_PROCESS, 0, ..)`
/// applies to the calling thread only).
pub(crate) fn lower_priority(nice: i32) {
    if let Err(err) = setpriority_process(None, nice) {
        tracing::debug!(%err, nice, "guest thread keeps its scheduling priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_threads_are_named_and_nicer_and_drop_in_async_code() {
        let own = getpriority_process(None).unwrap();
        let guests = GuestThreads::start(1, 2).unwrap();
        let (name, nice) = guests
            .handle()
            .block_on(async {
                tokio::spawn(async {
                    let name = std::thread::current().name().map(str::to_owned);
                    (name, getpriority_process(None).unwrap())
                })
                .await
            })
            .unwrap();
        assert!(name.as_deref().is_some_and(|name| name.starts_with("wasi-guest-")), "{name:?}");
        assert_eq!(nice, (own + GUEST_NICE).min(19));
        // Dropped inside another runtime's task: no panic.
        let caller = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        caller.block_on(async move { drop(guests) });
    }
}
