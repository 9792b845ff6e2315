//! Tests of `logs -f` from outside the agent: appended lines are printed, rotation is
//! followed (by the crate's own writer, in a registry the reader does not see), and the
//! command ends when the status says the run is over or the pod is gone — both with
//! inotify and with polling.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::follow::{FollowedRun, follow, is_live};
use super::state::read_pod;
use super::testdata::*;
use super::{LogsArgs, Result, logs};
use crate::logs::{LogFile, LogLimits, LogRegistry, Stream};
use crate::wake::Wake;

/// Output shared between the command (writing) and the test (reading).
#[derive(Clone, Default)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOut {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Waits until the output is `want`, failing the test after 5 s.
    async fn shows(&self, want: &str) {
        for _ in 0..500 {
            if self.text() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.text(), want, "output did not come");
    }
}

/// `krustlet-wasi logs` running in a task.
fn start_logs(data: &DataDir, args: LogsArgs) -> (SharedOut, JoinHandle<Result<()>>) {
    let (out, dir) = (SharedOut::default(), data.path().to_path_buf());
    let mut writer = out.clone();
    (out, tokio::spawn(async move { logs(&dir, &args, &mut writer).await }))
}

/// The follower alone, run 0 of container `main` of pod uid `u1`, with the given wake-up.
fn start_follow(
    data: &DataDir,
    path: PathBuf,
    tail: Option<u64>,
    wake: Wake,
) -> (SharedOut, JoinHandle<Result<()>>) {
    let (out, status_path) = (SharedOut::default(), data.status_path("u1"));
    let mut writer = out.clone();
    let task = tokio::spawn(async move {
        let run = FollowedRun { status_path: &status_path, container: "main", run: 0, path: &path };
        follow(run, tail, wake, &mut writer).await
    });
    (out, task)
}

/// Waits for the command to end, failing the test after 5 s.
async fn ends(task: JoinHandle<Result<()>>) {
    let done = tokio::time::timeout(Duration::from_secs(5), task).await.expect("follow did not end");
    done.unwrap().unwrap();
}

/// Whether the command is still going after a while.
async fn keeps_going(task: &JoinHandle<Result<()>>) -> bool {
    tokio::time::sleep(Duration::from_millis(300)).await;
    !task.is_finished()
}

fn pod_with(data: &DataDir, restarts: u32, state: Value) {
    let phase = if state.get("running").is_some() { "Running" } else { "Succeeded" };
    data.pod(
        "default",
        "p",
        "u1",
        status(phase, vec![container("main", restarts, state, json!({}))], vec![]),
    );
}

fn wakes(data: &DataDir, path: &Path) -> [Wake; 2] {
    let watched = Wake::watch(&[path.parent().unwrap(), data.status_path("u1").parent().unwrap()]);
    assert!(watched.is_pushed(), "inotify must be available for this test");
    [watched, Wake::polling()]
}

#[tokio::test]
async fn follow_prints_what_is_appended_and_ends_when_the_run_terminates() {
    for mode in 0..2 {
        let data = DataDir::new();
        pod_with(&data, 0, running());
        let path = data.log_path("default", "p", "u1", "main", 0);
        append_lines(&path, &["before"]);
        let wake = wakes(&data, &path).into_iter().nth(mode).unwrap();
        let (out, task) = start_follow(&data, path.clone(), None, wake);
        out.shows("before\n").await;
        assert!(keeps_going(&task).await, "mode {mode}: follow must wait while the run is running");
        append_records(&path, &[("stdout", "F", "after"), ("stderr", "P", "no newline yet")]);
        out.shows("before\nafter\nno newline yet").await;
        // The run's last output, then its end.
        append_records(&path, &[("stderr", "F", ", now")]);
        pod_with(&data, 0, terminated(0, "Completed", STARTED));
        ends(task).await;
        assert_eq!(out.text(), "before\nafter\nno newline yet, now\n", "mode {mode}");
    }
}

#[tokio::test]
async fn logs_dash_f_tails_then_follows_and_ends_when_the_pod_is_removed() {
    let data = DataDir::new();
    pod_with(&data, 0, running());
    let path = data.log_path("default", "p", "u1", "main", 0);
    append_lines(&path.with_file_name("0.log.1"), &["1", "2"]);
    append_lines(&path, &["3", "4"]);
    let (out, task) =
        start_logs(&data, LogsArgs { pod: "p".into(), follow: true, tail: Some(3), ..LogsArgs::default() });
    out.shows("2\n3\n4\n").await;
    append_lines(&path, &["5"]);
    out.shows("2\n3\n4\n5\n").await;
    assert!(keeps_going(&task).await);
    data.remove_pod("u1");
    ends(task).await;
    assert_eq!(out.text(), "2\n3\n4\n5\n");
}

#[tokio::test]
async fn follow_goes_on_through_rotations_in_order() {
    for (max_files, mode) in [(1000, 0), (1000, 1), (1, 0)] {
        let data = DataDir::new();
        pod_with(&data, 0, running());
        let path = data.log_path("default", "p", "u1", "main", 0);
        // About four records per file.
        let log =
            LogFile::create(&LogRegistry::new(), &path, LogLimits { max_size: 200, max_files }).unwrap();
        let mut writer = log.writer(Stream::Stdout);
        let mut want = String::new();
        for i in 0..6 {
            writer.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
            want.push_str(&format!("line {i}\n"));
        }
        let wake = wakes(&data, &path).into_iter().nth(mode).unwrap();
        let (out, task) = start_follow(&data, path.clone(), None, wake);
        if max_files > 1 {
            out.shows(&want).await;
            // Several rotations at once, between two looks.
            let burst: String = (6..60).map(|i| format!("line {i}\n")).collect();
            writer.write_all(burst.as_bytes()).await.unwrap();
            want.push_str(&burst);
            out.shows(&want).await;
        }
        // One at a time: a rotation now and then.
        for i in 60..80 {
            writer.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
            want.push_str(&format!("line {i}\n"));
            tokio::time::sleep(Duration::from_millis(if mode == 1 { 150 } else { 20 })).await;
        }
        let rotated = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert!(rotated >= max_files.min(3) as usize, "the test must rotate ({rotated} files)");
        drop((writer, log));
        pod_with(&data, 0, terminated(0, "Completed", STARTED));
        ends(task).await;
        if max_files == 1 {
            // The first lines were deleted before the follower started.
            let shown = out.text();
            assert!(want.ends_with(&shown) && shown.contains("line 60\n"), "max_files 1: {shown}");
        } else {
            assert_eq!(out.text(), want, "max_files {max_files}, mode {mode}");
        }
    }
}

#[tokio::test]
async fn a_run_is_live_until_its_status_says_otherwise() {
    let data = DataDir::new();
    let live = |restarts: u32, state: Value, run: u32| {
        pod_with(&data, restarts, state);
        is_live(&read_pod(&data.status_path("u1")).unwrap().unwrap(), "main", run)
    };
    assert!(live(0, running(), 0));
    assert!(live(0, waiting("ContainerCreating"), 0), "about to start");
    assert!(live(0, json!({}), 0), "state not known yet");
    assert!(live(0, terminated(1, "Error", STARTED), 1), "the status is behind a run just started");
    assert!(!live(0, terminated(0, "Completed", STARTED), 0));
    assert!(!live(1, running(), 0), "a newer run started");
    assert!(!live(1, waiting("CrashLoopBackOff"), 1));
    assert!(!live(0, waiting("CreateContainerError"), 0));
    let other = read_pod(&data.status_path("u1")).unwrap().unwrap();
    assert!(!is_live(&other, "sidecar", 0), "no such container");
}

#[tokio::test]
async fn inotify_wakes_on_each_kind_of_change_long_before_the_safety_tick() {
    let data = DataDir::new();
    pod_with(&data, 0, running());
    let path = data.log_path("default", "p", "u1", "main", 0);
    append_lines(&path, &["x"]);
    let [mut wake, _] = wakes(&data, &path);
    let quick = Duration::from_millis(500);
    type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let changes: [Change; 4] = [
        ("append", Box::new(|| append_lines(&path, &["y"]))),
        ("rotation", Box::new(|| std::fs::rename(&path, path.with_file_name("0.log.1")).unwrap())),
        ("new status", Box::new(|| pod_with(&data, 0, terminated(0, "Completed", STARTED)))),
        ("pod removed", Box::new(|| data.remove_pod("u1"))),
    ];
    for (what, change) in changes {
        let started = std::time::Instant::now();
        tokio::join!(wake.wait(), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            change();
        });
        assert!(started.elapsed() < quick, "{what}: woken after {:?}", started.elapsed());
    }
    let started = std::time::Instant::now();
    wake.wait().await;
    assert!(started.elapsed() >= Duration::from_millis(900), "nothing changed, yet woken");
}
