//! [`NetworkPolicy`]: which wasi:sockets a guest may use, and the address check that
//! lets it bind and listen only on the ports its caller gave it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

/// What a guest may do with wasi:sockets. The default allows nothing: every socket call
/// fails in the guest with `access-denied`.
///
/// With `tcp` or `udp` on, a guest may connect (TCP) and send (UDP) to any address, and
/// may bind and listen only on `bind_ports`, on any local address. Binding port 0 (an
/// ephemeral port, as a client does before it connects or sends) is allowed; listening
/// on one is not. Anything else fails in the guest with `access-denied` and logs a
/// warning naming the port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// `wasi:sockets/tcp`.
    pub tcp: bool,
    /// `wasi:sockets/udp`.
    pub udp: bool,
    /// `wasi:sockets/ip-name-lookup` (the host's resolver).
    pub name_lookup: bool,
    /// The only ports the guest may bind (TCP and UDP) and listen on.
    pub bind_ports: Vec<u16>,
}

impl NetworkPolicy {
    /// TCP, UDP and name lookup on; binding only on `bind_ports`.
    pub fn open(bind_ports: impl IntoIterator<Item = u16>) -> Self {
        NetworkPolicy {
            tcp: true,
            udp: true,
            name_lookup: true,
            bind_ports: bind_ports.into_iter().collect(),
        }
    }

    /// Applies the policy to a WASI context being built.
    pub(crate) fn apply(&self, builder: &mut WasiCtxBuilder) {
        builder.allow_tcp(self.tcp).allow_udp(self.udp).allow_ip_name_lookup(self.name_lookup);
        if !(self.tcp || self.udp) {
            // wasmtime-wasi's default check already refuses every address.
            return;
        }
        let ports: Arc<[u16]> = self.bind_ports.clone().into();
        builder.socket_addr_check(move |addr, usage| {
            let allowed = allowed(&ports, addr, usage);
            if !allowed {
                tracing::warn!(port = addr.port(), address = %addr, ?usage,
                    "guest socket refused: port {} is not one this guest may bind", addr.port());
            }
            ready(allowed)
        });
    }
}

/// The decision, without logging.
fn allowed(ports: &[u16], addr: SocketAddr, usage: SocketAddrUse) -> bool {
    let declared = ports.contains(&addr.port());
    match usage {
        // Port 0 is the OS picking an ephemeral port: what every client socket does,
        // implicitly on connect and send. It can never take a port someone else holds.
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => declared || addr.port() == 0,
        SocketAddrUse::TcpListen => declared,
        SocketAddrUse::TcpConnect
        | SocketAddrUse::TcpAccept
        | SocketAddrUse::UdpSend
        | SocketAddrUse::UdpReceive => true,
    }
}

type Decision = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

fn ready(allowed: bool) -> Decision {
    Box::pin(std::future::ready(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], port))
    }

    #[test]
    fn binds_only_declared_ports_or_ephemeral() {
        let ports = [8080];
        assert!(allowed(&ports, at(8080), SocketAddrUse::TcpBind));
        assert!(allowed(&ports, at(8080), SocketAddrUse::TcpListen));
        assert!(allowed(&ports, at(8080), SocketAddrUse::UdpBind));
        assert!(allowed(&ports, at(0), SocketAddrUse::TcpBind));
        assert!(allowed(&ports, at(0), SocketAddrUse::UdpBind));
        assert!(!allowed(&ports, at(0), SocketAddrUse::TcpListen));
        assert!(!allowed(&ports, at(10250), SocketAddrUse::TcpBind));
        assert!(!allowed(&ports, at(10250), SocketAddrUse::TcpListen));
        assert!(!allowed(&ports, at(53), SocketAddrUse::UdpBind));
    }

    #[test]
    fn connects_and_sends_anywhere() {
        for usage in [
            SocketAddrUse::TcpConnect,
            SocketAddrUse::TcpAccept,
            SocketAddrUse::UdpSend,
            SocketAddrUse::UdpReceive,
        ] {
            assert!(allowed(&[], at(10250), usage));
        }
    }

    #[test]
    fn default_is_closed() {
        let policy = NetworkPolicy::default();
        assert!(!policy.tcp && !policy.udp && !policy.name_lookup && policy.bind_ports.is_empty());
        let open = NetworkPolicy::open([80]);
        assert!(open.tcp && open.udp && open.name_lookup);
    }
}
