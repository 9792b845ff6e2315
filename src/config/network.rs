//! Flags and defaults of pods' network: the address ranges guests may never reach
//! (`--pod-egress-deny`), whether NetworkPolicies are enforced, and the fixed limits of
//! port claims and of the Events refusals raise.

use std::time::Duration;

use super::{ConfigError, invalid};
use crate::base::cidr::{self, Cidr};

/// Default `--pod-egress-deny`: what reaches this machine or its link rather than a
/// network. Loopback (`127.0.0.0/8`, `::1`): the node's own services (an etcd on a
/// control-plane node, the kubelet API, anything bound to localhost). Link-local
/// (`169.254.0.0/16`, `fe80::/10`): on cloud VMs the instance metadata service and its
/// credentials. Unspecified (`0.0.0.0/8`, `::`): dialling it reaches the host itself.
/// Multicast (`224.0.0.0/4`, `ff00::/8`): the node's link. IPv4-mapped IPv6 addresses are
/// judged as the IPv4 address they map.
pub const DEFAULT_POD_EGRESS_DENY: &str =
    "127.0.0.0/8,::1/128,169.254.0.0/16,fe80::/10,0.0.0.0/8,::/128,224.0.0.0/4,ff00::/8";

/// Default `--enforce-network-policy`: true. The agent owns every socket of its pods, so it
/// is their NetworkPolicy enforcement point, as a CNI plugin is for container pods.
pub const DEFAULT_ENFORCE_NETWORK_POLICY: bool = true;

/// The lowest port a guest may take without declaring it (a `containerPort`): below it
/// are the well-known ports, which on Linux need privileges, so a pod must say it wants one.
pub const MIN_UNDECLARED_PORT: u16 = 1024;

/// At most one Event per pod and destination (or peer, or port) of refused network use in
/// this long: a guest that retries in a loop is one Event a minute, not one per try.
pub const NETWORK_EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// Distinct destinations (peers, ports) per pod that get their own Event within
/// [`NETWORK_EVENT_INTERVAL`]; past it one Event says further refusals are only counted
/// (`krustlet_network_refused_total`), so a scanning guest cannot flood the API server.
pub const NETWORK_EVENT_DESTINATIONS: usize = 32;

/// Refusal Events waiting to be published, node-wide; more are dropped (and counted in
/// `/metrics` all the same) rather than making a guest's socket call wait.
pub const NETWORK_EVENT_QUEUE: usize = 1024;

/// How long the NetworkPolicy view waits after a change (of a policy, namespace or pod)
/// for more before it is rebuilt, so that a burst of pod updates is one rebuild.
pub const POLICY_SETTLE: Duration = Duration::from_millis(100);

/// How long datagrams from a UDP peer a pod sent to count as replies, which its ingress
/// policy does not judge (as a CNI plugin's connection tracking lets replies in): the
/// kernel's `nf_conntrack_udp_timeout_stream`, 120 s, renewed by each datagram sent.
pub const UDP_REPLY_WINDOW: Duration = Duration::from_secs(120);

/// UDP peers per pod remembered for [`UDP_REPLY_WINDOW`]; past it the oldest is forgotten.
pub const UDP_REPLY_PEERS: usize = 1024;

/// Name lookups one pod may have in flight at once on the node's resolver pool (its
/// wasi:sockets lookups and outgoing wasi:http requests' together); a few more wait, then
/// the guest gets `temporary-resolver-failure`. 4 is what a guest resolving a service's
/// name and its few dependencies needs, and a quarter of the provider's 16 resolver
/// threads, so a pod flooding black-holed names leaves the others their lookups.
pub const POD_LOOKUPS_IN_FLIGHT: usize = 4;

/// Network flags (flattened into [`super::Flags`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetworkFlags {
    /// Address ranges guests may never connect or send to (TCP, UDP, outgoing wasi:http),
    /// comma-separated CIDRs, or `none`. The agent's own ports on the node's addresses are
    /// refused besides. A pod cannot change it. Default:
    /// 127.0.0.0/8,::1/128,169.254.0.0/16,fe80::/10,0.0.0.0/8,::/128,224.0.0.0/4,ff00::/8
    /// (loopback, link-local, unspecified, multicast).
    #[arg(long, env = "KRUSTLET_POD_EGRESS_DENY", value_name = "CIDR,...|none")]
    pub pod_egress_deny: Option<String>,

    /// Enforce networking.k8s.io/v1 NetworkPolicies on pods' sockets (watching
    /// NetworkPolicies, Namespaces and Pods of the whole cluster). `false`: every pod is
    /// open, as in a cluster whose network plugin does not enforce them. Default: true.
    #[arg(long, env = "KRUSTLET_ENFORCE_NETWORK_POLICY", value_name = "BOOL")]
    pub enforce_network_policy: Option<bool>,
}

/// Pods' network rules set on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Ranges no guest may reach (`--pod-egress-deny`).
    pub egress_deny: Vec<Cidr>,
    /// Whether NetworkPolicies are watched and enforced (`--enforce-network-policy`).
    pub enforce_policy: bool,
}

impl Default for NetworkSettings {
    /// [`DEFAULT_POD_EGRESS_DENY`], policies enforced.
    fn default() -> Self {
        NetworkSettings {
            egress_deny: cidr::parse_list(DEFAULT_POD_EGRESS_DENY).unwrap_or_default(),
            enforce_policy: DEFAULT_ENFORCE_NETWORK_POLICY,
        }
    }
}

pub(super) fn resolve(flags: &NetworkFlags) -> Result<NetworkSettings, ConfigError> {
    let mut out = NetworkSettings::default();
    if let Some(raw) = &flags.pod_egress_deny {
        out.egress_deny = match raw.trim() {
            "none" => Vec::new(),
            "" => return Err(invalid("pod-egress-deny", "empty; give CIDRs, or `none` for no ranges")),
            list => cidr::parse_list(list).map_err(|e| invalid("pod-egress-deny", e.to_string()))?,
        };
    }
    if let Some(on) = flags.enforce_network_policy {
        out.enforce_policy = on;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_deny_list_defaults_to_the_nodes_own_ranges_and_may_be_none() {
        let s = resolve(&NetworkFlags::default()).unwrap();
        assert_eq!(s.egress_deny.len(), 8);
        assert!(s.enforce_policy);
        for local in
            ["127.0.0.1", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1"]
        {
            let ip = local.parse().unwrap();
            assert!(s.egress_deny.iter().any(|c| c.contains(ip)), "{local} is denied by default");
        }
        let none = NetworkFlags { pod_egress_deny: Some("none".into()), enforce_network_policy: Some(false) };
        let s = resolve(&none).unwrap();
        assert!(s.egress_deny.is_empty() && !s.enforce_policy);
        let own =
            NetworkFlags { pod_egress_deny: Some("10.0.0.0/8, 192.168.0.0/16".into()), ..Default::default() };
        assert_eq!(resolve(&own).unwrap().egress_deny.len(), 2);
        for bad in ["10.0.0.0/33", "", "lots"] {
            let flags = NetworkFlags { pod_egress_deny: Some(bad.into()), ..Default::default() };
            let err = resolve(&flags).unwrap_err();
            assert_eq!(err.flag, "pod-egress-deny", "{bad:?}");
            assert!(err.to_string().starts_with("--pod-egress-deny: "), "{err}");
        }
    }
}
