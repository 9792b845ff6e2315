//! A run's files in reading order — rotated ones oldest first, then the current one — and
//! the way on across rotations. Rotation is recognized by inode (the run's path names a
//! new file), so this works beside a writer in this process or in another one; with the
//! writer in this process, files are opened under its lock, so none rotates meanwhile.
//!
//! A file renamed away from the run's path is complete: it is read to its end (a torn
//! record there is dropped), then the files rotated after it (found by inode, else by
//! number), then the new current file. A file rotated and deleted
//! (`--container-log-max-files`) before it was opened is lost, as with any reader that
//! falls that far behind.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use super::paths::{list_rotated, rotated_path};
use super::registry::Live;
use super::segment::{Segment, read_failed};
use super::{LogError, Result, tail};

/// Bytes read from a file per call.
const READ_CHUNK: u64 = 64 * 1024;

/// The files of one run still to read.
pub(super) struct RunFiles {
    /// The run's current file.
    path: PathBuf,
    /// Oldest first; the front one is being read, the back one was at `path` when opened.
    queue: VecDeque<Segment>,
    /// The number the back file gets when rotated, as far as known.
    next_seq: u64,
    /// The run's state while it is written in this process.
    live: Weak<Live>,
}

impl RunFiles {
    /// Opens the run's current file, then its rotated files older than it. A missing
    /// current file is [`LogError::NotFound`].
    pub(super) fn open(path: &Path, live: Option<&Arc<Live>>) -> Result<RunFiles> {
        let _unrotated = live.map(|live| live.files());
        let current = open_file(path)?.ok_or_else(|| LogError::NotFound { path: path.to_path_buf() })?;
        let rotated = rotated_inodes(path)?;
        // Rotated since it was opened (only possible without the writer's lock)?
        let at = number_of(&rotated, current.inode);
        let next_seq = at.unwrap_or_else(|| rotated.last().map_or(1, |(k, _)| k + 1));
        let mut queue = VecDeque::new();
        for (k, _) in rotated.iter().filter(|(k, _)| at.is_none_or(|at| *k < at)) {
            queue.extend(open_file(&rotated_path(path, *k))?);
        }
        queue.push_back(current);
        let live = live.map_or_else(Weak::new, Arc::downgrade);
        Ok(RunFiles { path: path.to_path_buf(), queue, next_seq, live })
    }

    /// Places the reader so that it starts with the last `lines` full lines (`--tail`).
    pub(super) fn tail(&mut self, lines: u64) -> Result<()> {
        let (first, offset) = tail::start(self.queue.make_contiguous(), lines)?;
        self.queue.drain(..first);
        // The scan moved the files' positions: place each at its start.
        for (i, seg) in self.queue.iter().enumerate() {
            let at = if i == 0 { offset } else { 0 };
            (&seg.file).seek(SeekFrom::Start(at)).map_err(|e| read_failed(&seg.path, e))?;
        }
        Ok(())
    }

    /// Appends up to [`READ_CHUNK`] bytes of the run to `carry`, moving on to the next file
    /// at the end of one (and, if `rotations`, past the current file once it is rotated).
    /// False when everything written so far is read. `carry` must hold nothing but a
    /// record's start: leaving a file clears it.
    pub(super) fn read(&mut self, carry: &mut Vec<u8>, rotations: bool) -> Result<bool> {
        loop {
            let Some(front) = self.queue.front() else { return Ok(false) };
            let read = (&front.file).take(READ_CHUNK).read_to_end(carry);
            if read.map_err(|e| read_failed(&front.path, e))? > 0 {
                return Ok(true);
            }
            if self.queue.len() > 1 {
                // Leaving a rotated file: a torn record at its end is dropped.
                self.queue.pop_front();
                carry.clear();
            } else if !rotations || !self.rotated()? {
                return Ok(false);
            }
        }
    }

    /// If the run's path names another file than the last one queued, queues the files
    /// rotated after that one and the new current file, and says so.
    fn rotated(&mut self) -> Result<bool> {
        let Some(last) = self.queue.back() else { return Ok(false) };
        let last_inode = last.inode;
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.ino() != last_inode => {}
            // Unchanged, or between the rename and the new file.
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(read_failed(&self.path, e)),
        }
        let live = self.live.upgrade();
        let _unrotated = live.as_ref().map(|live| live.files());
        let Some(current) = open_file(&self.path)? else { return Ok(false) };
        let rotated = rotated_inodes(&self.path)?;
        let after = number_of(&rotated, last_inode).unwrap_or(self.next_seq);
        let until = number_of(&rotated, current.inode);
        for (k, _) in rotated.iter().filter(|(k, _)| *k > after && until.is_none_or(|u| *k < u)) {
            self.queue.extend(open_file(&rotated_path(&self.path, *k))?);
        }
        self.next_seq = until.unwrap_or_else(|| rotated.last().map_or(1, |(k, _)| k + 1));
        self.queue.push_back(current);
        Ok(true)
    }

    /// The files left to read, oldest first (for readers of whole files).
    pub(super) fn into_files(self) -> impl Iterator<Item = Segment> {
        self.queue.into_iter()
    }
}

/// The number `k` of the rotated file with this inode.
fn number_of(rotated: &[(u64, u64)], inode: u64) -> Option<u64> {
    rotated.iter().find(|(_, i)| *i == inode).map(|(k, _)| *k)
}

/// The rotated files of `current` as `(k, inode)`, by `k`.
fn rotated_inodes(current: &Path) -> Result<Vec<(u64, u64)>> {
    let mut found = Vec::new();
    for k in list_rotated(current)? {
        let path = rotated_path(current, k);
        match std::fs::metadata(&path) {
            Ok(meta) => found.push((k, meta.ino())),
            // Deleted by rotation since the listing.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(read_failed(&path, e)),
        }
    }
    Ok(found)
}

/// Opens a file for reading; `None` if it does not exist.
fn open_file(path: &Path) -> Result<Option<Segment>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LogError::Open { path: path.to_path_buf(), source }),
    };
    let meta = file.metadata().map_err(|e| read_failed(path, e))?;
    Ok(Some(Segment { path: path.to_path_buf(), file, inode: meta.ino(), len: meta.len() }))
}
