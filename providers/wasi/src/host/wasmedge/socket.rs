//! [`Socket`]: one guest socket on the host — a non-blocking host socket, registered with
//! the reactor once it can have readiness (a TCP socket once it listens or connects, a
//! UDP socket at once), and what the guest set on it: blocking mode, timeouts, its peer.
//! I/O is attempted without waiting, or awaited without holding a thread.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::abi::{Family, Kind};

/// The host side of a socket.
enum Io {
    /// Not registered with the reactor yet: a TCP socket before it listens or connects,
    /// when the kernel has no readiness worth reporting (and stale "writable, hung up"
    /// readiness of an unconnected socket must not outlive a connect).
    Idle(OwnedFd),
    /// Registered: readiness comes from the reactor, edge-triggered underneath.
    Registered(AsyncFd<OwnedFd>),
}

/// What a TCP socket has become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Opened (and maybe bound): neither listening nor connected.
    Fresh,
    Listener,
    /// Connected, or connecting (a non-blocking connect in progress).
    Stream,
}

/// Turns Nagle's algorithm off on a TCP socket. The ABI has no `IPPROTO_TCP` options, so a
/// guest cannot; and the WasmEdge crate sends one buffer per call, so hyper's response
/// head and body leave in two sends: with Nagle on, the body waits for the client's
/// delayed ACK (40 ms on Linux) on every request of a kept-alive connection after the
/// first. Go and Node.js start their TCP connections this way too.
fn no_delay(fd: &OwnedFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_tcp_nodelay(fd, true)?)
}

/// `fd` registered with the current runtime's reactor for read and write readiness.
fn registered(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that always returns the same number
    // from `as_raw_fd`, and the `AsyncFd` owns it: it stays open until the `AsyncFd` is
    // dropped.
    let registration =
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) };
    registration.map_err(|err| err.into_parts().1)
}

/// One guest socket.
pub(crate) struct Socket {
    pub(crate) kind: Kind,
    pub(crate) family: Family,
    pub(crate) role: Role,
    /// The guest's `NONBLOCK` flag (the host socket is always non-blocking).
    pub(crate) nonblocking: bool,
    /// The connected peer (from accept or connect), as the guest will ask for it.
    pub(crate) peer: Option<SocketAddr>,
    /// The port it was bound to, once bound: ingress is judged for it.
    pub(crate) local_port: Option<u16>,
    /// `SO_RCVTIMEO` / `SO_SNDTIMEO` of a blocking socket (`EAGAIN` when they pass).
    pub(crate) recv_timeout: Option<Duration>,
    pub(crate) send_timeout: Option<Duration>,
    /// Whether write readiness may be reported by the next `poll_oneoff` (see `poll.rs`).
    pub(crate) write_armed: bool,
    /// The `poll_oneoff` call that last subscribed to its write readiness.
    pub(crate) write_seen: u64,
    io: Io,
}

impl Socket {
    /// A new non-blocking, close-on-exec host socket; the guest sees it blocking. TCP
    /// sockets start with `SO_REUSEADDR` and `TCP_NODELAY`.
    pub(crate) fn open(family: Family, kind: Kind) -> io::Result<Socket> {
        let domain = match family {
            Family::V4 => AddressFamily::INET,
            Family::V6 => AddressFamily::INET6,
        };
        let ty = match kind {
            Kind::Stream => SocketType::STREAM,
            Kind::Dgram => SocketType::DGRAM,
        };
        let fd = rustix::net::socket_with(domain, ty, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)?;
        if kind == Kind::Stream {
            // On by default (the guest may turn it off): the connections a stopped run
            // closed linger in TIME_WAIT, and without it on the old listener its port could
            // not be bound again for a minute — not even by the pod's next run. Linux never
            // lets two sockets listen on one port either way.
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
            no_delay(&fd)?;
        }
        let mut socket = Socket::new(family, kind, Role::Fresh, Io::Idle(fd));
        if kind == Kind::Dgram {
            socket.register()?;
        }
        Ok(socket)
    }

    /// A connection accepted by a listener: registered at once.
    pub(crate) fn accepted(family: Family, fd: OwnedFd, peer: SocketAddr) -> io::Result<Socket> {
        no_delay(&fd)?;
        let io = Io::Registered(registered(fd)?);
        let mut socket = Socket::new(family, Kind::Stream, Role::Stream, io);
        socket.peer = Some(peer);
        Ok(socket)
    }

    fn new(family: Family, kind: Kind, role: Role, io: Io) -> Socket {
        Socket {
            kind,
            family,
            role,
            nonblocking: false,
            peer: None,
            local_port: None,
            recv_timeout: None,
            send_timeout: None,
            write_armed: true,
            write_seen: 0,
            io,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.io {
            Io::Idle(fd) => fd.as_fd(),
            Io::Registered(afd) => afd.get_ref().as_fd(),
        }
    }

    /// Registers the socket with the reactor (no-op when it already is).
    pub(crate) fn register(&mut self) -> io::Result<()> {
        if let Io::Idle(fd) = &self.io {
            let fd = fd.try_clone()?;
            self.io = Io::Registered(registered(fd)?);
        }
        Ok(())
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        let addr = rustix::net::getsockname(self.fd())?;
        SocketAddr::try_from(addr).map_err(io::Error::from)
    }

    /// Runs `op` now, without waiting. When the reactor believes the socket ready, a
    /// `WouldBlock` from `op` clears that belief, so the next wait really waits for the
    /// kernel; otherwise `op` simply runs (the reactor may not have seen readiness yet).
    pub(crate) fn attempt<R>(
        &self,
        interest: Interest,
        op: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let Io::Registered(afd) = &self.io else {
            return op(self.fd());
        };
        let mut cx = Context::from_waker(Waker::noop());
        let ready =
            if interest.is_readable() { afd.poll_read_ready(&mut cx) } else { afd.poll_write_ready(&mut cx) };
        match ready {
            Poll::Ready(Ok(mut guard)) => match guard.try_io(|afd| op(afd.get_ref().as_fd())) {
                Ok(result) => result,
                Err(_would_block) => Err(io::ErrorKind::WouldBlock.into()),
            },
            _ => op(afd.get_ref().as_fd()),
        }
    }

    /// Runs `op` until it does not block — once if the guest made the socket
    /// non-blocking, else waiting for readiness in between (for at most `timeout`, then
    /// `WouldBlock`, as `SO_RCVTIMEO`/`SO_SNDTIMEO` do). Waiting holds no thread.
    pub(crate) async fn perform<R>(
        &self,
        interest: Interest,
        timeout: Option<Duration>,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        match self.attempt(interest, &mut op) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock && !self.nonblocking => {}
            done => return done,
        }
        let Io::Registered(afd) = &self.io else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let wait = async {
            loop {
                let mut guard = afd.ready(interest).await?;
                if let Ok(result) = guard.try_io(|afd| op(afd.get_ref().as_fd())) {
                    return result;
                }
            }
        };
        match timeout {
            Some(limit) => {
                tokio::time::timeout(limit, wait).await.unwrap_or(Err(io::ErrorKind::WouldBlock.into()))
            }
            None => wait.await,
        }
    }

    /// Read readiness now, registering `cx` to be woken when it comes: `Some((hung_up,
    /// bytes waiting))`.
    ///
    /// The reactor's readiness only clears when an operation would block, so after an
    /// accept or a short read it may still say "readable" when nothing is there; the
    /// kernel is asked before that is reported (a guest that polls and then accepts in
    /// blocking mode must not block), and stale readiness is cleared.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Option<(bool, u64)> {
        let afd = match &self.io {
            // An unconnected TCP socket: hung up, as the kernel reports it.
            Io::Idle(_) => return Some((true, 0)),
            Io::Registered(afd) => afd,
        };
        // Twice at most: a new event may arrive between the check and the clearing.
        for _ in 0..2 {
            let mut guard = match afd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(_)) => return Some((true, 0)),
                Poll::Pending => return None,
            };
            let closed = guard.ready().is_read_closed() || guard.ready().is_error();
            match self.kernel_readable(closed) {
                Some(found) => return Some(found),
                None => guard.clear_ready(),
            }
        }
        None
    }

    /// What the kernel has to read now: a connection's byte count (one `FIONREAD`; with
    /// nothing queued it is readable only once `closed`), else a zero-timeout `poll(2)`.
    fn kernel_readable(&self, closed: bool) -> Option<(bool, u64)> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        if self.role == Role::Stream {
            return match rustix::io::ioctl_fionread(self.fd()) {
                Ok(0) if !closed => None,
                Ok(waiting) => Some((closed, waiting)),
                // Let the guest's next call find out what is wrong.
                Err(_) => Some((closed, 0)),
            };
        }
        let fd = self.fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::RDHUP)];
        match rustix::event::poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })) {
            Ok(0) => None,
            Ok(_) => {
                let hung_up = fds[0].revents().intersects(PollFlags::HUP | PollFlags::RDHUP);
                let waiting = match self.kind {
                    Kind::Dgram => rustix::io::ioctl_fionread(fd).unwrap_or(0),
                    Kind::Stream => 1,
                };
                Some((hung_up, waiting))
            }
            Err(_) => Some((false, 0)),
        }
    }

    /// Write readiness now, as [`poll_readable`](Self::poll_readable). A listener is
    /// never writable.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Option<bool> {
        if self.role == Role::Listener {
            return None;
        }
        match &self.io {
            Io::Idle(_) => Some(true),
            Io::Registered(afd) => match afd.poll_write_ready(cx) {
                Poll::Ready(Ok(guard)) => Some(guard.ready().is_write_closed()),
                Poll::Ready(Err(_)) => Some(true),
                Poll::Pending => None,
            },
        }
    }
}
