//! Node ports. Pods share the node's network (a pod's IP is the node's IP), so a
//! `containerPort` is a port of the node: this table says which pod holds each, so that a
//! second pod declaring one is rejected at admission, as the kubelet rejects host-port
//! conflicts, and the agent's own ports are never given to a pod.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, Pod};

/// A transport protocol a port is declared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One port of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodePort {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for NodePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        write!(f, "{}/{proto}", self.port)
    }
}

/// Who holds a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The agent itself, e.g. `the kubelet API (--port)`.
    Agent(&'static str),
    Pod {
        uid: String,
        namespace: String,
        name: String,
    },
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Agent(what) => write!(f, "the node agent's {what}"),
            Holder::Pod { namespace, name, .. } => write!(f, "pod {namespace}/{name}"),
        }
    }
}

/// Why a pod's ports cannot be given to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port {port} is already in use on this node by {holder}")]
    Clash { port: NodePort, holder: Holder },
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
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => {
                let protocol = other.to_string();
                return Err(PortError::Protocol { container, port: p.container_port, protocol });
            }
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

/// Which pod (or the agent) holds each node port.
#[derive(Debug, Default)]
pub struct PortTable(Mutex<BTreeMap<NodePort, Holder>>);

impl PortTable {
    /// A table where the agent holds `own` (port, what serves it) on TCP.
    pub fn new(own: &[(u16, &'static str)]) -> Self {
        let held = own
            .iter()
            .filter(|(port, _)| *port != 0)
            .map(|(port, what)| (NodePort { port: *port, protocol: Protocol::Tcp }, Holder::Agent(what)))
            .collect();
        PortTable(Mutex::new(held))
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<NodePort, Holder>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Gives `ports` to the pod, all or none. Ports it already holds are fine.
    pub fn claim(&self, pod: &Pod, ports: &[NodePort]) -> Result<(), PortError> {
        let me = holder(pod);
        self.with(|held| {
            if let Some((port, holder)) =
                ports.iter().find_map(|p| held.get(p).filter(|h| **h != me).map(|h| (p, h)))
            {
                return Err(PortError::Clash { port: *port, holder: holder.clone() });
            }
            for p in ports {
                held.insert(*p, me.clone());
            }
            Ok(())
        })
    }

    /// Frees every port the pod (by UID) holds.
    pub fn release(&self, uid: &str) {
        self.with(|held| held.retain(|_, h| !matches!(h, Holder::Pod { uid: u, .. } if u == uid)));
    }

    /// The ports the pod (by UID) holds, in order.
    pub fn held_by(&self, uid: &str) -> Vec<NodePort> {
        self.with(|held| {
            held.iter()
                .filter(|(_, h)| matches!(h, Holder::Pod { uid: u, .. } if u == uid))
                .map(|(p, _)| *p)
                .collect()
        })
    }
}

fn holder(pod: &Pod) -> Holder {
    let m = &pod.metadata;
    Holder::Pod {
        uid: m.uid.clone().unwrap_or_default(),
        namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
        name: m.name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(uid: &str, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": "ns", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]},
        }))
        .unwrap()
    }

    const TCP: Protocol = Protocol::Tcp;

    #[test]
    fn declared_ports_are_checked_for_host_networking() {
        let p = pod(
            "a",
            json!([{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53}]),
        );
        let want =
            [(8080, TCP), (53, Protocol::Udp), (53, TCP)].map(|(port, protocol)| NodePort { port, protocol });
        assert_eq!(declared(&p).unwrap(), want);
        let same_host_port = pod("a", json!([{"containerPort": 80, "hostPort": 80}]));
        assert_eq!(declared(&same_host_port).unwrap().len(), 1);
        let cases = [
            json!([{"containerPort": 80, "hostPort": 8080}]),
            json!([{"containerPort": 80}, {"containerPort": 80}]),
            json!([{"containerPort": 70000}]),
            json!([{"containerPort": 80, "protocol": "SCTP"}]),
        ];
        let errors: Vec<String> =
            cases.iter().map(|c| declared(&pod("a", c.clone())).unwrap_err().to_string()).collect();
        assert!(errors[0].contains("hostPort 8080 differs from containerPort 80"), "{}", errors[0]);
        assert!(errors[1].contains("port 80/TCP is declared twice"), "{}", errors[1]);
        assert!(errors[2].contains("containerPort 70000 is not a port number"), "{}", errors[2]);
        assert!(errors[3].contains("protocol SCTP"), "{}", errors[3]);
    }

    #[test]
    fn a_port_is_held_by_one_pod_until_it_is_released() {
        let table = PortTable::new(&[(10250, "kubelet API (--port)"), (0, "unused")]);
        let (a, b) = (pod("a", json!([])), pod("b", json!([])));
        let port = |port| NodePort { port, protocol: TCP };
        table.claim(&a, &[port(8080), port(9090)]).unwrap();
        table.claim(&a, &[port(8080)]).unwrap();
        let err = table.claim(&b, &[port(7070), port(8080)]).unwrap_err();
        assert_eq!(err.to_string(), "port 8080/TCP is already in use on this node by pod ns/p-a");
        assert!(table.held_by("b").is_empty(), "all or nothing");
        let err = table.claim(&b, &[port(10250)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port 10250/TCP is already in use on this node by the node agent's kubelet API (--port)"
        );
        table.claim(&b, &[NodePort { port: 8080, protocol: Protocol::Udp }]).unwrap();
        table.release("a");
        table.claim(&b, &[port(8080)]).unwrap();
        assert_eq!(table.held_by("b"), [port(8080), NodePort { port: 8080, protocol: Protocol::Udp }]);
    }
}
