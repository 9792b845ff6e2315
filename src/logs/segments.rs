//! Opening a run's files in order — rotated ones oldest first, then the current one — as a
//! consistent set: for a live run under its lock, so no rotation happens in between.

use std::fs::File;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::paths::{list_rotated, rotated_path};
use super::registry::Live;
use super::{LogError, Result};

/// One open file of a run.
pub(super) struct Segment {
    pub path: PathBuf,
    pub file: File,
    /// Its rotation number; the current file's is the number it will get when rotated.
    pub seq: u64,
    /// Its length when opened (for the current file of a live run: whole records only).
    pub len: u64,
}

/// Opens the files of the run at `current` whose number is above `after` (all if `None`),
/// oldest first. With `live`, also subscribes to its appends under the same lock, so every
/// byte appended later is announced to the receiver. A missing current file is
/// [`LogError::NotFound`].
pub(super) fn open(
    live: Option<&Live>,
    current: &Path,
    after: Option<u64>,
) -> Result<(Vec<Segment>, Option<watch::Receiver<u64>>)> {
    let newer = |k: &u64| after.is_none_or(|a| *k > a);
    let Some(live) = live else {
        let rotated = list_rotated(current)?;
        let seq = rotated.last().map_or(1, |k| k + 1);
        let mut segments = open_rotated(current, rotated.into_iter().filter(newer))?;
        let file = open_file(current)?.ok_or_else(|| LogError::NotFound { path: current.to_path_buf() })?;
        let len = file.metadata().map_err(|source| read_failed(current, source))?.len();
        segments.push(Segment { path: current.to_path_buf(), file, seq, len });
        return Ok((segments, None));
    };
    let files = live.files();
    let receiver = live.subscribe();
    let mut segments = open_rotated(current, files.rotated.iter().copied().filter(newer))?;
    // Under the lock the path names the file being appended to.
    let file = open_file(current)?.ok_or_else(|| LogError::NotFound { path: current.to_path_buf() })?;
    segments.push(Segment { path: current.to_path_buf(), file, seq: files.seq, len: files.size });
    Ok((segments, Some(receiver)))
}

/// Opens rotated files by number, skipping any deleted meanwhile.
fn open_rotated(current: &Path, numbers: impl Iterator<Item = u64>) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for seq in numbers {
        let path = rotated_path(current, seq);
        if let Some(file) = open_file(&path)? {
            let len = file.metadata().map_err(|source| read_failed(&path, source))?.len();
            segments.push(Segment { path, file, seq, len });
        }
    }
    Ok(segments)
}

/// Opens a file for reading; `None` if it does not exist.
fn open_file(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Open { path: path.to_path_buf(), source }),
    }
}

pub(super) fn read_failed(path: &Path, source: std::io::Error) -> LogError {
    LogError::Read { path: path.to_path_buf(), source }
}
