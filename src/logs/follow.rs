//! The cursor behind [`stream`](super::stream): reads a run's records in order across its
//! rotated files and, when following a live run, waits for the writer's announcements —
//! moving to the next file after a rotation — until the writer is gone and all is read.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use super::reader::{LogOptions, Output};
use super::registry::Live;
use super::segments::{self, Segment, read_failed};
use super::{LogError, LogRegistry, Result, tail};

/// Bytes read from a file per call.
const READ_CHUNK: usize = 64 * 1024;
/// Output collected before it is handed on.
const OUT_CHUNK: usize = 64 * 1024;

/// What one blocking step of the cursor produced.
pub(super) enum Step {
    /// Output to send (never empty).
    Data(Vec<u8>),
    /// Everything written so far is out; wait for [`Cursor::wait`].
    Wait,
    /// The log is over (or the byte limit reached).
    Done,
}

pub(super) struct Cursor {
    path: PathBuf,
    /// Files still to read; the front one is being read.
    segments: VecDeque<Segment>,
    /// Bytes read that do not make a whole record yet.
    carry: Vec<u8>,
    output: Output,
    follow: Option<Follow>,
}

/// A live run being followed.
struct Follow {
    live: Weak<Live>,
    /// Announces appends and rotations (the current file's rotation number).
    announced: watch::Receiver<u64>,
    /// The writer is gone: once all is read, the log is over.
    closed: bool,
}

impl Cursor {
    /// Opens the run's files (blocking), placed at `--tail` if asked.
    pub(super) fn open(registry: &LogRegistry, path: PathBuf, opts: &LogOptions) -> Result<Cursor> {
        let live = registry.find(&path);
        let (mut segments, announced) = segments::open(live.as_deref(), &path, None)?;
        let (first, offset) = match opts.tail_lines {
            Some(lines) => tail::start(&mut segments, lines)?,
            None => (0, 0),
        };
        let segments: VecDeque<Segment> = segments.into_iter().skip(first).collect();
        // The tail scan moved the files' positions: place each at its start.
        for (i, seg) in segments.iter().enumerate() {
            let at = if i == 0 { offset } else { 0 };
            (&seg.file).seek(SeekFrom::Start(at)).map_err(|e| read_failed(&seg.path, e))?;
        }
        let follow = match (opts.follow, live, announced) {
            (true, Some(live), Some(announced)) => {
                Some(Follow { live: Arc::downgrade(&live), announced, closed: false })
            }
            _ => None,
        };
        Ok(Cursor { path, segments, carry: Vec::new(), output: Output::new(opts), follow })
    }

    /// Reads on (blocking) until it has [`OUT_CHUNK`] bytes of output, reaches the end of
    /// what is written, or the end of the log.
    pub(super) fn step(&mut self) -> Result<Step> {
        // Marked seen before reading: whatever is announced later is read by a later step.
        let announced = self.follow.as_mut().map(|f| *f.announced.borrow_and_update());
        let mut out = Vec::new();
        let done = |out: Vec<u8>| Ok(if out.is_empty() { Step::Done } else { Step::Data(out) });
        loop {
            if self.output.exhausted() {
                return done(out);
            }
            if out.len() >= OUT_CHUNK {
                return Ok(Step::Data(out));
            }
            let Some(seg) = self.segments.front_mut() else { return done(out) };
            if read_more(seg, &mut self.carry)? > 0 {
                self.output.records(&mut self.carry, &mut out);
                continue;
            }
            // At the end of the front file.
            let seq = seg.seq;
            if self.segments.len() > 1 {
                self.next_segment(Vec::new());
                continue;
            }
            let Some(follow) = &self.follow else { return done(out) };
            if announced.is_some_and(|current| current > seq) {
                // Rotated before this step began, so it is complete: go on with the files
                // after it, opened consistently under the run's lock if it is still live.
                let live = follow.live.upgrade();
                let next = match segments::open(live.as_deref(), &self.path, Some(seq)) {
                    Ok((next, _)) => next,
                    Err(LogError::NotFound { .. }) => return done(out),
                    Err(e) => return Err(e),
                };
                self.next_segment(next);
                continue;
            }
            if follow.closed {
                return done(out);
            }
            return Ok(if out.is_empty() { Step::Wait } else { Step::Data(out) });
        }
    }

    /// Waits until the writer announces more, or is gone.
    pub(super) async fn wait(&mut self) {
        if let Some(follow) = &mut self.follow
            && follow.announced.changed().await.is_err()
        {
            follow.closed = true;
        }
    }

    /// Leaves the front file (a torn record at its end is dropped) for the ones after it.
    fn next_segment(&mut self, next: Vec<Segment>) {
        self.segments.pop_front();
        self.carry.clear();
        self.segments.extend(next);
    }
}

/// Appends up to [`READ_CHUNK`] bytes of `seg` to `carry`; 0 at its end.
fn read_more(seg: &mut Segment, carry: &mut Vec<u8>) -> Result<usize> {
    (&seg.file).take(READ_CHUNK as u64).read_to_end(carry).map_err(|e| read_failed(&seg.path, e))
}
