//! Exit statuses: real exit codes, traps with their message, out-of-memory, stops.

use crate::common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{exit_module, grow_module, isolated, load, loop_module, runtime, sleep_module, wait_for, wat};
use krustlet_wasi_provider::{CgroupSpec, ExitStatus, RunSpec, Runtime};

#[tokio::test]
async fn proc_exit_code_is_reported() {
    let runtime = runtime();
    for code in [0, 1, 42, 125] {
        let artifact = load(&runtime, &exit_module(code));
        let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
        let status = wait_for(&mut handle, 10).await;
        assert_eq!(status, ExitStatus::Exited(code as i32));
        assert_eq!(status.code(), code as i32);
    }
}

#[tokio::test]
async fn returning_from_start_is_exit_zero() {
    let runtime = runtime();
    let artifact = load(&runtime, &grow_module(1, 0));
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    let status = wait_for(&mut handle, 10).await;
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(status.success());
}

#[tokio::test]
async fn unreachable_traps_with_its_message() {
    let runtime = runtime();
    let artifact =
        load(&runtime, &wat(r#"(module (func $boom unreachable) (func (export "_start") call $boom))"#));
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    let status = wait_for(&mut handle, 10).await;
    let ExitStatus::Trapped { message } = &status else {
        panic!("expected a trap, got {status:?}");
    };
    assert!(message.contains("unreachable"), "message: {message}");
    eprintln!("trap message: {message}");
    assert_eq!(status.code(), 134);
}

#[tokio::test]
async fn proc_exit_outside_wasi_range_is_a_trap() {
    let runtime = runtime();
    let artifact = load(&runtime, &exit_module(200));
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    let status = wait_for(&mut handle, 10).await;
    assert!(matches!(status, ExitStatus::Trapped { .. }), "{status:?}");
}

#[tokio::test]
async fn growing_past_the_memory_limit_is_out_of_memory() {
    let runtime = runtime();
    // Grows one page at a time without end; exits 3 if a grow ever returns -1.
    let artifact = load(&runtime, &grow_module(1, u32::MAX));
    let spec = RunSpec::new().memory_limit(1 << 20);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    let status = wait_for(&mut handle, 10).await;
    let ExitStatus::OutOfMemory { message } = &status else { panic!("{status:?}") };
    assert!(message.contains("would pass its memory limit of 1048576 bytes"), "{message}");
    assert_eq!(status.code(), 137);
}

#[tokio::test]
async fn growing_a_table_past_the_memory_limit_is_out_of_memory() {
    let runtime = runtime();
    // Grows a funcref table by a million elements at a time (8 MB each on the host).
    let table = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
        (memory (export "memory") 1)
        (table $t 1 funcref)
        (func (export "_start")
          (loop $grow
            (if (i32.eq (table.grow $t (ref.null func) (i32.const 1000000)) (i32.const -1))
              (then (call $proc_exit (i32.const 3))))
            (br $grow))))"#);
    let artifact = load(&runtime, &table);
    let spec = RunSpec::new().memory_limit(64 << 20);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    let status = wait_for(&mut handle, 10).await;
    assert!(matches!(status, ExitStatus::OutOfMemory { .. }), "{status:?}");
}

#[tokio::test]
async fn initial_memory_over_the_limit_is_out_of_memory() {
    let runtime = runtime();
    let artifact = load(&runtime, &grow_module(100, 0));
    let spec = RunSpec::new().memory_limit(1 << 20);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    let status = wait_for(&mut handle, 10).await;
    assert!(matches!(status, ExitStatus::OutOfMemory { .. }), "{status:?}");
}

#[tokio::test]
async fn growing_within_the_limit_is_fine() {
    let runtime = runtime();
    // 1 + 14 pages = 960 KiB, under 1 MiB.
    let artifact = load(&runtime, &grow_module(1, 14));
    let spec = RunSpec::new().memory_limit(1 << 20);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn wasm_maximum_makes_grow_fail_not_oom() {
    let runtime = runtime();
    let artifact = load(
        &runtime,
        &wat(r#"(module
              (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
              (memory (export "memory") 1 2)
              (func (export "_start")
                (drop (memory.grow (i32.const 1)))
                (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
                  (then (call $proc_exit (i32.const 3))))))"#),
    );
    let spec = RunSpec::new().memory_limit(1 << 30);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(3));
}

#[test]
fn stop_ends_an_infinite_loop_promptly() {
    let (status, elapsed) = isolated(2, 10, || async {
        let runtime = runtime();
        let artifact = load(&runtime, &loop_module());
        let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!handle.is_finished());
        let started = Instant::now();
        handle.stop();
        let status = wait_for(&mut handle, 5).await;
        (status, started.elapsed())
    });
    assert_eq!(status, ExitStatus::Stopped);
    assert_eq!(status.code(), 137);
    assert!(elapsed < Duration::from_secs(1), "stop took {elapsed:?}");
    eprintln!("stop of a busy loop took {elapsed:?}");
}

#[test]
fn stopper_works_while_another_task_waits() {
    let status = isolated(2, 10, || async {
        let runtime = runtime();
        let artifact = load(&runtime, &loop_module());
        let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
        let stopper = handle.stopper();
        let waiter = tokio::spawn(async move { wait_for(&mut handle, 5).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stopper.clone().stop();
        waiter.await.unwrap()
    });
    assert_eq!(status, ExitStatus::Stopped);
}

#[tokio::test]
async fn stop_after_exit_keeps_the_real_status_and_wait_repeats_it() {
    let runtime = runtime();
    let artifact = load(&runtime, &exit_module(7));
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(7));
    handle.stop();
    assert_eq!(wait_for(&mut handle, 1).await, ExitStatus::Exited(7));
}

/// A busy guest must yield: on a single guest thread, another guest's timer still fires
/// while it spins.
#[test]
fn busy_guest_yields_to_another_on_one_guest_thread() {
    let status = isolated(0, 10, || async {
        let runtime = Runtime::builder().guest_threads(1).build().unwrap();
        let spinner = runtime.run(&load(&runtime, &loop_module()), RunSpec::new()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut sleeper = runtime.run(&load(&runtime, &sleep_module(20_000_000)), RunSpec::new()).unwrap();
        let status = wait_for(&mut sleeper, 5).await;
        assert!(!spinner.is_finished());
        status
    });
    assert_eq!(status, ExitStatus::Exited(0));
}

#[test]
fn dropping_the_handle_stops_the_guest() {
    let (before, after) = isolated(0, 10, || async {
        let runtime = runtime();
        let artifact = load(&runtime, &loop_module());
        let cgroup = runtime.cgroup(CgroupSpec::default());
        let handle = runtime.run(&artifact, RunSpec::new().cgroup(cgroup.clone())).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(handle);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = cgroup.cpu_nanos();
        tokio::time::sleep(Duration::from_millis(300)).await;
        (before, cgroup.cpu_nanos())
    });
    assert!(before > 0, "the guest never ran");
    assert_eq!(after, before, "the guest kept running after its handle was dropped");
}

/// Guests run on the runtime's own threads: a spinning guest costs the caller's thread
/// (here a current-thread tokio runtime, on which it ran before) nothing, and its
/// output is written on a guest thread, at a lower priority.
#[test]
fn a_guest_never_runs_on_the_callers_thread() {
    let (caller, guest, writer) = isolated(0, 30, || async {
        let runtime = runtime();
        let out = ThreadOfWrites::default();
        let spin = wat(r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "x")
            (func (export "_start")
              (i32.store (i32.const 0) (i32.const 16))
              (i32.store (i32.const 4) (i32.const 1))
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (loop $forever (br $forever))))"#);
        let handle = runtime.run(&load(&runtime, &spin), RunSpec::new().stdout(out.clone())).unwrap();
        // Until the guest has had 200 ms of CPU, however busy the machine is.
        let start = cpu_time();
        let usage = handle.usage();
        while usage.cpu_nanos() < 200_000_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let caller = cpu_time() - start;
        (caller, Duration::from_nanos(usage.cpu_nanos()), out.0.lock().unwrap().clone())
    });
    assert!(caller < guest / 4, "the caller's thread ran {caller:?} while the guest ran {guest:?}");
    let (name, nice) = writer.expect("the guest wrote");
    assert!(name.starts_with("wasi-guest-"), "{name}");
    let own = rustix::process::getpriority_process(None).unwrap();
    assert_eq!(nice, (own + krustlet_wasi_provider::GUEST_NICE).min(19));
}

/// Records the name and nice value of the thread that writes.
#[derive(Clone, Default)]
struct ThreadOfWrites(Arc<Mutex<Option<(String, i32)>>>);

impl tokio::io::AsyncWrite for ThreadOfWrites {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        let nice = rustix::process::getpriority_process(None).unwrap();
        *self.0.lock().unwrap() = Some((name, nice));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// CPU time of the calling thread.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
