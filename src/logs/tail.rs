//! `--tail`: where the output must start to hold the last N full lines, found by reading
//! the run's files backwards from the end (the newest file first).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::segment::{Segment, read_failed};
use super::{Result, cri};

/// Bytes read per step backwards.
const CHUNK: u64 = 64 * 1024;

/// `(segment index, offset)` where output starts so that it holds the last `lines` full
/// lines (`F` records, with the `P` records before each), across rotated files.
pub(super) fn start(segments: &mut [Segment], lines: u64) -> Result<(usize, u64)> {
    let Some(last) = segments.len().checked_sub(1) else { return Ok((0, 0)) };
    if lines == 0 {
        // Just past the last whole record: one being written shows once it is complete.
        let seg = &mut segments[last];
        let end = last_record_end(&mut seg.file, seg.len).map_err(|e| read_failed(&seg.path, e))?;
        return Ok((last, end));
    }
    // Output starts just after the (lines + 1)-th full record from the end.
    let mut need = lines.saturating_add(1);
    for (i, seg) in segments.iter_mut().enumerate().rev() {
        let found = scan_back(&mut seg.file, seg.len, &mut need).map_err(|e| read_failed(&seg.path, e))?;
        if let Some(offset) = found {
            return Ok((i, offset));
        }
    }
    Ok((0, 0))
}

/// Walks the records of `file[..len]` from the last one back, counting full ones against
/// `need`. Returns the offset just past the record that brought `need` to zero, or `None`
/// (with `need` reduced) when the file has too few. Bytes after the last newline are not
/// a record yet and are skipped.
fn scan_back(file: &mut File, len: u64, need: &mut u64) -> std::io::Result<Option<u64>> {
    // `window` holds the file's bytes [w, w + window.len()): the text of the record that
    // ends at `record_end` and whose start is not read yet, plus nothing after it.
    let mut window: Vec<u8> = Vec::new();
    let mut w = len;
    let mut record_end: Option<u64> = None;
    loop {
        while let Some(i) = window.iter().rposition(|b| *b == b'\n') {
            if let Some(end) = record_end
                && counts(&window[i + 1..], need)
            {
                return Ok(Some(end));
            }
            record_end = Some(w + i as u64 + 1);
            window.truncate(i);
        }
        if w == 0 {
            return Ok(record_end.filter(|_| counts(&window, need)));
        }
        let from = w.saturating_sub(CHUNK);
        let mut chunk = vec![0; (w - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&window);
        window = chunk;
        w = from;
    }
}

/// The offset just past the last newline in `file[..len]` (0 if none). Usually the last
/// byte, so the steps back are small.
fn last_record_end(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut chunk = Vec::new();
    while end > 0 {
        let from = end.saturating_sub(4096);
        chunk.resize((end - from) as usize, 0);
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

/// Counts `record` against `need` if it ends a line; true when it was the last one needed.
fn counts(record: &[u8], need: &mut u64) -> bool {
    if cri::ends_line(record) {
        *need -= 1;
        *need == 0
    } else {
        false
    }
}
