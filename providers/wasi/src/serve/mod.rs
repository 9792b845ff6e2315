//! Serving a `wasi:http/proxy` artifact: HTTP/1.1 on the caller's listeners for the clients
//! the run's rules accept, a fresh instance from the artifact's one `ProxyPre` per request
//! (made ahead of it while the server is busy: `spare`), a concurrency cap, and a graceful
//! shutdown that stops accepting at once and cuts what is left after a grace.
//!
//! One server task owns the listeners and accepts; each connection and each request's
//! instance is a task on the server's tracker. Two tokens reach them all: `draining`
//! (finish the request in flight, keep no connection alive) and `cut` (end now), which
//! also fires when the server task itself is dropped, so a stopped or dropped handle
//! leaves nothing running.

mod connection;
mod instance;
mod lanes;
mod request;
mod spare;
mod stats;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use lanes::LANE_LEASE;
pub use stats::{HttpStats, HttpStatsSnapshot};

use crate::engines::HttpEngine;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::host::ProxyHost;
use crate::net::{Transport, Verdict, canonical};
use crate::output::{DRAIN_TIMEOUT, SharedOutput, Writer};
use crate::spec::{HttpLimits, RunSpec};
use crate::ticker::Ticker;
use crate::usage::Meter;
use instance::Template;

/// How many connections one served artifact keeps open at once, per request it may
/// run: idle keep-alive connections beyond this many get a 503 and are closed.
const CONNECTIONS_PER_REQUEST: usize = 4;
/// ... and never fewer than this many connections.
const MIN_CONNECTIONS: usize = 64;
/// After an accept error (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the [`RunHandle`](crate::RunHandle) keeps of a server: its shutdown signal and
/// its counters.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// When in-flight requests will be cut; `None` while serving.
    shutdown: Arc<watch::Sender<Option<Instant>>>,
    pub(crate) stats: Arc<HttpStats>,
}

impl Control {
    /// Stops accepting now and cuts what is left after `grace`. A second call can only
    /// bring the cut forward.
    pub(crate) fn shutdown(&self, grace: Duration) {
        let now = Instant::now();
        let cut = now.checked_add(grace).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        self.shutdown.send_modify(|at| *at = Some(at.map_or(cut, |earlier| earlier.min(cut))));
    }
}

/// Everything the connection and request tasks share.
pub(crate) struct Server {
    pub(crate) pre: ProxyPre<ProxyHost>,
    pub(crate) template: Template,
    pub(crate) limits: HttpLimits,
    pub(crate) stats: Arc<HttpStats>,
    pub(crate) digest: String,
    /// One permit per request allowed to run.
    pub(crate) slots: Arc<Semaphore>,
    /// One permit per connection allowed open.
    connections: Arc<Semaphore>,
    /// Bounds the requests starting or running their instance at once.
    pub(crate) lanes: lanes::Lanes,
    /// The instance made ahead of the next request.
    pub(crate) spare: spare::Spare,
    pub(crate) tracker: TaskTracker,
    pub(crate) draining: CancellationToken,
    pub(crate) cut: CancellationToken,
}

/// Starts serving `pre` on the spec's listeners (at least one) on `tokio`, with the
/// instances on `http`'s engine; returns the server task and its control. Every request's
/// instance is metered into `meter`; at most `http.lanes` of them start and compute at
/// once (see `lanes`).
pub(crate) fn start(
    tokio: &tokio::runtime::Handle,
    http: &HttpEngine,
    digest: &str,
    pre: ProxyPre<ProxyHost>,
    spec: RunSpec,
    meter: Meter,
) -> Result<(tokio::task::JoinHandle<ExitStatus>, Control)> {
    let (engine, ticker) = (&http.engine, Arc::clone(&http.ticker));
    if spec.listeners.is_empty() {
        return Err(Error::NoListener { digest: digest.to_owned() });
    }
    let _entered = tokio.enter();
    let listeners = spec.listeners.into_iter().map(async_listener).collect::<Result<Vec<_>>>()?;
    let (stdout, stdout_writer) = SharedOutput::spawn(spec.stdout);
    let (stderr, stderr_writer) = SharedOutput::spawn(spec.stderr);
    let template = Template {
        argv: spec.argv,
        env: spec.env,
        preopens: spec.preopens,
        network: spec.network,
        memory_limit: spec.memory_limit,
        max_handles: spec.max_handles,
        stdout,
        stderr,
        activity: ticker.activity(),
        meter,
    };
    // A preopen that cannot be opened would fail every request: fail here instead.
    template.store(engine, std::time::Instant::now())?;
    let outputs = [stdout_writer, stderr_writer];
    let limits = HttpLimits {
        request_timeout: spec.http.request_timeout.max(Duration::from_millis(1)),
        max_concurrent: spec.http.max_concurrent.max(1),
    };
    let max_connections = limits.max_concurrent.saturating_mul(CONNECTIONS_PER_REQUEST).max(MIN_CONNECTIONS);
    let stats = Arc::new(HttpStats::default());
    let server = Arc::new(Server {
        pre,
        template,
        limits,
        stats: Arc::clone(&stats),
        digest: digest.to_owned(),
        slots: Arc::new(Semaphore::new(limits.max_concurrent)),
        connections: Arc::new(Semaphore::new(max_connections)),
        lanes: lanes::Lanes::new(http.lanes),
        spare: spare::Spare::default(),
        tracker: TaskTracker::new(),
        draining: CancellationToken::new(),
        cut: CancellationToken::new(),
    });
    let (shutdown, requested) = watch::channel(None);
    let task = tokio.spawn(tracing::instrument::WithSubscriber::with_current_subscriber(
        tracing::Instrument::instrument(
            serve(server, listeners, requested, outputs, ticker),
            tracing::Span::current(),
        ),
    ));
    Ok((task, Control { shutdown: Arc::new(shutdown), stats }))
}

/// Turns a caller's listener into a tokio one; it must already be listening.
fn async_listener(listener: StdListener) -> Result<TcpListener> {
    let address = listener.local_addr().map_or_else(|err| format!("(no address: {err})"), |a| a.to_string());
    let failed = |source| Error::Listener { address: address.clone(), source };
    listener.set_nonblocking(true).map_err(failed)?;
    TcpListener::from_std(listener).map_err(failed)
}

/// The server task: accept until shut down, close the listeners, let the requests in
/// flight finish until the deadline, cut the rest, flush the guest output.
async fn serve(
    server: Arc<Server>,
    listeners: Vec<TcpListener>,
    mut shutdown: watch::Receiver<Option<Instant>>,
    outputs: [Writer; 2],
    _ticker: Arc<Ticker>,
) -> ExitStatus {
    // Dropping this task (a stop, or a dropped handle) ends every request at once.
    let _cut_when_dropped = server.cut.clone().drop_guard();
    let addresses: Vec<_> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    tracing::info!(digest = %server.digest, ?addresses, "serving wasi:http");
    tokio::select! {
        () = accept(&server, &listeners) => {}
        _ = shutdown.wait_for(Option::is_some) => {}
    }
    drop(listeners);
    server.draining.cancel();
    server.tracker.close();
    loop {
        let Some(cut_at) = *shutdown.borrow_and_update() else { break };
        tokio::select! {
            () = server.tracker.wait() => break,
            () = tokio::time::sleep_until(cut_at) => break,
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
    let cut = !server.tracker.is_empty();
    server.cut.cancel();
    server.tracker.wait().await;
    // Its store holds the guest's output: dropped before the output is drained.
    server.spare.clear();
    tracing::info!(digest = %server.digest, cut_in_flight = cut, "stopped serving wasi:http");
    drop(server);
    for output in outputs {
        output.drain(DRAIN_TIMEOUT).await;
    }
    ExitStatus::Stopped
}

/// Accepts on every listener, forever; each connection the rules accept becomes a task.
async fn accept(server: &Arc<Server>, listeners: &[TcpListener]) {
    let ports: Vec<_> = listeners.iter().map(|l| l.local_addr().ok().map(|addr| addr.port())).collect();
    loop {
        let (accepted, index) = std::future::poll_fn(|cx| {
            for (index, listener) in listeners.iter().enumerate() {
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    return Poll::Ready((accepted, index));
                }
            }
            Poll::Pending
        })
        .await;
        match accepted {
            Ok((stream, peer)) => match judge(server, ports[index], peer) {
                Verdict::Allow => admit(server, stream),
                Verdict::Deny | Verdict::InUse => refuse_peer(server, stream, peer),
            },
            Err(err) => {
                let address = listeners[index].local_addr().ok();
                tracing::warn!(%err, ?address, "accept failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What the run's rules say about a client `peer` (IPv4-mapped addresses mapped first)
/// that connected to `port`.
fn judge(server: &Server, port: Option<u16>, peer: SocketAddr) -> Verdict {
    server.template.network.rules.accept(Transport::Tcp, port, canonical(peer))
}

/// Closes a refused client's connection at once, with a reset: no response, no instance.
fn refuse_peer(server: &Server, stream: TcpStream, peer: SocketAddr) {
    HttpStats::count(&server.stats.refused);
    tracing::debug!(digest = %server.digest, %peer, "connection refused by the run's rules");
    // A zero linger makes the close a reset; it never blocks.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Serves a new connection, or answers 503 and closes it when too many are open.
fn admit(server: &Arc<Server>, stream: TcpStream) {
    match Arc::clone(&server.connections).try_acquire_owned() {
        Ok(permit) => server.tracker.spawn(connection::serve(Arc::clone(server), stream, permit)),
        Err(_) => {
            HttpStats::count(&server.stats.over_capacity);
            server.tracker.spawn(connection::refuse(Arc::clone(server), stream))
        }
    };
}
