//! Many idle guests: 200 run at once on a 2-worker tokio runtime without a thread
//! each, stay alive while idle, and all stop promptly.

use crate::common;

use std::time::{Duration, Instant};

use common::{fixture, load, runtime, sleep_module, wait_for};
use krustlet_wasi_provider::{ExitStatus, RunSpec};

/// A field of `/proc/self/status` (e.g. `VmRSS` in kB, `Threads`).
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_guests_run_and_all_stop() {
    let runtime = runtime();
    let reader = load(&runtime, &fixture("cat.wat"));
    let sleeper = load(&runtime, &sleep_module(3_600_000_000_000));
    // Let the ticker and the first runs' lazy setup settle before measuring.
    let mut warmup = runtime.run(&sleeper, RunSpec::new()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    warmup.stop();
    assert_eq!(wait_for(&mut warmup, 5).await, ExitStatus::Stopped);
    let (threads_before, rss_before) = (proc_status("Threads"), proc_status("VmRSS"));

    // 100 guests blocked reading an open, empty stdin; 100 in a one-hour poll_oneoff.
    let mut stdin_writers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..200 {
        let spec = RunSpec::new().memory_limit(16 << 20);
        let handle = if i % 2 == 0 {
            let (writer, guest_stdin) = tokio::io::duplex(64);
            stdin_writers.push(writer);
            runtime.run(&reader, spec.stdin(guest_stdin)).unwrap()
        } else {
            runtime.run(&sleeper, spec).unwrap()
        };
        handles.push(handle);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still_running = handles.iter().filter(|handle| !handle.is_finished()).count();
    assert_eq!(still_running, 200, "idle guests must stay alive");
    let (threads_after, rss_after) = (proc_status("Threads"), proc_status("VmRSS"));
    eprintln!(
        "200 idle guests: threads {threads_before} -> {threads_after}, \
         RSS {rss_before} kB -> {rss_after} kB ({} kB per guest)",
        rss_after.saturating_sub(rss_before) / 200
    );
    assert!(threads_after < threads_before + 20, "a thread per guest? {threads_before} -> {threads_after}");

    let started = Instant::now();
    let stoppers: Vec<_> = handles.iter().map(|handle| handle.stopper()).collect();
    for stopper in &stoppers {
        stopper.stop();
    }
    for handle in &mut handles {
        assert_eq!(wait_for(handle, 10).await, ExitStatus::Stopped);
    }
    let elapsed = started.elapsed();
    eprintln!("stopping 200 idle guests took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "stopping took {elapsed:?}");
    drop(stdin_writers);
}

#[tokio::test]
async fn a_short_sleep_returns() {
    let runtime = runtime();
    let artifact = load(&runtime, &sleep_module(20_000_000));
    let started = Instant::now();
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert!(started.elapsed() >= Duration::from_millis(20));
}
