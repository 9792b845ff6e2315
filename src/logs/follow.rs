//! The one log follower: a [`Cursor`] reads a run's records in order across its rotated
//! files (see `segments.rs`) and turns them into output; when following, a [`RunWatch`]
//! wakes it and says when the run is over. In the agent the watch is the writer's
//! announcements ([`WriterWatch`]); `krustlet-wasi logs -f`, in another process, plugs in
//! inotify and the pod's recorded status.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::output::{LogOptions, LogStream, Output};
use super::registry::Live;
use super::segments::RunFiles;
use super::{LogError, Result};

/// Output collected before it is handed on.
const OUT_CHUNK: usize = 64 * 1024;

/// Why a [`RunWatch`] could not tell whether the run is over.
pub type WatchError = Box<dyn std::error::Error + Send + Sync>;

/// What a follower needs from whoever knows the run being followed.
pub trait RunWatch: Send + 'static {
    /// Returns once the run may have written more, rotated or ended. May return early:
    /// the follower then finds nothing new and waits again. A change made after the
    /// previous call returned (for the first call: after the watch was made) must end it.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;

    /// Whether the run has ended with everything it wrote on disk. Asked (from a blocking
    /// thread) when the follower has read all there is; after a yes it reads once more.
    fn is_over(&mut self) -> Result<bool, WatchError>;
}

/// Follows a run written in this process: woken by every append and rotation of its
/// writer, over once the writer is gone.
pub(super) struct WriterWatch {
    announced: watch::Receiver<()>,
}

impl WriterWatch {
    /// Subscribes to `live`'s announcements: every append from now on wakes the follower.
    pub(super) fn new(live: &Live) -> WriterWatch {
        WriterWatch { announced: live.subscribe() }
    }
}

impl RunWatch for WriterWatch {
    async fn changed(&mut self) {
        // An error is the writer gone: `is_over` says so.
        let _ = self.announced.changed().await;
    }

    fn is_over(&mut self) -> Result<bool, WatchError> {
        Ok(self.announced.has_changed().is_err())
    }
}

/// What the stream does once a step's output is handed on.
enum Next {
    /// Reads on: there is more to read.
    Read,
    /// Waits for [`RunWatch::changed`]: everything written so far is out.
    Wait,
    /// Ends: the log is over (or the byte limit reached).
    End,
    /// Ends with this error.
    Fail(LogError),
}

struct Cursor<W> {
    files: RunFiles,
    /// Bytes read that do not make a whole record yet.
    carry: Vec<u8>,
    output: Output,
    /// `None`: read what is written and end.
    watch: Option<W>,
    /// The watch said the run is over: what is read now is the last of it.
    over: bool,
}

/// The log of the run whose current file is `path` as a stream of output under `opts`;
/// with a `watch`, it follows the run until the watch says it is over and all is read.
/// `live` is the run's state if it is written in this process. File reads (and
/// [`RunWatch::is_over`]) run on tokio's blocking pool.
pub(super) async fn open<W: RunWatch>(
    path: PathBuf,
    live: Option<Arc<Live>>,
    opts: LogOptions,
    watch: Option<W>,
) -> Result<LogStream> {
    let cursor = blocking(move || {
        let mut files = RunFiles::open(&path, live.as_ref())?;
        if let Some(lines) = opts.tail_lines {
            files.tail(lines)?;
        }
        Ok::<_, LogError>(Cursor { files, carry: Vec::new(), output: Output::new(&opts), watch, over: false })
    })
    .await??;
    Ok(futures::stream::unfold(Some((cursor, Next::Read)), next_chunk).boxed())
}

/// One item of the stream: reads on, first waiting for the watch if the last step caught
/// up with the run. One trip to the blocking pool per item (per wake-up when following).
async fn next_chunk<W: RunWatch>(
    state: Option<(Cursor<W>, Next)>,
) -> Option<(Result<Bytes>, Option<(Cursor<W>, Next)>)> {
    let (mut cursor, mut next) = state?;
    loop {
        match next {
            Next::Read => {}
            Next::Wait => {
                if let Some(watch) = &mut cursor.watch {
                    watch.changed().await;
                }
            }
            Next::End => return None,
            Next::Fail(e) => return Some((Err(e), None)),
        }
        let stepped = blocking(move || {
            let step = cursor.step();
            (cursor, step)
        })
        .await;
        let (back, (out, then)) = match stepped {
            Ok(stepped) => stepped,
            Err(e) => return Some((Err(e), None)),
        };
        cursor = back;
        if !out.is_empty() {
            return Some((Ok(Bytes::from(out)), Some((cursor, then))));
        }
        next = then;
    }
}

impl<W: RunWatch> Cursor<W> {
    /// Reads on (blocking) until it has [`OUT_CHUNK`] bytes of output, reaches the end of
    /// what is written, or the end of the log. The output comes out before any error.
    fn step(&mut self) -> (Vec<u8>, Next) {
        let mut out = Vec::new();
        let next = self.fill(&mut out).unwrap_or_else(Next::Fail);
        (out, next)
    }

    fn fill(&mut self, out: &mut Vec<u8>) -> Result<Next> {
        loop {
            if self.output.exhausted() {
                return Ok(Next::End);
            }
            if out.len() >= OUT_CHUNK {
                return Ok(Next::Read);
            }
            if self.files.read(&mut self.carry, self.watch.is_some())? {
                self.output.records(&mut self.carry, out);
                continue;
            }
            // All that is written is read.
            let Some(watch) = &mut self.watch else { return Ok(Next::End) };
            if self.over {
                return Ok(Next::End);
            }
            // Asked before the last read, so what the run wrote before it ended is read.
            self.over = watch.is_over().map_err(LogError::RunState)?;
            if !self.over {
                return Ok(Next::Wait);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LogError::ReaderTask(e.to_string()))
}
