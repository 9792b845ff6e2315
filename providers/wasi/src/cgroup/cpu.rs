//! A [`Cgroup`]'s CPU: its quota as a token bucket (as CFS bandwidth control), its weight
//! as the epoch ticks a guest runs between yields, and the future a guest's epoch yield
//! awaits, which sleeps while the guest's group (or a parent) is over its quota.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use super::Cgroup;
use crate::ticker::{InWasm, Pauser};

/// The period a CPU quota is counted in, as CFS's `cpu.cfs_period_us` (100 ms): a limit
/// of 200 millicores is 20 ms of CPU per period. A group's bucket holds at most one
/// period's quota, so a guest that was idle may burst that much at once and no more.
pub const CPU_PERIOD: Duration = Duration::from_millis(100);

/// Millicores of `cpu_request_millis` per epoch tick a guest runs between yields: a
/// guest requesting 500m runs 5 ticks (50 ms at the default tick) before it lets the
/// next guest on its thread run. No request, or less than this, is one tick.
pub const MILLICORES_PER_TICK: u64 = 100;

/// The most epoch ticks a guest runs between yields, whatever it requests (1000m and
/// more): bounds how long a guest waits for a thread behind one with a large request.
pub const MAX_TICKS_PER_YIELD: u64 = 10;

/// The epoch ticks a guest of a group requesting `millis` runs between yields.
pub(crate) fn ticks_for(request_millis: Option<u64>) -> u64 {
    request_millis.map_or(1, |millis| millis / MILLICORES_PER_TICK).clamp(1, MAX_TICKS_PER_YIELD)
}

/// A CPU quota: refilled at `millis`/1000 CPU-seconds per second up to one period's
/// worth, emptied by the CPU time its runs use. It may go below zero — a guest's slice
/// is charged after it ran — and that debt is paid back by sleeping, so that over time
/// the group gets exactly its quota.
pub(crate) struct Bucket(Mutex<Tokens>);

struct Tokens {
    /// Millicores: CPU nanoseconds per wall-clock microsecond.
    millis: u64,
    /// CPU nanoseconds the group may still use; negative is debt.
    nanos: i64,
    /// When `nanos` was last refilled.
    at: Instant,
}

impl Bucket {
    /// A full bucket for a limit of `millis` millicores (at least 1).
    pub(crate) fn new(millis: u64, now: Instant) -> Bucket {
        let millis = millis.max(1);
        let mut tokens = Tokens { millis, nanos: 0, at: now };
        tokens.nanos = tokens.quota();
        Bucket(Mutex::new(tokens))
    }

    fn tokens(&self, now: Instant) -> std::sync::MutexGuard<'_, Tokens> {
        let mut tokens = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.refill(now);
        tokens
    }

    /// Takes `nanos` of CPU time out of the bucket.
    pub(crate) fn charge(&self, nanos: u64, now: Instant) {
        let mut tokens = self.tokens(now);
        tokens.nanos = tokens.nanos.saturating_sub(i64::try_from(nanos).unwrap_or(i64::MAX));
    }

    /// How long until the bucket is out of debt; `None` when it is not in debt.
    pub(crate) fn debt(&self, now: Instant) -> Option<Duration> {
        let tokens = self.tokens(now);
        (tokens.nanos < 0).then(|| {
            let owed = u128::from(tokens.nanos.unsigned_abs());
            let wait = (owed * 1000).div_ceil(u128::from(tokens.millis));
            Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
        })
    }
}

impl Tokens {
    /// One period's quota in CPU nanoseconds: the most the bucket holds.
    fn quota(&self) -> i64 {
        let nanos = u128::from(self.millis) * CPU_PERIOD.as_nanos() / 1000;
        i64::try_from(nanos).unwrap_or(i64::MAX)
    }

    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.at) else { return };
        self.at = now;
        let earned = elapsed.as_nanos() * u128::from(self.millis) / 1000;
        let earned = i64::try_from(earned).unwrap_or(i64::MAX);
        self.nanos = self.nanos.saturating_add(earned).min(self.quota());
    }
}

/// What a guest in `cgroup` does at an epoch deadline: yield to the other tasks on its
/// thread, sleep while its group or a parent is over its CPU quota (its slice was
/// charged by then), then run its group's ticks before the next yield.
pub(crate) fn epoch_yield(cgroup: &Cgroup, in_wasm: &InWasm) -> UpdateDeadline {
    let ticks = cgroup.ticks();
    if !cgroup.0.cpu_limited {
        return UpdateDeadline::Yield(ticks);
    }
    UpdateDeadline::YieldCustom(ticks, throttle(cgroup.clone(), in_wasm.pauser()))
}

fn throttle(cgroup: Cgroup, pauser: Pauser) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        // The first poll gives the thread back: the poll of the guest's task ends here, and
        // the task's meter charges the slice that just ran. Only then is the debt known.
        tokio::task::yield_now().await;
        while let Some(wait) = cgroup.cpu_debt(Instant::now()) {
            // Asleep, the guest executes no wasm: the epoch ticker need not tick for it.
            let _pause = pauser.pause();
            tokio::time::sleep(wait).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_bucket_holds_one_period_and_carries_its_debt() {
        let start = Instant::now();
        let bucket = Bucket::new(200, start);
        assert_eq!(bucket.debt(start), None);
        bucket.charge(20 * MS, start);
        assert_eq!(bucket.debt(start), None, "the whole quota of a period may be used at once");
        bucket.charge(30 * MS, start);
        // 30 ms of debt at 0.2 CPU-seconds per second: 150 ms.
        assert_eq!(bucket.debt(start), Some(Duration::from_millis(150)));
        assert_eq!(bucket.debt(start + Duration::from_millis(100)), Some(Duration::from_millis(50)));
        assert_eq!(bucket.debt(start + Duration::from_millis(150)), None);
        // A long idle time refills one period's quota, no more.
        let later = start + Duration::from_secs(60);
        bucket.charge(20 * MS, later);
        assert_eq!(bucket.debt(later), None);
        bucket.charge(1, later);
        assert!(bucket.debt(later).is_some());
    }

    #[test]
    fn over_a_long_run_a_bucket_allows_its_limit() {
        // A guest that runs 10 ms slices whenever it is out of debt gets 20% of a CPU.
        let start = Instant::now();
        let bucket = Bucket::new(200, start);
        let (mut now, mut used) = (start, Duration::ZERO);
        while now < start + Duration::from_secs(100) {
            match bucket.debt(now) {
                Some(wait) => now += wait,
                None => {
                    bucket.charge(10 * MS, now + Duration::from_millis(10));
                    now += Duration::from_millis(10);
                    used += Duration::from_millis(10);
                }
            }
        }
        let share = used.as_secs_f64() / (now - start).as_secs_f64();
        assert!((0.195..0.21).contains(&share), "{share}");
    }

    #[test]
    fn requests_map_to_ticks() {
        assert_eq!(ticks_for(None), 1);
        assert_eq!(ticks_for(Some(50)), 1);
        assert_eq!(ticks_for(Some(250)), 2);
        assert_eq!(ticks_for(Some(1000)), 10);
        assert_eq!(ticks_for(Some(8000)), 10);
    }
}
