//! `/exec/{ns}/{pod}/{container}`: runs a new instance of the container's module (its
//! image, env and mounts) with argv = `command`, wired to the client's streams over
//! WebSocket (v5/v4 channels) or SPDY/3.1; the exit code goes back on the error channel
//! so `kubectl exec` exits with it. Closing the client stops the instance.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use super::remotecommand::{self, PROTOCOL_HEADER, SPDY_UPGRADE, Session, Wanted};
use super::{ServerState, names};
use crate::pods::directory::ContainerEntry;
use crate::pods::runtime::ContainerRun;

type Failure = (StatusCode, String);

pub async fn exec(
    State(state): State<Arc<ServerState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    match prepare(&state, &ns, &pod, &container, req).await {
        Ok(r) => r,
        Err((code, msg)) => (code, msg).into_response(),
    }
}

async fn prepare(
    state: &Arc<ServerState>,
    ns: &str,
    pod: &str,
    container: &str,
    mut req: Request,
) -> Result<Response, Failure> {
    names::check_names(ns, pod, container)?;
    let query = req.uri().query().unwrap_or("").to_string();
    let argv: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.into_owned())
        .collect();
    if argv.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "you must specify at least one command".into()));
    }
    let entry = target(state, ns, pod, container)?;
    let wanted = Wanted::from_query(&query);
    info!(namespace = ns, pod, container, ?argv, "exec");
    let is_ws = header_has(&req, header::UPGRADE, "websocket");
    if is_ws {
        let offered: Vec<String> = header_values(&req, &header::SEC_WEBSOCKET_PROTOCOL);
        let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
        let protocol = remotecommand::negotiate_ws(&offered).ok_or((
            StatusCode::BAD_REQUEST,
            format!("no supported WebSocket subprotocol among {offered:?} (want v5.channel.k8s.io or v4.channel.k8s.io)"),
        ))?;
        let ws = WebSocketUpgrade::from_request(req, state)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let ws = ws.protocols([protocol.name()]);
        return Ok(ws.on_upgrade(move |socket| async move {
            match remotecommand::ws_session(socket, protocol, wanted).await {
                Ok(session) => run(session, entry, argv).await,
                Err(e) => debug!(error = %e, "exec WebSocket session failed"),
            }
        }));
    }
    if !header_has(&req, header::UPGRADE, "spdy/3.1") {
        return Err((StatusCode::BAD_REQUEST, "exec needs an Upgrade to SPDY/3.1 or websocket".into()));
    }
    let offered = header_values(&req, PROTOCOL_HEADER);
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let protocol = remotecommand::negotiate_spdy(&offered).ok_or((
        StatusCode::FORBIDDEN,
        format!("no supported X-Stream-Protocol-Version among {offered:?}"),
    ))?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => return debug!(error = %e, "exec upgrade failed"),
        };
        match remotecommand::spdy_session(io, protocol, wanted).await {
            Ok(session) => run(session, entry, argv).await,
            Err(e) => debug!(error = %e, "exec SPDY session failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    if let Ok(v) = HeaderValue::from_str(protocol.name()) {
        h.insert(PROTOCOL_HEADER, v);
    }
    Ok(resp)
}

/// The running container to exec into, or the kubelet-like error.
fn target(state: &ServerState, ns: &str, pod: &str, container: &str) -> Result<ContainerEntry, Failure> {
    let entry = state
        .pods
        .get(ns, pod)
        .ok_or((StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found on this node")))?;
    let c = entry
        .containers
        .get(container)
        .cloned()
        .ok_or((StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {ns}/{pod}")))?;
    if !c.running || c.exec.is_none() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {ns}/{pod} is not running"),
        ));
    }
    Ok(c)
}

/// Runs the instance until it exits (reporting its code) or the client goes away (stop it).
async fn run(mut session: Session, entry: ContainerEntry, argv: Vec<String>) {
    let Some(start) = entry.exec.clone() else {
        return session.finish(Err("container is not running".into())).await;
    };
    let run = ContainerRun {
        argv,
        env: entry.env,
        mounts: entry.mounts,
        stdin: session.stdin.take(),
        stdout: session.stdout.take().unwrap_or_else(|| Box::new(tokio::io::sink())),
        stderr: session.stderr.take().unwrap_or_else(|| Box::new(tokio::io::sink())),
        memory_limit: entry.memory_limit,
    };
    let mut running = match start(run) {
        Ok(r) => r,
        Err(message) => return session.finish(Err(message)).await,
    };
    let stop = running.stopper();
    let closed = session.closed.clone();
    tokio::select! {
        exit = running.wait() => {
            debug!(code = exit.code, "exec instance exited");
            session.finish(Ok(exit.code)).await;
        }
        _ = closed.cancelled() => {
            debug!("exec client went away; stopping the instance");
            stop();
        }
    }
}

fn header_values(req: &Request, name: impl header::AsHeaderName) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    header_values(req, &name).iter().any(|v| v.eq_ignore_ascii_case(token))
}
