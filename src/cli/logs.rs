//! `krustlet-wasi logs`: finds the pod, the container (the only one unless named) and the
//! run (the current one — the highest restart count with a log file — or with `previous`
//! the one before), then prints it with the crate's reader, or follows it while it runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use super::follow::{self, FollowedRun};
use super::state::{self, PodRecord};
use super::{CliError, LogsArgs, Result};
use crate::logs::{self as store, LogOptions, LogRegistry};
use crate::wake::Wake;

/// Prints the log of a container run of the pod `args.pod` under `data_dir`, as
/// `kubectl logs` does: the whole log or its last `tail` lines; with `follow`, and the run
/// still going, everything it writes until it ends (see [`follow`](super::follow)).
/// Fails before any output, with one line saying why, when the pod, container or run is
/// not there.
pub async fn logs(data_dir: &Path, args: &LogsArgs, out: &mut impl Write) -> Result<()> {
    let pod = state::find_pod(data_dir, &args.pod, args.namespace.as_deref())?;
    let log_dir = store::pod_dir(data_dir, &pod.namespace, &pod.name, &pod.uid);
    let container = choose_container(&pod, &log_dir, args.container.as_deref())?;
    let (run, path) = choose_run(&pod, &log_dir, &container, args.previous)?;
    if args.follow && !args.previous && follow::is_live(&pod, &container, run) {
        let followed = FollowedRun { status_path: &pod.status_path, container: &container, run, path: &path };
        let wake = Wake::watch(&[&log_dir.join(&container), pod.status_path.parent().unwrap_or(data_dir)]);
        return follow::follow(followed, args.tail, wake, out).await;
    }
    print(&path, args.tail, out).await
}

/// The container asked for (which must exist), else the pod's only container.
fn choose_container(pod: &PodRecord, log_dir: &Path, asked: Option<&str>) -> Result<String> {
    let names = |list: &[state::ContainerStatus]| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let mut containers = names(&pod.status.container_statuses);
    let init = names(&pod.status.init_container_statuses);
    if containers.is_empty() && init.is_empty() {
        // No container reported yet: go by the log directories.
        containers = subdirectories(log_dir);
    }
    match asked {
        Some(name) if containers.iter().chain(&init).any(|c| c == name) => Ok(name.to_string()),
        Some(name) => Err(CliError::ContainerNotFound { pod: pod.name.clone(), container: name.into() }),
        None if containers.len() == 1 => Ok(containers.remove(0)),
        None => Err(CliError::ContainerRequired { pod: pod.name.clone(), containers, init }),
    }
}

/// The names of the directories in `dir`, sorted (none if it does not exist).
fn subdirectories(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// `(restart count, current file)` of the run to show.
fn choose_run(pod: &PodRecord, log_dir: &Path, container: &str, previous: bool) -> Result<(u32, PathBuf)> {
    let mut runs = store::run_paths(log_dir, container);
    let chosen = if previous { runs.len().checked_sub(2).map(|i| runs.swap_remove(i)) } else { runs.pop() };
    if let Some(run) = chosen {
        return Ok(run);
    }
    let (pod_name, container) = (pod.name.clone(), container.to_string());
    if previous {
        return Err(CliError::NoPrevious { pod: pod_name, container });
    }
    let waiting = pod.container(&container).and_then(|c| c.state.waiting.as_ref());
    match waiting.and_then(|w| w.reason.clone()) {
        Some(reason) => Err(CliError::WaitingToStart { pod: pod_name, container, reason }),
        None => Err(CliError::NoLogs { pod: pod_name, dir: log_dir.join(&container), container }),
    }
}

/// The run's log as it is now, by the crate's reader (no writer in this process, so it
/// ends at the end of what is written).
async fn print(path: &Path, tail: Option<u64>, out: &mut impl Write) -> Result<()> {
    let opts = LogOptions { tail_lines: tail, ..LogOptions::default() };
    let mut chunks = store::stream(&LogRegistry::new(), path, opts).await.map_err(CliError::ReadLog)?;
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk.map_err(CliError::ReadLog)?).map_err(CliError::Write)?;
    }
    out.flush().map_err(CliError::Write)
}
