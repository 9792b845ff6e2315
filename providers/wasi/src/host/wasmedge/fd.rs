//! The preview1 functions a socket descriptor can reach, shadowing wasmtime-wasi's in
//! the linker of a module with sockets: a socket number is answered here, every other
//! descriptor goes to wasmtime-wasi's own implementation with the guest's memory — so
//! files, stdio and preopens keep the one implementation they have.
//!
//! On a socket: `fd_close` closes it, `fd_read`/`fd_write` receive and send,
//! `fd_fdstat_get` reports `SOCKET_STREAM`/`SOCKET_DGRAM` and `NONBLOCK`,
//! `fd_fdstat_set_flags` sets `NONBLOCK` (other defined flags are accepted and ignored),
//! `fd_filestat_get` reports the file type only, `fd_seek`/`fd_tell`/`fd_pread`/
//! `fd_pwrite` are `ESPIPE`, and `fd_renumber` moves a socket onto another socket's
//! number (a socket onto a file's number, or back, is `ENOTSUP`). Functions not
//! shadowed answer `EBADF` for a socket, as wasmtime-wasi does for numbers it does not
//! know.

use wasmtime_wasi::WasiView as _;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1 as _};

use super::abi::{Errno, FDFLAGS_ALL, FDFLAGS_NONBLOCK, Wasi, code};
use super::memory::Mem;
use super::sock;
use super::table::Sockets;
use crate::host::Host;

/// preview1 rights of a socket: read, fdstat_set_flags, write, filestat_get,
/// poll_fd_readwrite, sock_shutdown, sock_accept.
const SOCKET_RIGHTS: u64 = 1 << 1 | 1 << 3 | 1 << 6 | 1 << 21 | 1 << 27 | 1 << 28 | 1 << 29;

/// Calls wasmtime-wasi's own `$func` on the guest's memory (`sync` for the two it
/// implements without `async`).
macro_rules! delegate {
    ($mem:expr, $host:expr, $fuel:expr, $func:ident($($arg:expr),*)) => {
        delegate!(@call $mem, $host, $fuel, $func($($arg),*), .await)
    };
    (sync $mem:expr, $host:expr, $fuel:expr, $func:ident($($arg:expr),*)) => {
        delegate!(@call $mem, $host, $fuel, $func($($arg),*),)
    };
    (@call $mem:expr, $host:expr, $fuel:expr, $func:ident($($arg:expr),*), $($await:tt)*) => {{
        $host.wasi.set_hostcall_fuel($fuel);
        let mut guest = wiggle::GuestMemory::Unshared($mem.raw());
        p1::$func(&mut $host.wasi, &mut guest, $($arg),*)$($await)*
    }};
}

pub(crate) async fn close(mem: &mut Mem<'_>, host: &mut Host, fuel: usize, fd: i32) -> wasmtime::Result<i32> {
    if Sockets::is_socket_fd(fd) {
        let table = host.wasi.ctx().table;
        return Ok(code(host.sockets.remove(fd, table).map(drop)));
    }
    let closed: wasmtime::Result<i32> = delegate!(mem, host, fuel, fd_close(fd));
    if matches!(closed, Ok(0)) {
        // A handle was freed: an accept that failed with EMFILE may succeed now.
        host.sockets.accept_starved = false;
    }
    closed
}

pub(crate) async fn read(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    iovs: i32,
    n: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    if !Sockets::is_socket_fd(fd) {
        return delegate!(mem, host, fuel, fd_read(fd, iovs, n, nread));
    }
    let read = async {
        let bufs = mem.iovecs(iovs, n)?;
        mem.check(nread, 4)?;
        let got = sock::receive(mem, &host.sockets, fd, &bufs, 0).await?;
        mem.put_u32(nread, got.bytes as u32)
    };
    Ok(code(read.await))
}

pub(crate) async fn write(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    iovs: i32,
    n: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    if !Sockets::is_socket_fd(fd) {
        return delegate!(mem, host, fuel, fd_write(fd, iovs, n, nwritten));
    }
    let write = async {
        let bufs = mem.iovecs(iovs, n)?;
        mem.check(nwritten, 4)?;
        let sent = sock::send(mem, &mut host.sockets, fd, &bufs, None).await?;
        mem.put_u32(nwritten, sent as u32)
    };
    Ok(code(write.await))
}

#[allow(clippy::too_many_arguments, reason = "preview1's signature, and the call's memory, host and fuel")]
pub(crate) async fn pread(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    iovs: i32,
    n: i32,
    offset: i64,
    nread: i32,
) -> wasmtime::Result<i32> {
    if Sockets::is_socket_fd(fd) {
        return Ok(code(not_seekable(&host.sockets, fd)));
    }
    delegate!(mem, host, fuel, fd_pread(fd, iovs, n, offset, nread))
}

#[allow(clippy::too_many_arguments, reason = "preview1's signature, and the call's memory, host and fuel")]
pub(crate) async fn pwrite(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    iovs: i32,
    n: i32,
    offset: i64,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    if Sockets::is_socket_fd(fd) {
        return Ok(code(not_seekable(&host.sockets, fd)));
    }
    delegate!(mem, host, fuel, fd_pwrite(fd, iovs, n, offset, nwritten))
}

pub(crate) async fn seek(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    offset: i64,
    whence: i32,
    newoffset: i32,
) -> wasmtime::Result<i32> {
    if Sockets::is_socket_fd(fd) {
        return Ok(code(not_seekable(&host.sockets, fd)));
    }
    delegate!(mem, host, fuel, fd_seek(fd, offset, whence, newoffset))
}

pub(crate) async fn tell(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    offset: i32,
) -> wasmtime::Result<i32> {
    if Sockets::is_socket_fd(fd) {
        return Ok(code(not_seekable(&host.sockets, fd)));
    }
    delegate!(sync mem, host, fuel, fd_tell(fd, offset))
}

/// `ESPIPE` for an open socket, `EBADF` for a closed number.
fn not_seekable(sockets: &Sockets, fd: i32) -> Wasi {
    sockets.get(fd)?;
    Err(Errno::SPIPE)
}

pub(crate) async fn fdstat_get(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    stat: i32,
) -> wasmtime::Result<i32> {
    if !Sockets::is_socket_fd(fd) {
        return delegate!(mem, host, fuel, fd_fdstat_get(fd, stat));
    }
    let mut fdstat = || -> Wasi {
        let socket = host.sockets.get(fd)?;
        let mut raw = [0u8; 24];
        raw[0] = socket.kind.filetype();
        let flags = if socket.nonblocking { FDFLAGS_NONBLOCK } else { 0 };
        raw[2..4].copy_from_slice(&flags.to_le_bytes());
        raw[8..16].copy_from_slice(&SOCKET_RIGHTS.to_le_bytes());
        raw[16..24].copy_from_slice(&SOCKET_RIGHTS.to_le_bytes());
        mem.write(stat, &raw)
    };
    Ok(code(fdstat()))
}

pub(crate) async fn fdstat_set_flags(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    flags: i32,
) -> wasmtime::Result<i32> {
    if !Sockets::is_socket_fd(fd) {
        return delegate!(sync mem, host, fuel, fd_fdstat_set_flags(fd, flags));
    }
    let mut set = || -> Wasi {
        let socket = host.sockets.get_mut(fd)?;
        if flags as u32 & !u32::from(FDFLAGS_ALL) != 0 {
            return Err(Errno::INVAL);
        }
        socket.nonblocking = flags as u16 & FDFLAGS_NONBLOCK != 0;
        Ok(())
    };
    Ok(code(set()))
}

pub(crate) async fn filestat_get(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    fd: i32,
    stat: i32,
) -> wasmtime::Result<i32> {
    if !Sockets::is_socket_fd(fd) {
        return delegate!(mem, host, fuel, fd_filestat_get(fd, stat));
    }
    let mut filestat = || -> Wasi {
        let socket = host.sockets.get(fd)?;
        let mut raw = [0u8; 64];
        raw[16] = socket.kind.filetype();
        mem.write(stat, &raw)
    };
    Ok(code(filestat()))
}

pub(crate) async fn renumber(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fuel: usize,
    from: i32,
    to: i32,
) -> wasmtime::Result<i32> {
    match (Sockets::is_socket_fd(from), Sockets::is_socket_fd(to)) {
        (false, false) => delegate!(mem, host, fuel, fd_renumber(from, to)),
        (true, true) => {
            let table = host.wasi.ctx().table;
            Ok(code(host.sockets.renumber(from, to, table)))
        }
        (true, false) => Ok(code(host.sockets.get(from).and(Err(Errno::NOTSUP)))),
        (false, true) => Ok(code(host.sockets.get(to).and(Err(Errno::NOTSUP)))),
    }
}
