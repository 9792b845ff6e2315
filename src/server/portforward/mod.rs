//! `/portForward/{namespace}/{pod}[/{uid}]`: `kubectl port-forward` to a Wasm pod. Pods use
//! the node's network, so each forwarded connection dials the pod's port on 127.0.0.1 (or
//! at `--pod-listen-address`, when pods listen on that one address); as on the kubelet, any
//! port may be forwarded, declared or not. Three transports:
//!
//! - SPDY/3.1 with `X-Stream-Protocol-Version: portforward.k8s.io` ([`spdy`]): what the API
//!   server speaks to kubelets and kubectl up to 1.30 speaks to it;
//! - WebSocket channels (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, or no subprotocol),
//!   the ports in the query ([`ws`]);
//! - SPDY tunnelled in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, [`tunnel`]):
//!   what kubectl 1.31 and later try first. An API server from 1.30 on turns it into plain
//!   SPDY itself; an older one (this project's 1.20) passes it to the node unchanged, so it
//!   is served here, with the same SPDY code over the WebSocket's bytes.

mod forward;
mod spdy;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::pods as test_pod;
mod tunnel;
mod ws;
#[cfg(test)]
mod ws_tests;

use kube::ResourceExt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::info;

use self::forward::ForwardError;
use super::channels::WS_MAX_MESSAGE;
use super::{ServerState, names, upgrade};
use crate::pods::directory::Directory;

/// The SPDY sub-protocol of port-forward.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in WebSocket messages (client-go's
/// `SPDY/3.1+` prefix before the SPDY sub-protocol).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The header the kubelet lists its protocols in when none offered is known.
const ACCEPTED_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

type Failure = (StatusCode, String);

/// `/portForward/{namespace}/{pod}`.
pub async fn port_forward(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    serve(state, &namespace, &pod, None, req).await.unwrap_or_else(IntoResponse::into_response)
}

/// `/portForward/{namespace}/{pod}/{uid}`: the same, for that pod only.
pub async fn port_forward_uid(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod, uid)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    serve(state, &namespace, &pod, Some(&uid), req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    state: Arc<ServerState>,
    namespace: &str,
    pod: &str,
    uid: Option<&str>,
    mut req: Request,
) -> Result<Response, Failure> {
    names::check_pod(namespace, pod)?;
    if let Some(uid) = uid {
        names::check_uid(uid)?;
    }
    let max = state.limits.port_forward_max_connections.max(1) as usize;
    let websocket = upgrade::is_websocket(&req);
    let offered = upgrade::ws_protocols(&req);
    let tunnel = websocket && offered.iter().any(|p| p == TUNNEL_PROTOCOL);
    // As the kubelet: the ports of a WebSocket request are read before the pod is looked up.
    let ports = match websocket && !tunnel {
        true => ws::ports(req.uri().query().unwrap_or(""))?,
        false => Vec::new(),
    };
    let target = Target::find(&state.pods, namespace, pod, uid)?.at(state.pod_address);
    if tunnel {
        info!(namespace, pod, transport = "SPDY in WebSocket", "port-forward");
        let ws = websocket_upgrade(req, &state).await?.protocols([TUNNEL_PROTOCOL]);
        return Ok(ws.on_upgrade(move |socket| spdy::serve(tunnel::bridge(socket), target, max)));
    }
    if websocket {
        let encoding = ws::negotiate(&offered)?;
        ws::check_count(&ports, encoding, max)?;
        info!(namespace, pod, ?ports, transport = "WebSocket", "port-forward");
        let ws = websocket_upgrade(req, &state).await?;
        let ws = match encoding.name() {
            Some(name) => ws.protocols([name]),
            None => ws,
        };
        return Ok(ws.on_upgrade(move |socket| ws::serve(socket, encoding, ports, target)));
    }
    if !upgrade::is_spdy(&req) {
        return Err((
            StatusCode::BAD_REQUEST,
            "unable to upgrade: port-forward needs an Upgrade to SPDY/3.1 or websocket".into(),
        ));
    }
    let offered = upgrade::spdy_protocols(&req);
    if offered.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required".into(),
        ));
    }
    if !offered.iter().any(|p| p == PROTOCOL) {
        let message = format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [{PROTOCOL:?}]"
        );
        let mut refused = (StatusCode::FORBIDDEN, message).into_response();
        refused.headers_mut().insert(ACCEPTED_HEADER, HeaderValue::from_static(PROTOCOL));
        return Ok(refused);
    }
    info!(namespace, pod, transport = "SPDY", "port-forward");
    Ok(upgrade::spdy(&mut req, PROTOCOL, "port-forward", move |io| spdy::serve(io, target, max)))
}

/// Accepts the WebSocket, its messages (and frames) bounded per connection.
async fn websocket_upgrade(req: Request, state: &Arc<ServerState>) -> Result<WebSocketUpgrade, Failure> {
    let ws = WebSocketUpgrade::from_request(req, state)
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("unable to upgrade: {e}")))?;
    Ok(ws.max_message_size(WS_MAX_MESSAGE).max_frame_size(WS_MAX_MESSAGE))
}

/// The pod the connections of one session go to.
#[derive(Clone)]
pub(crate) struct Target {
    pods: Directory,
    namespace: String,
    name: String,
    uid: String,
    /// Where its ports are dialled (127.0.0.1 unless [`at`](Self::at) says otherwise).
    address: IpAddr,
}

impl Target {
    /// The pod as the kubelet finds it: 404 when it is not on this node (or `uid` is another
    /// pod's), 400 while no container of it runs.
    fn find(pods: &Directory, namespace: &str, name: &str, uid: Option<&str>) -> Result<Target, Failure> {
        let entry =
            pods.get(namespace, name).ok_or((StatusCode::NOT_FOUND, "pod does not exist".to_string()))?;
        let pod_uid = entry.pod.uid().unwrap_or_default();
        if uid.is_some_and(|uid| uid != pod_uid) {
            return Err((StatusCode::NOT_FOUND, "pod not found".into()));
        }
        if !entry.containers.values().any(|c| c.running) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("pod {namespace}/{name} has no running container"),
            ));
        }
        let address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Ok(Target {
            pods: pods.clone(),
            namespace: namespace.into(),
            name: name.into(),
            uid: pod_uid,
            address,
        })
    }

    /// The same pod, its ports dialled at `address`.
    fn at(self, address: IpAddr) -> Target {
        Target { address, ..self }
    }

    /// Before each forwarded connection: the same pod still runs here (a port may have passed
    /// to another pod since the session began).
    fn check(&self) -> Result<(), ForwardError> {
        match self.pods.get(&self.namespace, &self.name) {
            Some(entry)
                if entry.pod.metadata.uid.as_deref() == Some(self.uid.as_str())
                    && entry.containers.values().any(|c| c.running) =>
            {
                Ok(())
            }
            _ => Err(ForwardError::PodGone(format!("{}/{}", self.namespace, self.name))),
        }
    }

    /// What the error stream says when forwarding `port` failed, as the kubelet words it.
    fn failed(&self, port: u16, error: &ForwardError) -> String {
        format!("error forwarding port {port} to pod {}: {error}", self.uid)
    }
}
