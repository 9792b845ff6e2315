//! The `sock_*` functions of the WasmEdge ABI (v1 and v2 forms) on a run's [`Sockets`]:
//! argument checks first (`EFAULT`, `EINVAL`, `EBADF`/`ENOTSOCK`), then the run's rules,
//! then the host socket call.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown, SocketFlags};
use tokio::io::Interest;
use wasmtime_wasi::WasiView as _;

use super::abi::{self, Errno, FDFLAGS_ALL, FDFLAGS_NONBLOCK, Family, Kind, Version, Wasi};
use super::address::{Address, STORAGE_LEN};
use super::memory::{Mem, total};
use super::socket::{Role, Socket};
use super::table::Sockets;
use crate::host::Host;
use crate::net::Transport;

/// Most connections a listener queues (WasmEdge passes the guest's backlog through).
pub(crate) const MAX_BACKLOG: i32 = 1024;

/// Largest datagram read at once (the largest a UDP packet carries).
const MAX_DATAGRAM: usize = 65_536;

/// Bytes of a receive into several buffers copied through the host at once.
const MAX_GATHER: usize = 256 * 1024;

fn transport(kind: Kind) -> Transport {
    match kind {
        Kind::Stream => Transport::Tcp,
        Kind::Dgram => Transport::Udp,
    }
}

/// `sock_open(af, type, *fd)`.
pub(crate) fn open(mem: &mut Mem<'_>, host: &mut Host, af: i32, ty: i32, ro_fd: i32) -> Wasi {
    mem.check(ro_fd, 4)?;
    let family = Family::from_wasi(af)?;
    let kind = Kind::from_wasi(ty)?;
    if !host.sockets.allows(transport(kind)) {
        return Err(Errno::ACCES);
    }
    let table = host.wasi.ctx().table;
    host.sockets.check_room(table)?;
    let socket = Socket::open(family, kind)?;
    let fd = host.sockets.insert(socket, table)?;
    mem.put_u32(ro_fd, fd as u32)
}

/// `sock_bind(fd, *addr, port)`: only what the rules grant; an address of another family
/// is `EAFNOSUPPORT`, a socket bound already `EINVAL`. The wildcard address may be moved
/// to the policy's listen address first ([`Sockets::bind_address`]).
pub(crate) fn bind(
    mem: &mut Mem<'_>,
    sockets: &mut Sockets,
    fd: i32,
    addr: i32,
    port: i32,
    v: Version,
) -> Wasi {
    let ip = Address::read(mem, addr)?.ip(mem, v)?;
    let socket = sockets.socket(fd)?;
    let asked = abi::socket_addr(ip, abi::port(port), socket.family)?;
    if socket.local_port.is_some() || socket.role != Role::Fresh {
        return Err(Errno::INVAL);
    }
    let local = sockets.bind_address(asked);
    sockets.judge_bind(transport(socket.kind), local)?;
    let socket = sockets.socket_mut(fd)?;
    rustix::net::bind(socket.fd(), &local)?;
    socket.local_port = Some(socket.local_addr()?.port());
    Ok(())
}

/// Binds an unbound socket to an ephemeral port of the wildcard address, as the kernel
/// would implicitly (asked of the rules as a port-0 bind).
fn bind_ephemeral(sockets: &mut Sockets, fd: i32) -> Wasi {
    let socket = sockets.socket(fd)?;
    if socket.local_port.is_some() {
        return Ok(());
    }
    let any = SocketAddr::new(socket.family.unspecified(), 0);
    sockets.judge_bind(transport(socket.kind), any)?;
    let socket = sockets.socket_mut(fd)?;
    rustix::net::bind(socket.fd(), &any)?;
    socket.local_port = Some(socket.local_addr()?.port());
    Ok(())
}

/// `sock_listen(fd, backlog)`: the bound address is put to the rules; the backlog is
/// capped at [`MAX_BACKLOG`].
pub(crate) fn listen(sockets: &mut Sockets, fd: i32, backlog: i32) -> Wasi {
    let socket = sockets.socket(fd)?;
    match (socket.kind, socket.role) {
        (Kind::Dgram, _) => return Err(Errno::NOTSUP),
        (Kind::Stream, Role::Stream) => return Err(Errno::INVAL),
        (Kind::Stream, Role::Fresh | Role::Listener) => {}
    }
    bind_ephemeral(sockets, fd)?;
    let socket = sockets.socket(fd)?;
    sockets.judge_listen(socket.local_addr()?)?;
    let socket = sockets.socket_mut(fd)?;
    rustix::net::listen(socket.fd(), backlog.clamp(1, MAX_BACKLOG))?;
    socket.role = Role::Listener;
    socket.register()?;
    Ok(())
}

/// `sock_accept(fd, *newfd)` (v1: the new socket is blocking) and
/// `sock_accept_v2(fd, flags, *newfd)` (`NONBLOCK` honoured). A peer the rules refuse
/// is reset and never reaches the guest; with no room for another handle the
/// connection stays queued and the guest gets `EMFILE`.
pub(crate) async fn accept(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fd: i32,
    flags: Option<i32>,
    ro_fd: i32,
) -> Wasi {
    mem.check(ro_fd, 4)?;
    let flags = flags.unwrap_or(0);
    if flags as u32 & !u32::from(FDFLAGS_ALL) != 0 {
        return Err(Errno::INVAL);
    }
    let Host { sockets, wasi, .. } = host;
    let table = wasi.ctx().table;
    let listener = sockets.socket(fd)?;
    if listener.role != Role::Listener {
        return Err(Errno::INVAL);
    }
    let (family, local_port) = (listener.family, listener.local_port);
    loop {
        if let Err(full) = sockets.check_room(table) {
            sockets.accept_starved = true;
            return Err(full);
        }
        let listener = sockets.socket(fd)?;
        let accept = |fd: BorrowedFd<'_>| {
            Ok(rustix::net::acceptfrom_with(fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?)
        };
        let (conn, peer) = listener.perform(Interest::READABLE, listener.recv_timeout, accept).await?;
        let Some(peer) = peer.and_then(|peer| SocketAddr::try_from(peer).ok()) else { continue };
        if !sockets.judge_accept(Transport::Tcp, local_port, peer) {
            // Reset rather than close gracefully: the peer learns at once.
            let _ = rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO));
            continue;
        }
        let mut socket = Socket::accepted(family, conn, peer)?;
        socket.nonblocking = flags as u16 & FDFLAGS_NONBLOCK != 0;
        let new_fd = sockets.insert(socket, table)?;
        return mem.put_u32(ro_fd, new_fd as u32);
    }
}

/// `sock_connect(fd, *addr, port)`: the destination is put to the rules; a
/// non-blocking TCP socket returns `EINPROGRESS` and reports completion as writable.
pub(crate) async fn connect(
    mem: &mut Mem<'_>,
    sockets: &mut Sockets,
    fd: i32,
    addr: i32,
    port: i32,
    v: Version,
) -> Wasi {
    let ip = Address::read(mem, addr)?.ip(mem, v)?;
    let socket = sockets.socket(fd)?;
    let remote = abi::socket_addr(ip, abi::port(port), socket.family)?;
    match (socket.kind, socket.role) {
        (Kind::Stream, Role::Listener) => return Err(Errno::INVAL),
        (Kind::Stream, Role::Stream) => return Err(Errno::ISCONN),
        _ => {}
    }
    sockets.judge_connect(transport(socket.kind), remote)?;
    if socket.kind == Kind::Dgram {
        bind_ephemeral(sockets, fd)?;
        let socket = sockets.socket_mut(fd)?;
        rustix::net::connect(socket.fd(), &remote)?;
        socket.peer = Some(remote);
        return Ok(());
    }
    let socket = sockets.socket_mut(fd)?;
    let pending = match rustix::net::connect(socket.fd(), &remote) {
        Ok(()) => false,
        Err(rustix::io::Errno::INPROGRESS) => true,
        Err(err) => return Err(err.into()),
    };
    socket.role = Role::Stream;
    socket.peer = Some(remote);
    socket.write_armed = true;
    socket.register()?;
    if !pending {
        return Ok(());
    }
    if socket.nonblocking {
        return Err(Errno::INPROGRESS);
    }
    let established = |fd: BorrowedFd<'_>| match rustix::net::sockopt::socket_error(fd)? {
        Err(err) => Err(err.into()),
        Ok(()) => match rustix::net::getpeername(fd) {
            Ok(_) => Ok(()),
            Err(rustix::io::Errno::NOTCONN) => Err(std::io::ErrorKind::WouldBlock.into()),
            Err(err) => Err(err.into()),
        },
    };
    match socket.perform(Interest::WRITABLE, socket.send_timeout, established).await {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Err(Errno::INPROGRESS),
        done => Ok(done?),
    }
}

/// What a receive got.
pub(crate) struct Received {
    pub(crate) bytes: usize,
    pub(crate) truncated: bool,
    pub(crate) from: Option<SocketAddr>,
}

/// `sock_recv` and `fd_read` on a socket: into `bufs`, honouring `PEEK` and (blocking)
/// `WAITALL`. A datagram from a peer the rules refuse is dropped unseen.
pub(crate) async fn receive(
    mem: &mut Mem<'_>,
    sockets: &Sockets,
    fd: i32,
    bufs: &[(i32, u32)],
    riflags: i32,
) -> Wasi<Received> {
    if riflags & !(abi::RECV_PEEK | abi::RECV_WAITALL) != 0 {
        return Err(Errno::INVAL);
    }
    let socket = sockets.socket(fd)?;
    let mut flags = RecvFlags::empty();
    if riflags & abi::RECV_PEEK != 0 {
        flags |= RecvFlags::PEEK;
    }
    match socket.kind {
        Kind::Stream if socket.role != Role::Stream => Err(Errno::NOTCONN),
        Kind::Stream => {
            let waitall = riflags & abi::RECV_WAITALL != 0 && !socket.nonblocking;
            let wanted = total(bufs);
            let mut got = 0u64;
            loop {
                let n = receive_stream(mem, socket, &skip(bufs, got), flags).await;
                let n = match n {
                    Ok(n) => n as u64,
                    // Bytes already received are reported; the error comes next call.
                    Err(_) if got > 0 => break,
                    Err(err) => return Err(err),
                };
                got += n;
                if !waitall || n == 0 || got >= wanted || flags.contains(RecvFlags::PEEK) {
                    break;
                }
            }
            Ok(Received { bytes: got as usize, truncated: false, from: socket.peer })
        }
        Kind::Dgram => loop {
            let capacity = (total(bufs) as usize).min(MAX_DATAGRAM);
            let mut datagram = vec![0u8; capacity];
            let recv = |fd: BorrowedFd<'_>| {
                Ok(rustix::net::recvfrom(fd, &mut datagram[..], flags | RecvFlags::TRUNC)?)
            };
            let (_, len, from) = socket.perform(Interest::READABLE, socket.recv_timeout, recv).await?;
            let from = from.and_then(|from| SocketAddr::try_from(from).ok());
            let allowed = match (socket.peer, from) {
                // Connected: the rules judged the peer at connect time.
                (Some(_), _) => true,
                (None, Some(from)) => sockets.judge_accept(Transport::Udp, socket.local_port, from),
                (None, None) => false,
            };
            if !allowed {
                if flags.contains(RecvFlags::PEEK) {
                    let _ = rustix::net::recv(socket.fd(), &mut [0u8; 1][..], RecvFlags::DONTWAIT);
                }
                continue;
            }
            let copied = mem.scatter(bufs, &datagram[..len.min(capacity)])?;
            return Ok(Received { bytes: copied, truncated: len > copied, from: from.or(socket.peer) });
        },
    }
}

/// One receive on a connected stream: straight into guest memory when there is one
/// buffer, through the host for several.
async fn receive_stream(
    mem: &mut Mem<'_>,
    socket: &Socket,
    bufs: &[(i32, u32)],
    flags: RecvFlags,
) -> Wasi<usize> {
    let timeout = socket.recv_timeout;
    match bufs {
        [] => Ok(0),
        [(buf, len)] => {
            let (buf, len) = (*buf, *len);
            let recv = |fd: BorrowedFd<'_>| {
                let target = mem
                    .bytes_mut(buf, len)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                rustix::net::recv(fd, target, flags).map(|(n, _)| n).map_err(Into::into)
            };
            Ok(socket.perform(Interest::READABLE, timeout, recv).await?)
        }
        many => {
            let mut staging = vec![0u8; (total(many) as usize).min(MAX_GATHER)];
            let recv = |fd: BorrowedFd<'_>| {
                rustix::net::recv(fd, &mut staging[..], flags).map(|(n, _)| n).map_err(Into::into)
            };
            let n = socket.perform(Interest::READABLE, timeout, recv).await?;
            mem.scatter(many, &staging[..n])
        }
    }
}

/// `bufs` without their first `n` bytes.
fn skip(bufs: &[(i32, u32)], mut n: u64) -> Vec<(i32, u32)> {
    let mut rest = Vec::with_capacity(bufs.len());
    for &(buf, len) in bufs {
        if n >= u64::from(len) {
            n -= u64::from(len);
            continue;
        }
        let skipped = n as u32;
        rest.push((buf.wrapping_add(skipped as i32), len - skipped));
        n = 0;
    }
    rest
}

/// `sock_send`, `sock_send_to` and `fd_write` on a socket. A datagram goes to `to` (put
/// to the rules) or the connected peer; a blocking stream sends everything.
pub(crate) async fn send(
    mem: &Mem<'_>,
    sockets: &mut Sockets,
    fd: i32,
    bufs: &[(i32, u32)],
    to: Option<SocketAddr>,
) -> Wasi<usize> {
    let socket = sockets.socket_mut(fd)?;
    // Every send lets the next poll report write readiness again (see poll.rs).
    socket.write_armed = true;
    let (kind, role) = (socket.kind, socket.role);
    let to = match (kind, to) {
        (Kind::Stream, _) if role != Role::Stream => return Err(Errno::NOTCONN),
        (Kind::Stream, _) => None,
        (Kind::Dgram, Some(to)) => {
            sockets.judge_connect(Transport::Udp, to)?;
            bind_ephemeral(sockets, fd)?;
            Some(to)
        }
        (Kind::Dgram, None) if sockets.socket(fd)?.peer.is_none() => return Err(Errno::DESTADDRREQ),
        (Kind::Dgram, None) => None,
    };
    let socket = sockets.socket(fd)?;
    let mut sent = 0u64;
    let wanted = total(bufs);
    loop {
        let rest = skip(bufs, sent);
        let slices = mem.io_slices(&rest)?;
        let n = match socket
            .perform(Interest::WRITABLE, socket.send_timeout, |fd| send_once(fd, &slices, to))
            .await
        {
            Ok(n) => n as u64,
            Err(_) if sent > 0 => break,
            Err(err) => return Err(err.into()),
        };
        sent += n;
        if kind == Kind::Dgram || socket.nonblocking || sent >= wanted || n == 0 {
            break;
        }
    }
    Ok(sent as usize)
}

fn send_once(fd: BorrowedFd<'_>, slices: &[IoSlice<'_>], to: Option<SocketAddr>) -> std::io::Result<usize> {
    let flags = SendFlags::NOSIGNAL;
    let mut control = SendAncillaryBuffer::default();
    let sent = match (to, slices) {
        (None, [one]) => rustix::net::send(fd, one, flags),
        (None, _) => rustix::net::sendmsg(fd, slices, &mut control, flags),
        (Some(to), _) => rustix::net::sendmsg_addr(fd, &to, slices, &mut control, flags),
    };
    Ok(sent?)
}

/// `sock_shutdown(fd, how)`: 1 read, 2 write, 3 both; anything else `EINVAL`.
pub(crate) fn shutdown(sockets: &Sockets, fd: i32, how: i32) -> Wasi {
    let how = match how {
        abi::SHUT_RD => Shutdown::Read,
        abi::SHUT_WR => Shutdown::Write,
        3 => Shutdown::Both,
        _ => return Err(Errno::INVAL),
    };
    let socket = sockets.socket(fd)?;
    Ok(rustix::net::shutdown(socket.fd(), how)?)
}

/// `sock_getlocaladdr` / `sock_getpeeraddr`: v1 `(fd, *addr, *addr_type, *port)` with a
/// 4- or 16-byte buffer and the type as 4 or 6; v2 `(fd, *addr, *port)` with the
/// 128-byte storage.
pub(crate) fn address(mem: &mut Mem<'_>, sockets: &Sockets, fd: i32, peer: bool, out: AddrOut) -> Wasi {
    let addr = Address::read(mem, out.addr)?;
    match (out.addr_type, addr.len) {
        (Some(_), 4 | 16) | (None, STORAGE_LEN) => {}
        _ => return Err(Errno::INVAL),
    }
    mem.check(addr.buf as i32, addr.len)?;
    mem.check(out.port, 4)?;
    if let Some(ty) = out.addr_type {
        mem.check(ty, 4)?;
    }
    let socket = sockets.socket(fd)?;
    let found = if peer { socket.peer.ok_or(Errno::NOTCONN)? } else { socket.local_addr()? };
    addr.write_ip(mem, found.ip())?;
    if let Some(ty) = out.addr_type {
        mem.put_u32(ty, if found.is_ipv4() { 4 } else { 6 })?;
    }
    mem.put_u32(out.port, u32::from(found.port()))
}

/// Where `sock_getlocaladdr`/`sock_getpeeraddr` write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddrOut {
    pub(crate) addr: i32,
    /// v1 only.
    pub(crate) addr_type: Option<i32>,
    pub(crate) port: i32,
}
