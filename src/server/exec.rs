//! `/exec/{ns}/{pod}/{container}`: runs a new instance of the container's module (its
//! image, env and mounts) with argv = `command`, wired to the client's streams over
//! WebSocket (v5/v4 channels) or SPDY/3.1; the exit code goes back on the error channel
//! so `kubectl exec` exits with it. Closing the client stops the instance.
//! `/attach/{ns}/{pod}/{container}`: the same protocols, streaming what the running
//! container writes from now on until its run ends or the client leaves.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use super::remotecommand::{self, Session, Wanted};
use super::{ServerState, names, upgrade};
use crate::logs::LogRegistry;
use crate::pods::directory::{ContainerEntry, PodEntry};

type Failure = (StatusCode, String);

pub async fn exec(
    State(state): State<Arc<ServerState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    match prepare(&state, &ns, &pod, &container, req, false).await {
        Ok(r) => r,
        Err((code, msg)) => (code, msg).into_response(),
    }
}

pub async fn attach(
    State(state): State<Arc<ServerState>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    match prepare(&state, &ns, &pod, &container, req, true).await {
        Ok(r) => r,
        Err((code, msg)) => (code, msg).into_response(),
    }
}

/// What a session does once its streams are up.
#[derive(Clone)]
enum Action {
    /// A new instance with this argv.
    Exec(Vec<String>),
    /// The running container's output, from this log file's end; its stdin, if it reads
    /// one, and whether that closes when this client's input ends (`stdinOnce`).
    Attach(LogRegistry, std::path::PathBuf, bool),
}

async fn serve(session: Session, entry: ContainerEntry, action: Action) {
    match action {
        Action::Exec(argv) => run(session, entry, argv).await,
        Action::Attach(logs, path, once) => attach_output(session, logs, path, entry.stdin, once).await,
    }
}

async fn prepare(
    state: &Arc<ServerState>,
    ns: &str,
    pod: &str,
    container: &str,
    mut req: Request,
    attach: bool,
) -> Result<Response, Failure> {
    names::check_names(ns, pod, container)?;
    let query = req.uri().query().unwrap_or("").to_string();
    let argv: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.into_owned())
        .collect();
    if argv.is_empty() && !attach {
        return Err((StatusCode::BAD_REQUEST, "you must specify at least one command".into()));
    }
    let (pod_entry, entry) = target(state, ns, pod, container)?;
    let wanted = Wanted::from_query(&query);
    let action = if attach {
        let path = crate::logs::container_log(&pod_entry.log_dir, container, entry.run);
        info!(namespace = ns, pod, container, "attach");
        let spec = pod_entry.pod.spec.as_ref();
        let c = spec.and_then(|s| s.containers.iter().find(|c| c.name == container));
        Action::Attach(state.logs.clone(), path, c.and_then(|c| c.stdin_once).unwrap_or(false))
    } else {
        // A command line may carry a password: its words are logged at debug level only.
        info!(namespace = ns, pod, container, args = argv.len(), "exec");
        debug!(namespace = ns, pod, container, ?argv, "exec command");
        Action::Exec(argv)
    };
    if upgrade::is_websocket(&req) {
        let offered = upgrade::ws_protocols(&req);
        let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
        let protocol = remotecommand::negotiate_ws(&offered).ok_or((
            StatusCode::BAD_REQUEST,
            format!("no supported WebSocket subprotocol among {offered:?} (want v5.channel.k8s.io or v4.channel.k8s.io)"),
        ))?;
        let ws = WebSocketUpgrade::from_request(req, state)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        // A message is held whole until it is read: bound it (and its frames) per connection.
        let ws = ws
            .protocols([protocol.name()])
            .max_message_size(remotecommand::WS_MAX_MESSAGE)
            .max_frame_size(remotecommand::WS_MAX_MESSAGE);
        return Ok(ws.on_upgrade(move |socket| async move {
            match remotecommand::ws_session(socket, protocol, wanted).await {
                Ok(session) => serve(session, entry, action).await,
                Err(e) => debug!(error = %e, "exec WebSocket session failed"),
            }
        }));
    }
    if !upgrade::is_spdy(&req) {
        return Err((StatusCode::BAD_REQUEST, "exec needs an Upgrade to SPDY/3.1 or websocket".into()));
    }
    let offered = upgrade::spdy_protocols(&req);
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let protocol = remotecommand::negotiate_spdy(&offered).ok_or((
        StatusCode::FORBIDDEN,
        format!("no supported X-Stream-Protocol-Version among {offered:?}"),
    ))?;
    Ok(upgrade::spdy(&mut req, protocol.name(), "exec", move |io| async move {
        match remotecommand::spdy_session(io, protocol, wanted).await {
            Ok(session) => serve(session, entry, action).await,
            Err(e) => debug!(error = %e, "exec SPDY session failed"),
        }
    }))
}

/// The running container to exec into (and its pod), or the kubelet-like error.
fn target(
    state: &ServerState,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<(PodEntry, ContainerEntry), Failure> {
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
    Ok((entry, c))
}

/// Streams the container's output from now until its run ends (its log's writer goes)
/// or the client leaves. stdout and stderr arrive merged on stdout, as with a tty.
/// A client's stdin (`kubectl attach -i`) goes to the guest's stdin when the container
/// has `stdin: true` (with `stdinOnce`, the guest's stdin ends when this input ends), and
/// is read and dropped otherwise.
async fn attach_output(
    mut session: Session,
    logs: LogRegistry,
    path: std::path::PathBuf,
    guest_stdin: Option<crate::pods::directory::StdinWriter>,
    once: bool,
) {
    drop(session.resize.take());
    let options = crate::logs::LogOptions { follow: true, tail_lines: Some(0), ..Default::default() };
    let mut stream = match crate::logs::stream(&logs, &path, options).await {
        Ok(s) => s,
        Err(e) => return session.finish(Err(crate::base::error::chain(&e))).await,
    };
    // Input goes to the guest only once its output is followed: nothing it answers is missed.
    if let Some(mut input) = session.stdin.take() {
        tokio::spawn(async move {
            let Some(writer) = guest_stdin else {
                return tokio::io::copy(&mut input, &mut tokio::io::sink()).await.map(|_| ());
            };
            let mut slot = writer.lock().await;
            let copied = match slot.as_mut() {
                Some(w) => tokio::io::copy(&mut input, w).await.map(|_| ()),
                None => Ok(()),
            };
            if once {
                // Dropping the writer is the guest's end of file.
                slot.take();
            }
            copied
        });
    }
    let Some(mut out) = session.stdout.take() else {
        return session.finish(Err("attach needs stdout (kubectl attach asks for it)".into())).await;
    };
    let closed = session.closed.clone();
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    if out.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => return session.finish(Err(crate::base::error::chain(&e))).await,
                None => break,
            },
            _ = closed.cancelled() => return,
        }
    }
    let _ = out.shutdown().await;
    drop(out);
    session.finish(Ok(0)).await;
}

/// Runs the instance until it exits (reporting its code) or the client goes away (stop it).
async fn run(mut session: Session, entry: ContainerEntry, argv: Vec<String>) {
    // Wasm guests have no terminal: resizes are read and dropped, so they never back up the
    // connection (a receiver left undrained would stop its reader, stdin included).
    drop(session.resize.take());
    let stdout = session.stdout.take().unwrap_or_else(|| Box::new(tokio::io::sink()));
    let stderr = session.stderr.take().unwrap_or_else(|| Box::new(tokio::io::sink()));
    let mut running = match entry.start_instance(argv, session.stdin.take(), stdout, stderr) {
        Ok(r) => r,
        Err(e) => return session.finish(Err(crate::base::error::chain(&e))).await,
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
            stop(std::time::Duration::ZERO);
        }
    }
}
