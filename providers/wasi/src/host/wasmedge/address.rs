//! The guest's `address` form in its memory: a `{buf, buf_len}` pair whose length tells
//! the family; v2 adds a 128-byte storage with the family in front.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{Errno, Family, Version, Wasi, ip_bytes};
use super::memory::Mem;

/// The guest's `address` at `ptr`: `{u32 buf, u32 buf_len}`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Address {
    pub(crate) buf: u32,
    pub(crate) len: u32,
}

/// Length of v2's address storage: `u16 family` then 126 bytes.
pub(crate) const STORAGE_LEN: u32 = 128;

impl Address {
    pub(crate) fn read(mem: &Mem<'_>, ptr: i32) -> Wasi<Address> {
        Ok(Address { buf: mem.u32(ptr)?, len: mem.u32(ptr.wrapping_add(4))? })
    }

    /// The IP it holds: 4 bytes IPv4, 16 bytes IPv6, and for v2 the 128-byte storage
    /// (family 1 or 2 at offset 0, the IP bytes at offset 2). AF_UNIX → EAFNOSUPPORT.
    pub(crate) fn ip(&self, mem: &Mem<'_>, version: Version) -> Wasi<IpAddr> {
        let buf = self.buf as i32;
        match self.len {
            4 => Ok(ipv4(mem.bytes(buf, 4)?)),
            16 => Ok(ipv6(mem.bytes(buf, 16)?)),
            STORAGE_LEN if version == Version::V2 => {
                let storage = mem.bytes(buf, STORAGE_LEN)?;
                match u16::from_le_bytes([storage[0], storage[1]]) {
                    1 => Ok(ipv4(&storage[2..6])),
                    2 => Ok(ipv6(&storage[2..18])),
                    _ => Err(Errno::AFNOSUPPORT),
                }
            }
            _ => Err(Errno::INVAL),
        }
    }

    /// Writes `ip` into the buffer: bare bytes for a 4/16-byte buffer (NOMEM when too
    /// small for the family), the storage form for a 128-byte one.
    pub(crate) fn write_ip(&self, mem: &mut Mem<'_>, ip: IpAddr) -> Wasi {
        let buf = self.buf as i32;
        let bytes = ip_bytes(ip);
        if self.len == STORAGE_LEN {
            let mut storage = [0u8; STORAGE_LEN as usize];
            storage[..2].copy_from_slice(&u16::from(Family::of(ip).wasi()).to_le_bytes());
            storage[2..2 + bytes.len()].copy_from_slice(&bytes);
            return mem.write(buf, &storage);
        }
        if (self.len as usize) < bytes.len() {
            return Err(Errno::NOMEM);
        }
        mem.write(buf, &bytes)
    }
}

fn ipv4(b: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

fn ipv6(b: &[u8]) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    IpAddr::V6(Ipv6Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_length_and_storage() {
        let mut data = vec![0u8; 256];
        data[16..20].copy_from_slice(&[10, 0, 0, 7]);
        data[64..66].copy_from_slice(&2u16.to_le_bytes());
        data[66..82].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let mem = Mem::new(&mut data);
        let v4 = Address { buf: 16, len: 4 };
        assert_eq!(v4.ip(&mem, Version::V1), Ok("10.0.0.7".parse().unwrap()));
        let storage = Address { buf: 64, len: 128 };
        assert_eq!(storage.ip(&mem, Version::V2), Ok("::1".parse().unwrap()));
        assert_eq!(storage.ip(&mem, Version::V1), Err(Errno::INVAL));
        assert_eq!(Address { buf: 16, len: 8 }.ip(&mem, Version::V2), Err(Errno::INVAL));
        assert_eq!(Address { buf: 250, len: 16 }.ip(&mem, Version::V1), Err(Errno::FAULT));
    }

    #[test]
    fn writing_an_address_respects_its_buffer() {
        let mut data = vec![0u8; 256];
        let mut mem = Mem::new(&mut data);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(Address { buf: 0, len: 4 }.write_ip(&mut mem, v6), Err(Errno::NOMEM));
        Address { buf: 0, len: 16 }.write_ip(&mut mem, "10.1.2.3".parse().unwrap()).unwrap();
        Address { buf: 100, len: 128 }.write_ip(&mut mem, v6).unwrap();
        assert_eq!(&data[0..4], &[10, 1, 2, 3]);
        assert_eq!(&data[100..102], &[2, 0]);
        assert_eq!(data[102], 0x20);
    }
}
