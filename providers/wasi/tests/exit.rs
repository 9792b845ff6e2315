//! Exit statuses: real exit codes, traps with their message, out-of-memory, stops.

mod common;

use std::time::{Duration, Instant};

use common::{exit_module, grow_module, isolated, load, loop_module, runtime, wait_for, wat};
use krustlet_wasi_provider::{ExitStatus, RunSpec};

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
    assert_eq!(status, ExitStatus::OutOfMemory);
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
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::OutOfMemory);
}

#[tokio::test]
async fn initial_memory_over_the_limit_is_out_of_memory() {
    let runtime = runtime();
    let artifact = load(&runtime, &grow_module(100, 0));
    let spec = RunSpec::new().memory_limit(1 << 20);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::OutOfMemory);
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

/// A busy guest must yield to the executor: on a single-threaded runtime, a timer
/// still fires while it spins.
#[test]
fn busy_guest_yields_on_a_current_thread_runtime() {
    let status = isolated(0, 10, || async {
        let runtime = runtime();
        let artifact = load(&runtime, &loop_module());
        let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.stop();
        handle.wait().await
    });
    assert_eq!(status, ExitStatus::Stopped);
}

#[test]
fn dropping_the_handle_stops_the_guest() {
    let busy = isolated(0, 10, || async {
        let runtime = runtime();
        let artifact = load(&runtime, &loop_module());
        let handle = runtime.run(&artifact, RunSpec::new()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(handle);
        // A guest still running would spin on this very thread between its epoch
        // yields; a stopped one leaves the thread idle while we sleep.
        let before = cpu_time();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cpu_time() - before
    });
    assert!(busy < Duration::from_millis(150), "guest kept running: {busy:?} of CPU in 300 ms");
}

/// CPU time of the calling thread.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
