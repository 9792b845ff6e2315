//! Container log files, laid out as the kubelet lays out /var/log/pods but under the data
//! dir, in the CRI line format (`<RFC3339Nano> stdout|stderr F|P <text>`), plus the writers
//! the runtime's stdout/stderr sinks go to.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Longest line kept whole; longer output is split into partial (`P`) records, as CRI does.
const MAX_LINE: usize = 16 * 1024;

/// `<data-dir>/logs/<namespace>_<pod>_<uid>`: one pod's log directory.
pub fn pod_dir(data_dir: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{namespace}_{pod}_{uid}"))
}

/// `<pod-dir>/<container>/<restartCount>.log`.
pub fn container_log(pod_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_dir.join(container).join(format!("{restart_count}.log"))
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

/// One container run's log file, shared by its stdout and stderr writers.
#[derive(Clone)]
pub struct LogFile {
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
}

impl LogFile {
    /// Creates (or appends to) the file, making its directory.
    pub fn create(path: &Path) -> std::io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogFile { file: Arc::new(Mutex::new(file)), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writer for one stream; each complete line becomes one record.
    pub fn writer(&self, stream: Stream) -> LogWriter {
        LogWriter { log: self.clone(), stream, pending: Vec::new() }
    }

    fn record(&self, stream: Stream, full: bool, text: &[u8]) -> std::io::Result<()> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut line = Vec::with_capacity(text.len() + 48);
        write!(
            line,
            "{} {} {} ",
            now.strftime("%Y-%m-%dT%H:%M:%S%.9fZ"),
            stream.tag(),
            if full { "F" } else { "P" }
        )?;
        line.extend_from_slice(text);
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
    }
}

/// An `AsyncWrite` that turns bytes into CRI log records. Writes go straight to the file
/// (small, buffered by the kernel), so a reader sees a line as soon as it is complete.
pub struct LogWriter {
    log: LogFile,
    stream: Stream,
    pending: Vec<u8>,
}

impl LogWriter {
    fn push(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(buf);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let rest = self.pending.split_off(pos + 1);
            let mut line = std::mem::replace(&mut self.pending, rest);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // A long line: partial records of MAX_LINE, then the rest as the full one.
            let mut chunks = line.chunks(MAX_LINE).peekable();
            while let Some(chunk) = chunks.next() {
                self.log.record(self.stream, chunks.peek().is_none(), chunk)?;
            }
            if line.is_empty() {
                self.log.record(self.stream, true, b"")?;
            }
        }
        while self.pending.len() > MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.log.record(self.stream, false, &chunk)?;
        }
        Ok(())
    }

    /// Writes what is left of an unterminated last line as a full record.
    fn flush_pending(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.log.record(self.stream, true, &line)?;
        }
        Ok(())
    }
}

impl AsyncWrite for LogWriter {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        Poll::Ready(this.push(buf).map(|_| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().flush_pending())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush_pending();
    }
}

/// The text of each record of a CRI log (partial records joined), for tests and tools.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<(Stream, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: Vec<(Stream, String)> = Vec::new();
    let mut partial = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_ts, stream, tag, body) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
        let stream = if stream == Some("stderr") { Stream::Stderr } else { Stream::Stdout };
        partial.push_str(body);
        if tag == Some("F") {
            out.push((stream, std::mem::take(&mut partial)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_become_cri_records_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = container_log(&pod_dir(dir.path(), "ns", "p", "u1"), "c", 0);
        assert!(path.ends_with("logs/ns_p_u1/c/0.log"));
        let log = LogFile::create(&path).unwrap();
        let (mut out, mut err) = (log.writer(Stream::Stdout), log.writer(Stream::Stderr));
        out.write_all(b"Hello, ").await.unwrap();
        out.write_all(b"World!\nsecond\r\n").await.unwrap();
        err.write_all(b"oops\nunterminated").await.unwrap();
        err.shutdown().await.unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        let first = raw.lines().next().unwrap();
        let ts = first.split(' ').next().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 30, "RFC3339Nano: {ts}");
        assert!(first.ends_with(" stdout F Hello, World!"), "{first}");
        let lines = read_lines(&path).unwrap();
        assert_eq!(
            lines,
            vec![
                (Stream::Stdout, "Hello, World!".into()),
                (Stream::Stdout, "second".into()),
                (Stream::Stderr, "oops".into()),
                (Stream::Stderr, "unterminated".into()),
            ]
        );
    }

    #[tokio::test]
    async fn very_long_lines_are_split_into_partials_and_joined_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = LogFile::create(&path).unwrap();
        let mut out = log.writer(Stream::Stdout);
        let long = "x".repeat(MAX_LINE * 2 + 10);
        out.write_all(format!("{long}\n").as_bytes()).await.unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert_eq!(raw.lines().filter(|l| l.contains(" stdout P ")).count(), 2);
        assert_eq!(read_lines(&path).unwrap(), vec![(Stream::Stdout, long)]);
    }
}
