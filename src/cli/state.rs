//! The pods the agent has on this node, read from `<data-dir>/pods/<uid>/status.json`,
//! and finding one by name. Only the status fields the commands use are read, each
//! optional, so a status written by an older or newer agent still lists.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::{CliError, Result};

/// One `status.json` and where it was found.
#[derive(Debug, Clone)]
pub(super) struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: Status,
    /// `<data-dir>/pods/<uid>/status.json`.
    pub status_path: PathBuf,
}

#[derive(Debug, Deserialize)]
struct PodFile {
    namespace: String,
    name: String,
    uid: String,
    #[serde(default, deserialize_with = "nullable")]
    status: Status,
}

/// The parts of a `PodStatus` the commands show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Status {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub conditions: Vec<Condition>,
    #[serde(default, deserialize_with = "nullable")]
    pub container_statuses: Vec<ContainerStatus>,
    #[serde(default, deserialize_with = "nullable")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Condition {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub state: ContainerState,
    #[serde(default, deserialize_with = "nullable")]
    pub last_state: ContainerState,
}

/// At most one of the three is set (none: the state is unknown).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct ContainerState {
    #[serde(default)]
    pub waiting: Option<Waiting>,
    #[serde(default)]
    pub running: Option<Running>,
    #[serde(default)]
    pub terminated: Option<Terminated>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Waiting {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Its fields are not shown; its presence is what counts.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Running {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Terminated {
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub signal: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// A field that may be `null`, read as its default then.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl PodRecord {
    /// The status of the container or init container `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        let all = self.status.container_statuses.iter().chain(&self.status.init_container_statuses);
        all.into_iter().find(|c| c.name == name)
    }
}

/// The pod whose state is at `status_path`; `None` if it has none (not reported yet, or
/// removed meanwhile).
pub(super) fn read_pod(status_path: &Path) -> Result<Option<PodRecord>> {
    let bytes = match std::fs::read(status_path) {
        Ok(bytes) => bytes,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(source) => return Err(CliError::ReadStatus { path: status_path.to_path_buf(), source }),
    };
    let file: PodFile = serde_json::from_slice(&bytes)
        .map_err(|source| CliError::ParseStatus { path: status_path.to_path_buf(), source })?;
    Ok(Some(PodRecord {
        namespace: file.namespace,
        name: file.name,
        uid: file.uid,
        status: file.status,
        status_path: status_path.to_path_buf(),
    }))
}

/// Every pod with a status under `data_dir`, by namespace then name (none if the agent has
/// had no pod there yet; an error if `data_dir` does not exist).
pub(super) fn read_pods(data_dir: &Path) -> Result<Vec<PodRecord>> {
    let dir = data_dir.join("pods");
    let failed = |source| CliError::ListPods { path: dir.clone(), source };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // The agent has run here but has had no pod yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && data_dir.is_dir() => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::NoDataDir { path: data_dir.to_path_buf() });
        }
        Err(e) => return Err(failed(e)),
    };
    let mut pods = Vec::new();
    for entry in entries {
        let entry = entry.map_err(failed)?;
        if let Some(pod) = read_pod(&entry.path().join("status.json"))? {
            pods.push(pod);
        }
    }
    pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
    Ok(pods)
}

/// The pod named `name` (in `namespace` if given). A name in several namespaces needs the
/// namespace; two pods of one name in one namespace (one being replaced) resolve to the
/// one whose status was written last.
pub(super) fn find_pod(data_dir: &Path, name: &str, namespace: Option<&str>) -> Result<PodRecord> {
    let all = read_pods(data_dir)?;
    let in_scope = |p: &&PodRecord| namespace.is_none_or(|ns| p.namespace == ns);
    let mut found: Vec<PodRecord> = all.iter().filter(in_scope).filter(|p| p.name == name).cloned().collect();
    let mut namespaces: Vec<String> = found.iter().map(|p| p.namespace.clone()).collect();
    namespaces.dedup();
    // A static pod is named `<name>-<node>`: a user may well ask for `<name>`.
    let hint = || {
        let similar: Vec<&str> = all
            .iter()
            .filter(in_scope)
            .filter(|p| p.name.strip_prefix(name).is_some_and(|rest| rest.starts_with('-')))
            .map(|p| p.name.as_str())
            .collect();
        match similar.as_slice() {
            [] => String::new(),
            names => {
                format!(" (did you mean {}? a static pod is named <name>-<node-name>)", names.join(" or "))
            }
        }
    };
    let not_found = || match namespace {
        None => CliError::PodNotFound { pod: name.into(), data_dir: data_dir.into(), hint: hint() },
        Some(ns) => CliError::PodNotFoundInNamespace {
            pod: name.into(),
            namespace: ns.into(),
            data_dir: data_dir.into(),
            hint: hint(),
        },
    };
    match namespaces.len() {
        0 => Err(not_found()),
        1 => {
            let modified = |p: &PodRecord| std::fs::metadata(&p.status_path).and_then(|m| m.modified()).ok();
            found.sort_by_key(|p| modified(p));
            found.pop().ok_or_else(not_found)
        }
        _ => Err(CliError::AmbiguousPod { pod: name.into(), namespaces }),
    }
}
