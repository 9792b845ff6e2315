//! [`Usage`]: what one run uses now — the CPU time its guest has had (thread CPU time
//! measured around every poll of its task, so time waiting costs nothing) and the bytes
//! of its linear memories and tables — for the node's stats (`kubectl top`). For an HTTP
//! server, the sum over its request instances. The same CPU time is charged to the run's
//! [`Cgroup`] chain, whose quotas it counts against.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::cgroup::Cgroup;

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

    pub(crate) fn add_memory(&self, bytes: u64) {
        self.memory_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub_memory(&self, bytes: u64) {
        // Never below zero, whatever a caller does.
        let _ = self
            .memory_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| Some(now.saturating_sub(bytes)));
    }
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Where one run's use is counted: its own [`Usage`] and its cgroup chain.
#[derive(Clone)]
pub(crate) struct Meter {
    pub(crate) usage: Arc<Usage>,
    pub(crate) cgroup: Cgroup,
}

/// Wraps a guest's future: the thread CPU time of each poll goes to the meter's usage and
/// cgroup chain (whose CPU quotas it is taken from) before the poll returns.
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Meter,
}

impl<F> Metered<F> {
    pub(crate) fn new(inner: F, meter: Meter) -> Self {
        Metered { inner: Box::pin(inner), meter }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = thread_cpu_nanos();
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_nanos().saturating_sub(before);
        self.meter.usage.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
        self.meter.cgroup.add_cpu(spent);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_polls_count_and_waiting_does_not() {
        let usage = Arc::new(Usage::default());
        let cgroup = Cgroup::root(None);
        let meter = Meter { usage: usage.clone(), cgroup: cgroup.clone() };
        Metered::new(tokio::time::sleep(std::time::Duration::from_millis(100)), meter.clone()).await;
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
            meter,
        )
        .await;
        assert!(usage.cpu_nanos() - idle >= 50_000_000, "{}", usage.cpu_nanos());
        assert_eq!(cgroup.cpu_nanos(), usage.cpu_nanos());
    }
}
