//! Standard I/O, argv and environment as the guest sees them.

use crate::common;

use common::{Capture, fixture, load, runtime, wait_for};
use krustlet_wasi_provider::{ExitStatus, RunSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn stdout_and_stderr_are_captured_separately() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("hello.wat"));
    let (out, err) = (Capture::default(), Capture::default());
    let spec = RunSpec::new().argv(["hello"]).stdout(out.clone()).stderr(err.clone());
    let mut handle = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "hello stdout\n");
    assert_eq!(err.text(), "hello stderr\n");
}

#[tokio::test]
async fn output_without_sinks_is_discarded() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("hello.wat"));
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn guest_sees_argv_and_env_in_order() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("args_env.wat"));
    let (out, err) = (Capture::default(), Capture::default());
    let spec = RunSpec::new()
        .argv(["prog.wasm", "--flag", "two words"])
        .env("A", "1")
        .envs([("EMPTY", ""), ("B", "x=y")])
        .stdout(out.clone())
        .stderr(err.clone());
    let mut handle = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "prog.wasm\0--flag\0two words\0");
    assert_eq!(err.text(), "A=1\0EMPTY=\0B=x=y\0");
}

#[tokio::test]
async fn stdin_is_piped_and_eof_ends_the_read() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("cat.wat"));
    let out = Capture::default();
    let spec = RunSpec::new().stdin(&b"line one\nline two\n"[..]).stdout(out.clone());
    let mut handle = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "line one\nline two\n");
}

#[tokio::test]
async fn no_stdin_reads_as_end_of_file() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("cat.wat"));
    let out = Capture::default();
    let mut handle = runtime.run(&artifact, RunSpec::new().stdout(out.clone())).unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "");
}

/// Stream sinks (as `exec` will use): a slow, small pipe sees every byte, in order,
/// and the sink is closed when the guest ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_through_a_small_pipe_arrives_whole() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("flood.wat"));
    let (writer, mut reader) = tokio::io::duplex(1024);
    let mut handle = runtime.run(&artifact, RunSpec::new().stdout(writer)).unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), reader.read_to_end(&mut received));
    read.await.expect("sink closed after the guest ended").unwrap();
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(received.len(), 16 * 65536);
    assert!(received.iter().all(|byte| *byte == b'x'));
}

/// Interactive stdin (as `exec -i` will use): data written after start is read.
#[tokio::test]
async fn stdin_written_while_running_is_echoed() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("cat.wat"));
    let (mut input, guest_stdin) = tokio::io::duplex(64);
    let out = Capture::default();
    let spec = RunSpec::new().stdin(guest_stdin).stdout(out.clone());
    let mut handle = runtime.run(&artifact, spec).unwrap();
    input.write_all(b"ping\n").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!handle.is_finished(), "guest must wait for more input");
    input.write_all(b"pong\n").await.unwrap();
    drop(input);
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "ping\npong\n");
}

/// Guests run on the runtime's own threads, but their stdio may be the caller's I/O types,
/// registered with the caller's tokio runtime (here sockets of a current-thread runtime).
#[tokio::test]
async fn stdio_of_the_callers_runtime_works() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("cat.wat"));
    let (mut input, guest_stdin) = tokio::net::UnixStream::pair().unwrap();
    let (guest_stdout, mut output) = tokio::net::UnixStream::pair().unwrap();
    let spec = RunSpec::new().stdin(guest_stdin).stdout(guest_stdout);
    let mut handle = runtime.run(&artifact, spec).unwrap();
    input.write_all(b"ping\n").await.unwrap();
    let mut line = [0; 5];
    tokio::time::timeout(std::time::Duration::from_secs(10), output.read_exact(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&line, b"ping\n");
    drop(input);
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(0));
    let mut rest = Vec::new();
    output.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}
