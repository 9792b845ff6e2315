//! Tests of `stream` with follow: pushed lines, rotation while following, and the end of
//! the run ending the stream.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::*;

const FOLLOW: LogOptions =
    LogOptions { follow: true, tail_lines: None, since: None, timestamps: false, limit_bytes: None };

/// A live run in a temporary directory.
fn live(limits: LogLimits) -> (tempfile::TempDir, LogRegistry, PathBuf, LogFile) {
    let dir = tempfile::tempdir().unwrap();
    let registry = LogRegistry::new();
    let path = dir.path().join("c").join("0.log");
    let log = LogFile::create(&registry, &path, limits).unwrap();
    (dir, registry, path, log)
}

/// The next chunk of output, failing the test if none comes within 5 s.
async fn next(s: &mut LogStream) -> Option<String> {
    let chunk = timeout(Duration::from_secs(5), s.next()).await.expect("follow stalled");
    chunk.map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
}

/// Everything until the stream ends, failing the test if it does not within 10 s.
async fn rest(s: &mut LogStream) -> String {
    let mut out = String::new();
    while let Some(chunk) = timeout(Duration::from_secs(10), s.next()).await.expect("follow did not end") {
        out.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    out
}

/// Whether the stream stays silent (neither output nor end) for a while.
async fn silent(s: &mut LogStream) -> bool {
    timeout(Duration::from_millis(150), s.next()).await.is_err()
}

#[tokio::test]
async fn follow_gets_lines_written_after_it_started_and_ends_when_the_writer_closes() {
    let (_dir, registry, path, log) = live(LogLimits::default());
    let mut out = log.writer(Stream::Stdout);
    let mut err = log.writer(Stream::Stderr);
    out.write_all(b"before\n").await.unwrap();
    let mut s = stream(&registry, &path, FOLLOW).await.unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("before\n"));
    assert!(silent(&mut s).await, "follow must wait for more, not end");
    out.write_all(b"after\n").await.unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("after\n"));
    err.write_all(b"to stderr\n").await.unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("to stderr\n"));
    // The writers close: the unterminated last line is written as a record.
    out.write_all(b"last").await.unwrap();
    drop((out, err));
    assert_eq!(next(&mut s).await.as_deref(), Some("last\n"));
    assert!(silent(&mut s).await, "still live while the LogFile is held");
    // The run's last handle goes: the stream ends.
    drop(log);
    assert_eq!(rest(&mut s).await, "");
}

#[tokio::test]
async fn follow_with_tail_zero_shows_only_new_lines() {
    let (_dir, registry, path, log) = live(LogLimits::default());
    let mut out = log.writer(Stream::Stdout);
    out.write_all(b"old 1\nold 2\n").await.unwrap();
    let mut s = stream(&registry, &path, LogOptions { tail_lines: Some(0), ..FOLLOW }).await.unwrap();
    assert!(silent(&mut s).await);
    out.write_all(b"new\n").await.unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("new\n"));
    drop((out, log));
    assert_eq!(rest(&mut s).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reads_on_across_rotations_without_loss_or_repeat() {
    let limits = LogLimits { max_size: 300, max_files: 10_000 };
    let (dir, registry, path, log) = live(limits);
    let mut out = log.writer(Stream::Stdout);
    for i in 0..20 {
        out.write_all(format!("early {i}\n").as_bytes()).await.unwrap();
    }
    let mut s = stream(&registry, &path, LogOptions { tail_lines: Some(3), ..FOLLOW }).await.unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..2000 {
            out.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop((out, log));
    });
    let got = rest(&mut s).await;
    writer.await.unwrap();
    let mut expected: Vec<String> = (17..20).map(|i| format!("early {i}")).collect();
    expected.extend((0..2000).map(|i| format!("line {i}")));
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), expected.len(), "first lines {:?}", &got[..got.len().min(5)]);
    assert!(got.iter().zip(&expected).all(|(g, e)| g == e), "lines out of order");
    let files = std::fs::read_dir(dir.path().join("c")).unwrap().count();
    assert!(files > 100, "the test must rotate many times: {files} files");
}

#[tokio::test]
async fn follow_starting_after_rotations_tails_across_the_rotated_files() {
    let limits = LogLimits { max_size: 120, max_files: 5 };
    let (_dir, registry, path, log) = live(limits);
    let mut out = log.writer(Stream::Stdout);
    for i in 0..5 {
        out.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
    }
    let mut s = stream(&registry, &path, LogOptions { tail_lines: Some(4), ..FOLLOW }).await.unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("line 1\nline 2\nline 3\nline 4\n"));
    out.write_all(b"line 5\nline 6\n").await.unwrap();
    drop((out, log));
    assert_eq!(rest(&mut s).await, "line 5\nline 6\n");
}

#[tokio::test]
async fn follow_of_a_finished_run_reads_it_and_ends() {
    let (_dir, registry, path, log) = live(LogLimits::default());
    log.writer(Stream::Stdout).write_all(b"done\n").await.unwrap();
    drop(log);
    let mut s = stream(&registry, &path, FOLLOW).await.unwrap();
    assert_eq!(rest(&mut s).await, "done\n");
}

#[tokio::test]
async fn without_follow_a_live_run_is_read_as_far_as_written() {
    let (_dir, registry, path, log) = live(LogLimits::default());
    let mut out = log.writer(Stream::Stdout);
    out.write_all(b"so far\n").await.unwrap();
    let mut s = stream(&registry, &path, LogOptions::default()).await.unwrap();
    assert_eq!(rest(&mut s).await, "so far\n");
    drop(out);
}

#[tokio::test]
async fn follow_ends_at_the_byte_limit_while_the_run_goes_on() {
    let (_dir, registry, path, log) = live(LogLimits::default());
    let mut out = log.writer(Stream::Stdout);
    let mut s = stream(&registry, &path, LogOptions { limit_bytes: Some(8), ..FOLLOW }).await.unwrap();
    out.write_all(b"12345\n").await.unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("12345\n"));
    out.write_all(b"67890\n").await.unwrap();
    assert_eq!(rest(&mut s).await, "67");
    assert!(registry.is_live(&path));
}
