//! NetworkPolicy (networking.k8s.io/v1) for Wasm pods: the agent owns every socket of its
//! pods, so it is their enforcement point, as a CNI plugin is for container pods. A watch
//! (`watch.rs`) keeps a compact [`View`] of the cluster — policies, namespaces' labels, and
//! each pod's namespace, labels, IPs and named ports, nothing else, so 10,000 pods stay
//! small — and publishes it whole; socket checks read the current one without waiting
//! (`eval.rs`). Until the first complete view, or where policies cannot be read, every pod
//! is open, as in a cluster whose network plugin does not enforce policies.

mod compile;
mod eval;
pub mod selector;
pub mod watch;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub use compile::{named_ports, namespace_labels, pod_info, policy};
pub use eval::{Decision, Peer, Subject};
use selector::{Labels, Selector};

use super::ports::Protocol;
use crate::base::cidr::Cidr;

/// A named container port of a pod (`ports[].name`), which policy ports may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// What evaluation needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<NamedPort>,
}

/// One compiled NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// The pods of its namespace it applies to.
    pub selector: Selector,
    /// `Some` when its policyTypes include Ingress: the rules, any of which allows.
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when its policyTypes include Egress.
    pub egress: Option<Vec<Rule>>,
}

/// One ingress or egress rule: it allows what matches one of its peers (none: any peer)
/// on one of its ports (none: any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub peers: Vec<PeerSpec>,
    pub ports: Vec<PortSpec>,
}

/// A `from`/`to` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSpec {
    /// `ipBlock`: addresses in `cidr` but in none of `except`.
    Block { cidr: Cidr, except: Vec<Cidr> },
    /// `podSelector` and/or `namespaceSelector`: pods (by their IPs) of the namespaces the
    /// namespace selector picks (none: the policy's own), which the pod selector picks
    /// (none: all of them).
    Pods { namespaces: Option<Selector>, pods: Option<Selector> },
    /// An entry that can match nothing (no selector and no block, or a bad CIDR, which the
    /// API server refuses anyway).
    Nothing,
}

/// A `ports` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: a protocol this node has not (SCTP): matches nothing here.
    pub protocol: Option<Protocol>,
    pub port: PortMatch,
}

/// Which ports of the protocol a `ports` entry allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// No `port`: all of them.
    Any,
    /// `port`, up to `endPort` when given.
    Range(u16, u16),
    /// A named port, resolved on the pod that listens (ingress: the pod itself; egress: the
    /// pods at the destination).
    Named(String),
    /// A port that cannot be one (out of range): matches nothing.
    Nothing,
}

/// The cluster as policy evaluation sees it, at one moment.
#[derive(Debug, Default)]
pub struct View {
    /// False until policies, namespaces and pods were all listed: every pod is open.
    pub enforced: bool,
    policies: HashMap<String, Vec<Arc<Policy>>>,
    namespaces: HashMap<String, Arc<Labels>>,
    pods: HashMap<String, Arc<PodInfo>>,
    by_ip: HashMap<IpAddr, Vec<Arc<PodInfo>>>,
}

impl View {
    /// A complete view of `policies`, `namespaces` (name -> labels) and `pods` (UID -> what
    /// evaluation needs of it).
    pub fn new(
        policies: impl IntoIterator<Item = Arc<Policy>>,
        namespaces: HashMap<String, Arc<Labels>>,
        pods: HashMap<String, Arc<PodInfo>>,
    ) -> View {
        let mut by_ns: HashMap<String, Vec<Arc<Policy>>> = HashMap::new();
        for p in policies {
            by_ns.entry(p.namespace.clone()).or_default().push(p);
        }
        for list in by_ns.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut by_ip: HashMap<IpAddr, Vec<Arc<PodInfo>>> = HashMap::new();
        for pod in pods.values() {
            for ip in &pod.ips {
                by_ip.entry(*ip).or_default().push(pod.clone());
            }
        }
        View { enforced: true, policies: by_ns, namespaces, pods, by_ip }
    }

    /// A pod's labels as the view has them.
    pub fn labels_of(&self, uid: &str) -> Option<&Labels> {
        self.pods.get(uid).map(|p| &p.labels)
    }

    /// How many policies the view holds.
    pub fn policy_count(&self) -> usize {
        self.policies.values().map(Vec::len).sum()
    }
}

/// The current [`View`], replaced whole by the watch and read by every socket check.
#[derive(Debug, Default)]
pub struct Policies(Mutex<Arc<View>>);

impl Policies {
    /// The view now (a pointer copy under a short lock).
    pub fn snapshot(&self) -> Arc<View> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn publish(&self, view: View) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}
