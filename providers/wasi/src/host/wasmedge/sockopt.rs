//! `sock_getsockopt` / `sock_setsockopt`: the `SOL_SOCKET` options of WasmEdge's list.
//! What a guest may set is what the guide's stack and ordinary clients set; options that
//! would reach past the pod are refused, sizes are capped:
//!
//! | option | set | get |
//! | --- | --- | --- |
//! | `SO_REUSEADDR` | as given (TCP sockets start with it on: see `Socket::open`) | host value |
//! | `SO_KEEPALIVE`, `SO_OOBINLINE`, `SO_BROADCAST` | as given | host value |
//! | `SO_SNDBUF`, `SO_RCVBUF` | capped at [`MAX_BUFFER`] (the kernel caps further) | host value |
//! | `SO_LINGER` | off, or 0 s (reset on close); a positive time is `EPERM`: closing would block a host thread | host value |
//! | `SO_RCVTIMEO`, `SO_SNDTIMEO` | kept by the host for blocking calls (`EAGAIN` when they pass) | as set |
//! | `SO_TYPE`, `SO_ERROR`, `SO_ACCEPTCONN` | `ENOPROTOOPT` (read-only) | 1 DGRAM / 2 STREAM; a WASI errno; 0/1 |
//! | `SO_DONTROUTE`, `SO_BINDTODEVICE` | `EPERM`: they bypass the node's routing | 0; empty |
//! | `SO_RCVLOWAT` | `ENOPROTOOPT` | 1 |
//!
//! Values are native-endian `int`s (4 bytes), `SO_LINGER` `{int onoff, int secs}`, the
//! timeouts wasm32 libc's `timeval` `{i64 sec, i64 usec}`.

use std::time::Duration;

use rustix::net::sockopt;

use super::abi::{Errno, Wasi};
use super::memory::Mem;
use super::socket::Role;
use super::table::Sockets;

/// Largest send or receive buffer a guest may ask for.
pub(crate) const MAX_BUFFER: usize = 4 << 20;

const SO_REUSEADDR: i32 = 0;
const SO_TYPE: i32 = 1;
const SO_ERROR: i32 = 2;
const SO_DONTROUTE: i32 = 3;
const SO_BROADCAST: i32 = 4;
const SO_SNDBUF: i32 = 5;
const SO_RCVBUF: i32 = 6;
const SO_KEEPALIVE: i32 = 7;
const SO_OOBINLINE: i32 = 8;
const SO_LINGER: i32 = 9;
const SO_RCVLOWAT: i32 = 10;
const SO_RCVTIMEO: i32 = 11;
const SO_SNDTIMEO: i32 = 12;
const SO_ACCEPTCONN: i32 = 13;
const SO_BINDTODEVICE: i32 = 14;

/// `sock_setsockopt(fd, level, name, *flag, flag_size)`.
pub(crate) fn set(
    mem: &Mem<'_>,
    sockets: &mut Sockets,
    fd: i32,
    level: i32,
    name: i32,
    flag: i32,
    size: i32,
) -> Wasi {
    if level != 0 || !(0..=SO_BINDTODEVICE).contains(&name) {
        return Err(Errno::INVAL);
    }
    let value = mem.bytes(flag, size as u32)?;
    let socket = sockets.socket_mut(fd)?;
    let fd = socket.fd();
    let int = || -> Wasi<i32> {
        let bytes: [u8; 4] = value.get(..4).and_then(|b| b.try_into().ok()).ok_or(Errno::INVAL)?;
        Ok(i32::from_le_bytes(bytes))
    };
    match name {
        SO_REUSEADDR => sockopt::set_socket_reuseaddr(fd, int()? != 0)?,
        SO_KEEPALIVE => sockopt::set_socket_keepalive(fd, int()? != 0)?,
        SO_OOBINLINE => sockopt::set_socket_oobinline(fd, int()? != 0)?,
        SO_BROADCAST => sockopt::set_socket_broadcast(fd, int()? != 0)?,
        SO_SNDBUF => sockopt::set_socket_send_buffer_size(fd, buffer(int()?)?)?,
        SO_RCVBUF => sockopt::set_socket_recv_buffer_size(fd, buffer(int()?)?)?,
        SO_LINGER => {
            let onoff = int()?;
            let secs = value
                .get(4..8)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_le_bytes)
                .ok_or(Errno::INVAL)?;
            match (onoff, secs) {
                (0, _) => sockopt::set_socket_linger(fd, None)?,
                (_, 0) => sockopt::set_socket_linger(fd, Some(Duration::ZERO))?,
                _ => return Err(Errno::PERM),
            }
        }
        SO_RCVTIMEO | SO_SNDTIMEO => {
            let timeout = timeval(value)?;
            if name == SO_RCVTIMEO {
                socket.recv_timeout = timeout;
            } else {
                socket.send_timeout = timeout;
            }
        }
        SO_DONTROUTE | SO_BINDTODEVICE => return Err(Errno::PERM),
        _ => return Err(Errno::NOPROTOOPT),
    }
    Ok(())
}

fn buffer(size: i32) -> Wasi<usize> {
    let size = usize::try_from(size).map_err(|_| Errno::INVAL)?;
    Ok(size.min(MAX_BUFFER))
}

/// A `timeval` of 16 bytes; all zeros means no timeout.
fn timeval(value: &[u8]) -> Wasi<Option<Duration>> {
    let field = |at: usize| value.get(at..at + 8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
    let (secs, usecs) = field(0).zip(field(8)).ok_or(Errno::INVAL)?;
    if secs < 0 || !(0..1_000_000).contains(&usecs) {
        return Err(Errno::INVAL);
    }
    let timeout = Duration::from_secs(secs as u64) + Duration::from_micros(usecs as u64);
    Ok((!timeout.is_zero()).then_some(timeout))
}

/// `sock_getsockopt(fd, level, name, *flag, *flag_size)`: `*flag_size` in is the room
/// at `flag`; out, the bytes written (`EINVAL` when the value does not fit).
pub(crate) fn get(
    mem: &mut Mem<'_>,
    sockets: &Sockets,
    fd: i32,
    level: i32,
    name: i32,
    flag: i32,
    size_ptr: i32,
) -> Wasi {
    if level != 0 || !(0..=SO_BINDTODEVICE).contains(&name) {
        return Err(Errno::INVAL);
    }
    let room = mem.u32(size_ptr)?;
    mem.check(flag, room)?;
    let socket = sockets.socket(fd)?;
    let fd = socket.fd();
    let flag_int = |b: bool| i32::from(b);
    let value: Vec<u8> = match name {
        SO_REUSEADDR => int(flag_int(sockopt::socket_reuseaddr(fd)?)),
        SO_KEEPALIVE => int(flag_int(sockopt::socket_keepalive(fd)?)),
        SO_OOBINLINE => int(flag_int(sockopt::socket_oobinline(fd)?)),
        SO_BROADCAST => int(flag_int(sockopt::socket_broadcast(fd)?)),
        SO_ACCEPTCONN => int(flag_int(socket.role == Role::Listener)),
        SO_SNDBUF => int(sockopt::socket_send_buffer_size(fd)?.try_into().unwrap_or(i32::MAX)),
        SO_RCVBUF => int(sockopt::socket_recv_buffer_size(fd)?.try_into().unwrap_or(i32::MAX)),
        SO_TYPE => int(i32::from(socket.kind.wasi())),
        SO_ERROR => int(match sockopt::socket_error(fd)? {
            Ok(()) => 0,
            Err(err) => Errno::from(err).code(),
        }),
        SO_LINGER => {
            let linger = sockopt::socket_linger(fd)?;
            let secs = linger.map_or(0, |d| d.as_secs().min(i32::MAX as u64) as i32);
            [int(i32::from(linger.is_some())), int(secs)].concat()
        }
        SO_RCVTIMEO | SO_SNDTIMEO => {
            let timeout = if name == SO_RCVTIMEO { socket.recv_timeout } else { socket.send_timeout };
            let timeout = timeout.unwrap_or_default();
            [(timeout.as_secs() as i64).to_le_bytes(), i64::from(timeout.subsec_micros()).to_le_bytes()]
                .concat()
        }
        SO_DONTROUTE => int(0),
        SO_RCVLOWAT => int(1),
        _ => Vec::new(), // SO_BINDTODEVICE: bound to no device.
    };
    if value.len() > room as usize {
        return Err(Errno::INVAL);
    }
    mem.write(flag, &value)?;
    mem.put_u32(size_ptr, value.len() as u32)
}

fn int(value: i32) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}
