//! Remote command over SPDY/3.1, the transport kubectl used before WebSocket (and the one the
//! API server still uses towards kubelets): after the HTTP upgrade the client opens one stream
//! per role (`streamtype` header: error, stdin, stdout, stderr, resize), this side replies to each
//! and, once every expected stream is there, hands them over as a [`Session`].

mod frame;
mod headers;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::session::{Abort, Finisher};
use super::{Protocol, RemoteCommandError, Session, Wanted, pipe};
use reader::{End, Kind, Opened, Reader};
use writer::{Out, OutStream, SendWindow};

/// The `Upgrade` header value of a SPDY exec request and of the 101 answer.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The header carrying the offered (request) and chosen (101 answer) protocol versions.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// How long the client has to open its streams after the upgrade (the kubelet's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `finish` waits for the client to read the end and close the connection.
const FINISH_GRACE: Duration = Duration::from_secs(5);

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
    let deflater = headers::Deflater::new().map_err(|e| RemoteCommandError::Compression(e.to_string()))?;
    let (r, w) = tokio::io::split(io);
    let closed = CancellationToken::new();
    let (data, data_rx) = mpsc::channel(64);
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let (opened, mut opened_rx) = mpsc::unbounded_channel();
    let flow_control = Arc::new(AtomicBool::new(false));
    let writer = Abort(tokio::spawn(writer::run(w, deflater, data_rx, ctl_rx, closed.clone())));
    let reader = Reader { r, ctl, flow_control: flow_control.clone(), opened, closed: closed.clone() };
    let reader = Abort(tokio::spawn(reader.run()));

    let mut ends: HashMap<Kind, End> = HashMap::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while let Some(missing) = missing(&expected, &ends) {
        tokio::select! {
            next = opened_rx.recv() => match next {
                Some(Opened { kind, end }) => {
                    ends.insert(kind, end);
                }
                None => return Err(RemoteCommandError::ClosedBeforeStreams { missing }),
            },
            _ = &mut deadline => return Err(RemoteCommandError::StreamsTimedOut { timeout, missing }),
        }
    }

    let out = |end: Option<End>| match end {
        Some(End::Out(window)) => Some(window),
        _ => None,
    };
    let inbound = |end: Option<End>| match end {
        Some(End::In(reader)) => Some(reader),
        _ => None,
    };
    let error = out(ends.remove(&Kind::Error))
        .ok_or(RemoteCommandError::ClosedBeforeStreams { missing: "error".into() })?;
    let stdout = out(ends.remove(&Kind::Stdout)).filter(|_| wanted.stdout);
    let stderr = out(ends.remove(&Kind::Stderr)).filter(|_| wanted.stderr);
    let writer_for =
        |window: &Arc<SendWindow>| OutStream::new(window.clone(), data.clone(), flow_control.clone());
    let session = Session {
        protocol,
        stdin: inbound(ends.remove(&Kind::Stdin)).filter(|_| wanted.stdin).map(|r| Box::new(r) as _),
        stdout: stdout.as_ref().map(|w| Box::new(writer_for(w)) as _),
        stderr: stderr.as_ref().map(|w| Box::new(writer_for(w)) as _),
        resize: inbound(ends.remove(&Kind::Resize)).filter(|_| wanted.tty).map(pipe::resize_events),
        closed: closed.clone(),
        finish: Finisher::Spdy(Finish {
            error: writer_for(&error),
            outputs: stdout.into_iter().chain(stderr).collect(),
            data,
            closed,
            writer,
            _reader: reader,
        }),
    };
    Ok(session)
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
fn missing(expected: &[Kind], ends: &HashMap<Kind, End>) -> Option<String> {
    let missing: Vec<String> =
        expected.iter().filter(|k| !ends.contains_key(k)).map(|k| format!("{k:?}").to_lowercase()).collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// How a SPDY session ends.
pub(super) struct Finish {
    error: OutStream,
    outputs: Vec<Arc<SendWindow>>,
    data: mpsc::Sender<Out>,
    closed: CancellationToken,
    writer: Abort,
    _reader: Abort,
}

impl Finish {
    /// Ends stdout and stderr, writes the status on the error stream and ends it, waits for the
    /// client to close the connection, then shuts the connection down.
    pub(super) async fn finish(mut self, status: Vec<u8>) {
        let report = async {
            for window in &self.outputs {
                window.fin(&self.data).await;
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
        let close = async {
            let _ = self.data.send(Out::Close).await;
            let _ = (&mut self.writer.0).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    }
}
