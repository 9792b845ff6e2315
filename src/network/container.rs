//! A container's network at start: the ports it is served on (its declared TCP
//! `containerPort`s, or 8080 for a `wasi:http` component that declares none, reserved for
//! the pod), the listen address and HTTP limits, the pod's socket rules, and the Events
//! that tell the user what the node chose or what the image cannot do; and where the node
//! itself dials a pod's port (`kubectl port-forward`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::Network;
use super::ports::{Protocol, container_ports};
use crate::config::{DEFAULT_HTTP_PORT, Serving};
use crate::events::Kind;

/// A container's view of the node's network (pods share the node's).
#[derive(Debug, Clone)]
pub struct ContainerNetwork {
    /// The address listeners are bound to (`--pod-listen-address`).
    pub listen_address: IpAddr,
    /// The TCP ports the container may listen on (an HTTP server listens on each).
    pub tcp_ports: Vec<u16>,
    /// The UDP ports it may bind.
    pub udp_ports: Vec<u16>,
    /// Per-request deadline of an HTTP server.
    pub request_timeout: Duration,
    /// Requests an HTTP server handles at once.
    pub max_concurrent: usize,
    /// What the pod's sockets may do: the same rules for every run of the pod.
    pub rules: Arc<super::PodSockets>,
}

/// What a container's program can do with the network, as far as the node must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// No socket API (a WASI preview1 module that imports no socket function): it cannot
    /// listen.
    NoSockets,
    /// Opens its own sockets (a `wasi:cli/command` component, or a preview1 module
    /// importing WasmEdge's socket functions).
    Sockets,
    /// A request handler (a `wasi:http/proxy` component): the runtime listens for it.
    Http,
}

/// An Event about a container's first start: what the node chose for it.
pub type Note = (Kind, &'static str, String);

/// Why a container's network cannot be set up: the kubelet's reason and the whole message.
pub type SetupError = (&'static str, String);

/// Where the node itself reaches a pod's port (`kubectl port-forward`): `listen`
/// (`--pod-listen-address`), or loopback of its family when that is the wildcard.
pub fn dial_address(listen: IpAddr) -> IpAddr {
    match listen {
        IpAddr::V4(a) if a.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(a) if a.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        a => a,
    }
}

/// The container's declared ports by protocol (admission has checked them).
fn declared(container: &Container) -> (Vec<u16>, Vec<u16>) {
    let ports = container_ports(container).unwrap_or_default();
    let of = |protocol| ports.iter().filter(|p| p.protocol == protocol).map(|p| p.port).collect();
    (of(Protocol::Tcp), of(Protocol::Udp))
}

fn list(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// The Warning for a container that declares `ports` although its image has no socket API
/// (a preview1 module importing no socket function); `None` for every other image.
fn cannot_listen(kind: Guest, name: &str, ports: &[u16]) -> Option<Note> {
    if kind != Guest::NoSockets || ports.is_empty() {
        return None;
    }
    let message = format!(
        "container {name} declares port(s) {}, but its image is a WASI preview1 module that imports no socket \
         functions, so it cannot listen; it runs without them. To serve, build for wasm32-wasip2 \
         (wasi:sockets), as a wasi:http component, or against WasmEdge's socket API (wasmedge_wasi_socket)",
        list(ports)
    );
    Some((Kind::Warning, "ModuleCannotListen", message))
}

impl Network {
    /// The network of one run of `container`, whose program is of `kind`, served as
    /// `serving` says.
    pub fn container(
        &self,
        serving: &Serving,
        pod: &Pod,
        container: &Container,
        kind: Guest,
        notes: &mut Vec<Note>,
    ) -> Result<ContainerNetwork, SetupError> {
        let (mut tcp_ports, udp_ports) = declared(container);
        let name = &container.name;
        let mut http = serving.http;
        let all_ports: Vec<u16> = tcp_ports.iter().chain(&udp_ports).copied().collect();
        notes.extend(cannot_listen(kind, name, &all_ports));
        match kind {
            Guest::Http => {
                http = http
                    .for_pod(pod.metadata.annotations.as_ref())
                    .map_err(|e| ("CreateContainerConfigError", e))?;
                let default = tcp_ports.is_empty();
                if default {
                    // Reserved when the image was found to be a wasi:http component; again here,
                    // in case that failed then (it is free now) or the pod is older than that.
                    self.reserve_http_default(pod).map_err(|e| {
                    let message = format!(
                        "container {name} is a wasi:http component with no TCP containerPort, so it is served on \
                         {DEFAULT_HTTP_PORT}, but {e}; declare a containerPort"
                    );
                    ("CreateContainerError", message)
                })?;
                    tcp_ports.push(DEFAULT_HTTP_PORT);
                }
                let address = serving.listen_address;
                let message = match default {
                    true => format!(
                        "serving wasi:http on {address} port {DEFAULT_HTTP_PORT}: container {name} declares no TCP \
                     containerPort, and {DEFAULT_HTTP_PORT} is the default"
                    ),
                    false => format!("serving wasi:http on {address} port(s) {}", list(&tcp_ports)),
                };
                tracing::info!(container = %name, ports = %list(&tcp_ports), "{message}");
                notes.push((Kind::Normal, "Listening", message));
            }
            Guest::NoSockets | Guest::Sockets => {}
        }
        Ok(ContainerNetwork {
            listen_address: serving.listen_address,
            tcp_ports,
            udp_ports,
            request_timeout: http.request_timeout,
            max_concurrent: http.max_concurrent,
            rules: self.sockets(pod),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_module_without_socket_imports_that_declares_ports_is_warned() {
        let (kind, reason, message) = cannot_listen(Guest::NoSockets, "app", &[8080, 53]).unwrap();
        assert_eq!((kind, reason), (Kind::Warning, "ModuleCannotListen"));
        assert!(message.contains("port(s) 8080, 53") && message.contains("wasm32-wasip2"), "{message}");
        assert!(cannot_listen(Guest::NoSockets, "app", &[]).is_none(), "nothing declared");
        // The guide's server: a module importing WasmEdge's socket functions.
        assert!(cannot_listen(Guest::Sockets, "app", &[8080]).is_none());
        assert!(cannot_listen(Guest::Http, "app", &[8080]).is_none());
    }

    #[test]
    fn the_node_dials_pods_on_loopback_unless_they_listen_on_one_address() {
        let at = |listen: &str| dial_address(listen.parse().unwrap()).to_string();
        assert_eq!(dial_address(Serving::default().listen_address).to_string(), "127.0.0.1");
        assert_eq!(at("::"), "::1");
        assert_eq!(at("10.0.0.5"), "10.0.0.5");
    }
}
