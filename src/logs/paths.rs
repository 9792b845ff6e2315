//! Where log files live: a pod's directory, a run's file, its rotated files, and the runs
//! present for a container.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{LogError, Result};

/// `<data-dir>/logs/<namespace>_<pod>_<uid>`: one pod's log directory.
pub fn pod_dir(data_dir: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{namespace}_{pod}_{uid}"))
}

/// `<pod-dir>/<container>/<restartCount>.log`: the current file of one container run.
pub fn container_log(pod_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_dir.join(container).join(format!("{restart_count}.log"))
}

/// The runs of `container` that have a log file, as `(restartCount, current file)`, oldest
/// first: the last is the current run, the one before it what `kubectl logs --previous`
/// shows. Empty when the container has no log directory.
pub fn run_paths(pod_dir: &Path, container: &str) -> Vec<(u32, PathBuf)> {
    let dir = pod_dir.join(container);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut runs: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let number = name.to_str()?.strip_suffix(".log")?;
            // Only canonical numbers, so each run has exactly one name.
            let run: u32 = number.parse().ok().filter(|n: &u32| n.to_string() == number)?;
            Some((run, e.path()))
        })
        .collect();
    runs.sort_unstable_by_key(|(run, _)| *run);
    runs
}

/// `<current>.<k>`: the `k`-th file rotated out of a run (higher is newer).
pub(crate) fn rotated_path(current: &Path, k: u64) -> PathBuf {
    let mut name = current.file_name().map(OsString::from).unwrap_or_default();
    name.push(format!(".{k}"));
    current.with_file_name(name)
}

/// The numbers `k` of the rotated files of `current` on disk, oldest first.
pub(crate) fn list_rotated(current: &Path) -> Result<Vec<u64>> {
    let failed = |source| LogError::ListRotated { path: current.to_path_buf(), source };
    let (Some(dir), Some(name)) = (current.parent(), current.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(failed)?;
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(name)) else { continue };
        if let Some(k) = rest.strip_prefix('.').and_then(|k| k.parse::<u64>().ok()) {
            found.push(k);
        }
    }
    found.sort_unstable();
    Ok(found)
}
