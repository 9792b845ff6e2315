//! Reading a run's log as `kubectl logs` shows it ([`stream`], with every option the
//! kubelet implements in `pkg/kubelet/kuberuntime/logs`) and as records ([`read_lines`]).

use std::io::Read;
use std::path::Path;

use super::follow::{RunWatch, WriterWatch};
use super::output::{LogOptions, LogStream};
use super::segment::read_failed;
use super::segments::RunFiles;
use super::{LogRegistry, Result, Stream, cri};

/// The log of the run whose current file is `path`, as `kubectl logs` prints it: the text
/// of each record of stdout and stderr in order (a `P` record without a newline, an `F`
/// record with one). With `follow` and a run written in this process, the stream goes on
/// with each append and ends once the run's writer is gone and everything is read. File
/// reads run on tokio's blocking pool.
///
/// Fails with [`LogError::NotFound`] before any output when the run has no log file.
pub async fn stream(registry: &LogRegistry, path: &Path, opts: LogOptions) -> Result<LogStream> {
    let live = registry.find(path);
    // Subscribed before the files are opened: every append after this wakes the follower.
    let watch = live.as_deref().filter(|_| opts.follow).map(WriterWatch::new);
    super::follow::open(path.to_path_buf(), live, opts, watch).await
}

/// Like [`stream`], following the run whose writer is elsewhere (another process) until
/// `watch` says it is over and everything is read; `opts.follow` is not looked at.
pub async fn follow<W: RunWatch>(path: &Path, opts: LogOptions, watch: W) -> Result<LogStream> {
    super::follow::open(path.to_path_buf(), None, opts, Some(watch)).await
}

/// The text of each line of the run whose current file is `path` — rotated files first,
/// `P` records joined to the `F` record that ends them, per stream — for tests and tools.
/// Not synchronized with a live writer: a rotation while it reads may hide a file.
pub fn read_lines(path: &Path) -> Result<Vec<(Stream, String)>> {
    let mut lines = Vec::new();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for mut seg in RunFiles::open(path, None)?.into_files() {
        let mut bytes = Vec::new();
        seg.file.read_to_end(&mut bytes).map_err(|e| read_failed(&seg.path, e))?;
        // Bytes after the last newline are not a whole record.
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for record in bytes[..whole].split(|b| *b == b'\n').filter_map(cri::parse) {
            let partial = if record.stream == Stream::Stdout { &mut stdout } else { &mut stderr };
            partial.extend_from_slice(record.text);
            if record.full {
                lines.push((record.stream, String::from_utf8_lossy(&std::mem::take(partial)).into_owned()));
            }
        }
    }
    Ok(lines)
}
