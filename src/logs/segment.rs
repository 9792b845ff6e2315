//! [`Segment`]: one open log file of a run, as the run's files
//! ([`RunFiles`](super::segments::RunFiles)) and `--tail` read it; and the error a
//! failed read of one gives.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::LogError;

/// One open file of a run.
pub(super) struct Segment {
    pub path: PathBuf,
    pub file: File,
    pub inode: u64,
    /// Its length when opened.
    pub len: u64,
}

/// A read of the file at `path` failed.
pub(super) fn read_failed(path: &Path, source: std::io::Error) -> LogError {
    LogError::Read { path: path.to_path_buf(), source }
}
