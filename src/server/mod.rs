//! The kubelet API: HTTPS on `--addr:--port` for the API server (logs, exec, port-forward, pods), with
//! client-certificate authentication and SubjectAccessReview authorization, and plain
//! `/healthz` on 127.0.0.1:`--healthz-port`.

mod accept;
mod activity;
pub mod authz;
mod channels;
mod conn;
#[cfg(test)]
mod conn_tests;
pub mod endpoint;
mod exec;
mod inbound;
mod logs;
mod names;
mod portforward;
pub mod remotecommand;
mod spdy;
mod stats;
pub mod tls;
mod upgrade;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::ApiLimits;
use crate::pods::directory::Directory;
use tls::{Authenticator, Identity};

/// What the handlers share.
pub struct ServerState {
    pub node_name: String,
    pub authn: Authenticator,
    pub authz: authz::Authorizer,
    pub pods: Directory,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub logs: crate::logs::LogRegistry,
    /// Standalone: clients on loopback need no certificate (`--allow-anonymous-localhost`).
    pub allow_anonymous_localhost: bool,
    /// Timeouts and connection caps (`--api-*`).
    pub limits: ApiLimits,
    /// The last CPU readings, for `/stats/summary`'s rates.
    pub cpu_rates: stats::CpuRates,
    /// Where port-forward dials a pod's port: loopback, or `--pod-listen-address` when
    /// pods listen on that one address ([`crate::network::dial_address`]).
    pub pod_address: std::net::IpAddr,
}

/// The caller of one connection: who its certificate says it is, or why it is nobody.
#[derive(Clone)]
struct Caller(Result<Identity, String>, std::net::SocketAddr);

/// Serves the kubelet API on `listener` until `shutdown` fires, within `state.limits`.
pub async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<ServerState>,
    shutdown: broadcast::Receiver<()>,
) {
    let limits = state.limits;
    let shared = Arc::new(conn::Shared::new(
        TlsAcceptor::from(tls),
        router(state.clone()),
        state.authn.clone(),
        limits,
    ));
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), ?limits, "kubelet API listening");
    accept::run(listener, limits.max_connections, shutdown, |tcp, peer, slot| {
        // Exec and log streams are many small writes: send each at once, as Go's net
        // package (and so the kubelet) does by default, instead of waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(conn::serve(shared.clone(), tcp, peer, slot));
    })
    .await;
    info!("kubelet API stopped");
}

fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(stats::resource))
        .route("/stats/summary", get(stats::summary))
        .route("/exec/{namespace}/{pod}/{container}", get(exec::exec).post(exec::exec))
        .route("/attach/{namespace}/{pod}/{container}", get(exec::attach).post(exec::attach))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs::container_logs))
        .route(
            "/portForward/{namespace}/{pod}",
            get(portforward::port_forward).post(portforward::port_forward),
        )
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            get(portforward::port_forward_uid).post(portforward::port_forward_uid),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Authentication (401), then authorization by SubjectAccessReview (403).
async fn guard(State(state): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let identity = match req.extensions().get::<Caller>().cloned() {
        Some(Caller(Ok(id), _)) => id,
        Some(Caller(Err(_), peer)) if state.allow_anonymous_localhost && peer.ip().is_loopback() => {
            return match names::check_raw_path(req.uri().path()) {
                Ok(()) => next.run(req).await,
                Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            };
        }
        Some(Caller(Err(why), _)) => {
            debug!(path = %req.uri().path(), %why, "unauthenticated request");
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
        None => return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
    };
    let attrs = authz::attributes(req.method(), req.uri().path());
    match state.authz.allowed(&identity, &attrs).await {
        Ok(true) => match names::check_raw_path(req.uri().path()) {
            Ok(()) => next.run(req).await,
            Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
        },
        Ok(false) => {
            let msg = format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                identity.user, attrs.verb, attrs.subresource
            );
            (StatusCode::FORBIDDEN, msg).into_response()
        }
        Err(e) => {
            warn!(error = %e, "SubjectAccessReview failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("authorization failed: {e}")).into_response()
        }
    }
}

/// `/pods`: the PodList of this node's pods, as the kubelet serves it.
async fn pods(State(state): State<Arc<ServerState>>) -> Response {
    let items: Vec<_> =
        state.pods.pods().iter().map(|p| serde_json::to_value(p.as_ref()).unwrap_or_default()).collect();
    let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    axum::Json(list).into_response()
}

/// `/metrics`: Prometheus text.
async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let (pods, containers) = state.pods.running_counts();
    let body = state.metrics.render(pods, containers);
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Plain-HTTP `/healthz` for local probes, as the kubelet's 10248.
pub async fn run_healthz(listener: TcpListener, mut shutdown: broadcast::Receiver<()>) {
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let stop = async move {
        let _ = shutdown.recv().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        warn!(error = %e, "healthz server failed");
    }
}
