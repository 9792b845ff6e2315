//! Shared test helpers: fixtures compiled from WAT, a capturing writer, digests, and
//! small WAT generators for one-off guests.
#![allow(dead_code)]

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

pub mod http;
pub mod rules;

use krustlet_wasi_provider::{Artifact, ExitStatus, RunHandle, Runtime};
use tokio::io::AsyncWrite;

/// Compiles a fixture under `tests/fixtures/` to a binary module.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// Compiles inline WAT to a binary module.
pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|err| panic!("bad test WAT: {err}\n{text}"))
}

/// A stable test digest for `bytes` (64-bit FNV-1a; good enough to key tests).
pub fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("test:{hash:016x}")
}

/// A runtime with default settings (no disk cache).
pub fn runtime() -> Runtime {
    Runtime::builder().build().expect("runtime builds")
}

/// Loads `bytes` under their test digest.
pub fn load(runtime: &Runtime, bytes: &[u8]) -> Artifact {
    runtime.load(bytes, &digest(bytes)).expect("artifact loads")
}

/// Waits for a guest, failing the test after `secs` seconds instead of hanging.
pub async fn wait_for(handle: &mut RunHandle, secs: u64) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(secs), handle.wait())
        .await
        .unwrap_or_else(|_| panic!("guest did not finish within {secs}s"))
}

/// An `AsyncWrite` that appends everything to a shared buffer.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

impl AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A module whose `_start` calls `proc_exit(code)`.
pub fn exit_module(code: u32) -> Vec<u8> {
    wat(&format!(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $proc_exit (i32.const {code}))))"#
    ))
}

/// A module whose `_start` never returns.
pub fn loop_module() -> Vec<u8> {
    wat(r#"(module
             (memory (export "memory") 1)
             (func (export "_start") (loop $forever (br $forever))))"#)
}

/// A module that sleeps `nanos` on the monotonic clock with `poll_oneoff`, then
/// returns. Exits 96 if `poll_oneoff` fails.
pub fn sleep_module(nanos: u64) -> Vec<u8> {
    wat(&format!(
        r#"(module
             (import "wasi_snapshot_preview1" "poll_oneoff"
               (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (memory (export "memory") 1)
             ;; subscription at 0 (48 bytes), event at 64, nevents at 128
             (func (export "_start")
               (i64.store (i32.const 0) (i64.const 7))         ;; userdata
               (i32.store8 (i32.const 8) (i32.const 0))        ;; tag: clock
               (i32.store (i32.const 16) (i32.const 1))        ;; clock id: monotonic
               (i64.store (i32.const 24) (i64.const {nanos}))  ;; timeout
               (i64.store (i32.const 32) (i64.const 0))        ;; precision
               (i32.store16 (i32.const 40) (i32.const 0))      ;; flags: relative
               (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
                 (then (call $proc_exit (i32.const 96))))))"#
    ))
}

/// A module with `initial` pages of memory that grows one page at a time, `grow`
/// times, then returns; exits 3 if `memory.grow` ever returns -1.
pub fn grow_module(initial: u32, grow: u32) -> Vec<u8> {
    wat(&format!(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (memory (export "memory") {initial})
             (func (export "_start") (local $i i32)
               (block $done
                 (loop $grow
                   (br_if $done (i32.ge_u (local.get $i) (i32.const {grow})))
                   (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
                     (then (call $proc_exit (i32.const 3))))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br $grow)))))"#
    ))
}

/// Runs `test` on its own tokio runtime (`workers` worker threads, 0 for a
/// current-thread runtime) in its own thread, and fails after `secs` seconds instead of
/// hanging: a guest that never yields would block the runtime's shutdown forever, so
/// the thread is left behind rather than joined.
pub fn isolated<F, Fut, T>(workers: usize, secs: u64, test: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut builder = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        };
        let tokio = builder.enable_all().build().expect("tokio runtime");
        let _ = done.send(tokio.block_on(test()));
    });
    finished
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("test did not finish within {secs}s (a guest never yielded?)"))
}
