//! The compile threads: Cranelift runs here, never on the caller's threads nor on rayon's
//! global pool. Wasmtime compiles a module's functions in parallel with rayon
//! (`parallel-compilation`, on by default) on whatever pool it is called from, so running
//! each compile inside this pool bounds how many cores compiling takes at once, whatever
//! number of images is new, and runs it at the guests' priority
//! ([`GUEST_NICE`](crate::GUEST_NICE)): a new image's compile shares the CPU with running
//! guests instead of preempting them, and the caller's own work (a node agent's status
//! reports, other pods' starts from the cache) goes first.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::process::getpriority_process;

use crate::error::{Error, Result};
use crate::guests::{GUEST_NICE, lower_priority};

/// The compile threads' names: `wasi-compile-<n>`.
const THREAD_NAME: &str = "wasi-compile";

/// A pool of `threads` compile threads.
pub(crate) struct CompileThreads {
    pool: rayon::ThreadPool,
}

impl CompileThreads {
    /// Starts `threads` threads (at least 1), all at the guests' priority relative to the
    /// calling thread.
    pub(crate) fn start(threads: usize) -> Result<Self> {
        let nice = getpriority_process(None).unwrap_or(0).saturating_add(GUEST_NICE).min(19);
        let started = AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |_| format!("{THREAD_NAME}-{}", started.fetch_add(1, Ordering::Relaxed)))
            .start_handler(move |_| lower_priority(nice))
            .build()
            .map_err(|err| Error::CompileThreads(Box::new(err)))?;
        Ok(CompileThreads { pool })
    }

    /// Runs `compile` on the pool (its parallel parts too) and returns what it returned;
    /// the calling thread waits, doing nothing.
    pub(crate) fn run<T: Send>(&self, compile: impl FnOnce() -> T + Send) -> T {
        self.pool.install(compile)
    }

    /// How many threads compile.
    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_run_on_named_nicer_threads_and_parallel_parts_stay_there() {
        let own = getpriority_process(None).unwrap();
        let pool = CompileThreads::start(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let names = pool.run(|| {
            use rayon::prelude::*;
            (0..64)
                .into_par_iter()
                .map(|_| {
                    let name = std::thread::current().name().map(str::to_owned).unwrap_or_default();
                    (name, getpriority_process(None).unwrap())
                })
                .collect::<Vec<_>>()
        });
        for (name, nice) in names {
            assert!(name.starts_with("wasi-compile-"), "{name:?}");
            assert_eq!(nice, (own + GUEST_NICE).min(19));
        }
    }
}
