//! [`NetworkPolicy`]: which wasi:sockets a run may use and the [`SocketRules`] that judge
//! each use, put in front of wasmtime-wasi's sockets as its address check; and
//! [`PortRules`], the rules of callers that bring none of their own.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::{Lookups, SocketRules, Transport, Verdict, canonical, is_node_local};

/// What a guest may do with wasi:sockets and whom it may reach. The default allows no
/// socket and no lookup: every socket call fails in the guest with `access-denied`. With
/// `tcp` or `udp` on, every bind, listen, connection, datagram and accepted peer is put to
/// `rules`. Whatever the switches, `rules` also judge a served HTTP artifact's clients and
/// every outgoing wasi:http request's destination.
#[derive(Clone)]
pub struct NetworkPolicy {
    /// `wasi:sockets/tcp`.
    pub tcp: bool,
    /// `wasi:sockets/udp`.
    pub udp: bool,
    /// `wasi:sockets/ip-name-lookup` (answered from `lookups`).
    pub name_lookup: bool,
    /// Judges every use of a socket.
    pub rules: Arc<dyn SocketRules>,
    /// Where the run's name lookups (wasi:sockets and outgoing wasi:http) go, on the
    /// pod's budget. `None`: every lookup fails (`permanent-resolver-failure`; an outgoing
    /// request to a name gets `DNS-error`), while IP addresses still work.
    pub lookups: Option<Lookups>,
    /// WasmEdge sockets only: a bind to the unspecified address of this address's family,
    /// on a port other than 0, binds this address instead, before `rules` are asked (a
    /// node whose pods listen on one address runs servers that bind the wildcard, as the
    /// guide's does). `sock_getlocaladdr` then reports this address. wasi:sockets binds are
    /// judged as the guest asked: wasmtime-wasi binds them itself. Default: `None`.
    pub bind_wildcard_to: Option<IpAddr>,
}

impl Default for NetworkPolicy {
    /// No sockets, no lookups; [`PortRules`] with no port (outgoing wasi:http requests may
    /// go to IP addresses off this node; served clients are all accepted).
    fn default() -> Self {
        NetworkPolicy {
            tcp: false,
            udp: false,
            name_lookup: false,
            rules: Arc::new(PortRules::new([])),
            lookups: None,
            bind_wildcard_to: None,
        }
    }
}

impl fmt::Debug for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkPolicy")
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .field("name_lookup", &self.name_lookup)
            .field("lookups", &self.lookups)
            .field("bind_wildcard_to", &self.bind_wildcard_to)
            .finish_non_exhaustive()
    }
}

impl NetworkPolicy {
    /// TCP, UDP and name lookup on, judged by [`PortRules`] for `bind_ports`; no
    /// [`Lookups`] (set [`lookups`](Self::lookups) to resolve names).
    pub fn open(bind_ports: impl IntoIterator<Item = u16>) -> Self {
        Self::with_rules(Arc::new(PortRules::new(bind_ports)))
    }

    /// TCP, UDP and name lookup on, judged by `rules`; no [`Lookups`].
    pub fn with_rules(rules: Arc<dyn SocketRules>) -> Self {
        NetworkPolicy {
            tcp: true,
            udp: true,
            name_lookup: true,
            rules,
            lookups: None,
            bind_wildcard_to: None,
        }
    }

    /// The same policy with WasmEdge sockets' wildcard binds moved to `address` (see
    /// [`bind_wildcard_to`](Self::bind_wildcard_to)).
    pub fn bind_wildcard_to(mut self, address: IpAddr) -> Self {
        self.bind_wildcard_to = Some(address);
        self
    }

    /// The same policy with its name lookups on `lookups`.
    pub fn lookups(mut self, lookups: Lookups) -> Self {
        self.lookups = Some(lookups);
        self
    }

    /// Applies the policy to a WASI context being built, and returns what the store needs
    /// to judge the rest (outgoing wasi:http, name lookups, binds).
    pub(crate) fn apply(&self, builder: &mut WasiCtxBuilder) -> GuestNet {
        // wasmtime-wasi's own lookups are shadowed (`net::linker`); its switch stays off.
        builder.allow_tcp(self.tcp).allow_udp(self.udp).allow_ip_name_lookup(false);
        let check = Arc::new(Check::new(Arc::clone(&self.rules)));
        if self.tcp || self.udp {
            let judge = Arc::clone(&check);
            builder.socket_addr_check(move |addr, usage| ready(judge.judge(addr, usage).allowed()));
        }
        // Else wasmtime-wasi's default check refuses every address.
        GuestNet {
            rules: Arc::clone(&self.rules),
            lookups: self.lookups.clone(),
            name_lookup: self.name_lookup,
            check,
        }
    }
}

/// One store's networking, made from its run's [`NetworkPolicy`]: the rules, the lookups,
/// and the address check installed in its WASI context. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GuestNet {
    pub(crate) rules: Arc<dyn SocketRules>,
    lookups: Option<Lookups>,
    name_lookup: bool,
    pub(crate) check: Arc<Check>,
}

impl GuestNet {
    /// Where outgoing wasi:http requests resolve names.
    pub(crate) fn lookups(&self) -> Option<&Lookups> {
        self.lookups.as_ref()
    }

    /// Where wasi:sockets `ip-name-lookup` resolves names: nowhere when it is switched off.
    pub(crate) fn socket_lookups(&self) -> Option<&Lookups> {
        self.lookups.as_ref().filter(|_| self.name_lookup)
    }
}

/// UDP peers the guest sent to that a datagram from is a reply, not ingress (the most
/// recent ones, as a connection tracker keeps them).
const UDP_REPLY_PEERS: usize = 64;

/// One store's address check: the rules, and what it must remember to ask them the right
/// question — the ports its guest listens on (TCP) or has bound (UDP), so that an accepted
/// peer is judged for the port it came in on; the UDP peers it sent to, whose datagrams
/// are replies; and the last bind's verdict, for the error the guest gets.
pub(crate) struct Check {
    rules: Arc<dyn SocketRules>,
    state: Mutex<CheckState>,
}

#[derive(Default)]
struct CheckState {
    listening: Vec<(Transport, u16)>,
    udp_peers: VecDeque<SocketAddr>,
    last_bind: Option<Verdict>,
}

impl Check {
    fn new(rules: Arc<dyn SocketRules>) -> Self {
        Check { rules, state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, CheckState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the rules say about wasmtime-wasi's `usage` of `addr`. wasmtime-wasi 48 asks:
    /// `TcpBind`/`UdpBind` with the guest's address on `start-bind`, and with the wildcard
    /// address and port 0 for the implicit bind of an unbound socket's connect or listen;
    /// `TcpListen` with the bound address (the wildcard and port 0 when unbound);
    /// `TcpConnect` with the remote; `UdpSend` with each datagram's remote and, with
    /// `UdpReceive`, with the remote a UDP socket is connected to; `TcpAccept` and
    /// `UdpReceive` with each peer.
    fn judge(&self, addr: SocketAddr, usage: SocketAddrUse) -> Verdict {
        let addr = canonical(addr);
        let rules = &self.rules;
        match usage {
            SocketAddrUse::TcpBind => self.bound(rules.bind(Transport::Tcp, addr)),
            SocketAddrUse::UdpBind => {
                let verdict = self.bound(rules.bind(Transport::Udp, addr));
                self.remember(Transport::Udp, addr, verdict)
            }
            SocketAddrUse::TcpListen => self.remember(Transport::Tcp, addr, rules.listen(addr)),
            SocketAddrUse::TcpConnect => rules.connect(Transport::Tcp, addr),
            SocketAddrUse::UdpSend => {
                let verdict = rules.connect(Transport::Udp, addr);
                if verdict.allowed() {
                    self.sent_to(addr);
                }
                verdict
            }
            SocketAddrUse::TcpAccept => rules.accept(Transport::Tcp, self.port_of(Transport::Tcp), addr),
            SocketAddrUse::UdpReceive if self.state().udp_peers.contains(&addr) => Verdict::Allow,
            SocketAddrUse::UdpReceive => rules.accept(Transport::Udp, self.port_of(Transport::Udp), addr),
        }
    }

    /// Notes a bind's verdict (see [`take_bind_verdict`](Self::take_bind_verdict)).
    fn bound(&self, verdict: Verdict) -> Verdict {
        self.state().last_bind = Some(verdict);
        verdict
    }

    /// The verdict of the last bind asked since the previous call, if any.
    pub(crate) fn take_bind_verdict(&self) -> Option<Verdict> {
        self.state().last_bind.take()
    }

    /// Notes a port the guest now receives on, when it was allowed.
    fn remember(&self, transport: Transport, local: SocketAddr, verdict: Verdict) -> Verdict {
        if verdict.allowed() && local.port() != 0 {
            let mut state = self.state();
            if !state.listening.contains(&(transport, local.port())) {
                state.listening.push((transport, local.port()));
            }
        }
        verdict
    }

    /// Notes a UDP peer the guest may now hear replies from.
    fn sent_to(&self, peer: SocketAddr) {
        let mut state = self.state();
        if state.udp_peers.contains(&peer) {
            return;
        }
        if state.udp_peers.len() == UDP_REPLY_PEERS {
            state.udp_peers.pop_front();
        }
        state.udp_peers.push_back(peer);
    }

    /// The one port the guest receives `transport` on, if it is only one.
    fn port_of(&self, transport: Transport) -> Option<u16> {
        let state = self.state();
        let mut ports = state.listening.iter().filter(|(t, _)| *t == transport).map(|(_, port)| *port);
        match (ports.next(), ports.next()) {
            (Some(port), None) => Some(port),
            _ => None,
        }
    }
}

type Decision = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

fn ready(allowed: bool) -> Decision {
    Box::pin(std::future::ready(allowed))
}

/// The rules of a caller that brings none: bind and listen only on the given ports (TCP
/// and UDP; port 0 may be bound, as clients do, but not listened on), connect anywhere but
/// to this machine and its link ([`is_node_local`]), accept any peer. Refusals are logged.
#[derive(Debug, Clone)]
pub struct PortRules {
    ports: Vec<u16>,
}

impl PortRules {
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        PortRules { ports: ports.into_iter().collect() }
    }
}

impl SocketRules for PortRules {
    fn bind(&self, transport: Transport, local: SocketAddr) -> Verdict {
        if local.port() == 0 || self.ports.contains(&local.port()) {
            return Verdict::Allow;
        }
        tracing::warn!(?transport, %local, "guest bind refused: port {} is not one it may bind", local.port());
        Verdict::Deny
    }

    fn listen(&self, local: SocketAddr) -> Verdict {
        if self.ports.contains(&local.port()) {
            return Verdict::Allow;
        }
        tracing::warn!(%local, "guest listen refused: port {} is not one it may listen on", local.port());
        Verdict::Deny
    }

    fn connect(&self, transport: Transport, remote: SocketAddr) -> Verdict {
        if is_node_local(remote.ip()) {
            tracing::warn!(?transport, %remote, "guest connection refused: the address is this node's own");
            return Verdict::Deny;
        }
        Verdict::Allow
    }

    fn accept(&self, _: Transport, _: Option<u16>, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
