//! The node's egress rules, the same for every pod: the ranges of `--pod-egress-deny`, and
//! the agent's own ports on every address of the node. A destination is taken as what it
//! reaches (IPv4-mapped IPv6 as IPv4) before it is judged, whatever the caller did.

use std::net::{IpAddr, SocketAddr};

use crate::base::cidr::Cidr;

/// Why the node refuses a destination to every pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// In a range of `--pod-egress-deny`.
    Range(Cidr),
    /// One of the agent's own ports on an address of the node.
    AgentPort(&'static str),
}

/// The node's egress rules.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    deny: Vec<Cidr>,
    /// The node's addresses besides loopback and the wildcard: its IP and its interfaces'.
    node_addresses: Vec<IpAddr>,
    /// The agent's own ports (TCP and UDP alike), and what serves them.
    agent_ports: Vec<(u16, &'static str)>,
}

impl Egress {
    pub fn new(deny: Vec<Cidr>, node_addresses: &[IpAddr], agent_ports: &[(u16, &'static str)]) -> Egress {
        let mut addrs: Vec<IpAddr> = node_addresses.iter().map(|a| a.to_canonical()).collect();
        addrs.sort();
        addrs.dedup();
        let agent_ports = agent_ports.iter().filter(|(p, _)| *p != 0).copied().collect();
        Egress { deny, node_addresses: addrs, agent_ports }
    }

    /// Whether `ip` reaches this node: loopback, the wildcard, or one of its addresses.
    pub fn is_node_address(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.node_addresses.contains(&ip)
    }

    /// Why `remote` is refused to every pod, if it is.
    pub fn check(&self, remote: SocketAddr) -> Option<Refusal> {
        let ip = remote.ip().to_canonical();
        if let Some(range) = self.deny.iter().find(|c| c.contains(ip)) {
            return Some(Refusal::Range(*range));
        }
        if self.is_node_address(ip)
            && let Some((_, what)) = self.agent_ports.iter().find(|(p, _)| *p == remote.port())
        {
            return Some(Refusal::AgentPort(what));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::cidr::parse_list;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn denied_ranges_and_the_agents_ports_are_refused_mapped_or_not() {
        let deny = parse_list(crate::config::DEFAULT_POD_EGRESS_DENY).unwrap();
        let node: IpAddr = "10.0.0.5".parse().unwrap();
        let e = Egress::new(
            deny,
            &[node, "192.168.1.9".parse().unwrap()],
            &[(10250, "kubelet API (--port)"), (0, "off")],
        );
        let range = |s: &str| Some(Refusal::Range(s.parse().unwrap()));
        assert_eq!(e.check(at("127.0.0.1:6443")), range("127.0.0.0/8"));
        assert_eq!(e.check(at("[::ffff:127.0.0.1]:6443")), range("127.0.0.0/8"));
        assert_eq!(e.check(at("169.254.169.254:80")), range("169.254.0.0/16"));
        assert_eq!(e.check(at("[::1]:80")), range("::1/128"));
        assert_eq!(e.check(at("[fe80::1]:80")), range("fe80::/10"));
        assert_eq!(e.check(at("0.0.0.0:80")), range("0.0.0.0/8"));
        assert_eq!(e.check(at("239.1.1.1:5353")), range("224.0.0.0/4"));
        let agent = Some(Refusal::AgentPort("kubelet API (--port)"));
        assert_eq!(e.check(at("10.0.0.5:10250")), agent);
        assert_eq!(e.check(at("[::ffff:10.0.0.5]:10250")), agent);
        assert_eq!(e.check(at("192.168.1.9:10250")), agent);
        assert_eq!(e.check(at("10.0.0.5:8080")), None, "other ports of the node are pods'");
        assert_eq!(e.check(at("10.0.0.6:10250")), None, "another node's kubelet");
        assert_eq!(e.check(at("8.8.8.8:53")), None);
        assert_eq!(e.check(at("10.0.0.5:0")), None);

        // With no denied ranges, loopback is still the node: its agent ports stay refused.
        let open = Egress::new(Vec::new(), &[node], &[(10250, "kubelet API (--port)")]);
        assert_eq!(open.check(at("127.0.0.1:6443")), None);
        assert_eq!(open.check(at("127.0.0.1:10250")), agent);
        assert_eq!(open.check(at("[::1]:10250")), agent);
        assert!(open.is_node_address("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!open.is_node_address("10.0.0.6".parse().unwrap()));
    }
}
