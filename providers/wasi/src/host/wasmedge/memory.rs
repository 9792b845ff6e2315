//! [`Mem`]: the guest's linear memory as the socket functions see it — every read and
//! write bounds-checked (`EFAULT` past the end), pointers taken as unsigned 32-bit
//! offsets, any alignment accepted — and the iovec lists of recv and send.

use std::io::IoSlice;
use std::ops::Range;

use super::abi::{Errno, Wasi};

/// Most buffers one iovec list may name (WasmEdge's `kIOVMax`); more is `EINVAL`.
pub(crate) const MAX_IOVECS: u32 = 1024;

/// A guest's memory, borrowed for one host call.
pub(crate) struct Mem<'a> {
    data: &'a mut [u8],
}

impl<'a> Mem<'a> {
    pub(crate) fn new(data: &'a mut [u8]) -> Self {
        Mem { data }
    }

    /// The whole memory, for wasmtime-wasi's own functions.
    pub(crate) fn raw(&mut self) -> &mut [u8] {
        self.data
    }

    /// The byte range `[ptr, ptr + len)`, or `EFAULT`.
    fn range(&self, ptr: i32, len: u32) -> Wasi<Range<usize>> {
        let start = ptr as u32 as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
        if end > self.data.len() {
            return Err(Errno::FAULT);
        }
        Ok(start..end)
    }

    pub(crate) fn bytes(&self, ptr: i32, len: u32) -> Wasi<&[u8]> {
        let range = self.range(ptr, len)?;
        Ok(&self.data[range])
    }

    pub(crate) fn bytes_mut(&mut self, ptr: i32, len: u32) -> Wasi<&mut [u8]> {
        let range = self.range(ptr, len)?;
        Ok(&mut self.data[range])
    }

    /// Checks that `[ptr, ptr + len)` is inside memory without touching it.
    pub(crate) fn check(&self, ptr: i32, len: u32) -> Wasi {
        self.range(ptr, len).map(drop)
    }

    pub(crate) fn write(&mut self, ptr: i32, bytes: &[u8]) -> Wasi {
        let len = u32::try_from(bytes.len()).map_err(|_| Errno::FAULT)?;
        self.bytes_mut(ptr, len)?.copy_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn u8(&self, ptr: i32) -> Wasi<u8> {
        Ok(self.bytes(ptr, 1)?[0])
    }

    pub(crate) fn u16(&self, ptr: i32) -> Wasi<u16> {
        let b = self.bytes(ptr, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&self, ptr: i32) -> Wasi<u32> {
        let b = self.bytes(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&self, ptr: i32) -> Wasi<u64> {
        let b = self.bytes(ptr, 8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(b);
        Ok(u64::from_le_bytes(le))
    }

    pub(crate) fn put_u8(&mut self, ptr: i32, value: u8) -> Wasi {
        self.write(ptr, &[value])
    }

    pub(crate) fn put_u16(&mut self, ptr: i32, value: u16) -> Wasi {
        self.write(ptr, &value.to_le_bytes())
    }

    pub(crate) fn put_u32(&mut self, ptr: i32, value: u32) -> Wasi {
        self.write(ptr, &value.to_le_bytes())
    }

    #[cfg(test)]
    pub(crate) fn put_u64(&mut self, ptr: i32, value: u64) -> Wasi {
        self.write(ptr, &value.to_le_bytes())
    }

    /// The buffers of an iovec (or ciovec) list: `n` entries of `{u32 buf, u32 len}` at
    /// `ptr`, each checked to lie inside memory. Empty buffers are left out.
    pub(crate) fn iovecs(&self, ptr: i32, n: i32) -> Wasi<Vec<(i32, u32)>> {
        let n = n as u32;
        if n > MAX_IOVECS {
            return Err(Errno::INVAL);
        }
        self.check(ptr, n * 8)?;
        let mut bufs = Vec::with_capacity(n as usize);
        for i in 0..n {
            let entry = ptr.wrapping_add((i * 8) as i32);
            let (buf, len) = (self.u32(entry)? as i32, self.u32(entry.wrapping_add(4))?);
            self.check(buf, len)?;
            if len > 0 {
                bufs.push((buf, len));
            }
        }
        Ok(bufs)
    }

    /// The buffers of a ciovec list as slices for a vectored send.
    pub(crate) fn io_slices(&self, bufs: &[(i32, u32)]) -> Wasi<Vec<IoSlice<'_>>> {
        bufs.iter().map(|&(buf, len)| self.bytes(buf, len).map(IoSlice::new)).collect()
    }

    /// Copies `data` into the buffers in order; returns how much fit.
    pub(crate) fn scatter(&mut self, bufs: &[(i32, u32)], mut data: &[u8]) -> Wasi<usize> {
        let mut copied = 0;
        for &(buf, len) in bufs {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(len as usize);
            self.write(buf, &data[..n])?;
            data = &data[n..];
            copied += n;
        }
        Ok(copied)
    }
}

/// The total length of a buffer list (at most 1024 × 4 GiB: fits in u64).
pub(crate) fn total(bufs: &[(i32, u32)]) -> u64 {
    bufs.iter().map(|&(_, len)| u64::from(len)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_access_is_bounds_checked() {
        let mut data = vec![0u8; 64];
        let mut mem = Mem::new(&mut data);
        assert_eq!(mem.u32(60), Ok(0));
        assert_eq!(mem.u32(61), Err(Errno::FAULT));
        assert_eq!(mem.u32(-1), Err(Errno::FAULT));
        assert_eq!(mem.put_u64(57, 1), Err(Errno::FAULT));
        assert_eq!(mem.bytes(0, u32::MAX), Err(Errno::FAULT));
        mem.put_u16(3, 0xbeef).unwrap();
        assert_eq!(mem.u16(3), Ok(0xbeef));
    }

    #[test]
    fn iovec_lists_are_checked_whole() {
        let mut data = vec![0u8; 128];
        {
            let mut mem = Mem::new(&mut data);
            // Two entries at 0: {64, 8} and {0, 0} (empty, skipped).
            mem.put_u32(0, 64).unwrap();
            mem.put_u32(4, 8).unwrap();
            assert_eq!(mem.iovecs(0, 2), Ok(vec![(64, 8)]));
            assert_eq!(mem.iovecs(0, 1025), Err(Errno::INVAL));
            mem.put_u32(4, 100).unwrap();
            assert_eq!(mem.iovecs(0, 1), Err(Errno::FAULT));
            assert_eq!(mem.iovecs(124, 1), Err(Errno::FAULT));
            mem.put_u32(4, 8).unwrap();
            assert_eq!(mem.scatter(&[(64, 2), (70, 8)], b"hello"), Ok(5));
        }
        assert_eq!(&data[64..66], b"he");
        assert_eq!(&data[70..73], b"llo");
    }
}
