//! The reader every layer is unpacked through: it stops at the layer's cap on unpacked
//! bytes, and it reads the tar stream's headers itself so that a long-name, long-link or
//! pax entry (which the tar reader holds in memory whole) larger than
//! [`MAX_TAR_HEADER_SIZE`] is refused before the tar reader buffers it.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::limits::MAX_TAR_HEADER_SIZE;

/// Why a guarded reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The layer unpacked to more than its cap.
    Unpacked,
    /// A tar metadata entry declared this many bytes.
    TarHeader { size: u64 },
}

/// Where a guarded reader reports a violation; the tar reader may wrap or replace the I/O
/// error it returned, so callers look here first.
pub(crate) type Report = Rc<Cell<Option<Violation>>>;

const BLOCK: usize = 512;

/// Wraps the unpacked bytes of one layer.
pub(crate) struct Guarded<R> {
    inner: R,
    cap: u64,
    read: u64,
    report: Report,
    /// The header being assembled (tar headers may straddle reads).
    header: [u8; BLOCK],
    filled: usize,
    /// Bytes of entry data and padding to pass before the next header.
    skip: u64,
    /// GNU sparse extension blocks follow the current header.
    sparse_extension: bool,
    /// The data of a pax header being collected, to learn the next entry's real size.
    pax: Option<(Vec<u8>, u64)>,
    /// The size a pax header gave the next entry.
    pax_size: Option<u64>,
}

impl<R: Read> Guarded<R> {
    /// Reads `inner`, failing past `cap` bytes; violations go to `report`.
    pub(crate) fn new(inner: R, cap: u64, report: Report) -> Self {
        Guarded {
            inner,
            cap,
            read: 0,
            report,
            header: [0; BLOCK],
            filled: 0,
            skip: 0,
            sparse_extension: false,
            pax: None,
            pax_size: None,
        }
    }

    fn fail(&self, violation: Violation) -> io::Error {
        self.report.set(Some(violation));
        io::Error::other(format!("layer refused: {violation:?}"))
    }

    /// Follows the tar structure through `bytes`.
    fn inspect(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                if let Some((data, wanted)) = self.pax.as_mut() {
                    let keep = n.min((*wanted as usize).saturating_sub(data.len()));
                    data.extend_from_slice(&bytes[..keep]);
                }
                self.skip -= n as u64;
                bytes = &bytes[n..];
                if self.skip == 0
                    && let Some((data, _)) = self.pax.take()
                {
                    self.pax_size = pax_size(&data);
                }
                continue;
            }
            let n = (BLOCK - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.header_done()?;
            }
        }
        Ok(())
    }

    fn header_done(&mut self) -> Result<(), Violation> {
        let h = &self.header;
        if self.sparse_extension {
            self.sparse_extension = h[504] != 0;
            return Ok(());
        }
        if h.iter().all(|b| *b == 0) {
            return Ok(()); // end-of-archive block
        }
        let declared = octal_or_binary(&h[124..136]);
        let kind = h[156];
        let size = match kind {
            b'L' | b'K' | b'x' | b'g' => {
                if declared > MAX_TAR_HEADER_SIZE {
                    return Err(Violation::TarHeader { size: declared });
                }
                if kind == b'x' {
                    self.pax = Some((Vec::new(), declared));
                }
                declared
            }
            _ => self.pax_size.take().unwrap_or(declared),
        };
        self.sparse_extension = kind == b'S' && h[482] != 0;
        self.skip = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
        if self.skip == 0
            && let Some((data, _)) = self.pax.take()
        {
            self.pax_size = pax_size(&data);
        }
        Ok(())
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(self.fail(Violation::Unpacked));
        }
        if let Err(v) = self.inspect(&buf[..n]) {
            return Err(self.fail(v));
        }
        Ok(n)
    }
}

/// A tar numeric field: octal digits (spaces and NULs around them), or base-256 when the
/// first byte's high bit is set. Out of range: `u64::MAX`.
fn octal_or_binary(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = 0;
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { *b };
            if n > (u64::MAX >> 8) {
                return u64::MAX;
            }
            n = (n << 8) | u64::from(b);
        }
        return n;
    }
    let digits = field.iter().skip_while(|b| **b == b' ' || **b == 0).take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    for d in digits {
        n = match n.checked_mul(8).and_then(|n| n.checked_add(u64::from(d - b'0'))) {
            Some(n) => n,
            None => return u64::MAX,
        };
    }
    n
}

/// The `size` record of pax extended header data (`<len> size=<n>\n` records).
fn pax_size(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.lines().find_map(|record| {
        let (_, kv) = record.split_once(' ')?;
        kv.strip_prefix("size=")?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, path, data).unwrap();
    }

    fn read_all(tar: &[u8], cap: u64) -> (io::Result<Vec<String>>, Option<Violation>) {
        let report = Report::default();
        let mut archive = tar::Archive::new(Guarded::new(tar, cap, report.clone()));
        let names = archive.entries().and_then(|entries| {
            entries
                .map(|e| {
                    let mut e = e?;
                    io::copy(&mut e, &mut io::sink())?;
                    Ok(e.path()?.to_string_lossy().into_owned())
                })
                .collect()
        });
        (names, report.get())
    }

    #[test]
    fn ordinary_layers_pass_unchanged() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "app.wasm", &[1; 700]);
        // A path too long for the header: the builder writes a GNU long-name entry.
        let long = format!("{}/x.wasm", "d".repeat(300));
        entry(&mut b, &long, b"x");
        let tar = b.into_inner().unwrap();
        let (names, violation) = read_all(&tar, 1 << 20);
        assert_eq!(names.unwrap(), vec!["app.wasm".to_string(), long]);
        assert_eq!(violation, None);
    }

    #[test]
    fn a_layer_stops_at_its_cap() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "big", &[0; 8192]);
        let tar = b.into_inner().unwrap();
        let (names, violation) = read_all(&tar, 4096);
        assert!(names.is_err());
        assert_eq!(violation, Some(Violation::Unpacked));
    }

    #[test]
    fn a_huge_long_name_entry_is_refused_before_it_is_buffered() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_path("././@LongLink").unwrap();
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[b'a'; 4096]);
        let (names, violation) = read_all(&tar, u64::MAX);
        assert!(names.is_err());
        assert_eq!(violation, Some(Violation::TarHeader { size: 1 << 30 }));
    }

    #[test]
    fn a_pax_size_moves_the_next_header() {
        // A pax header that gives the next entry its real size (what writers do past 8 GiB).
        let record = "13 size=1024\n"; // a record's length counts its own digits
        assert_eq!(record.len(), 13);
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_path("pax").unwrap();
        pax.set_cksum();
        let mut file = tar::Header::new_ustar();
        file.set_size(0);
        file.set_path("f").unwrap();
        file.set_cksum();
        let mut g = Guarded::new(&[][..], u64::MAX, Report::default());
        let mut stream = pax.as_bytes().to_vec();
        stream.extend_from_slice(record.as_bytes());
        stream.resize(1024, 0);
        stream.extend_from_slice(file.as_bytes());
        g.inspect(&stream).unwrap();
        assert_eq!(g.skip, 1024);
        assert_eq!(octal_or_binary(b"0000644 \0"), 0o644);
        assert_eq!(octal_or_binary(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 256);
        assert_eq!(octal_or_binary(&[0xff; 12]), u64::MAX);
    }
}
