//! Loading: format detection, clear errors for bad input, and the two compile caches
//! (in memory by digest; on disk by digest and engine hash).

use crate::common;

use std::time::Instant;

use common::http::{component, get, serve};
use common::{Capture, digest, fixture, load, runtime, wait_for, wat};
use krustlet_wasi_provider::{ArtifactKind, CacheStats, Error, ExitStatus, LoadSource, RunSpec, Runtime};

fn cached_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::builder().cache_dir(dir).build().unwrap()
}

/// A module big enough for compile time to show: `n` functions doing some arithmetic.
fn big_module(n: usize) -> Vec<u8> {
    let mut text = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..n {
        text.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (local i32)
               (local.set 1 (i32.mul (local.get 0) (i32.const {i})))
               (if (result i32) (i32.gt_u (local.get 1) (i32.const 1000))
                 (then (i32.rem_u (local.get 1) (i32.const 7)))
                 (else (i32.add (local.get 1) (i32.load (local.get 0))))))\n"
        ));
    }
    text.push_str("(func (export \"_start\") (drop (call $f1 (i32.const 3)))))");
    wat(&text)
}

#[test]
fn bad_bytes_are_clear_errors() {
    let runtime = runtime();
    let cases: [(&[u8], &str); 4] = [
        (b"", "empty"),
        (b"(module)", "WAT text"),
        (b"\x7fELF\x02\x01\x01\x00", "an ELF file"),
        (b"\0asm\x02\0\0\0", "a future version"),
    ];
    for (bytes, what) in cases {
        let err = runtime.load(bytes, "sha256:bad").unwrap_err();
        assert!(matches!(err, Error::UnknownFormat { .. }), "{what}: {err:?}");
    }
    // A valid header followed by garbage fails validation.
    let err = runtime.load(b"\0asm\x01\0\0\0\xff\xff\xff", "sha256:garbage").unwrap_err();
    assert!(matches!(err, Error::Compile { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn unknown_imports_and_missing_start_are_link_errors() {
    let runtime = runtime();
    let unknown_import = wat(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#);
    let err = runtime.load(&unknown_import, &digest(&unknown_import)).unwrap_err();
    assert!(matches!(err, Error::Link { .. }), "{err:?}");
    let no_start = wat(r#"(module (func (export "main")))"#);
    let err = runtime.load(&no_start, &digest(&no_start)).unwrap_err();
    assert!(matches!(err, Error::Link { .. }), "{err:?}");
}

#[test]
fn digests_that_cannot_name_a_file_are_refused() {
    let runtime = runtime();
    let bytes = fixture("hello.wat");
    for bad in ["", "../../etc/passwd", "sha256/abc"] {
        let err = runtime.load(&bytes, bad).unwrap_err();
        assert!(matches!(err, Error::InvalidDigest { .. }), "{bad:?}: {err:?}");
    }
}

/// Guests run on the runtime's own threads: `run` needs no tokio runtime, and `wait`
/// works from any executor.
#[test]
fn run_outside_tokio_works() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("hello.wat"));
    let out = Capture::default();
    let mut handle = runtime.run(&artifact, RunSpec::new().stdout(out.clone())).unwrap();
    let waiter = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert_eq!(waiter.block_on(wait_for(&mut handle, 10)), ExitStatus::Exited(0));
    assert!(!out.text().is_empty());
}

#[tokio::test]
async fn artifact_from_another_runtime_is_refused() {
    let (one, two) = (runtime(), runtime());
    let artifact = load(&one, &fixture("hello.wat"));
    let err = two.run(&artifact, RunSpec::new()).unwrap_err();
    assert!(matches!(err, Error::ForeignArtifact { .. }), "{err:?}");
}

#[test]
fn second_load_of_a_digest_is_a_memory_hit() {
    let runtime = runtime();
    let bytes = fixture("hello.wat");
    let first = load(&runtime, &bytes);
    assert_eq!((first.source(), first.cache_hit()), (LoadSource::Compiled, false));
    assert_eq!(first.kind(), ArtifactKind::Module);
    // Same digest: the bytes are not even looked at.
    let second = runtime.load(b"ignored", &digest(&bytes)).unwrap();
    assert_eq!((second.source(), second.cache_hit()), (LoadSource::Memory, true));
    assert!(runtime.cached(&digest(&bytes)).is_some());
    let stats = runtime.cache_stats();
    assert_eq!((stats.compiled, stats.disk_hits, stats.memory_hits), (1, 0, 2));
    assert!(runtime.forget(&digest(&bytes)));
    assert!(runtime.cached(&digest(&bytes)).is_none());
    assert_eq!(load(&runtime, &bytes).source(), LoadSource::Compiled);
}

#[test]
fn concurrent_loads_of_one_digest_compile_once() {
    let runtime = runtime();
    let bytes = big_module(300);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| load(&runtime, &bytes));
        }
    });
    assert_eq!(runtime.cache_stats().compiled, 1);
    assert_eq!(runtime.cache_stats().memory_hits, 3);
}

#[tokio::test]
async fn fresh_runtime_loads_from_disk_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let module = fixture("hello.wat");
    let component = wat(r#"(component
        (core module $m (func (export "run") (result i32) (i32.const 0)))
        (core instance $i (instantiate $m))
        (func $run (result (result)) (canon lift (core func $i "run")))
        (instance $r (export "run" (func $run)))
        (export "wasi:cli/run@0.2.0" (instance $r)))"#);

    let first = cached_runtime(dir.path());
    assert_eq!(load(&first, &module).source(), LoadSource::Compiled);
    assert_eq!(load(&first, &component).source(), LoadSource::Compiled);
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let module_file = files.iter().find(|name| name.starts_with(&digest(&module))).unwrap();
    assert!(module_file.ends_with(".cwasm"), "{module_file}");
    drop(first);

    let second = cached_runtime(dir.path());
    let loaded = load(&second, &module);
    assert_eq!(loaded.source(), LoadSource::Disk);
    let loaded_component = load(&second, &component);
    assert_eq!(loaded_component.source(), LoadSource::Disk);
    assert_eq!(loaded_component.kind(), ArtifactKind::Component);
    assert_eq!(second.cache_stats(), CacheStats { compiled: 0, disk_hits: 2, memory_hits: 0 });

    // Code from disk runs.
    let out = Capture::default();
    let mut handle = second.run(&loaded, RunSpec::new().stdout(out.clone())).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "hello stdout\n");
    let mut handle = second.run(&loaded_component, RunSpec::new()).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
}

/// An agent restart: a fresh runtime on the same cache directory loads a module by its
/// file without reading past the header (its body is gone here, and only a compile would
/// need it), compiles nothing, and the code runs. A digest that is not cached needs the
/// file, and a missing one is an error naming it.
#[tokio::test]
async fn load_file_after_a_restart_reads_the_cache_not_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, wasm) = (dir.path().join("cache"), dir.path().join("hello.wasm"));
    let bytes = fixture("hello.wat");
    std::fs::write(&wasm, &bytes).unwrap();
    let first = cached_runtime(&cache).load_file(&wasm, &digest(&bytes)).unwrap();
    assert_eq!(first.source(), LoadSource::Compiled);

    std::fs::write(&wasm, &bytes[..8]).unwrap();
    let restarted = cached_runtime(&cache);
    let loaded = restarted.load_file(&wasm, &digest(&bytes)).unwrap();
    assert_eq!((loaded.source(), loaded.kind()), (LoadSource::Disk, ArtifactKind::Module));
    assert_eq!(restarted.cache_stats(), CacheStats { compiled: 0, disk_hits: 1, memory_hits: 0 });
    let out = Capture::default();
    let mut handle = restarted.run(&loaded, RunSpec::new().stdout(out.clone())).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "hello stdout\n");

    let missing = dir.path().join("missing.wasm");
    let err = restarted.load_file(&missing, "sha256:missing").unwrap_err();
    assert!(matches!(&err, Error::Read { path, .. } if *path == missing), "{err:?}");
}

/// A wasi:http component's code from the disk cache is served after a restart (it moves
/// into the engine that HTTP instances are pooled on).
#[tokio::test]
async fn a_proxy_from_the_disk_cache_serves_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = component("http_hello");
    let compiled = cached_runtime(dir.path()).load(&bytes, &digest(&bytes)).unwrap();
    assert_eq!((compiled.source(), compiled.kind()), (LoadSource::Compiled, ArtifactKind::HttpProxy));

    let restarted = cached_runtime(dir.path());
    let artifact = restarted.load(&bytes, &digest(&bytes)).unwrap();
    assert_eq!((artifact.source(), artifact.kind()), (LoadSource::Disk, ArtifactKind::HttpProxy));
    let (mut handle, addr) = serve(&restarted, &artifact, RunSpec::new());
    let reply = get(addr, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "Hello, World!\n"));
    handle.shutdown(std::time::Duration::from_secs(5));
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped);
}

/// However many new artifacts load at once, one compile thread compiles them all, and two
/// loads of each digest compile it once.
#[test]
fn one_compile_thread_serves_every_load() {
    let runtime = Runtime::builder().compile_threads(1).build().unwrap();
    let modules: Vec<Vec<u8>> = (0..3).map(|i| big_module(200 + i)).collect();
    std::thread::scope(|scope| {
        for bytes in modules.iter().chain(&modules) {
            let runtime = &runtime;
            scope.spawn(move || load(runtime, bytes));
        }
    });
    assert_eq!(runtime.cache_stats(), CacheStats { compiled: 3, disk_hits: 0, memory_hits: 3 });
}

#[test]
fn corrupt_cache_file_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fixture("hello.wat");
    load(&cached_runtime(dir.path()), &bytes);
    let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let mut damaged = std::fs::read(&file).unwrap();
    damaged.truncate(damaged.len() / 2);
    std::fs::write(&file, damaged).unwrap();

    let runtime = cached_runtime(dir.path());
    assert_eq!(load(&runtime, &bytes).source(), LoadSource::Compiled);
    // The bad file was replaced by a good one.
    assert_eq!(load(&cached_runtime(dir.path()), &bytes).source(), LoadSource::Disk);
}

#[test]
fn failing_cache_write_does_not_fail_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let runtime = cached_runtime(&cache);
    std::fs::remove_dir(&cache).unwrap();
    assert_eq!(load(&runtime, &fixture("hello.wat")).source(), LoadSource::Compiled);
}

/// Not a pass/fail check of speed; prints the numbers for the record and checks that
/// each cached path skipped compilation.
#[test]
fn timing_cold_compile_vs_disk_vs_memory() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = big_module(2000);
    let d = digest(&bytes);
    let started = Instant::now();
    let cold = cached_runtime(dir.path()).load(&bytes, &d).unwrap();
    let cold_time = started.elapsed();
    let runtime = cached_runtime(dir.path());
    let started = Instant::now();
    let disk = runtime.load(&bytes, &d).unwrap();
    let disk_time = started.elapsed();
    let started = Instant::now();
    let memory = runtime.load(&bytes, &d).unwrap();
    let memory_time = started.elapsed();
    assert_eq!(
        [cold.source(), disk.source(), memory.source()],
        [LoadSource::Compiled, LoadSource::Disk, LoadSource::Memory]
    );
    eprintln!(
        "{} KiB module, 2000 functions: compile {cold_time:?}, disk cache {disk_time:?}, memory {memory_time:?}",
        bytes.len() / 1024
    );
}
