//! The runs being written: [`LogRegistry`] maps a run's path to its [`Live`] state (open
//! file, size, rotation) so that readers open its files consistently with rotation and are
//! woken by each append and rotation; an entry lives as long as the run's
//! [`LogFile`](super::LogFile).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::watch;

use super::paths::{list_rotated, rotated_path};
use super::{LogError, LogLimits, Result};

type Runs = Mutex<HashMap<PathBuf, Weak<Live>>>;

/// The log files being written on this node. Cheap to clone (an `Arc` inside); the agent
/// makes one and hands it to the pod workers (writers) and the kubelet API (readers).
/// Keys are paths exactly as [`container_log`](super::container_log) builds them.
#[derive(Clone, Default)]
pub struct LogRegistry {
    runs: Arc<Runs>,
}

impl std::fmt::Debug for LogRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRegistry").field("runs", &lock(&self.runs).len()).finish()
    }
}

impl LogRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a writer for the run at `path` is still open (its container is running).
    pub fn is_live(&self, path: &Path) -> bool {
        self.find(path).is_some()
    }

    /// The live state of the run at `path`, if one is being written.
    pub(super) fn find(&self, path: &Path) -> Option<Arc<Live>> {
        lock(&self.runs).get(path).and_then(Weak::upgrade)
    }

    /// The live state of the run at `path`: the one already registered, or a new one with
    /// the file opened for appending (created with its directory if missing).
    pub(super) fn attach(&self, path: &Path, limits: LogLimits) -> Result<Arc<Live>> {
        let mut runs = lock(&self.runs);
        if let Some(live) = runs.get(path).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let live = Arc::new(Live::open(path, limits, Arc::downgrade(&self.runs))?);
        runs.insert(path.to_path_buf(), Arc::downgrade(&live));
        Ok(live)
    }
}

/// One run being written. The writers hold it; readers hold it only briefly (a `Weak`
/// otherwise), so it drops — closing `appended` and ending every follower — when the
/// run's last writer does.
pub(super) struct Live {
    path: PathBuf,
    limits: LogLimits,
    files: Mutex<Files>,
    /// Sent after every append and rotation.
    appended: watch::Sender<()>,
    runs: Weak<Runs>,
}

/// The files of a live run, changed only under `Live::files`.
pub(super) struct Files {
    current: File,
    /// Bytes in `current` (all complete records).
    size: u64,
    /// The number `current` gets when rotated.
    seq: u64,
    /// Numbers of the rotated files kept, oldest first.
    rotated: VecDeque<u64>,
}

impl Live {
    fn open(path: &Path, limits: LogLimits, runs: Weak<Runs>) -> Result<Live> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| LogError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let current = open_append(path)?;
        let size = current.metadata().map_err(|source| LogError::Open { path: path.into(), source })?.len();
        let rotated: VecDeque<u64> = list_rotated(path)?.into();
        let seq = rotated.back().map_or(1, |k| k + 1);
        Ok(Live {
            path: path.to_path_buf(),
            limits,
            files: Mutex::new(Files { current, size, seq, rotated }),
            appended: watch::Sender::new(()),
            runs,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The run's files, locked: while held, nothing is appended or rotated.
    pub(super) fn files(&self) -> MutexGuard<'_, Files> {
        lock(&self.files)
    }

    /// A receiver woken after every append and rotation (its current value marked seen).
    pub(super) fn subscribe(&self) -> watch::Receiver<()> {
        self.appended.subscribe()
    }

    /// Appends whole records (`batch`, where each record ends at an offset of `ends`) in one
    /// write per file, rotating first whenever the next record would pass `max_size`; then
    /// wakes the readers.
    pub(super) fn append(&self, batch: &[u8], ends: &[usize]) -> Result<()> {
        let result = self.append_locked(&mut self.files(), batch, ends);
        self.appended.send_replace(());
        result
    }

    fn append_locked(&self, files: &mut Files, batch: &[u8], ends: &[usize]) -> Result<()> {
        let (mut chunk_start, mut record_start) = (0, 0);
        for &end in ends {
            let pending = (record_start - chunk_start) as u64;
            let record = (end - record_start) as u64;
            if files.size + pending > 0 && files.size + pending + record > self.limits.max_size {
                self.write(files, &batch[chunk_start..record_start])?;
                self.rotate(files)?;
                chunk_start = record_start;
            }
            record_start = end;
        }
        self.write(files, &batch[chunk_start..record_start])
    }

    fn write(&self, files: &mut Files, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let failed = |source| LogError::Append { path: self.path.clone(), source };
        files.current.write_all(bytes).map_err(failed)?;
        files.size += bytes.len() as u64;
        Ok(())
    }

    /// Renames the current file to `<path>.<seq>`, starts an empty one, and deletes the
    /// oldest rotated files beyond `max_files`.
    fn rotate(&self, files: &mut Files) -> Result<()> {
        let failed = |source| LogError::Rotate { path: self.path.clone(), source };
        std::fs::rename(&self.path, rotated_path(&self.path, files.seq)).map_err(failed)?;
        files.current = open_append(&self.path)?;
        files.rotated.push_back(files.seq);
        files.seq += 1;
        files.size = 0;
        let keep = self.limits.max_files.max(1) as usize - 1;
        while files.rotated.len() > keep {
            let Some(oldest) = files.rotated.pop_front() else { break };
            match std::fs::remove_file(rotated_path(&self.path, oldest)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Drop for Live {
    /// Forgets this run in the registry (unless a newer writer took its place).
    fn drop(&mut self) {
        if let Some(runs) = self.runs.upgrade() {
            let mut runs = lock(&runs);
            if runs.get(&self.path).is_some_and(|w| w.strong_count() == 0) {
                runs.remove(&self.path);
            }
        }
    }
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::Open { path: path.to_path_buf(), source })
}

/// Locks a mutex, recovering it from a panicked holder: every change under these locks
/// leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
