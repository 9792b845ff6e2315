//! Evaluating a [`View`] with Kubernetes' semantics. A pod is isolated for ingress (egress)
//! when a policy of its namespace selects it with that policy type; an isolated pod's
//! connection is allowed when a rule of one of those policies matches both its peer and
//! its port. A pod no policy selects is open. Peers are matched by address: an `ipBlock`
//! directly, a pod selector through the IPs of the pods it selects (pods of a node that
//! share the node's IP are all that IP).

use std::borrow::Cow;
use std::net::IpAddr;

use super::compile::unseen_namespace;
use super::selector::Labels;
use super::{NamedPort, PeerSpec, PodInfo, Policy, PortMatch, PortSpec, Rule, View};
use crate::network::ports::Protocol;

/// The pod whose policies are asked: its UID (its labels are read from the view when it
/// is there, so label changes count), namespace, labels and named ports otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub labels: &'a Labels,
    pub ports: &'a [NamedPort],
}

/// The other end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    /// Known only by address: pod selectors match it through the pods at that IP.
    Address(IpAddr),
    /// A pod of this node, known as itself (a connection between two of its pods).
    Pod { ip: IpAddr, namespace: &'a str, labels: &'a Labels },
}

impl Peer<'_> {
    fn ip(&self) -> IpAddr {
        match self {
            Peer::Address(ip) | Peer::Pod { ip, .. } => ip.to_canonical(),
        }
    }
}

/// What the policies say about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No policy selects the pod for this direction.
    Open,
    /// A rule of a policy selecting the pod allows it.
    Allowed,
    /// Policies select the pod (named `namespace/name`) and none of their rules allows it.
    Denied(Vec<String>),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        !matches!(self, Decision::Denied(_))
    }
}

enum Direction {
    Ingress,
    Egress,
}

impl View {
    /// Ingress to `subject` from `peer` on its port `port` (`None`: a port that cannot be
    /// told, where only rules without ports allow).
    pub fn ingress(&self, subject: &Subject<'_>, peer: Peer<'_>, port: Option<(Protocol, u16)>) -> Decision {
        self.decide(subject, Direction::Ingress, |policy, rule| {
            self.ports_match(&rule.ports, port, |name, protocol, port| {
                subject.ports.iter().any(|p| p.name == name && p.protocol == protocol && p.port == port)
            }) && self.peers_match(policy, &rule.peers, peer)
        })
    }

    /// Egress from `subject` to `dest` on `port`. A named port matches when a pod at
    /// `dest` has a port of that name and number.
    pub fn egress(&self, subject: &Subject<'_>, dest: IpAddr, port: (Protocol, u16)) -> Decision {
        let dest = dest.to_canonical();
        self.decide(subject, Direction::Egress, |policy, rule| {
            self.ports_match(&rule.ports, Some(port), |name, protocol, port| {
                self.pods_at(dest)
                    .iter()
                    .flat_map(|p| &p.ports)
                    .any(|p| p.name == name && p.protocol == protocol && p.port == port)
            }) && self.peers_match(policy, &rule.peers, Peer::Address(dest))
        })
    }

    fn decide(
        &self,
        subject: &Subject<'_>,
        direction: Direction,
        allows: impl Fn(&Policy, &Rule) -> bool,
    ) -> Decision {
        if !self.enforced {
            return Decision::Open;
        }
        let Some(policies) = self.policies.get(subject.namespace) else { return Decision::Open };
        let labels = self.pods.get(subject.uid).map(|p| &p.labels).unwrap_or(subject.labels);
        let mut selecting = Vec::new();
        for policy in policies.iter().filter(|p| p.selector.matches(labels)) {
            let rules = match direction {
                Direction::Ingress => policy.ingress.as_ref(),
                Direction::Egress => policy.egress.as_ref(),
            };
            let Some(rules) = rules else { continue };
            if rules.iter().any(|r| allows(policy, r)) {
                return Decision::Allowed;
            }
            selecting.push(format!("{}/{}", policy.namespace, policy.name));
        }
        if selecting.is_empty() { Decision::Open } else { Decision::Denied(selecting) }
    }

    fn ports_match(
        &self,
        specs: &[PortSpec],
        port: Option<(Protocol, u16)>,
        named: impl Fn(&str, Protocol, u16) -> bool,
    ) -> bool {
        if specs.is_empty() {
            return true;
        }
        let Some((protocol, number)) = port else { return false };
        specs.iter().any(|s| {
            s.protocol == Some(protocol)
                && match &s.port {
                    PortMatch::Any => true,
                    PortMatch::Range(start, end) => (*start..=*end).contains(&number),
                    PortMatch::Named(name) => named(name, protocol, number),
                    PortMatch::Nothing => false,
                }
        })
    }

    fn peers_match(&self, policy: &Policy, peers: &[PeerSpec], peer: Peer<'_>) -> bool {
        if peers.is_empty() {
            return true;
        }
        let ip = peer.ip();
        peers.iter().any(|spec| match spec {
            PeerSpec::Block { cidr, except } => cidr.contains(ip) && !except.iter().any(|e| e.contains(ip)),
            PeerSpec::Pods { namespaces, pods } => {
                let picks = |namespace: &str, labels: &Labels| {
                    let ns_ok = match namespaces {
                        None => namespace == policy.namespace,
                        Some(s) => s.matches(&self.namespace_labels(namespace)),
                    };
                    ns_ok && pods.as_ref().is_none_or(|s| s.matches(labels))
                };
                match peer {
                    Peer::Pod { namespace, labels, .. } => picks(namespace, labels),
                    Peer::Address(_) => self.pods_at(ip).iter().any(|p| picks(&p.namespace, &p.labels)),
                }
            }
            PeerSpec::Nothing => false,
        })
    }

    fn pods_at(&self, ip: IpAddr) -> &[std::sync::Arc<PodInfo>] {
        self.by_ip.get(&ip).map(Vec::as_slice).unwrap_or_default()
    }

    fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(l) => Cow::Borrowed(l.as_ref()),
            None => Cow::Owned(unseen_namespace(name)),
        }
    }
}

#[cfg(test)]
mod tests;
