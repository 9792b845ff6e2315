//! The address check and PortRules, asked as wasmtime-wasi asks them.

use super::*;

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn check(ports: &[u16]) -> Check {
    Check::new(Arc::new(PortRules::new(ports.iter().copied())))
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
fn a_datagram_from_a_peer_the_guest_sent_to_is_a_reply_not_ingress() {
    let asked = Arc::new(Asked::default());
    let c = Check::new(asked.clone());
    let server = at("10.0.0.53", 53);
    // A connected UDP socket: wasmtime-wasi asks send, then receive, for the remote.
    assert!(c.judge(server, SocketAddrUse::UdpSend).allowed());
    assert!(c.judge(at("::ffff:10.0.0.53", 53), SocketAddrUse::UdpReceive).allowed());
    assert!(asked.0.lock().unwrap().is_empty(), "a reply was judged as ingress");
    c.judge(at("10.0.0.54", 53), SocketAddrUse::UdpReceive);
    assert_eq!(asked.0.lock().unwrap().len(), 1);
}

#[test]
fn refused_sends_open_no_way_back_and_old_peers_are_forgotten() {
    let c = check(&[]);
    c.judge(at("127.0.0.1", 53), SocketAddrUse::UdpSend);
    assert!(c.state().udp_peers.is_empty());
    for port in 0..UDP_REPLY_PEERS as u16 + 1 {
        c.judge(at("10.0.0.1", 1000 + port), SocketAddrUse::UdpSend);
    }
    let state = c.state();
    assert_eq!(state.udp_peers.len(), UDP_REPLY_PEERS);
    assert!(!state.udp_peers.contains(&at("10.0.0.1", 1000)));
}

/// Says a bind is in use.
struct Taken;

impl SocketRules for Taken {
    fn bind(&self, _: Transport, local: SocketAddr) -> Verdict {
        if local.port() == 0 { Verdict::Allow } else { Verdict::InUse }
    }
    fn listen(&self, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
    fn connect(&self, _: Transport, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
    fn accept(&self, _: Transport, _: Option<u16>, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
}

#[test]
fn the_last_binds_verdict_is_kept_once() {
    let c = Check::new(Arc::new(Taken));
    assert_eq!(c.take_bind_verdict(), None);
    assert!(!c.judge(at("0.0.0.0", 8080), SocketAddrUse::TcpBind).allowed());
    assert_eq!(c.take_bind_verdict(), Some(Verdict::InUse));
    assert_eq!(c.take_bind_verdict(), None);
    c.judge(at("0.0.0.0", 0), SocketAddrUse::UdpBind);
    assert_eq!(c.take_bind_verdict(), Some(Verdict::Allow));
}

#[test]
fn an_accepted_peer_is_judged_for_the_one_listening_port_if_there_is_one() {
    let asked = Arc::new(Asked::default());
    let c = Check::new(asked.clone());
    let peer = at("10.0.0.9", 40000);
    c.judge(peer, SocketAddrUse::TcpAccept);
    c.judge(at("0.0.0.0", 8080), SocketAddrUse::TcpListen);
    c.judge(peer, SocketAddrUse::TcpAccept);
    c.judge(at("0.0.0.0", 9090), SocketAddrUse::TcpListen);
    c.judge(peer, SocketAddrUse::TcpAccept);
    assert_eq!(*asked.0.lock().unwrap(), [None, Some(8080), None]);
}
