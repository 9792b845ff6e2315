//! Port-forward over SPDY (`portforward.k8s.io`), as the kubelet serves it: for each
//! connection it forwards, the client opens an error stream and a data stream (headers
//! `streamType`, `port`, `requestID`), paired by `requestID`; pairs come and go, many at once,
//! for as long as the session lasts. A stream without a valid `port` or `streamType` is
//! refused (RST_STREAM). A pair whose second stream does not come within
//! [`STREAM_CREATION_TIMEOUT`], a duplicate, and a connection past the session's cap get a
//! message on their error stream and are closed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use super::Target;
use super::forward::forward;
use crate::server::spdy::{Connection, Decision, Headers, Limits, Stream};

/// How long the second stream of a pair may take after the first (the kubelet's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// What one data stream holds from the client that the pod has not read: the SPDY initial
/// window, so a client that keeps to flow control never fills it; past it (client-go sends
/// without regard to windows) the connection is not read until the pod reads.
const DATA_BUFFER: usize = 64 * 1024;

/// The role of a stream, from its `streamType` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

impl Kind {
    fn of(headers: &Headers) -> Option<Kind> {
        match headers.get("streamtype")? {
            "error" => Some(Kind::Error),
            "data" => Some(Kind::Data),
            _ => None,
        }
    }
}

/// The `port` header, as the kubelet checks it: a number from 1 to 65535.
fn port(headers: &Headers) -> Result<u16, String> {
    let raw = headers.get("port").ok_or("\"port\" header is required")?;
    match raw.parse::<u16>() {
        Ok(0) => Err(format!("port {raw:?} must be > 0")),
        Ok(port) => Ok(port),
        Err(e) => Err(format!("unable to parse {raw:?} as a port: {e}")),
    }
}

/// Whether a new stream is taken, as the kubelet decides: a valid port and stream type.
fn decide(id: u32, headers: &Headers) -> Decision {
    let checked =
        port(headers).and_then(|_| Kind::of(headers).ok_or_else(|| "invalid stream type".to_string()));
    match checked {
        // The client only reads the error stream (client-go closes its side at once).
        Ok(Kind::Error) => Decision::Accept { inbound: None, outbound: true },
        Ok(Kind::Data) => Decision::Accept { inbound: Some(DATA_BUFFER), outbound: true },
        Err(why) => {
            debug!(id, %why, "refusing a port-forward stream");
            Decision::Refuse
        }
    }
}

/// The request a stream belongs to: its `requestID`, or for clients too old to send one, the
/// kubelet's guess (an error stream's id, a data stream's id minus two).
fn request_id(stream: &Stream, kind: Kind) -> String {
    match stream.headers.get("requestid") {
        Some(id) => id.to_string(),
        None if kind == Kind::Error => stream.id.to_string(),
        None => stream.id.saturating_sub(2).to_string(),
    }
}

/// A pair waiting for its other stream.
struct Pending {
    error: Option<Stream>,
    data: Option<Stream>,
    deadline: Instant,
}

/// Serves a port-forward session on an upgraded connection until the client goes away,
/// forwarding at most `max` connections at once.
pub async fn serve<IO>(io: IO, target: Target, max: usize)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Two streams per connection, and room for those being refused.
    let limits = Limits { max_streams: max.saturating_mul(2).saturating_add(16) };
    let Connection { mut accepted, closed, link } = match Connection::start(io, limits, decide) {
        Ok(conn) => conn,
        Err(e) => return debug!(error = %e, "port-forward SPDY session failed"),
    };
    let mut session =
        Session { target, max, pending: HashMap::new(), refused: VecDeque::new(), forwards: JoinSet::new() };
    loop {
        let deadline = session.pending.values().map(|p| p.deadline).min();
        tokio::select! {
            _ = closed.cancelled() => break,
            stream = accepted.recv() => match stream {
                Some(stream) => session.add(stream).await,
                None => break,
            },
            Some(_) = session.forwards.join_next(), if !session.forwards.is_empty() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                session.expire().await;
            }
        }
    }
    session.forwards.abort_all();
    link.close().await;
}

/// The pairs of one session.
struct Session {
    target: Target,
    max: usize,
    pending: HashMap<String, Pending>,
    /// Requests refused for the cap, so their second stream is refused too (the last few).
    refused: VecDeque<String>,
    forwards: JoinSet<()>,
}

impl Session {
    async fn add(&mut self, stream: Stream) {
        let Some(kind) = Kind::of(&stream.headers) else { return close(stream).await };
        let id = request_id(&stream, kind);
        if let Some(pending) = self.pending.get_mut(&id) {
            let slot = match kind {
                Kind::Error => &mut pending.error,
                Kind::Data => &mut pending.data,
            };
            if slot.is_some() {
                let message =
                    format!("error processing stream for request {id}: {kind:?} stream already assigned");
                say(pending.error.as_mut(), &message).await;
                return close(stream).await;
            }
            *slot = Some(stream);
            if let Some(Pending { error: Some(error), data: Some(data), .. }) = self.pending.remove(&id) {
                self.forwards.spawn(run_pair(self.target.clone(), error, data));
            }
            return;
        }
        if self.refused.contains(&id) {
            return close(stream).await;
        }
        if self.pending.len() + self.forwards.len() >= self.max {
            let message = format!(
                "too many forwarded connections in this session (at most {}, --port-forward-max-connections); \
                 close some or start another kubectl port-forward",
                self.max
            );
            let mut stream = stream;
            if kind == Kind::Error {
                say(Some(&mut stream), &message).await;
            }
            if self.refused.len() >= self.max {
                self.refused.pop_front();
            }
            self.refused.push_back(id);
            return close(stream).await;
        }
        let deadline = Instant::now() + STREAM_CREATION_TIMEOUT;
        let (error, data) = match kind {
            Kind::Error => (Some(stream), None),
            Kind::Data => (None, Some(stream)),
        };
        self.pending.insert(id, Pending { error, data, deadline });
    }

    /// Closes the pairs whose second stream did not come in time, saying so.
    async fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| id.clone()).collect();
        for id in late {
            let Some(mut pending) = self.pending.remove(&id) else { continue };
            say(pending.error.as_mut(), &format!("request {id}: timed out waiting for streams")).await;
            for stream in [pending.error, pending.data].into_iter().flatten() {
                close(stream).await;
            }
        }
    }
}

/// Forwards one connection; on failure, says why on its error stream. Both streams end.
async fn run_pair(target: Target, mut error: Stream, data: Stream) {
    let Ok(port) = port(&data.headers) else { return };
    let (Some(mut from_client), Some(mut to_client)) = (data.inbound, data.outbound) else { return };
    let result = forward(&target, port, &mut from_client, &mut to_client).await;
    let _ = to_client.shutdown().await;
    drop(from_client);
    if let Err(e) = result {
        debug!(port, error = %e, "port-forward connection failed");
        say(Some(&mut error), &target.failed(port, &e)).await;
    }
    close(error).await;
}

/// Writes `message` on a stream's outbound end, if there is one.
async fn say(stream: Option<&mut Stream>, message: &str) {
    if let Some(out) = stream.and_then(|s| s.outbound.as_mut()) {
        let _ = out.write_all(message.as_bytes()).await;
    }
}

/// Ends this side of a stream (FIN) and drops what the client sends on it.
async fn close(stream: Stream) {
    if let Some(mut out) = stream.outbound {
        let _ = out.shutdown().await;
    }
}
