//! A container's network at start: the ports it is served on (its declared TCP
//! `containerPort`s, or 8080 for a `wasi:http` component that declares none, reserved for
//! the pod), the listen address and HTTP limits, the pod's socket rules, and the Events
//! that tell the user what the node chose or what the image cannot do.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{Note, StartError};
use crate::config::DEFAULT_HTTP_PORT;
use crate::events::Kind;
use crate::network::ports::{Protocol, container_ports};
use crate::pods::Shared;
use crate::runtime::{ContainerNetwork, ImageKind};

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
fn cannot_listen(kind: ImageKind, name: &str, ports: &[u16]) -> Option<Note> {
    if kind != ImageKind::Command || ports.is_empty() {
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

/// The network of one run of `container`, whose image is of `kind`.
pub fn network<R>(
    shared: &Shared<R>,
    pod: &Pod,
    container: &Container,
    kind: ImageKind,
    notes: &mut Vec<Note>,
) -> Result<ContainerNetwork, StartError> {
    let (mut tcp_ports, udp_ports) = declared(container);
    let name = &container.name;
    let mut http = shared.serving.http;
    let all_ports: Vec<u16> = tcp_ports.iter().chain(&udp_ports).copied().collect();
    notes.extend(cannot_listen(kind, name, &all_ports));
    match kind {
        ImageKind::HttpServer => {
            http = http
                .for_pod(pod.metadata.annotations.as_ref())
                .map_err(|e| ("CreateContainerConfigError", e))?;
            let default = tcp_ports.is_empty();
            if default {
                // Reserved when the image was found to be a wasi:http component; again here,
                // in case that failed then (it is free now) or the pod is older than that.
                shared.network.reserve_http_default(pod).map_err(|e| {
                    let message = format!(
                        "container {name} is a wasi:http component with no TCP containerPort, so it is served on \
                         {DEFAULT_HTTP_PORT}, but {e}; declare a containerPort"
                    );
                    ("CreateContainerError", message)
                })?;
                tcp_ports.push(DEFAULT_HTTP_PORT);
            }
            let address = shared.serving.listen_address;
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
        ImageKind::Command | ImageKind::SocketCommand => {}
    }
    Ok(ContainerNetwork {
        listen_address: shared.serving.listen_address,
        tcp_ports,
        udp_ports,
        request_timeout: http.request_timeout,
        max_concurrent: http.max_concurrent,
        rules: shared.network.sockets(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_module_without_socket_imports_that_declares_ports_is_warned() {
        let (kind, reason, message) = cannot_listen(ImageKind::Command, "app", &[8080, 53]).unwrap();
        assert_eq!((kind, reason), (Kind::Warning, "ModuleCannotListen"));
        assert!(message.contains("port(s) 8080, 53") && message.contains("wasm32-wasip2"), "{message}");
        assert!(cannot_listen(ImageKind::Command, "app", &[]).is_none(), "nothing declared");
        // The guide's server: a module importing WasmEdge's socket functions.
        assert!(cannot_listen(ImageKind::SocketCommand, "app", &[8080]).is_none());
        assert!(cannot_listen(ImageKind::HttpServer, "app", &[8080]).is_none());
    }
}
