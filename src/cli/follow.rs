//! `logs -f` from a process that is not the agent: the crate's follower
//! ([`crate::logs::follow`]) with what this process can know plugged in — woken by
//! inotify ([`Wake`]) on the run's log directory and the pod's state directory, and over
//! when `status.json` says the run is (or the pod is gone).

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use super::state::{self, PodRecord};
use super::{CliError, Result};
use crate::logs::{self as store, LogError, LogOptions, RunWatch, WatchError};
use crate::wake::Wake;

/// The run being followed.
pub(super) struct FollowedRun<'a> {
    /// The pod's `status.json`, read to see when the run ends.
    pub status_path: &'a Path,
    pub container: &'a str,
    /// Its restart count.
    pub run: u32,
    /// Its current log file.
    pub path: &'a Path,
}

/// Whether run `run` of `container` may still write: its status says it is running or
/// about to (`ContainerCreating`, `PodInitializing`), or is older than the run (the agent
/// starts a run before it reports it).
pub(super) fn is_live(pod: &PodRecord, container: &str, run: u32) -> bool {
    let Some(c) = pod.container(container) else { return false };
    if c.restart_count != i64::from(run) {
        return c.restart_count < i64::from(run);
    }
    let state = &c.state;
    match (&state.running, &state.terminated, &state.waiting) {
        (Some(_), _, _) => true,
        (None, Some(_), _) => false,
        (None, None, Some(w)) => {
            matches!(w.reason.as_deref(), None | Some("" | "ContainerCreating" | "PodInitializing"))
        }
        (None, None, None) => true,
    }
}

/// Prints the run's log (its last `tail` lines if given) and then each record it writes,
/// until its status says it is over — or its pod is gone — and all it wrote is printed.
pub(super) async fn follow(
    run: FollowedRun<'_>,
    tail: Option<u64>,
    wake: Wake,
    out: &mut impl Write,
) -> Result<()> {
    let watch = StatusWatch {
        status_path: run.status_path.to_path_buf(),
        container: run.container.to_string(),
        run: run.run,
        wake,
    };
    let opts = LogOptions { tail_lines: tail, ..LogOptions::default() };
    let mut chunks = store::follow(run.path, opts, watch).await.map_err(log_error)?;
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk.map_err(log_error)?).map_err(CliError::Write)?;
        out.flush().map_err(CliError::Write)?;
    }
    Ok(())
}

/// The run as this process sees it: its directories through inotify, its state in the
/// pod's `status.json`.
struct StatusWatch {
    status_path: PathBuf,
    container: String,
    run: u32,
    wake: Wake,
}

impl RunWatch for StatusWatch {
    async fn changed(&mut self) {
        self.wake.wait().await;
    }

    fn is_over(&mut self) -> Result<bool, WatchError> {
        let pod = state::read_pod(&self.status_path)?;
        Ok(!pod.is_some_and(|pod| is_live(&pod, &self.container, self.run)))
    }
}

/// A failure of the follower as this command reports it: one reading the pod's status
/// as that failure itself.
fn log_error(e: LogError) -> CliError {
    match e {
        LogError::RunState(e) => match e.downcast::<CliError>() {
            Ok(e) => *e,
            Err(e) => CliError::ReadLog(LogError::RunState(e)),
        },
        e => CliError::ReadLog(e),
    }
}
