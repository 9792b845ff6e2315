//! Writing a container run's log: [`LogFile`] (the run's file, shared by its streams) and
//! [`LogWriter`] (an `AsyncWrite` per stream that turns bytes into CRI records).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use k8s_openapi::jiff::Timestamp;
use tokio::io::AsyncWrite;

use super::registry::Live;
use super::{LogLimits, LogRegistry, Result, Stream, cri};

/// Longest line kept whole; longer output is split into partial (`P`) records, as CRI does.
pub(super) const MAX_LINE: usize = 16 * 1024;

/// One container run's log, shared by its stdout and stderr writers. The run stays live in
/// the registry — followers keep waiting for more — until the last clone and the last
/// [`LogWriter`] are dropped.
#[derive(Clone)]
pub struct LogFile {
    live: Arc<Live>,
}

impl LogFile {
    /// Opens the run's file at `path` for appending (creating it and its directory) and
    /// registers it in `registry`, rotating it by `limits`. If the registry already holds a
    /// live run at `path`, this is that run (and its limits).
    pub fn create(registry: &LogRegistry, path: &Path, limits: LogLimits) -> Result<LogFile> {
        Ok(LogFile { live: registry.attach(path, limits)? })
    }

    /// The run's current file.
    pub fn path(&self) -> &Path {
        self.live.path()
    }

    /// A writer for one stream; each complete line becomes one record.
    pub fn writer(&self, stream: Stream) -> LogWriter {
        LogWriter { log: self.clone(), stream, pending: Vec::new() }
    }
}

/// An `AsyncWrite` that turns bytes into CRI records. Each write call appends its complete
/// lines with one `write` to the file (no user-space buffer, so a follower sees a line as
/// soon as it is complete) and wakes the followers; an unterminated last line waits for its
/// newline, for [`MAX_LINE`] bytes (then a `P` record), or for shutdown/drop.
pub struct LogWriter {
    log: LogFile,
    stream: Stream,
    pending: Vec<u8>,
}

impl LogWriter {
    fn push(&mut self, buf: &[u8]) -> Result<()> {
        let mut batch = Batch::new(self.stream);
        let mut rest = buf;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line = &rest[..pos];
            if self.pending.is_empty() {
                batch.line(line);
            } else {
                self.pending.extend_from_slice(line);
                batch.line(&self.pending);
                self.pending.clear();
            }
            rest = &rest[pos + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_LINE {
            let cut = (self.pending.len() - 1) / MAX_LINE * MAX_LINE;
            for chunk in self.pending[..cut].chunks(MAX_LINE) {
                batch.record(false, chunk);
            }
            self.pending.drain(..cut);
        }
        batch.append_to(&self.log.live)
    }

    /// Writes what is left of an unterminated last line as a full record.
    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(self.stream);
        batch.record(true, &std::mem::take(&mut self.pending));
        batch.append_to(&self.log.live)
    }
}

impl AsyncWrite for LogWriter {
    /// Appends synchronously: one `write(2)` of at most a few records to a local file.
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        Poll::Ready(this.push(buf).map(|_| buf.len()).map_err(std::io::Error::other))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().flush_pending().map_err(std::io::Error::other))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush_pending() {
            tracing::warn!(error = %e, "last log line lost");
        }
    }
}

/// The records of one write call, all stamped with the same time.
struct Batch {
    stream: Stream,
    time: Option<String>,
    bytes: Vec<u8>,
    /// Offset in `bytes` where each record ends.
    ends: Vec<usize>,
}

impl Batch {
    fn new(stream: Stream) -> Self {
        Batch { stream, time: None, bytes: Vec::new(), ends: Vec::new() }
    }

    fn record(&mut self, full: bool, text: &[u8]) {
        let time = self.time.get_or_insert_with(|| cri::format_record_time(Timestamp::now()));
        cri::encode(&mut self.bytes, time, self.stream, full, text);
        self.ends.push(self.bytes.len());
    }

    /// One line (without its `\n`; a trailing `\r` is dropped): partial records of
    /// [`MAX_LINE`] bytes, then the rest as the full one.
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut chunks = line.chunks(MAX_LINE).peekable();
        while let Some(chunk) = chunks.next() {
            self.record(chunks.peek().is_none(), chunk);
        }
        if line.is_empty() {
            self.record(true, b"");
        }
    }

    fn append_to(&self, live: &Live) -> Result<()> {
        if self.ends.is_empty() {
            return Ok(());
        }
        live.append(&self.bytes, &self.ends)
    }
}
