//! Measurements, printed with `--nocapture`: 100k lines written through a `LogWriter` and
//! read back whole, and the latency from a write to a follower seeing it.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_lines_are_written_and_read_back_whole() {
    const LINES: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let registry = LogRegistry::new();
    let path = dir.path().join("0.log");
    let log = LogFile::create(&registry, &path, LogLimits::default()).unwrap();
    // ~100-byte lines: ~14 MB of records, so the default 10 MiB limit rotates once.
    let lines: Vec<String> = (0..LINES).map(|i| format!("{i:06} {}\n", "x".repeat(93))).collect();
    let mut out = log.writer(Stream::Stdout);
    let started = Instant::now();
    for line in &lines {
        out.write_all(line.as_bytes()).await.unwrap();
    }
    let wrote = started.elapsed();
    drop((out, log));
    assert!(dir.path().join("0.log.1").exists(), "10 MiB passed: rotated once");

    let started = Instant::now();
    let chunks: Vec<bytes::Bytes> =
        stream(&registry, &path, LogOptions::default()).await.unwrap().try_collect().await.unwrap();
    let read = started.elapsed();
    let text = chunks.concat();
    assert_eq!(text, lines.concat().as_bytes());

    let started = Instant::now();
    let opts = LogOptions { tail_lines: Some(10), ..Default::default() };
    let tail: Vec<bytes::Bytes> = stream(&registry, &path, opts).await.unwrap().try_collect().await.unwrap();
    let tailed = started.elapsed();
    assert_eq!(tail.concat(), lines[LINES - 10..].concat().as_bytes());

    let bytes: u64 =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    eprintln!(
        "logs perf: {LINES} lines ({:.1} MB on disk) written in {wrote:?} ({:.0} lines/s, {:.1} MB/s); \
         read back in {read:?}; tail 10 in {tailed:?}",
        bytes as f64 / 1e6,
        LINES as f64 / wrote.as_secs_f64(),
        bytes as f64 / 1e6 / wrote.as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_each_line_promptly() {
    const ROUNDS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let registry = LogRegistry::new();
    let path = dir.path().join("0.log");
    let log = LogFile::create(&registry, &path, LogLimits::default()).unwrap();
    let mut out = log.writer(Stream::Stdout);
    let opts = LogOptions { follow: true, ..Default::default() };
    let mut follower = stream(&registry, &path, opts).await.unwrap();
    // The follower runs as its own task and reports when each chunk arrives.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let following = tokio::spawn(async move {
        while let Some(chunk) = follower.next().await {
            let _ = seen_tx.send((Instant::now(), chunk.unwrap()));
        }
    });
    let mut latencies = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        // Let the follower park, waiting for the writer's announcement.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let line = format!("line {i}\n");
        let written = Instant::now();
        out.write_all(line.as_bytes()).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
        let (at, chunk) = seen.expect("follower stalled").expect("follower ended");
        latencies.push(at - written);
        assert_eq!(chunk, line.as_bytes());
    }
    drop((out, log));
    tokio::time::timeout(Duration::from_secs(5), following).await.expect("follow did not end").unwrap();
    latencies.sort();
    let pct = |p: usize| latencies[(ROUNDS * p / 100).min(ROUNDS - 1)];
    eprintln!(
        "logs perf: write -> parked follower sees it, over {ROUNDS} lines: p50 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        latencies[ROUNDS - 1]
    );
    assert!(pct(99) < Duration::from_millis(100), "p99 {:?}", pct(99));
}
