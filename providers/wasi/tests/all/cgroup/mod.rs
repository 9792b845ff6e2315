//! Resource groups provoked by real guests: memory shared by every run and request
//! instance of a group under the node's budget, CPU quotas and weights.

use crate::common;

mod cpu;
mod memory;

use std::time::Duration;

use krustlet_wasi_provider::Cgroup;

/// A module that grows its memory by `pages` 64 KiB pages at once (exits 3 if
/// `memory.grow` returns -1), then sleeps `nanos` in `poll_oneoff` and returns.
pub fn hold_module(pages: u32, nanos: u64) -> Vec<u8> {
    common::wat(&format!(
        r#"(module
             (import "wasi_snapshot_preview1" "poll_oneoff"
               (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start")
               (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1))
                 (then (call $proc_exit (i32.const 3))))
               (i64.store (i32.const 0) (i64.const 7))
               (i32.store8 (i32.const 8) (i32.const 0))
               (i32.store (i32.const 16) (i32.const 1))
               (i64.store (i32.const 24) (i64.const {nanos}))
               (i64.store (i32.const 32) (i64.const 0))
               (i32.store16 (i32.const 40) (i32.const 0))
               (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#
    ))
}

/// Waits until `cgroup` holds `bytes` or more (failing after 10 s).
pub async fn until_memory(cgroup: &Cgroup, bytes: u64) {
    for _ in 0..1000 {
        if cgroup.memory_bytes() >= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the group never held {bytes} bytes: {cgroup:?}");
}
