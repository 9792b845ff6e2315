//! Tests of the one follower with both wake-ups: the writer's announcements in this
//! process ([`stream`]) and, for a reader the writer does not know about, inotify plus an
//! "is it over" flag ([`follow`] with a [`RunWatch`], as `krustlet-wasi logs -f` uses it).
//! Each case runs with both: appends, rotation while following, a torn record left at the
//! end of a rotated file, `--tail`, and the end of the run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::*;
use crate::wake::Wake;

#[derive(Debug, Clone, Copy)]
enum Wakeup {
    /// The writer's registry: woken by each append, over when the writer is gone.
    Writer,
    /// The writer in a registry the follower does not see (as in another process): woken
    /// by inotify on the log directory, over when a flag says so.
    Inotify,
}

const BOTH: [Wakeup; 2] = [Wakeup::Writer, Wakeup::Inotify];

/// The follower's side of [`Wakeup::Inotify`].
struct DirWatch {
    wake: Wake,
    over: Arc<AtomicBool>,
}

impl RunWatch for DirWatch {
    async fn changed(&mut self) {
        self.wake.wait().await;
    }

    fn is_over(&mut self) -> Result<bool, WatchError> {
        Ok(self.over.load(Ordering::SeqCst))
    }
}

/// One run being written, and how its follower learns about it.
struct Run {
    _dir: tempfile::TempDir,
    path: PathBuf,
    wakeup: Wakeup,
    /// The writer's registry (the follower's too with [`Wakeup::Writer`]).
    registry: LogRegistry,
    log: Option<LogFile>,
    over: Arc<AtomicBool>,
}

impl Run {
    fn new(wakeup: Wakeup, limits: LogLimits) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let registry = LogRegistry::new();
        let path = dir.path().join("c").join("0.log");
        let log = Some(LogFile::create(&registry, &path, limits).unwrap());
        Run { _dir: dir, path, wakeup, registry, log, over: Arc::default() }
    }

    fn writer(&self) -> LogWriter {
        self.log.as_ref().unwrap().writer(Stream::Stdout)
    }

    async fn follow(&self, tail_lines: Option<u64>) -> LogStream {
        let opts = LogOptions { follow: true, tail_lines, ..LogOptions::default() };
        match self.wakeup {
            Wakeup::Writer => stream(&self.registry, &self.path, opts).await.unwrap(),
            Wakeup::Inotify => {
                let wake = Wake::watch(&[self.path.parent().unwrap()]);
                assert!(wake.is_pushed(), "inotify must be available for this test");
                let watch = DirWatch { wake, over: self.over.clone() };
                follow(&self.path, opts, watch).await.unwrap()
            }
        }
    }

    /// The run ends: its writers must be dropped before.
    fn end(&mut self) {
        self.log = None;
        self.over.store(true, Ordering::SeqCst);
    }

    fn files(&self) -> usize {
        std::fs::read_dir(self.path.parent().unwrap()).unwrap().count()
    }
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
    timeout(Duration::from_millis(300), s.next()).await.is_err()
}

#[tokio::test]
async fn follows_appends_and_ends_with_the_run_after_its_last_line() {
    for wakeup in BOTH {
        let mut run = Run::new(wakeup, LogLimits::default());
        let mut out = run.writer();
        out.write_all(b"before\n").await.unwrap();
        let mut s = run.follow(None).await;
        assert_eq!(next(&mut s).await.as_deref(), Some("before\n"), "{wakeup:?}");
        assert!(silent(&mut s).await, "{wakeup:?}: follow must wait for more, not end");
        out.write_all(b"after\n").await.unwrap();
        assert_eq!(next(&mut s).await.as_deref(), Some("after\n"), "{wakeup:?}");
        // The last words, without a newline: written as a record when the writer goes.
        out.write_all(b"last").await.unwrap();
        drop(out);
        run.end();
        assert_eq!(rest(&mut s).await, "last\n", "{wakeup:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_many_rotations_while_following_in_order() {
    for wakeup in BOTH {
        let mut run = Run::new(wakeup, LogLimits { max_size: 300, max_files: 10_000 });
        let mut out = run.writer();
        for i in 0..20 {
            out.write_all(format!("early {i}\n").as_bytes()).await.unwrap();
        }
        let mut s = run.follow(Some(3)).await;
        let writer = tokio::spawn(async move {
            for i in 0..2000 {
                out.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let reader = tokio::spawn(async move { rest(&mut s).await });
        writer.await.unwrap();
        assert!(run.files() > 100, "{wakeup:?}: the test must rotate many times: {} files", run.files());
        run.end();
        let got = reader.await.unwrap();
        let mut expected: Vec<String> = (17..20).map(|i| format!("early {i}")).collect();
        expected.extend((0..2000).map(|i| format!("line {i}")));
        let got: Vec<&str> = got.lines().collect();
        let wrong = got.iter().zip(&expected).position(|(g, e)| g != e);
        assert_eq!(
            (got.len(), wrong),
            (expected.len(), None),
            "{wakeup:?}: lines lost, repeated or out of order"
        );
    }
}

#[tokio::test]
async fn a_torn_record_at_the_end_of_a_rotated_file_is_dropped() {
    for wakeup in BOTH {
        let mut run = Run::new(wakeup, LogLimits { max_size: 100, max_files: 10 });
        let mut out = run.writer();
        out.write_all(b"whole\n").await.unwrap();
        let mut s = run.follow(None).await;
        assert_eq!(next(&mut s).await.as_deref(), Some("whole\n"), "{wakeup:?}");
        // Half a record (a writer that died mid-write), then a rotation past it.
        let mut file = std::fs::OpenOptions::new().append(true).open(&run.path).unwrap();
        file.write_all(b"2024-01-01T00:00:00.000000000Z stdout F torn").unwrap();
        out.write_all(&[b'x'; 60]).await.unwrap();
        out.write_all(b"\nnext\n").await.unwrap();
        assert!(run.path.with_file_name("0.log.1").exists(), "{wakeup:?}: the test must rotate");
        drop(out);
        run.end();
        assert_eq!(rest(&mut s).await, format!("{}\nnext\n", "x".repeat(60)), "{wakeup:?}");
    }
}

#[tokio::test]
async fn tails_across_rotated_files_then_follows() {
    for wakeup in BOTH {
        let mut run = Run::new(wakeup, LogLimits { max_size: 120, max_files: 5 });
        let mut out = run.writer();
        for i in 0..5 {
            out.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        }
        let mut s = run.follow(Some(4)).await;
        assert_eq!(next(&mut s).await.as_deref(), Some("line 1\nline 2\nline 3\nline 4\n"), "{wakeup:?}");
        let mut zero = run.follow(Some(0)).await;
        out.write_all(b"line 5\nline 6\n").await.unwrap();
        drop(out);
        run.end();
        assert_eq!(rest(&mut s).await, "line 5\nline 6\n", "{wakeup:?}");
        assert_eq!(rest(&mut zero).await, "line 5\nline 6\n", "{wakeup:?}: --tail 0");
    }
}

#[tokio::test]
async fn tail_zero_starts_after_the_last_whole_record() {
    let mut run = Run::new(Wakeup::Inotify, LogLimits::default());
    let mut file = std::fs::OpenOptions::new().append(true).open(&run.path).unwrap();
    // A record being written as the follower starts: shown once it is whole.
    file.write_all(b"2024-01-01T00:00:00Z stdout F old\n2024-01-01T00:00:01Z stdout F ne").unwrap();
    let mut s = run.follow(Some(0)).await;
    file.write_all(b"w\n").unwrap();
    assert_eq!(next(&mut s).await.as_deref(), Some("new\n"));
    run.end();
    assert_eq!(rest(&mut s).await, "");
}

#[tokio::test]
async fn a_run_over_before_following_is_read_and_ends() {
    for wakeup in BOTH {
        let mut run = Run::new(wakeup, LogLimits { max_size: 100, max_files: 5 });
        let mut out = run.writer();
        out.write_all(b"one\ntwo\nthree\nfour\nfive\n").await.unwrap();
        drop(out);
        run.end();
        let mut s = run.follow(None).await;
        assert_eq!(rest(&mut s).await, "one\ntwo\nthree\nfour\nfive\n", "{wakeup:?}");
    }
}

/// Says the run is over only after writing one last record to it, as a run does whose
/// last line and end land between the follower's last read and its question.
struct LastWordWatch {
    path: PathBuf,
}

impl RunWatch for LastWordWatch {
    async fn changed(&mut self) {
        std::future::pending::<()>().await;
    }

    fn is_over(&mut self) -> Result<bool, WatchError> {
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(b"2024-01-01T00:00:00.000000000Z stderr F last words\n")?;
        Ok(true)
    }
}

#[tokio::test]
async fn what_a_run_wrote_before_it_was_over_is_read() {
    let run = Run::new(Wakeup::Inotify, LogLimits::default());
    run.writer().write_all(b"first\n").await.unwrap();
    let watch = LastWordWatch { path: run.path.clone() };
    let mut s = follow(&run.path, LogOptions::default(), watch).await.unwrap();
    assert_eq!(rest(&mut s).await, "first\nlast words\n");
}

/// Cannot tell.
struct BrokenWatch;

impl RunWatch for BrokenWatch {
    async fn changed(&mut self) {}

    fn is_over(&mut self) -> Result<bool, WatchError> {
        Err("status unreadable".into())
    }
}

#[tokio::test]
async fn a_watch_that_cannot_tell_ends_the_stream_with_its_error() {
    let run = Run::new(Wakeup::Inotify, LogLimits::default());
    run.writer().write_all(b"first\n").await.unwrap();
    let mut s = follow(&run.path, LogOptions::default(), BrokenWatch).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), "first\n");
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "checking whether the run is over: status unreadable");
    assert!(s.next().await.is_none());
}
