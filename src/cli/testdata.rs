//! Test helpers: a temporary data dir laid out as the agent lays it out — pods'
//! `status.json` files and CRI log files — and container statuses in the agent's shape.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub(super) const STARTED: &str = "2024-05-01T10:00:00Z";

/// A temporary `--data-dir`.
pub(super) struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<data-dir>/pods/<uid>/status.json` (atomically, as the agent does).
    pub fn pod(&self, namespace: &str, name: &str, uid: &str, status: Value) {
        let doc =
            json!({"namespace": namespace, "name": name, "uid": uid, "static": false, "status": status});
        let path = self.status_path(uid);
        crate::files::write_atomic(&path, doc.to_string().as_bytes(), 0o644).unwrap();
    }

    pub fn status_path(&self, uid: &str) -> PathBuf {
        self.path().join("pods").join(uid).join("status.json")
    }

    /// Removes the pod's state directory, as the agent does when the pod is removed.
    pub fn remove_pod(&self, uid: &str) {
        std::fs::remove_dir_all(self.path().join("pods").join(uid)).unwrap();
    }

    /// The current log file of run `run` of a container.
    pub fn log_path(&self, namespace: &str, pod: &str, uid: &str, container: &str, run: u32) -> PathBuf {
        let dir = crate::logs::pod_dir(self.path(), namespace, pod, uid);
        crate::logs::container_log(&dir, container, run)
    }
}

/// Appends one `F` record on stdout per line to `path` (creating it and its directory).
pub(super) fn append_lines(path: &Path, lines: &[&str]) {
    let records: Vec<(&str, &str, &str)> = lines.iter().map(|l| ("stdout", "F", *l)).collect();
    append_records(path, &records);
}

/// Appends `(stream, tag, text)` records to `path` in one write.
pub(super) fn append_records(path: &Path, records: &[(&str, &str, &str)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = Vec::new();
    for (stream, tag, text) in records {
        bytes.extend_from_slice(format!("2024-05-01T10:00:01.000000000Z {stream} {tag} {text}\n").as_bytes());
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(&bytes).unwrap();
}

/// A pod status as the agent writes it.
pub(super) fn status(phase: &str, containers: Vec<Value>, init: Vec<Value>) -> Value {
    json!({
        "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": STARTED,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": STARTED},
            {"type": "Ready", "status": if phase == "Running" { "True" } else { "False" },
             "lastProbeTime": null, "lastTransitionTime": STARTED},
        ],
        "containerStatuses": containers,
        "initContainerStatuses": init,
    })
}

/// A container status: `state` is the `state` object, `last` the `lastState` one.
pub(super) fn container(name: &str, restarts: u32, state: Value, last: Value) -> Value {
    let ready = state.get("running").is_some();
    json!({"name": name, "image": format!("registry/{name}:v1"), "imageID": "", "state": state,
           "lastState": last, "ready": ready, "started": ready, "restartCount": restarts})
}

pub(super) fn running() -> Value {
    json!({"running": {"startedAt": STARTED}})
}

pub(super) fn waiting(reason: &str) -> Value {
    json!({"waiting": {"reason": reason, "message": null}})
}

pub(super) fn terminated(code: i32, reason: &str, finished_at: &str) -> Value {
    json!({"terminated": {"exitCode": code, "reason": reason, "message": null,
           "startedAt": STARTED, "finishedAt": finished_at, "containerID": ""}})
}
