//! From API objects to what evaluation needs: a NetworkPolicy compiled (selectors, CIDRs,
//! ports, its policy types defaulted as the API server does), a pod reduced to namespace,
//! labels, IPs and named ports, a namespace to its labels.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::selector::{Labels, Selector};
use super::{NamedPort, PeerSpec, PodInfo, Policy, PortMatch, PortSpec, Rule};
use crate::network::ports::Protocol;

/// The label every namespace has from Kubernetes 1.21 on; set here for older API servers
/// too, so `namespaceSelector`s written for it work everywhere.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A NetworkPolicy compiled (`None` without a name or namespace).
pub fn policy(np: &NetworkPolicy) -> Option<Policy> {
    let namespace = np.namespace()?;
    let name = np.metadata.name.clone()?;
    let spec = np.spec.clone().unwrap_or_default();
    let selector = spec.pod_selector.as_ref().map(Selector::compile).unwrap_or_default();
    // policyTypes default: Ingress, plus Egress when there are egress rules.
    let types: Vec<String> = match spec.policy_types.filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        }
    };
    let has = |t: &str| types.iter().any(|x| x == t);
    let ingress = has("Ingress").then(|| {
        (spec.ingress.iter().flatten()).map(|r| rule(r.from.as_deref(), r.ports.as_deref())).collect()
    });
    let egress = has("Egress")
        .then(|| (spec.egress.iter().flatten()).map(|r| rule(r.to.as_deref(), r.ports.as_deref())).collect());
    Some(Policy { namespace, name, selector, ingress, egress })
}

fn rule(peers: Option<&[NetworkPolicyPeer]>, ports: Option<&[NetworkPolicyPort]>) -> Rule {
    Rule {
        peers: peers.unwrap_or_default().iter().map(peer).collect(),
        ports: ports.unwrap_or_default().iter().map(port).collect(),
    }
}

fn peer(p: &NetworkPolicyPeer) -> PeerSpec {
    if let Some(block) = &p.ip_block {
        let Ok(cidr) = block.cidr.parse() else { return PeerSpec::Nothing };
        let except: Result<Vec<_>, _> = block.except.iter().flatten().map(|e| e.parse()).collect();
        return match except {
            Ok(except) => PeerSpec::Block { cidr, except },
            Err(_) => PeerSpec::Nothing,
        };
    }
    let namespaces = p.namespace_selector.as_ref().map(Selector::compile);
    let pods = p.pod_selector.as_ref().map(Selector::compile);
    if namespaces.is_none() && pods.is_none() {
        return PeerSpec::Nothing;
    }
    PeerSpec::Pods { namespaces, pods }
}

fn port(p: &NetworkPolicyPort) -> PortSpec {
    let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"));
    let port = match &p.port {
        None => PortMatch::Any,
        Some(IntOrString::String(name)) => match name.parse::<u16>() {
            // "8080" in a string is a number to the API server too.
            Ok(n) => range(n.into(), p.end_port),
            Err(_) => PortMatch::Named(name.clone()),
        },
        Some(IntOrString::Int(n)) => range(*n, p.end_port),
    };
    PortSpec { protocol, port }
}

fn range(start: i32, end: Option<i32>) -> PortMatch {
    let Ok(start) = u16::try_from(start) else { return PortMatch::Nothing };
    match end.map(u16::try_from) {
        None => PortMatch::Range(start, start),
        Some(Ok(end)) if end >= start => PortMatch::Range(start, end),
        Some(_) => PortMatch::Nothing,
    }
}

/// The named ports of a pod's containers (init containers included).
pub fn named_ports(spec: Option<&PodSpec>) -> Vec<NamedPort> {
    let Some(spec) = spec else { return Vec::new() };
    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone().filter(|n| !n.is_empty())?,
                port: u16::try_from(p.container_port).ok()?,
                protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?,
            })
        })
        .collect()
}

/// What evaluation needs of a pod: its UID and info, or `None` while it has no IP or once
/// it has finished (its IP may then be another pod's).
pub fn pod_info(pod: &Pod) -> Option<(String, PodInfo)> {
    let uid = pod.uid()?;
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut ips: Vec<IpAddr> = (status.pod_ips.iter().flatten())
        .filter_map(|p| p.ip.parse::<IpAddr>().ok())
        .chain(status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()))
        .map(|ip| ip.to_canonical())
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return None;
    }
    let info = PodInfo {
        namespace: pod.namespace().unwrap_or_else(|| "default".into()),
        labels: pod.labels().clone(),
        ips,
        ports: named_ports(pod.spec.as_ref()),
    };
    Some((uid, info))
}

/// A namespace's name and labels (with `kubernetes.io/metadata.name`).
pub fn namespace_labels(ns: &Namespace) -> Option<(String, Labels)> {
    let name = ns.metadata.name.clone()?;
    let mut labels = ns.labels().clone();
    labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
    Some((name, labels))
}

/// The labels of a namespace the view has not seen (yet): only its name label.
pub fn unseen_namespace(name: &str) -> Labels {
    [(NAMESPACE_NAME_LABEL.to_string(), name.to_string())].into()
}
