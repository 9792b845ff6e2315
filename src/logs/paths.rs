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

/// Removes the log files (current and rotated) of every run of `container` before
/// `keep_from`, as the kubelet keeps only the current run's log and the previous one's.
/// Returns how many files went; a file already gone is not an error.
pub fn remove_runs_before(pod_dir: &Path, container: &str, keep_from: u32) -> usize {
    let mut removed = 0;
    for (_, current) in run_paths(pod_dir, container).into_iter().filter(|(run, _)| *run < keep_from) {
        let rotated = list_rotated(&current).unwrap_or_default();
        let mut paths: Vec<PathBuf> = rotated.into_iter().map(|k| rotated_path(&current, k)).collect();
        paths.push(current);
        for path in paths {
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// `<current>.<k>`: the `k`-th file rotated out of a run (higher is newer).
pub(super) fn rotated_path(current: &Path, k: u64) -> PathBuf {
    let mut name = current.file_name().map(OsString::from).unwrap_or_default();
    name.push(format!(".{k}"));
    current.with_file_name(name)
}

/// The numbers `k` of the rotated files of `current` on disk, oldest first.
pub(super) fn list_rotated(current: &Path) -> Result<Vec<u64>> {
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

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn runs_before_the_previous_one_are_removed_with_their_rotated_files() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("main");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["0.log", "0.log.1", "1.log", "1.log.1", "1.log.2", "2.log", "3.log", "3.log.1"] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        assert_eq!(remove_runs_before(t.path(), "main", 2), 5);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["2.log", "3.log", "3.log.1"]);
        assert_eq!(remove_runs_before(t.path(), "other", 5), 0);
    }
}
