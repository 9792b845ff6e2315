//! [`NetworkPolicy`]: which wasi:sockets a run may use and the [`SocketRules`] that judge
//! each use, put in front of wasmtime-wasi's sockets as its address check; and
//! [`PortRules`], the rules of callers that bring none of their own.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::{SocketRules, Transport, Verdict, canonical, is_node_local};

/// What a guest may do with wasi:sockets. The default allows nothing: every socket call
/// fails in the guest with `access-denied`. With `tcp` or `udp` on, every bind, listen,
/// connection, datagram and accepted peer is put to `rules`.
#[derive(Clone)]
pub struct NetworkPolicy {
    /// `wasi:sockets/tcp`.
    pub tcp: bool,
    /// `wasi:sockets/udp`.
    pub udp: bool,
    /// `wasi:sockets/ip-name-lookup`.
    pub name_lookup: bool,
    /// Judges every use of a socket.
    pub rules: Arc<dyn SocketRules>,
}

impl Default for NetworkPolicy {
    /// No sockets, no lookups; rules that refuse everything.
    fn default() -> Self {
        NetworkPolicy { tcp: false, udp: false, name_lookup: false, rules: Arc::new(PortRules::new([])) }
    }
}

impl fmt::Debug for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkPolicy")
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .field("name_lookup", &self.name_lookup)
            .finish_non_exhaustive()
    }
}

impl NetworkPolicy {
    /// TCP, UDP and name lookup on, judged by [`PortRules`] for `bind_ports`.
    pub fn open(bind_ports: impl IntoIterator<Item = u16>) -> Self {
        Self::with_rules(Arc::new(PortRules::new(bind_ports)))
    }

    /// TCP, UDP and name lookup on, judged by `rules`.
    pub fn with_rules(rules: Arc<dyn SocketRules>) -> Self {
        NetworkPolicy { tcp: true, udp: true, name_lookup: true, rules }
    }

    /// Applies the policy to a WASI context being built.
    pub(crate) fn apply(&self, builder: &mut WasiCtxBuilder) {
        builder.allow_tcp(self.tcp).allow_udp(self.udp).allow_ip_name_lookup(self.name_lookup);
        if !(self.tcp || self.udp) {
            // wasmtime-wasi's default check already refuses every address.
            return;
        }
        let check = Check { rules: Arc::clone(&self.rules), listening: Arc::default() };
        builder.socket_addr_check(move |addr, usage| ready(check.judge(addr, usage).allowed()));
    }
}

/// One run's address check: the rules, and the ports its guest listens on (TCP) or has
/// bound (UDP), so that an accepted peer can be judged for the port it came in on.
struct Check {
    rules: Arc<dyn SocketRules>,
    listening: Arc<Mutex<Vec<(Transport, u16)>>>,
}

impl Check {
    fn judge(&self, addr: SocketAddr, usage: SocketAddrUse) -> Verdict {
        let addr = canonical(addr);
        let rules = &self.rules;
        match usage {
            SocketAddrUse::TcpBind => rules.bind(Transport::Tcp, addr),
            SocketAddrUse::UdpBind => self.remember(Transport::Udp, addr, rules.bind(Transport::Udp, addr)),
            SocketAddrUse::TcpListen => self.remember(Transport::Tcp, addr, rules.listen(addr)),
            SocketAddrUse::TcpConnect => rules.connect(Transport::Tcp, addr),
            SocketAddrUse::UdpSend => rules.connect(Transport::Udp, addr),
            SocketAddrUse::TcpAccept => rules.accept(Transport::Tcp, self.port_of(Transport::Tcp), addr),
            SocketAddrUse::UdpReceive => rules.accept(Transport::Udp, self.port_of(Transport::Udp), addr),
        }
    }

    /// Notes a port the guest now receives on, when it was allowed.
    fn remember(&self, transport: Transport, local: SocketAddr, verdict: Verdict) -> Verdict {
        if verdict.allowed() && local.port() != 0 {
            let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
            if !listening.contains(&(transport, local.port())) {
                listening.push((transport, local.port()));
            }
        }
        verdict
    }

    /// The one port the guest receives `transport` on, if it is only one.
    fn port_of(&self, transport: Transport) -> Option<u16> {
        let listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        let mut ports = listening.iter().filter(|(t, _)| *t == transport).map(|(_, port)| *port);
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
mod tests {
    use super::*;

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    fn check(ports: &[u16]) -> Check {
        Check { rules: Arc::new(PortRules::new(ports.iter().copied())), listening: Arc::default() }
    }

    #[test]
    fn port_rules_bind_only_their_ports_or_ephemeral() {
        let c = check(&[8080]);
        let any = "0.0.0.0";
        assert!(c.judge(at(any, 8080), SocketAddrUse::TcpBind).allowed());
        assert!(c.judge(at(any, 8080), SocketAddrUse::TcpListen).allowed());
        assert!(c.judge(at(any, 8080), SocketAddrUse::UdpBind).allowed());
        assert!(c.judge(at(any, 0), SocketAddrUse::TcpBind).allowed());
        assert!(c.judge(at(any, 0), SocketAddrUse::UdpBind).allowed());
        assert!(!c.judge(at(any, 0), SocketAddrUse::TcpListen).allowed());
        assert!(!c.judge(at(any, 10250), SocketAddrUse::TcpBind).allowed());
        assert!(!c.judge(at(any, 53), SocketAddrUse::UdpBind).allowed());
    }

    #[test]
    fn port_rules_refuse_egress_to_the_node_itself_mapped_or_not() {
        let c = check(&[]);
        assert!(c.judge(at("10.1.2.3", 80), SocketAddrUse::TcpConnect).allowed());
        assert!(c.judge(at("10.1.2.3", 53), SocketAddrUse::UdpSend).allowed());
        for local in ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "::1"] {
            assert!(!c.judge(at(local, 80), SocketAddrUse::TcpConnect).allowed(), "{local}");
            assert!(!c.judge(at(local, 53), SocketAddrUse::UdpSend).allowed(), "{local}");
        }
        assert!(c.judge(at("127.0.0.1", 5555), SocketAddrUse::TcpAccept).allowed());
    }

    /// Records what the rules were asked, to see which port an accepted peer is judged for.
    #[derive(Default)]
    struct Asked(Mutex<Vec<Option<u16>>>);

    impl SocketRules for Asked {
        fn bind(&self, _: Transport, _: SocketAddr) -> Verdict {
            Verdict::Allow
        }
        fn listen(&self, _: SocketAddr) -> Verdict {
            Verdict::Allow
        }
        fn connect(&self, _: Transport, _: SocketAddr) -> Verdict {
            Verdict::Allow
        }
        fn accept(&self, _: Transport, port: Option<u16>, _: SocketAddr) -> Verdict {
            self.0.lock().unwrap().push(port);
            Verdict::Allow
        }
    }

    #[test]
    fn an_accepted_peer_is_judged_for_the_one_listening_port_if_there_is_one() {
        let asked = Arc::new(Asked::default());
        let c = Check { rules: asked.clone(), listening: Arc::default() };
        let peer = at("10.0.0.9", 40000);
        c.judge(peer, SocketAddrUse::TcpAccept);
        c.judge(at("0.0.0.0", 8080), SocketAddrUse::TcpListen);
        c.judge(peer, SocketAddrUse::TcpAccept);
        c.judge(at("0.0.0.0", 9090), SocketAddrUse::TcpListen);
        c.judge(peer, SocketAddrUse::TcpAccept);
        assert_eq!(*asked.0.lock().unwrap(), [None, Some(8080), None]);
    }
}
