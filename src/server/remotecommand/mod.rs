//! Remote command streams for `kubectl exec`: the SPDY/3.1 and WebSocket transports and the
//! versions of Kubernetes' remote command sub-protocol, turned into one transport-independent
//! [`Session`] (stdin, stdout, stderr, resize, client-gone signal, exit status).
//!
//! The HTTP handler negotiates ([`negotiate_spdy`] / [`negotiate_ws`]), answers the upgrade,
//! then builds the session with [`spdy_session`] or [`ws_session`], runs the command with its
//! streams and calls [`Session::finish`] with the exit code.
//!
//! For SPDY the 101 answer carries `Connection: Upgrade`, `Upgrade: SPDY/3.1`
//! ([`SPDY_UPGRADE`]) and `X-Stream-Protocol-Version: <chosen>` ([`PROTOCOL_HEADER`]); for a
//! WebSocket, `Sec-WebSocket-Protocol: <chosen>` (axum: `WebSocketUpgrade::protocols([name])`).

mod protocol;
mod resize;
mod session;
mod spdy;
#[cfg(test)]
mod spdy_tests;
mod ws;

use std::time::Duration;

pub use super::channels::WS_MAX_MESSAGE;
pub use super::spdy::{PROTOCOL_HEADER, SPDY_UPGRADE};
pub use protocol::{Protocol, Wanted, negotiate_spdy, negotiate_ws};
pub use resize::TerminalSize;
pub use session::Session;
pub use spdy::{STREAM_CREATION_TIMEOUT, spdy_session};
pub use ws::ws_session;

/// Why a remote command session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCommandError {
    #[error("setting up SPDY header compression failed: {0}")]
    Compression(String),
    #[error("the client went away before opening its streams (missing: {missing})")]
    ClosedBeforeStreams { missing: String },
    #[error("the client did not open its streams within {timeout:?} (missing: {missing})")]
    StreamsTimedOut { timeout: Duration, missing: String },
    #[error("announcing the WebSocket streams failed: {0}")]
    AnnounceStreams(String),
}
