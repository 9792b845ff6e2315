//! Tests of writing: the CRI format, partial records, rotation and the registry.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::writer::MAX_LINE;
use super::*;

fn small(max_size: u64, max_files: u32) -> LogLimits {
    LogLimits { max_size, max_files }
}

/// Writes `n` lines `line <i>` to stdout, one write call each.
async fn write_lines(log: &LogFile, n: usize) {
    let mut out = log.writer(Stream::Stdout);
    for i in 0..n {
        out.write_all(format!("line {i:04}\n").as_bytes()).await.unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn texts(path: &Path) -> Vec<String> {
    read_lines(path).unwrap().into_iter().map(|(_, t)| t).collect()
}

#[tokio::test]
async fn lines_become_cri_records_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = container_log(&pod_dir(dir.path(), "ns", "p", "u1"), "c", 0);
    assert!(path.ends_with("logs/ns_p_u1/c/0.log"));
    let log = LogFile::create(&LogRegistry::new(), &path, LogLimits::default()).unwrap();
    assert_eq!(log.path(), path);
    let (mut out, mut err) = (log.writer(Stream::Stdout), log.writer(Stream::Stderr));
    out.write_all(b"Hello, ").await.unwrap();
    out.write_all(b"World!\nsecond\r\n\n").await.unwrap();
    err.write_all(b"oops\nunterminated").await.unwrap();
    err.shutdown().await.unwrap();
    let raw = std::fs::read_to_string(&path).unwrap();
    let first = raw.lines().next().unwrap();
    let ts = first.split(' ').next().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 30, "RFC3339Nano: {ts}");
    assert!(first.ends_with(" stdout F Hello, World!"), "{first}");
    assert_eq!(
        read_lines(&path).unwrap(),
        vec![
            (Stream::Stdout, "Hello, World!".into()),
            (Stream::Stdout, "second".into()),
            (Stream::Stdout, "".into()),
            (Stream::Stderr, "oops".into()),
            (Stream::Stderr, "unterminated".into()),
        ]
    );
}

#[tokio::test]
async fn very_long_lines_are_split_into_partials_and_joined_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let log = LogFile::create(&LogRegistry::new(), &path, LogLimits::default()).unwrap();
    let (mut out, mut err) = (log.writer(Stream::Stdout), log.writer(Stream::Stderr));
    let long = "x".repeat(MAX_LINE * 2 + 10);
    // Written in pieces, interleaved with another stream: partials join per stream.
    out.write_all(&long.as_bytes()[..MAX_LINE + 5]).await.unwrap();
    err.write_all(b"between\n").await.unwrap();
    out.write_all(format!("{}\n", &long[MAX_LINE + 5..]).as_bytes()).await.unwrap();
    let raw = std::fs::read_to_string(&path).unwrap();
    assert_eq!(raw.lines().filter(|l| l.contains(" stdout P ")).count(), 2);
    assert!(raw.lines().all(|l| l.len() <= MAX_LINE + 40));
    assert_eq!(read_lines(&path).unwrap(), vec![(Stream::Stderr, "between".into()), (Stream::Stdout, long)]);
}

#[tokio::test]
async fn a_file_is_rotated_before_it_would_pass_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    // Each record is 30 (time) + 10 (" stdout F ") + 9 ("line 0000") + 1 = 50 bytes.
    let log = LogFile::create(&LogRegistry::new(), &path, small(120, 10)).unwrap();
    write_lines(&log, 7).await;
    // Two records per file: 0-1, 2-3, 4-5 rotated out (oldest is .1), 6 current.
    assert_eq!(names(dir.path()), ["0.log", "0.log.1", "0.log.2", "0.log.3"]);
    for name in ["0.log.1", "0.log.2", "0.log.3"] {
        assert_eq!(std::fs::metadata(dir.path().join(name)).unwrap().len(), 100, "{name}");
    }
    assert!(std::fs::read_to_string(dir.path().join("0.log.1")).unwrap().contains("line 0000"));
    assert!(std::fs::read_to_string(&path).unwrap().contains("line 0006"));
    let expected: Vec<String> = (0..7).map(|i| format!("line {i:04}")).collect();
    assert_eq!(texts(&path), expected);
}

#[tokio::test]
async fn one_write_of_many_lines_is_split_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let log = LogFile::create(&LogRegistry::new(), &path, small(120, 10)).unwrap();
    let text: String = (0..5).map(|i| format!("line {i:04}\n")).collect();
    log.writer(Stream::Stdout).write_all(text.as_bytes()).await.unwrap();
    assert_eq!(names(dir.path()), ["0.log", "0.log.1", "0.log.2"]);
    assert_eq!(texts(&path), (0..5).map(|i| format!("line {i:04}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn max_files_keeps_the_newest_and_deletes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("3.log");
    let log = LogFile::create(&LogRegistry::new(), &path, small(120, 3)).unwrap();
    write_lines(&log, 9).await;
    // Files 1..=4 were rotated out; only the two newest remain next to the current one.
    assert_eq!(names(dir.path()), ["3.log", "3.log.3", "3.log.4"]);
    assert_eq!(texts(&path), (4..9).map(|i| format!("line {i:04}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn max_files_one_keeps_only_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let log = LogFile::create(&LogRegistry::new(), &path, small(120, 1)).unwrap();
    write_lines(&log, 5).await;
    assert_eq!(names(dir.path()), ["0.log"]);
    assert_eq!(texts(&path), ["line 0004"]);
}

#[tokio::test]
async fn reopening_a_run_continues_its_file_and_rotation_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let registry = LogRegistry::new();
    let log = LogFile::create(&registry, &path, small(120, 10)).unwrap();
    write_lines(&log, 3).await;
    drop(log);
    assert!(!registry.is_live(&path));
    let log = LogFile::create(&registry, &path, small(120, 10)).unwrap();
    // The current file holds one record (50 bytes): one more fits, the next rotates to .2.
    write_lines(&log, 2).await;
    assert_eq!(names(dir.path()), ["0.log", "0.log.1", "0.log.2"]);
    let mut expected: Vec<String> = (0..3).map(|i| format!("line {i:04}")).collect();
    expected.extend((0..2).map(|i| format!("line {i:04}")));
    assert_eq!(texts(&path), expected);
}

#[tokio::test]
async fn a_run_is_live_while_any_writer_or_handle_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let registry = LogRegistry::new();
    let log = LogFile::create(&registry, &path, LogLimits::default()).unwrap();
    let same = LogFile::create(&registry, &path, small(1, 1)).unwrap();
    let writer = same.writer(Stream::Stdout);
    drop((log, same));
    assert!(registry.is_live(&path));
    drop(writer);
    assert!(!registry.is_live(&path));
    assert!(format!("{registry:?}").contains("runs: 0"));
}

#[test]
fn a_missing_log_is_not_found_and_an_unwritable_one_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("0.log");
    assert!(matches!(read_lines(&missing), Err(LogError::NotFound { path }) if path == missing));
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let err = LogFile::create(&LogRegistry::new(), &blocker.join("0.log"), LogLimits::default()).err();
    assert!(matches!(err, Some(LogError::CreateDir { .. })), "{err:?}");
}

#[test]
fn run_paths_lists_runs_in_order_and_ignores_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run_paths(dir.path(), "c").is_empty());
    let c = dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    for name in ["10.log", "2.log", "2.log.1", "0.log", "02.log", "x.log", "3.txt"] {
        std::fs::write(c.join(name), "").unwrap();
    }
    let runs = run_paths(dir.path(), "c");
    assert_eq!(
        runs,
        vec![(0, container_log(dir.path(), "c", 0)), (2, c.join("2.log")), (10, c.join("10.log"))]
    );
}
