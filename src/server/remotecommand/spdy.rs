//! Remote command over SPDY/3.1, the transport kubectl used before WebSocket (and the one the
//! API server still uses towards kubelets): after the HTTP upgrade the client opens one stream
//! per role (`streamtype` header: error, stdin, stdout, stderr, resize), each accepted once;
//! once every expected stream is there they are handed over as a [`Session`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::session::Finisher;
use super::{Protocol, RemoteCommandError, Session, Wanted, resize};
use crate::server::spdy::{self, Connection, Decision, FinHandle, Limits, Link, OutStream, Stream};

/// How long the client has to open its streams after the upgrade (the kubelet's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `finish` waits for the client to read the end and close the connection.
const FINISH_GRACE: Duration = Duration::from_secs(5);
/// The most stdin (or the resize stream) holds that the command has not read: past it the
/// connection is not read until the command reads.
const INBOUND_BUFFER: usize = 1 << 20;

/// The role a client stream plays, from its `streamtype` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Kind {
    fn parse(streamtype: &str) -> Option<Kind> {
        Some(match streamtype {
            "error" => Kind::Error,
            "stdin" => Kind::Stdin,
            "stdout" => Kind::Stdout,
            "stderr" => Kind::Stderr,
            "resize" => Kind::Resize,
            _ => return None,
        })
    }

    /// Whether the client writes on it (else this side does).
    fn inbound(self) -> bool {
        matches!(self, Kind::Stdin | Kind::Resize)
    }
}

/// Runs a SPDY exec session on an upgraded connection: accepts the client's streams, waits (up
/// to [`STREAM_CREATION_TIMEOUT`]) until every stream `wanted` implies is open, and returns
/// them as a [`Session`]. The connection is served by two tasks until [`Session::finish`].
pub async fn spdy_session<IO>(
    io: IO,
    protocol: Protocol,
    wanted: Wanted,
) -> Result<Session, RemoteCommandError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    open(io, protocol, wanted, STREAM_CREATION_TIMEOUT).await
}

pub(super) async fn open<IO>(
    io: IO,
    protocol: Protocol,
    wanted: Wanted,
    timeout: Duration,
) -> Result<Session, RemoteCommandError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let wanted = wanted.normalized();
    let expected = expected(protocol, wanted);
    // Each known kind once; an unknown or repeated one is refused.
    let mut seen = HashSet::new();
    let decide = move |id: u32, headers: &spdy::Headers| {
        let streamtype = headers.get("streamtype");
        match streamtype.and_then(Kind::parse) {
            Some(kind) if seen.insert(kind) => Decision::Accept {
                inbound: kind.inbound().then_some(INBOUND_BUFFER),
                outbound: !kind.inbound(),
            },
            _ => {
                debug!(id, ?streamtype, "refusing an unknown or duplicate exec stream");
                Decision::Refuse
            }
        }
    };
    let limits = Limits { max_streams: 8 };
    let Connection { mut accepted, closed, link } =
        Connection::start(io, limits, decide).map_err(|e| RemoteCommandError::Compression(e.to_string()))?;

    let mut streams: HashMap<Kind, Stream> = HashMap::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while let Some(missing) = missing(&expected, &streams) {
        tokio::select! {
            next = accepted.recv() => match next {
                Some(stream) => {
                    if let Some(kind) = stream.headers.get("streamtype").and_then(Kind::parse) {
                        streams.insert(kind, stream);
                    }
                }
                None => return Err(RemoteCommandError::ClosedBeforeStreams { missing }),
            },
            _ = &mut deadline => return Err(RemoteCommandError::StreamsTimedOut { timeout, missing }),
        }
    }
    // Streams opened later are refused: nobody takes them.
    drop(accepted);

    let mut out = |kind| streams.remove(&kind).and_then(|s| s.outbound);
    let error =
        out(Kind::Error).ok_or(RemoteCommandError::ClosedBeforeStreams { missing: "error".into() })?;
    let stdout = out(Kind::Stdout).filter(|_| wanted.stdout);
    let stderr = out(Kind::Stderr).filter(|_| wanted.stderr);
    let mut inbound = |kind| streams.remove(&kind).and_then(|s| s.inbound);
    let stdin = inbound(Kind::Stdin).filter(|_| wanted.stdin);
    let resize = inbound(Kind::Resize).filter(|_| wanted.tty);
    let outputs = stdout.iter().chain(&stderr).map(OutStream::fin_handle).collect();
    Ok(Session {
        protocol,
        stdin: stdin.map(|r| Box::new(r) as _),
        stdout: stdout.map(|w| Box::new(w) as _),
        stderr: stderr.map(|w| Box::new(w) as _),
        resize: resize.map(resize::resize_events),
        closed: closed.clone(),
        finish: Box::new(Finish { error, outputs, closed, link }),
    })
}

/// The streams a client opens for what was asked: error always, resize with a tty from v3 on.
fn expected(protocol: Protocol, wanted: Wanted) -> Vec<Kind> {
    let mut kinds = vec![Kind::Error];
    let asked = [
        (wanted.stdin, Kind::Stdin),
        (wanted.stdout, Kind::Stdout),
        (wanted.stderr, Kind::Stderr),
        (wanted.tty && protocol.spdy_resize(), Kind::Resize),
    ];
    kinds.extend(asked.into_iter().filter(|(yes, _)| *yes).map(|(_, kind)| kind));
    kinds
}

/// The expected streams not open yet, named for an error message; `None` when all are there.
fn missing(expected: &[Kind], streams: &HashMap<Kind, Stream>) -> Option<String> {
    let missing: Vec<String> = expected
        .iter()
        .filter(|k| !streams.contains_key(k))
        .map(|k| format!("{k:?}").to_lowercase())
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// How a SPDY session ends.
pub(super) struct Finish {
    error: OutStream,
    outputs: Vec<FinHandle>,
    closed: tokio_util::sync::CancellationToken,
    link: Link,
}

impl Finisher for Finish {
    fn finish(self: Box<Self>, status: Vec<u8>) -> BoxFuture<'static, ()> {
        Box::pin(Finish::finish(*self, status))
    }
}

impl Finish {
    /// Ends stdout and stderr, writes the status on the error stream and ends it, waits for the
    /// client to close the connection, then shuts the connection down.
    pub(super) async fn finish(mut self, status: Vec<u8>) {
        let report = async {
            for output in &self.outputs {
                output.fin().await;
            }
            if !status.is_empty() {
                let _ = self.error.write_all(&status).await;
            }
            let _ = self.error.shutdown().await;
            self.closed.cancelled().await;
        };
        if tokio::time::timeout(FINISH_GRACE, report).await.is_err() {
            debug!("the SPDY exec client did not close the connection in time");
        }
        self.link.close().await;
    }
}
