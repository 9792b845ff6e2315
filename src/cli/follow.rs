//! `logs -f` from a process that is not the agent. The crate's follower is woken by the
//! writer in the same process ([`LogRegistry`](crate::logs::LogRegistry)); here there is no
//! writer, so this reads the run's files by byte offset, woken by inotify ([`Wake`]), and
//! ends when `status.json` says the run is over.
//!
//! Rotation (the writer renames `N.log` to `N.log.<k>` and starts a new `N.log`) is seen
//! as the path naming another inode: the open file is read to its end, then the rotated
//! files after it (found by inode, else by number), then the new current file. A file
//! rotated and deleted (`--container-log-max-files`) before it was read is lost, as with
//! any reader that falls that far behind.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::state::{self, PodRecord};
use super::{CliError, Result};
use crate::logs::{self as store, rotated_path};
use crate::wake::Wake;

/// Bytes read per call.
const READ_CHUNK: u64 = 64 * 1024;

/// The run being followed.
pub(super) struct FollowedRun<'a> {
    /// The pod's `status.json`, read to see when the run ends.
    pub status_path: &'a Path,
    pub container: &'a str,
    /// Its restart count.
    pub run: u32,
    /// Its current log file.
    pub path: &'a Path,
}

/// Whether run `run` of `container` may still write: its status says it is running or
/// about to (`ContainerCreating`, `PodInitializing`), or is older than the run (the agent
/// starts a run before it reports it).
pub(super) fn is_live(pod: &PodRecord, container: &str, run: u32) -> bool {
    let Some(c) = pod.container(container) else { return false };
    if c.restart_count != i64::from(run) {
        return c.restart_count < i64::from(run);
    }
    let state = &c.state;
    match (&state.running, &state.terminated, &state.waiting) {
        (Some(_), _, _) => true,
        (None, Some(_), _) => false,
        (None, None, Some(w)) => {
            matches!(w.reason.as_deref(), None | Some("" | "ContainerCreating" | "PodInitializing"))
        }
        (None, None, None) => true,
    }
}

/// Prints the run's log (its last `tail` lines if given) and then each record it writes,
/// until its status says it is over — or its pod is gone — and all it wrote is printed.
pub(super) async fn follow(
    run: FollowedRun<'_>,
    tail: Option<u64>,
    mut wake: Wake,
    out: &mut impl Write,
) -> Result<()> {
    let mut files = Files::open(run.path)?;
    match tail {
        None => files.read(&mut |text, full| emit(out, text, full))?,
        Some(keep) => {
            let mut last = LastLines { keep, lines: VecDeque::new(), partial: Vec::new() };
            files.read(&mut |text, full| {
                last.push(text, full);
                Ok(())
            })?;
            last.write_to(out)?;
        }
    }
    out.flush().map_err(CliError::Write)?;
    loop {
        // Checked before reading: all the run wrote before it ended is then on disk.
        let over =
            !state::read_pod(run.status_path)?.is_some_and(|pod| is_live(&pod, run.container, run.run));
        files.read(&mut |text, full| emit(out, text, full))?;
        out.flush().map_err(CliError::Write)?;
        if over {
            return Ok(());
        }
        wake.wait().await;
    }
}

/// Writes one record's text as `kubectl logs` prints it (a newline after an `F` record).
fn emit(out: &mut impl Write, text: &[u8], full: bool) -> Result<()> {
    out.write_all(text).map_err(CliError::Write)?;
    if full {
        out.write_all(b"\n").map_err(CliError::Write)?;
    }
    Ok(())
}

/// `--tail` over the records read at the start: the last `keep` full lines and the partial
/// records after them.
struct LastLines {
    keep: u64,
    lines: VecDeque<Vec<u8>>,
    partial: Vec<u8>,
}

impl LastLines {
    fn push(&mut self, text: &[u8], full: bool) {
        if self.keep == 0 {
            return;
        }
        self.partial.extend_from_slice(text);
        if full {
            self.partial.push(b'\n');
            self.lines.push_back(std::mem::take(&mut self.partial));
            if self.lines.len() as u64 > self.keep {
                self.lines.pop_front();
            }
        }
    }

    fn write_to(self, out: &mut impl Write) -> Result<()> {
        for line in self.lines.iter().chain([&self.partial]) {
            out.write_all(line).map_err(CliError::Write)?;
        }
        Ok(())
    }
}

/// One open file of the run and its inode.
struct Open {
    file: File,
    inode: u64,
}

/// The run's files still to read, oldest first; the last one was at `path` when opened.
struct Files {
    path: PathBuf,
    queue: VecDeque<Open>,
    /// Bytes read that do not make a whole record yet.
    carry: Vec<u8>,
    /// The number the last file will get when rotated, as far as known.
    next_seq: u64,
}

impl Files {
    /// Opens the run's current file, then its rotated files older than it.
    fn open(path: &Path) -> Result<Files> {
        let failed = |source| CliError::FollowLog { path: path.to_path_buf(), source };
        let current = open(path)?.ok_or_else(|| failed(ErrorKind::NotFound.into()))?;
        let rotated = list_rotated(path)?;
        let at = rotated.iter().find(|(_, inode)| *inode == current.inode).map(|(k, _)| *k);
        let next_seq = at.unwrap_or_else(|| rotated.last().map_or(1, |(k, _)| k + 1));
        let mut queue = VecDeque::new();
        for (k, _) in rotated.iter().filter(|(k, _)| at.is_none_or(|at| *k < at)) {
            queue.extend(open(&rotated_path(path, *k))?);
        }
        queue.push_back(current);
        Ok(Files { path: path.to_path_buf(), queue, carry: Vec::new(), next_seq })
    }

    /// Reads every whole record written so far, in order across rotations, into `sink`.
    fn read(&mut self, sink: &mut dyn FnMut(&[u8], bool) -> Result<()>) -> Result<()> {
        loop {
            let Some(front) = self.queue.front_mut() else { return Ok(()) };
            loop {
                let before = self.carry.len();
                (&front.file)
                    .take(READ_CHUNK)
                    .read_to_end(&mut self.carry)
                    .map_err(|source| CliError::FollowLog { path: self.path.clone(), source })?;
                if self.carry.len() == before {
                    break;
                }
                records(&mut self.carry, sink)?;
            }
            if self.queue.len() > 1 {
                // Leaving a rotated file: a torn record at its end is dropped.
                self.queue.pop_front();
                self.carry.clear();
            } else if !self.rotated()? {
                return Ok(());
            }
        }
    }

    /// If the path names a new file, queues the files rotated after the last one and the
    /// new current file, and says so.
    fn rotated(&mut self) -> Result<bool> {
        let Some(last) = self.queue.back() else { return Ok(false) };
        let last_inode = last.inode;
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.ino() != last_inode => {}
            // Unchanged, or between the rename and the new file.
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(CliError::FollowLog { path: self.path.clone(), source }),
        }
        let Some(current) = open(&self.path)? else { return Ok(false) };
        let rotated = list_rotated(&self.path)?;
        let number = |inode: u64| rotated.iter().find(|(_, i)| *i == inode).map(|(k, _)| *k);
        let after = number(last_inode).unwrap_or(self.next_seq);
        let until = number(current.inode);
        for (k, _) in rotated.iter().filter(|(k, _)| *k > after && until.is_none_or(|u| *k < u)) {
            self.queue.extend(open(&rotated_path(&self.path, *k))?);
        }
        self.next_seq = until.unwrap_or_else(|| rotated.last().map_or(1, |(k, _)| k + 1));
        self.queue.push_back(current);
        Ok(true)
    }
}

/// Hands the whole records at the start of `carry` to `sink` (lines that are not CRI
/// records are skipped, as the kubelet does).
fn records(carry: &mut Vec<u8>, sink: &mut dyn FnMut(&[u8], bool) -> Result<()>) -> Result<()> {
    let mut start = 0;
    while let Some(len) = carry[start..].iter().position(|b| *b == b'\n') {
        if let Some(record) = store::parse_record(&carry[start..start + len]) {
            sink(record.text, record.full)?;
        }
        start += len + 1;
    }
    carry.drain(..start);
    Ok(())
}

/// Opens a file with its inode; `None` if it does not exist.
fn open(path: &Path) -> Result<Option<Open>> {
    let failed = |source| CliError::FollowLog { path: path.to_path_buf(), source };
    match File::open(path) {
        Ok(file) => {
            let inode = file.metadata().map_err(failed)?.ino();
            Ok(Some(Open { file, inode }))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// The rotated files of `current` as `(k, inode)`, by `k` (the inode as stat reports it,
/// as an open file's metadata does).
fn list_rotated(current: &Path) -> Result<Vec<(u64, u64)>> {
    let mut found = Vec::new();
    for k in store::list_rotated(current).map_err(CliError::ReadLog)? {
        let path = rotated_path(current, k);
        match std::fs::metadata(&path) {
            Ok(meta) => found.push((k, meta.ino())),
            // Deleted by rotation since the listing.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(CliError::FollowLog { path, source }),
        }
    }
    Ok(found)
}
