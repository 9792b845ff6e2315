//! Node ports. Pods share the node's network (a pod's IP is the node's IP), so a
//! `containerPort` is a port of the node: this table says who holds each, by (protocol,
//! port, address), so that a second pod declaring one is rejected at admission, as the
//! kubelet rejects host-port conflicts, a guest binds only what its pod holds or may claim,
//! and the agent's own ports are never given to a pod. A wildcard address (`0.0.0.0`,
//! `::`) overlaps every address of the same protocol and port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, Pod};

/// A transport protocol a port is declared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `TCP` or `UDP`, as a pod spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The protocol a pod spec or a NetworkPolicy names (`None`: one this node has not,
    /// such as SCTP).
    pub fn parse(name: &str) -> Option<Protocol> {
        match name {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl From<krustlet_wasi_provider::Transport> for Protocol {
    fn from(t: krustlet_wasi_provider::Transport) -> Self {
        match t {
            krustlet_wasi_provider::Transport::Tcp => Protocol::Tcp,
            krustlet_wasi_provider::Transport::Udp => Protocol::Udp,
        }
    }
}

/// One port a pod declares (its address is the node's `--pod-listen-address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodePort {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for NodePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.name())
    }
}

/// A port on one address of the node (the wildcard: on all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub protocol: Protocol,
    pub port: u16,
    pub addr: IpAddr,
}

impl Binding {
    pub fn new(port: NodePort, addr: IpAddr) -> Binding {
        Binding { protocol: port.protocol, port: port.port, addr: addr.to_canonical() }
    }

    /// The same binding with its address as what it reaches (IPv4-mapped IPv6 as IPv4).
    pub fn canonical(self) -> Binding {
        Binding { addr: self.addr.to_canonical(), ..self }
    }

    /// The port on every address of the node.
    pub fn everywhere(protocol: Protocol, port: u16) -> Binding {
        Binding { protocol, port, addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
    }

    /// Whether the two could not both be bound: same protocol and port, and the same
    /// address or a wildcard on either side.
    pub fn overlaps(&self, other: &Binding) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.addr == other.addr || self.addr.is_unspecified() || other.addr.is_unspecified())
    }
}

impl fmt::Display for Binding {
    /// `8080/TCP`, with ` on ADDRESS` when the address is not the wildcard.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.name())?;
        if !self.addr.is_unspecified() {
            write!(f, " on {}", self.addr)?;
        }
        Ok(())
    }
}

/// A pod, as the network rules name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodId {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl PodId {
    pub fn of(pod: &Pod) -> PodId {
        let m = &pod.metadata;
        PodId {
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who holds a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The agent itself, e.g. `kubelet API (--port)`.
    Agent(&'static str),
    Pod(PodId),
}

impl Holder {
    /// The pod's UID, if a pod holds it.
    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Holder::Pod(id) => Some(&id.uid),
            Holder::Agent(_) => None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Agent(what) => write!(f, "the node agent's {what}"),
            Holder::Pod(id) => write!(f, "pod {id}"),
        }
    }
}

/// Why a pod's ports cannot be given to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port {port} is already in use on this node by {holder}")]
    Clash { port: Binding, holder: Holder },
    #[error(
        "container {container:?}: hostPort {host_port} differs from containerPort {container_port}; \
         pods on this node use the node's network, where the two are the same port"
    )]
    HostPortMismatch { container: String, container_port: i32, host_port: i32 },
    #[error("container {container:?}: port {port} is declared twice in the pod")]
    Duplicate { container: String, port: NodePort },
    #[error("container {container:?}: containerPort {port} is not a port number (1-65535)")]
    OutOfRange { container: String, port: i32 },
    #[error(
        "container {container:?}: protocol {protocol} of port {port} is not supported on this node (TCP, UDP)"
    )]
    Protocol { container: String, port: i32, protocol: String },
}

/// The TCP and UDP ports one container declares (`containerPort`), checked as the API
/// server and the kubelet would for host networking.
pub fn container_ports(c: &Container) -> Result<Vec<NodePort>, PortError> {
    let mut out = Vec::new();
    for p in c.ports.iter().flatten() {
        let container = c.name.clone();
        let name = p.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::parse(name) else {
            let protocol = name.to_string();
            return Err(PortError::Protocol { container, port: p.container_port, protocol });
        };
        let port = u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(PortError::OutOfRange { container: container.clone(), port: p.container_port })?;
        if let Some(host_port) = p.host_port.filter(|h| *h != 0 && *h != p.container_port) {
            let container_port = p.container_port;
            return Err(PortError::HostPortMismatch { container, container_port, host_port });
        }
        out.push(NodePort { port, protocol });
    }
    Ok(out)
}

/// The TCP and UDP ports a pod declares (each container and init container), each at
/// most once.
pub fn declared(pod: &Pod) -> Result<Vec<NodePort>, PortError> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(Vec::new()) };
    let mut out: Vec<NodePort> = Vec::new();
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for port in container_ports(c)? {
            if out.contains(&port) {
                return Err(PortError::Duplicate { container: c.name.clone(), port });
            }
            out.push(port);
        }
    }
    Ok(out)
}

/// How a bind got its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The pod held it already (declared, or claimed by an earlier bind).
    Held,
    /// It was free and is now the pod's, until the pod stops.
    Claimed,
}

/// Why a bind may not have its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Someone else holds it (or an overlapping address of it).
    Held(Holder),
    /// Below the lowest port a pod may take without declaring it.
    Privileged { min: u16 },
}

/// One holding of a port: on which address, by whom.
#[derive(Debug, Clone)]
struct Entry {
    addr: IpAddr,
    holder: Holder,
}

/// Which pod (or the agent) holds each node port, by protocol and port, then address.
#[derive(Debug, Default)]
pub struct PortTable(Mutex<BTreeMap<(Protocol, u16), Vec<Entry>>>);

impl PortTable {
    /// A table where the agent holds `own` (port, what serves it) on TCP, on every address.
    pub fn new(own: &[(u16, &'static str)]) -> Self {
        let table = PortTable::default();
        table.with(|held| {
            for (port, what) in own.iter().filter(|(port, _)| *port != 0) {
                let b = Binding::everywhere(Protocol::Tcp, *port);
                let entry = Entry { addr: b.addr, holder: Holder::Agent(what) };
                held.entry((b.protocol, b.port)).or_default().push(entry);
            }
        });
        table
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<(Protocol, u16), Vec<Entry>>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Who else than `me` holds `b` (or an address overlapping it), if anyone.
    fn other(held: &BTreeMap<(Protocol, u16), Vec<Entry>>, me: &PodId, b: &Binding) -> Option<Holder> {
        let entries = held.get(&(b.protocol, b.port))?;
        entries
            .iter()
            .filter(|e| e.holder != Holder::Pod(me.clone()))
            .find(|e| b.overlaps(&Binding { addr: e.addr, ..*b }))
            .map(|e| e.holder.clone())
    }

    /// Gives `ports` to the pod, all or none (admission, and the wasi:http default
    /// port). Ports it already holds are fine.
    pub fn reserve(&self, pod: &PodId, ports: &[Binding]) -> Result<(), PortError> {
        let ports: Vec<Binding> = ports.iter().map(|b| b.canonical()).collect();
        self.with(|held| {
            if let Some((port, holder)) = ports.iter().find_map(|b| Self::other(held, pod, b).map(|h| (b, h)))
            {
                return Err(PortError::Clash { port: *port, holder });
            }
            for b in &ports {
                Self::insert(held, pod, b);
            }
            Ok(())
        })
    }

    fn insert(held: &mut BTreeMap<(Protocol, u16), Vec<Entry>>, pod: &PodId, b: &Binding) -> bool {
        let entries = held.entry((b.protocol, b.port)).or_default();
        let mine = Holder::Pod(pod.clone());
        if entries.iter().any(|e| e.holder == mine && e.addr == b.addr) {
            return false;
        }
        entries.push(Entry { addr: b.addr, holder: mine });
        true
    }

    /// A guest of the pod binds `b`: fine if the pod holds it; claimed for the pod if it is
    /// at least `min_undeclared` and nobody else holds it; refused otherwise.
    pub fn take(&self, pod: &PodId, b: Binding, min_undeclared: u16) -> Result<Taken, Refused> {
        let b = b.canonical();
        self.with(|held| {
            let mine = Holder::Pod(pod.clone());
            let entries = held.get(&(b.protocol, b.port));
            if entries.is_some_and(|es| {
                es.iter().any(|e| e.holder == mine && (e.addr == b.addr || e.addr.is_unspecified()))
            }) {
                return Ok(Taken::Held);
            }
            if let Some(holder) = Self::other(held, pod, &b) {
                return Err(Refused::Held(holder));
            }
            if b.port < min_undeclared {
                return Err(Refused::Privileged { min: min_undeclared });
            }
            Self::insert(held, pod, &b);
            Ok(Taken::Claimed)
        })
    }

    /// Who holds `b` (or an address overlapping it), if anyone.
    pub fn holder(&self, b: Binding) -> Option<Holder> {
        let b = b.canonical();
        self.with(|held| {
            let entries = held.get(&(b.protocol, b.port))?;
            entries.iter().find(|e| b.overlaps(&Binding { addr: e.addr, ..b })).map(|e| e.holder.clone())
        })
    }

    /// Frees every port the pod (by UID) holds.
    pub fn release(&self, uid: &str) {
        self.with(|held| {
            held.retain(|_, entries| {
                entries.retain(|e| e.holder.pod_uid() != Some(uid));
                !entries.is_empty()
            })
        });
    }
}

#[cfg(test)]
mod tests;
