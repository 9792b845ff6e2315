//! [`Sockets`]: one run's socket descriptors — numbered from [`SOCKET_FD_BASE`], a range
//! preview1's own table never reaches — with the run's [`NetworkPolicy`] and the caps
//! that bound them: the run's handle cap (files and sockets together) and
//! [`MAX_SOCKETS`].

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::component::ResourceTable;

use super::abi::{Errno, Wasi};
use super::socket::Socket;
use crate::net::{Lookups, NetworkPolicy, SocketRules, Transport, Verdict, canonical};

/// The first socket descriptor number: 2^30.
///
/// wasmtime-wasi's preview1 numbers its descriptors densely from 0 (the lowest freed
/// number, else one past the highest) and `fd_renumber` only moves a descriptor onto a
/// number already in use, so its numbers stay below the count of descriptors open at
/// once, which its resource table caps at a million. Socket numbers start far above
/// that and stay below 2^31, so they are positive in the guest's `int` — guests built
/// for WasmEdge already live with large socket numbers (WasmEdge picks them at random
/// in 0..2^31).
pub(crate) const SOCKET_FD_BASE: u32 = 1 << 30;

/// At most this many sockets per run, whatever its handle cap: each is a descriptor of
/// the agent's own process, which every pod shares.
pub(crate) const MAX_SOCKETS: usize = 4096;

/// The sockets of one run. The default has no network: `sock_open` is refused.
#[derive(Default)]
pub(crate) struct Sockets {
    tcp: bool,
    udp: bool,
    pub(crate) name_lookup: bool,
    /// Where names resolve: the pod's budget on the node's resolver pool.
    pub(crate) lookups: Option<Lookups>,
    rules: Option<Arc<dyn SocketRules>>,
    /// Socket `SOCKET_FD_BASE + i` is `slots[i]`.
    slots: Vec<Option<Socket>>,
    open: usize,
    /// The run's cap on handles of every kind (`RunSpec::max_handles`).
    max_handles: Option<usize>,
    /// Counts `poll_oneoff` calls (see `poll.rs`).
    pub(crate) poll_calls: u64,
    /// An accept failed with `EMFILE`: listeners are not reported readable until a
    /// descriptor is closed (the guest could not accept anyway).
    pub(crate) accept_starved: bool,
    /// The guest's memory export, once looked up.
    pub(crate) memory: Option<wasmtime::Memory>,
    /// Where a bind to the wildcard address goes (`NetworkPolicy::bind_wildcard_to`).
    wildcard_to: Option<std::net::IpAddr>,
}

impl Sockets {
    /// The sockets a run with `policy` and at most `max_handles` handles may have.
    pub(crate) fn new(policy: &NetworkPolicy, max_handles: Option<usize>) -> Self {
        Sockets {
            tcp: policy.tcp,
            udp: policy.udp,
            name_lookup: policy.name_lookup,
            lookups: policy.lookups.clone(),
            rules: Some(Arc::clone(&policy.rules)),
            max_handles,
            wildcard_to: policy.bind_wildcard_to,
            ..Sockets::default()
        }
    }

    /// Where a bind the guest asked for at `local` goes: the policy's address in place of
    /// the unspecified address of its family (a port other than 0 only: a client's
    /// ephemeral bind stays as it is), else `local`.
    pub(crate) fn bind_address(&self, local: SocketAddr) -> SocketAddr {
        match self.wildcard_to {
            Some(to)
                if local.ip().is_unspecified() && local.port() != 0 && to.is_ipv4() == local.is_ipv4() =>
            {
                SocketAddr::new(to, local.port())
            }
            _ => local,
        }
    }

    /// True for numbers of the socket range, open or not.
    pub(crate) fn is_socket_fd(fd: i32) -> bool {
        fd as u32 >= SOCKET_FD_BASE
    }

    fn slot(fd: i32) -> usize {
        (fd as u32 - SOCKET_FD_BASE) as usize
    }

    /// The open socket `fd`: `EBADF` when it is none.
    pub(crate) fn get(&self, fd: i32) -> Wasi<&Socket> {
        if !Self::is_socket_fd(fd) {
            return Err(Errno::BADF);
        }
        self.slots.get(Self::slot(fd)).and_then(Option::as_ref).ok_or(Errno::BADF)
    }

    pub(crate) fn get_mut(&mut self, fd: i32) -> Wasi<&mut Socket> {
        if !Self::is_socket_fd(fd) {
            return Err(Errno::BADF);
        }
        self.slots.get_mut(Self::slot(fd)).and_then(Option::as_mut).ok_or(Errno::BADF)
    }

    /// `ENOTSOCK` for a descriptor preview1 owns, `EBADF` for a closed socket number.
    pub(crate) fn socket(&self, fd: i32) -> Wasi<&Socket> {
        if !Self::is_socket_fd(fd) {
            return Err(Errno::NOTSOCK);
        }
        self.get(fd)
    }

    pub(crate) fn socket_mut(&mut self, fd: i32) -> Wasi<&mut Socket> {
        if !Self::is_socket_fd(fd) {
            return Err(Errno::NOTSOCK);
        }
        self.get_mut(fd)
    }

    /// Whether the policy lets the guest open a socket of this transport.
    pub(crate) fn allows(&self, transport: Transport) -> bool {
        match transport {
            Transport::Tcp => self.tcp,
            Transport::Udp => self.udp,
        }
    }

    /// `EMFILE` unless one more socket fits: under [`MAX_SOCKETS`] and, with the
    /// preview1 handles in `table`, under the run's handle cap.
    pub(crate) fn check_room(&self, table: &mut ResourceTable) -> Wasi {
        let files = if self.max_handles.is_some() { table.iter_mut().count() } else { 0 };
        let full = self.open >= MAX_SOCKETS || self.max_handles.is_some_and(|max| files + self.open >= max);
        if full { Err(Errno::MFILE) } else { Ok(()) }
    }

    /// Adds `socket` (room checked first) and returns its number.
    pub(crate) fn insert(&mut self, socket: Socket, table: &mut ResourceTable) -> Wasi<i32> {
        self.check_room(table)?;
        let index = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[index] = Some(socket);
        self.open += 1;
        self.leave_room(table);
        Ok((SOCKET_FD_BASE + index as u32) as i32)
    }

    /// Closes socket `fd` (dropping it closes the host socket and frees its port).
    pub(crate) fn remove(&mut self, fd: i32, table: &mut ResourceTable) -> Wasi<Socket> {
        self.get(fd)?;
        let socket = self.slots[Self::slot(fd)].take().ok_or(Errno::BADF)?;
        self.open -= 1;
        self.accept_starved = false;
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        self.leave_room(table);
        Ok(socket)
    }

    /// Moves socket `from` onto socket number `to`, closing what `to` held.
    pub(crate) fn renumber(&mut self, from: i32, to: i32, table: &mut ResourceTable) -> Wasi {
        self.get(from)?;
        self.get(to)?;
        if from != to {
            let socket = self.remove(from, table)?;
            self.slots[Self::slot(to)] = Some(socket);
        }
        Ok(())
    }

    /// Shrinks preview1's table by the sockets open, so files and sockets share the cap.
    fn leave_room(&self, table: &mut ResourceTable) {
        if let Some(max) = self.max_handles {
            table.set_max_capacity(max.saturating_sub(self.open));
        }
    }

    /// How many sockets are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open
    }

    fn rules(&self) -> Wasi<&Arc<dyn SocketRules>> {
        self.rules.as_ref().ok_or(Errno::ACCES)
    }

    /// Asks the rules about a bind: `EACCES` refused, `EADDRINUSE` held by another.
    pub(crate) fn judge_bind(&self, transport: Transport, local: SocketAddr) -> Wasi {
        verdict(self.rules()?.bind(transport, canonical(local)))
    }

    pub(crate) fn judge_listen(&self, local: SocketAddr) -> Wasi {
        verdict(self.rules()?.listen(canonical(local)))
    }

    pub(crate) fn judge_connect(&self, transport: Transport, remote: SocketAddr) -> Wasi {
        verdict(self.rules()?.connect(transport, canonical(remote)))
    }

    pub(crate) fn judge_accept(
        &self,
        transport: Transport,
        local_port: Option<u16>,
        peer: SocketAddr,
    ) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|rules| rules.accept(transport, local_port, canonical(peer)).allowed())
    }
}

fn verdict(verdict: Verdict) -> Wasi {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny => Err(Errno::ACCES),
        Verdict::InUse => Err(Errno::ADDRINUSE),
    }
}
