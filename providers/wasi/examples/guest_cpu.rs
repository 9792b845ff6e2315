//! Bench (prints numbers, asserts nothing): what the provider's CPU controls give.
//!
//! 1. A busy guest in a group with `cpu_limit_millis: 200` (`limits.cpu: 200m`) for SECS:
//!    its share of one core, and how long it slept off debt.
//! 2. Two unlimited busy guests and a guest printing a line once a second, on
//!    `guest_threads(2)`, for SECS: the gaps between the printer's lines (p50, p99,
//!    worst), and meanwhile how late a 100 ms timer on the caller's own runtime (a
//!    2-thread tokio runtime, as the agent's) fired at worst.
//!
//! Usage: `cargo run --release -p krustlet-wasi-provider --example guest_cpu [SECS=10]`
//! (bench/cpu.sh runs it).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use krustlet_wasi_provider::{CgroupSpec, RunSpec, Runtime};

/// A module whose `_start` never returns.
const SPIN: &str = r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

/// A module that writes `tick\n` to stdout, then sleeps 1 s, for ever.
const PRINTER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "tick\n")
  (func (export "_start")
    (loop $forever
      (i32.store (i32.const 200) (i32.const 300))
      (i32.store (i32.const 204) (i32.const 5))
      (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208)))
      (i64.store (i32.const 0) (i64.const 1))
      (i32.store8 (i32.const 8) (i32.const 0))
      (i32.store (i32.const 16) (i32.const 1))
      (i64.store (i32.const 24) (i64.const 1000000000))
      (i64.store (i32.const 32) (i64.const 0))
      (i32.store16 (i32.const 40) (i32.const 0))
      (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $forever))))"#;

/// Stamps the moment each line arrives.
#[derive(Clone, Default)]
struct Stamps(Arc<Mutex<Vec<Instant>>>);

impl tokio::io::AsyncWrite for Stamps {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let now = Instant::now();
        let lines = buf.iter().filter(|b| **b == b'\n').count();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(std::iter::repeat_n(now, lines));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at quantile `q` of sorted `values`.
fn quantile(values: &[Duration], q: f64) -> Duration {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

async fn limited(runtime: &Runtime, secs: u64) -> anyhow::Result<()> {
    let spin = runtime.load(&wat::parse_str(SPIN)?, "bench:spin")?;
    let group = runtime.cgroup(CgroupSpec { cpu_limit_millis: Some(200), ..CgroupSpec::default() });
    let handle = runtime.run(&spin, RunSpec::new().cgroup(group.clone()))?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = started.elapsed();
    drop(handle);
    let share = group.cpu_nanos() as f64 / wall.as_nanos() as f64;
    let asleep = Duration::from_nanos(group.cpu_throttled_nanos());
    println!(
        "busy guest, cpu limit 200m, {secs} s: {:.1}% of a core (asleep {:.1} s of {:.1} s)",
        share * 100.0,
        asleep.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(())
}

async fn contended(runtime: &Runtime, secs: u64) -> anyhow::Result<()> {
    let spin = runtime.load(&wat::parse_str(SPIN)?, "bench:spin")?;
    let printer = runtime.load(&wat::parse_str(PRINTER)?, "bench:printer")?;
    let spinners = [runtime.run(&spin, RunSpec::new())?, runtime.run(&spin, RunSpec::new())?];
    let stamps = Stamps::default();
    let printing = runtime.run(&printer, RunSpec::new().stdout(stamps.clone()))?;
    // The caller's own work: a 100 ms timer on this (the caller's) runtime.
    let mut late = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let due = Instant::now() + Duration::from_millis(100);
        tokio::time::sleep_until(due.into()).await;
        late = late.max(Instant::now() - due);
    }
    drop((spinners, printing));
    let stamps = stamps.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut gaps: Vec<Duration> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    if gaps.is_empty() {
        println!("two busy guests + a printer on 2 guest threads: fewer than two lines in {secs} s");
        return Ok(());
    }
    println!(
        "two busy guests + a printer on 2 guest threads, {secs} s: {} lines, gap p50 {:.0} ms, p99 {:.0} ms, worst {:.0} ms; \
         the caller's 100 ms timer at worst {:.1} ms late",
        stamps.len(),
        millis(quantile(&gaps, 0.5)),
        millis(quantile(&gaps, 0.99)),
        millis(gaps[gaps.len() - 1]),
        millis(late)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let secs = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let caller = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let runtime = Runtime::builder().guest_threads(2).build()?;
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    caller.block_on(async {
        limited(&runtime, secs).await?;
        contended(&runtime, secs).await
    })
}
