//! The kubelet API: HTTPS on `--addr:--port` for the API server (logs, exec, pods), with
//! client-certificate authentication and SubjectAccessReview authorization, and plain
//! `/healthz` on 127.0.0.1:`--healthz-port`.

pub mod authz;
pub mod endpoint;
mod exec;
mod logs;
mod names;
pub mod remotecommand;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::pods::directory::Directory;
use tls::{Authenticator, Identity};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// The caller of one connection: who its certificate says it is, or why it is nobody.
#[derive(Clone)]
struct Caller(Result<Identity, String>, std::net::SocketAddr);

/// Serves the kubelet API on `listener` until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<ServerState>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(state.clone());
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "kubelet API listening");
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed");
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        // Exec and log streams are many small writes: send each at once, as Go's net
        // package (and so the kubelet) does by default, instead of waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, authn) = (acceptor.clone(), app.clone(), state.authn.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let certs: Vec<_> = (tls.get_ref().1.peer_certificates().into_iter().flatten())
                .map(|c| c.clone().into_owned())
                .collect();
            let caller = Caller(authn.authenticate(&certs), peer);
            let svc = app.map_request(move |req: http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(caller.clone());
                req
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc))
                .with_upgrades();
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    info!("kubelet API stopped");
}

fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/exec/{namespace}/{pod}/{container}", get(exec::exec).post(exec::exec))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs::container_logs))
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
