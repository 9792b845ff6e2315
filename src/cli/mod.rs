//! The subcommands (`Command`): `push` (run from main.rs with `crate::oci`), `exec` (see
//! [`exec`](exec)), and the local commands `krustlet-wasi pods` and `krustlet-wasi logs`: what the node runs,
//! read from the state the agent keeps under its data dir — no API server, no agent
//! process needed, so they work the same for cluster and standalone (static) pods.
//!
//! They read two things the agent writes:
//! - `<data-dir>/pods/<uid>/status.json`: `{"namespace", "name", "uid", "static", "status"}`
//!   with the Kubernetes `PodStatus` the node reports, replaced atomically on every change
//!   (the directory goes when the pod does);
//! - the log store (see [`crate::logs`]): `<data-dir>/logs/<ns>_<pod>_<uid>/<container>/
//!   <restartCount>.log` plus its rotated files.
//!
//! - `state.rs`: reading and finding pods; `table.rs`: the `pods` table as kubectl prints it.
//! - `logs.rs`: choosing the container and run, printing with the crate's reader.
//! - `follow.rs`: `logs -f` from a separate process: the crate's follower, woken by
//!   [`crate::wake`] and ended by the pod's recorded status.

mod exec;
mod follow;
mod logs;
mod pinned;
mod state;
mod table;

#[cfg(test)]
mod follow_tests;
#[cfg(test)]
mod logs_tests;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod testdata;

use std::path::PathBuf;

pub use crate::config::commands::{Command, ExecArgs, LogsArgs, PushArgs};
pub use exec::exec;
pub use logs::logs;
pub use table::pods;

/// What went wrong in a local command, by the step that failed. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{} does not exist: no agent has run with this data dir (pass the agent's --data-dir)", path.display())]
    NoDataDir { path: PathBuf },
    #[error("listing pods in {}: {source}", path.display())]
    ListPods { path: PathBuf, source: std::io::Error },
    #[error("reading {}: {source}", path.display())]
    ReadStatus { path: PathBuf, source: std::io::Error },
    #[error("parsing {}: {source}", path.display())]
    ParseStatus { path: PathBuf, source: serde_json::Error },
    #[error("pod \"{pod}\" not found in {}{hint}", data_dir.display())]
    PodNotFound { pod: String, data_dir: PathBuf, hint: String },
    #[error("pod \"{pod}\" not found in namespace \"{namespace}\" in {}{hint}", data_dir.display())]
    PodNotFoundInNamespace { pod: String, namespace: String, data_dir: PathBuf, hint: String },
    #[error("pod \"{pod}\" exists in several namespaces ({}): choose one with -n", namespaces.join(", "))]
    AmbiguousPod { pod: String, namespaces: Vec<String> },
    #[error("{}", container_required(pod, containers, init))]
    ContainerRequired { pod: String, containers: Vec<String>, init: Vec<String> },
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound { pod: String, container: String },
    #[error("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}")]
    WaitingToStart { pod: String, container: String, reason: String },
    #[error("container \"{container}\" in pod \"{pod}\" has no logs in {}", dir.display())]
    NoLogs { pod: String, container: String, dir: PathBuf },
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
    #[error("reading the log: {0}")]
    ReadLog(#[source] crate::logs::LogError),
    #[error("writing the output: {0}")]
    Write(#[source] std::io::Error),
    #[error("pod \"{pod}\" reports no containers yet")]
    NoContainers { pod: String },
    #[error("no kubelet API recorded at {}: {source} (is an agent running with this --data-dir?)", path.display())]
    NoEndpoint { path: PathBuf, source: std::io::Error },
    #[error(
        "the agent (pid {pid}) lets no local client in without a certificate: start it with --allow-anonymous-localhost (standalone only), or use kubectl exec through the cluster"
    )]
    NotAnonymous { pid: u32 },
    #[error(
        "cannot reach the agent's kubelet API at {socket}: {source} (is the agent, pid {pid}, still running?)"
    )]
    Connect { socket: std::net::SocketAddr, pid: u32, source: std::io::Error },
    #[error("reading the agent's serving certificate {}: {source}", path.display())]
    ReadCert { path: PathBuf, source: std::io::Error },
    #[error("the agent refused the exec ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("exec: {0}")]
    Exec(String),
    #[error("{0}")]
    Remote(String),
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// kubectl's message when a pod has several containers and none was named.
fn container_required(pod: &str, containers: &[String], init: &[String]) -> String {
    let mut text = format!(
        "a container name must be specified for pod {pod}, choose one of: [{}]",
        containers.join(" ")
    );
    if !init.is_empty() {
        text.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
    }
    text
}
