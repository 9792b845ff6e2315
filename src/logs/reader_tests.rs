//! Tests of `stream` without follow: every `kubectl logs` option, over plain and rotated files.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;

use super::*;

/// `2024-01-01T00:00:<s>Z` plus `ms` milliseconds, as a record time.
fn at(s: u64, ms: u64) -> String {
    format!("2024-01-01T00:00:{s:02}.{:09}Z", ms * 1_000_000)
}

fn system_time(s: u64, ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200 + s) + Duration::from_millis(ms)
}

/// Writes records `(seconds, stream, tag, text)` to `path`.
fn write_raw(path: &Path, records: &[(u64, &str, &str, &str)]) {
    let text: String = records
        .iter()
        .map(|(s, stream, tag, text)| format!("{} {stream} {tag} {text}\n", at(*s, 0)))
        .collect();
    std::fs::write(path, text).unwrap();
}

async fn read(path: &Path, opts: LogOptions) -> String {
    let chunks: Vec<bytes::Bytes> =
        stream(&LogRegistry::new(), path, opts).await.unwrap().try_collect().await.unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

/// One run: `0.log.1` (a, b), `0.log.2` (c split in two records), `0.log` (d, e).
fn rotated_run(dir: &Path) -> PathBuf {
    let path = dir.join("0.log");
    write_raw(&dir.join("0.log.1"), &[(1, "stdout", "F", "a"), (2, "stderr", "F", "b")]);
    write_raw(&dir.join("0.log.2"), &[(3, "stdout", "P", "c1"), (4, "stdout", "F", "c2")]);
    write_raw(&path, &[(5, "stdout", "F", "d"), (6, "stdout", "F", "e")]);
    path
}

fn one_file(dir: &Path) -> PathBuf {
    let path = dir.join("0.log");
    let text = format!(
        "{} stdout P Hel\n{} stdout F lo\n{} stderr F err\nnot a record\n{} stdout F \n",
        at(1, 250),
        at(1, 500),
        at(2, 0),
        at(3, 0)
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn output_is_the_text_of_every_record_of_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_file(dir.path());
    assert_eq!(read(&path, LogOptions::default()).await, "Hello\nerr\n\n");
}

#[tokio::test]
async fn timestamps_prefix_each_line_with_its_first_record_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_file(dir.path());
    let opts = LogOptions { timestamps: true, ..Default::default() };
    assert_eq!(
        read(&path, opts).await,
        "2024-01-01T00:00:01.25Z Hello\n2024-01-01T00:00:02Z err\n2024-01-01T00:00:03Z \n"
    );
}

#[tokio::test]
async fn since_skips_records_stamped_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_file(dir.path());
    let since = |s, ms| LogOptions { since: Some(system_time(s, ms)), ..Default::default() };
    assert_eq!(read(&path, since(2, 0)).await, "err\n\n");
    assert_eq!(read(&path, since(1, 400)).await, "lo\nerr\n\n");
    assert_eq!(read(&path, since(9, 0)).await, "");
    assert_eq!(read(&path, since(0, 0)).await, "Hello\nerr\n\n");
}

#[tokio::test]
async fn limit_bytes_cuts_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_file(dir.path());
    let limit = |n| LogOptions { limit_bytes: Some(n), ..Default::default() };
    assert_eq!(read(&path, limit(7)).await, "Hello\ne");
    assert_eq!(read(&path, limit(6)).await, "Hello\n");
    assert_eq!(read(&path, limit(100)).await, "Hello\nerr\n\n");
    let stamped = LogOptions { limit_bytes: Some(10), timestamps: true, ..Default::default() };
    assert_eq!(read(&path, stamped).await, "2024-01-01");
}

#[tokio::test]
async fn rotated_files_are_read_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = rotated_run(dir.path());
    assert_eq!(read(&path, LogOptions::default()).await, "a\nb\nc1c2\nd\ne\n");
    let lines = read_lines(&path).unwrap();
    assert_eq!(lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), ["a", "b", "c1c2", "d", "e"]);
    assert_eq!(lines[1].0, Stream::Stderr);
}

#[tokio::test]
async fn tail_counts_full_lines_from_the_end_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = rotated_run(dir.path());
    let tail = |n| LogOptions { tail_lines: Some(n), ..Default::default() };
    assert_eq!(read(&path, tail(0)).await, "");
    assert_eq!(read(&path, tail(1)).await, "e\n");
    assert_eq!(read(&path, tail(2)).await, "d\ne\n");
    assert_eq!(read(&path, tail(3)).await, "c1c2\nd\ne\n");
    assert_eq!(read(&path, tail(4)).await, "b\nc1c2\nd\ne\n");
    assert_eq!(read(&path, tail(5)).await, "a\nb\nc1c2\nd\ne\n");
    assert_eq!(read(&path, tail(u64::MAX)).await, "a\nb\nc1c2\nd\ne\n");
}

#[tokio::test]
async fn tail_applies_before_since_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = rotated_run(dir.path());
    let opts = LogOptions { tail_lines: Some(3), since: Some(system_time(4, 0)), ..Default::default() };
    assert_eq!(read(&path, opts).await, "c2\nd\ne\n");
    let opts = LogOptions { tail_lines: Some(2), limit_bytes: Some(3), ..Default::default() };
    assert_eq!(read(&path, opts).await, "d\ne");
}

#[tokio::test]
async fn tail_finds_its_start_in_a_file_larger_than_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    // ~760 KB: the backward scan crosses many 64 KiB chunks, records straddling them.
    let records: Vec<(u64, &str, &str, String)> = (0..20_000)
        .map(|i| (i % 60, "stdout", if i % 3 == 0 { "P" } else { "F" }, format!("r{i}")))
        .collect();
    let refs: Vec<(u64, &str, &str, &str)> =
        records.iter().map(|(s, st, t, x)| (*s, *st, *t, x.as_str())).collect();
    write_raw(&path, &refs);
    let out = read(&path, LogOptions { tail_lines: Some(5000), ..Default::default() }).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5000);
    // Records 3k (P) and 3k+1 (F) make a line; 3k+2 (F) is one on its own.
    assert_eq!(lines[0], "r12500");
    assert_eq!(lines[1], "r12501r12502");
    assert_eq!(lines[4999], "r19998r19999");
}

#[tokio::test]
async fn a_missing_run_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c").join("0.log");
    let err = stream(&LogRegistry::new(), &path, LogOptions::default()).await.err();
    assert!(matches!(&err, Some(LogError::NotFound { path: p }) if *p == path), "{err:?}");
    // Rotated files alone are no run either.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_raw(&dir.path().join("c").join("0.log.1"), &[(1, "stdout", "F", "a")]);
    let err =
        stream(&LogRegistry::new(), &path, LogOptions { follow: true, ..Default::default() }).await.err();
    assert!(matches!(err, Some(LogError::NotFound { .. })), "{err:?}");
}
