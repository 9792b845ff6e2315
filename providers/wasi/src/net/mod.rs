//! Guest networking: the [`SocketRules`] a caller gives each run (which binds, listens,
//! connections and peers it allows), the [`NetworkPolicy`] that switches wasi:sockets on
//! and carries them, the checks that put them in front of every guest socket, and the
//! pods' name [`Lookups`] on the node's resolver pool.

pub(crate) mod linker;
mod lookups;
mod policy;
mod resolver;

use std::net::{IpAddr, SocketAddr};

pub use lookups::{DEFAULT_LOOKUP_TIMEOUT, LOOKUP_QUEUE, Lookups};
pub(crate) use policy::GuestNet;
pub use policy::{NetworkPolicy, PortRules};
pub use resolver::DEFAULT_RESOLVER_THREADS;
pub(crate) use resolver::LookupError;
pub(crate) use resolver::Resolver;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// What a caller decided about one use of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused: wasi:sockets reports `access-denied`, an outgoing wasi:http request
    /// `HTTP-request-denied`; an incoming connection is reset, a datagram dropped.
    Deny,
    /// (Binds only.) Someone else holds the address: `address-in-use` where the socket API
    /// can say so, else `access-denied`.
    InUse,
}

impl Verdict {
    pub fn allowed(self) -> bool {
        self == Verdict::Allow
    }
}

/// The caller's rules for one pod's sockets, asked on every use by every run that was given
/// them. Calls must be quick and must not block (in-memory tables); an implementation logs,
/// counts and reports refusals itself.
pub trait SocketRules: Send + Sync + 'static {
    /// Binding `local`. Port 0 is an ephemeral port the system picks, as every client socket
    /// gets implicitly on connect or send.
    fn bind(&self, transport: Transport, local: SocketAddr) -> Verdict;

    /// Listening (TCP) on `local`, which the socket is bound to (the wildcard address with
    /// port 0 when it was not bound before).
    fn listen(&self, local: SocketAddr) -> Verdict;

    /// Egress: a connection (TCP), a datagram (UDP), or an outgoing wasi:http request's
    /// connection to `remote` — the address actually dialled, after name resolution, with an
    /// IPv4-mapped IPv6 address already turned into the IPv4 address it maps.
    fn connect(&self, transport: Transport, remote: SocketAddr) -> Verdict;

    /// Ingress: a connection accepted (TCP) or a datagram received (UDP) from `peer` on the
    /// run's port `local_port`. `None` when it cannot be told which of several listeners it
    /// came in on: an implementation then allows only what it allows on every port.
    fn accept(&self, transport: Transport, local_port: Option<u16>, peer: SocketAddr) -> Verdict;
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into the IPv4 address
/// it reaches, so that rules about IPv4 ranges cannot be walked around.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The destinations among `ips` (each on `port`) that `rules` let a guest connect to over
/// TCP, in order, IPv4-mapped addresses turned into IPv4 first: what an outgoing request
/// may dial.
pub(crate) fn allowed_destinations(
    rules: &dyn SocketRules,
    ips: impl IntoIterator<Item = IpAddr>,
    port: u16,
) -> Vec<SocketAddr> {
    ips.into_iter()
        .map(|ip| canonical(SocketAddr::new(ip, port)))
        .filter(|addr| rules.connect(Transport::Tcp, *addr).allowed())
        .collect()
}

/// True for addresses that reach this machine itself or its link rather than a network:
/// loopback, link-local (169.254.0.0/16, fe80::/10, where cloud metadata services live),
/// unspecified (`0.0.0.0` dials the host itself) and multicast. [`PortRules`] refuses egress
/// to them; callers with their own rules usually start from the same list.
pub fn is_node_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.octets()[0] == 0
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_what_they_map() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:80".parse::<SocketAddr>().unwrap());
        assert!(is_node_local(mapped.ip()));
        for local in
            ["127.0.0.2", "169.254.169.254", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "::", "ff02::1"]
        {
            assert!(is_node_local(local.parse().unwrap()), "{local}");
        }
        for remote in ["10.0.0.1", "8.8.8.8", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(!is_node_local(remote.parse().unwrap()), "{remote}");
        }
    }

    #[test]
    fn only_allowed_destinations_are_dialled_in_order() {
        let ips = ["127.0.0.1", "10.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.2"]
            .map(|ip| ip.parse().unwrap());
        let allowed = allowed_destinations(&PortRules::new([]), ips, 80);
        let expected: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()];
        assert_eq!(allowed, expected);
    }
}
