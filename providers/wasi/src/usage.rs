//! [`Usage`]: what one run uses now — the CPU time its guest has had (thread CPU time
//! measured around every poll of its task, so time waiting costs nothing) and the bytes
//! of its linear memories and tables — for the node's stats (`kubectl top`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// A run's resource use, updated as it runs. Cheap to read from any thread.
#[derive(Debug, Default)]
pub struct Usage {
    cpu_nanos: AtomicU64,
    memory_bytes: AtomicU64,
}

impl Usage {
    /// CPU time the guest has run for, in nanoseconds (monotonic).
    pub fn cpu_nanos(&self) -> u64 {
        self.cpu_nanos.load(Ordering::Relaxed)
    }

    /// Bytes of the guest's linear memories and tables now (what its memory limit counts).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_memory(&self, bytes: usize) {
        self.memory_bytes.store(bytes as u64, Ordering::Relaxed);
    }
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Wraps a guest's future: the thread CPU time of each poll goes to `usage`.
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    usage: Arc<Usage>,
}

impl<F> Metered<F> {
    pub(crate) fn new(inner: F, usage: Arc<Usage>) -> Self {
        Metered { inner: Box::pin(inner), usage }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = thread_cpu_nanos();
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_nanos().saturating_sub(before);
        self.usage.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_polls_count_and_waiting_does_not() {
        let usage = Arc::new(Usage::default());
        Metered::new(tokio::time::sleep(std::time::Duration::from_millis(100)), usage.clone()).await;
        let idle = usage.cpu_nanos();
        assert!(idle < 20_000_000, "waiting cost {idle} ns");
        Metered::new(
            // 50 ms of this thread's CPU time, however busy the machine is.
            async {
                let start = thread_cpu_nanos();
                while thread_cpu_nanos() - start < 50_000_000 {
                    std::hint::black_box(0u64);
                }
            },
            usage.clone(),
        )
        .await;
        assert!(usage.cpu_nanos() - idle >= 50_000_000, "{}", usage.cpu_nanos());
    }
}
