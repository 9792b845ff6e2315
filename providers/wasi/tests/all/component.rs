//! WASI preview2 components (`wasi:cli/command`), built in the test from preview1 WAT
//! with `wit-component` and the wasmtime 48 preview1 adapter.

use crate::common;

use common::{Capture, digest, runtime, wait_for, wat};
use krustlet_wasi_provider::{ArtifactKind, Error, ExitStatus, RunSpec};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
};

/// A component from a preview1 module that prints a greeting and its environment to
/// stdout, "to stderr" to stderr, then calls `proc_exit(code)` (or returns when
/// `code` is None).
fn command_component(code: Option<u32>) -> Vec<u8> {
    let exit = code.map_or(String::new(), |code| format!("(call $proc_exit (i32.const {code}))"));
    let core = wat(&format!(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "environ_sizes_get"
               (func $environ_sizes_get (param i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "environ_get"
               (func $environ_get (param i32 i32) (result i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (memory (export "memory") 1)
             (data (i32.const 100) "hello from a component\n")
             (data (i32.const 200) "to stderr\n")
             (func $write (param $fd i32) (param $ptr i32) (param $len i32)
               (i32.store (i32.const 0) (local.get $ptr))
               (i32.store (i32.const 4) (local.get $len))
               (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
                 (then (call $proc_exit (i32.const 99)))))
             (func (export "_start")
               (call $write (i32.const 1) (i32.const 100) (i32.const 23))
               (call $write (i32.const 2) (i32.const 200) (i32.const 10))
               ;; environ buffer to stdout, to show env reaches a component
               (if (call $environ_sizes_get (i32.const 16) (i32.const 20))
                 (then (call $proc_exit (i32.const 98))))
               (if (call $environ_get (i32.const 1024) (i32.const 8192))
                 (then (call $proc_exit (i32.const 98))))
               (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 20)))
               {exit}))"#
    ));
    wit_component::ComponentEncoder::default()
        .module(&core)
        .and_then(|encoder| {
            encoder.adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER)
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .expect("component encodes")
}

async fn run_component(code: Option<u32>) -> (ExitStatus, String, String) {
    let bytes = command_component(code);
    let runtime = runtime();
    let artifact = runtime.load(&bytes, &digest(&bytes)).unwrap();
    assert_eq!(artifact.kind(), ArtifactKind::Component);
    let (out, err) = (Capture::default(), Capture::default());
    let spec =
        RunSpec::new().argv(["component.wasm"]).env("WHO", "p2").stdout(out.clone()).stderr(err.clone());
    let mut handle = runtime.run(&artifact, spec).unwrap();
    let status = wait_for(&mut handle, 20).await;
    (status, out.text(), err.text())
}

#[tokio::test]
async fn component_prints_and_exits_with_a_failure_code() {
    let (status, out, err) = run_component(Some(3)).await;
    assert_eq!(out, "hello from a component\nWHO=p2\0");
    assert_eq!(err, "to stderr\n");
    // The wasmtime 48 preview1 adapter turns any non-zero `proc_exit` into
    // `wasi:cli/exit.exit(err)`, which is exit code 1.
    assert_eq!(status, ExitStatus::Exited(1));
}

#[tokio::test]
async fn component_returning_normally_exits_zero() {
    let (status, out, _) = run_component(None).await;
    assert!(out.starts_with("hello from a component\n"), "{out:?}");
    assert_eq!(status, ExitStatus::Exited(0));
}

#[tokio::test]
async fn component_proc_exit_zero_is_success() {
    let (status, _, _) = run_component(Some(0)).await;
    assert_eq!(status, ExitStatus::Exited(0));
}

/// A hand-written component: its `wasi:cli/run` either calls
/// `wasi:cli/exit.exit-with-code(code)` or returns `result` `err` / `ok`.
fn native_component(body: &str) -> Vec<u8> {
    wat(&format!(
        r#"(component
             (import "wasi:cli/exit@0.2.12" (instance $exit
               (export "exit-with-code" (func (param "status-code" u8)))))
             (core func $exit_with_code (canon lower (func $exit "exit-with-code")))
             (core module $m
               (import "host" "exit-with-code" (func $exit_with_code (param i32)))
               (func (export "run") (result i32) {body}))
             (core instance $i (instantiate $m
               (with "host" (instance (export "exit-with-code" (func $exit_with_code))))))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $cli_run (export "run" (func $run)))
             (export "wasi:cli/run@0.2.12" (instance $cli_run)))"#
    ))
}

async fn run_native(body: &str) -> ExitStatus {
    let bytes = native_component(body);
    let runtime = runtime();
    let artifact = runtime.load(&bytes, &digest(&bytes)).unwrap();
    assert_eq!(artifact.kind(), ArtifactKind::Component);
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    wait_for(&mut handle, 20).await
}

#[tokio::test]
async fn component_exit_with_code_is_reported() {
    let status = run_native("(call $exit_with_code (i32.const 42)) unreachable").await;
    assert_eq!(status, ExitStatus::Exited(42));
}

#[tokio::test]
async fn component_run_err_is_exit_one_and_ok_is_zero() {
    assert_eq!(run_native("(i32.const 1)").await, ExitStatus::Exited(1));
    assert_eq!(run_native("(i32.const 0)").await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn component_without_wasi_cli_run_is_a_link_error() {
    // A valid component that exports nothing.
    let bytes = wat("(component)");
    let runtime = runtime();
    let err = runtime.load(&bytes, &digest(&bytes)).unwrap_err();
    assert!(matches!(err, Error::Link { .. }), "{err:?}");
}
