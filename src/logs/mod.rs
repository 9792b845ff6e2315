//! The container log store: one CRI-format file per container run under the data dir,
//! rotated by size, with readers that implement every `kubectl logs` option and one
//! follower, woken by the writer in this process or by what another process plugs in
//! ([`RunWatch`]); no polling.
//!
//! Layout, as the kubelet lays out `/var/log/pods`:
//! `<data-dir>/logs/<ns>_<pod>_<uid>/<container>/<restartCount>.log`, each line
//! `<RFC3339Nano> stdout|stderr F|P <text>`. When a run's file would grow past
//! [`LogLimits::max_size`] it is renamed `<restartCount>.log.<k>` (`k` = 1, 2, … — higher is
//! newer) and a new `<restartCount>.log` begins; at most [`LogLimits::max_files`] files are
//! kept per run, the oldest deleted first.
//!
//! - `writer.rs`: [`LogFile`] and its per-stream [`LogWriter`]s (an `AsyncWrite`).
//! - `registry.rs`: [`LogRegistry`], the runs being written, and rotation.
//! - `reader.rs`: [`stream`] (`kubectl logs`), [`follow`] (another process's follower) and
//!   [`read_lines`]; `follow.rs` the cursor behind both, `output.rs` the options and how
//!   records become output, `segments.rs` the run's files across rotations (each a
//!   `segment.rs`), `tail.rs` where `--tail` starts.

mod cri;
mod follow;
mod output;
mod paths;
mod reader;
mod registry;
mod segment;
mod segments;
mod tail;
mod writer;

#[cfg(test)]
mod follow_tests;
#[cfg(test)]
mod perf_tests;
#[cfg(test)]
mod reader_tests;
#[cfg(test)]
mod watch_tests;
#[cfg(test)]
mod writer_tests;

use std::path::PathBuf;

use crate::config::{DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE};

pub use follow::{RunWatch, WatchError};
pub use output::{LogOptions, LogStream};
pub use paths::{container_log, pod_dir, remove_runs_before, run_paths};
pub use reader::{follow, read_lines, stream};
pub use registry::LogRegistry;
pub use writer::{LogFile, LogWriter};

/// What went wrong in the log store, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no log file at {}", path.display())]
    NotFound { path: PathBuf },
    #[error("creating log directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("opening log file {}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("appending to log file {}: {source}", path.display())]
    Append { path: PathBuf, source: std::io::Error },
    #[error("rotating log file {}: {source}", path.display())]
    Rotate { path: PathBuf, source: std::io::Error },
    #[error("listing rotated log files of {}: {source}", path.display())]
    ListRotated { path: PathBuf, source: std::io::Error },
    #[error("reading log file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("log reader task failed: {0}")]
    ReaderTask(String),
    /// The follower's [`RunWatch`] could not tell whether the run is over.
    #[error("checking whether the run is over: {0}")]
    RunState(#[source] WatchError),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// How large a run's log may grow (the kubelet's `containerLogMaxSize` and
/// `containerLogMaxFiles`; the agent's `--container-log-max-size` and `-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// A file is rotated before a record would take it past this many bytes.
    pub max_size: u64,
    /// Files kept per run, the current one included (at least 1 is kept).
    pub max_files: u32,
}

impl Default for LogLimits {
    /// The flags' defaults: [`DEFAULT_LOG_MAX_SIZE`] and [`DEFAULT_LOG_MAX_FILES`].
    fn default() -> Self {
        LogLimits { max_size: DEFAULT_LOG_MAX_SIZE, max_files: DEFAULT_LOG_MAX_FILES }
    }
}

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}
