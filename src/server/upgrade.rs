//! HTTP upgrades of the kubelet API's streaming endpoints (exec, port-forward): reading the
//! headers that negotiate them, and answering a SPDY/3.1 upgrade with `101 Switching
//! Protocols` while the upgraded connection goes to a task.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::spdy::{PROTOCOL_HEADER, SPDY_UPGRADE};

/// Every value of a header, split at commas, trimmed, empty ones left out.
pub fn header_values(req: &Request, name: impl header::AsHeaderName) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Whether a header holds `token` (case-insensitive), as one of its comma-separated values.
pub fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    header_values(req, &name).iter().any(|v| v.eq_ignore_ascii_case(token))
}

/// Whether the request asks for a WebSocket.
pub fn is_websocket(req: &Request) -> bool {
    header_has(req, header::UPGRADE, "websocket")
}

/// Whether the request asks for SPDY/3.1.
pub fn is_spdy(req: &Request) -> bool {
    header_has(req, header::UPGRADE, SPDY_UPGRADE)
}

/// The WebSocket subprotocols the client offers.
pub fn ws_protocols(req: &Request) -> Vec<String> {
    header_values(req, &header::SEC_WEBSOCKET_PROTOCOL)
}

/// The SPDY protocol versions the client offers (`X-Stream-Protocol-Version`).
pub fn spdy_protocols(req: &Request) -> Vec<String> {
    header_values(req, PROTOCOL_HEADER)
}

/// Answers a SPDY/3.1 upgrade with 101 naming `protocol`, and runs `serve` on the upgraded
/// connection once hyper hands it over (`what` names the endpoint in the log if it does not).
pub fn spdy<F>(
    req: &mut Request,
    protocol: &str,
    what: &'static str,
    serve: impl FnOnce(TokioIo<Upgraded>) -> F + Send + 'static,
) -> Response
where
    F: Future<Output = ()> + Send + 'static,
{
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(u) => serve(TokioIo::new(u)).await,
            Err(e) => debug!(error = %e, what, "SPDY upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert(PROTOCOL_HEADER, v);
    }
    resp
}
