//! One exec session as the handler sees it, whatever the transport: the guest's streams, the
//! client-gone signal, and `finish`, which reports the exit and closes everything properly.

use futures::future::BoxFuture;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Protocol;
use super::resize::TerminalSize;

/// The streams of one exec session.
///
/// Take the fields you need (`session.stdout.take()`), run the command, then call
/// [`Session::finish`]. Dropping a session without `finish` aborts the connection.
pub struct Session {
    /// The negotiated protocol version.
    pub protocol: Protocol,
    /// What the client types or pipes; end of file when it closes stdin. `None` unless asked for.
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// The command's output. Writes wait while the client's flow-control window is full.
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// The command's error output; `None` with a tty (the kubelet merges it into stdout).
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Terminal size changes, with a tty. Drain it or drop it.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Cancelled when the client goes away (connection closed or broken, GOAWAY, WebSocket
    /// close): stop the command then.
    pub closed: CancellationToken,
    pub(super) finish: Box<dyn Finisher>,
}

/// The transport's way to end the session (`spdy.rs` and `ws.rs` each give one).
pub(super) trait Finisher: Send {
    /// Writes `status` on the error stream, then closes every stream and the connection.
    fn finish(self: Box<Self>, status: Vec<u8>) -> BoxFuture<'static, ()>;
}

impl Session {
    /// Reports how the command ended on the error stream and closes the session: `Ok(0)` is
    /// success; `Ok(code)` a `NonZeroExitCode` failure carrying the code (kubectl exits with
    /// it); `Err(message)` a failure to run the command at all. Then every stream is closed and
    /// the connection is ended once the client has read it all (or after a short grace period).
    pub async fn finish(self, exit: Result<i32, String>) {
        let status = status_message(self.protocol, &exit);
        self.finish.finish(status).await;
    }
}

/// What goes on the error stream: a JSON `metav1.Status` for v4 and later; for older versions
/// the failure's message as text, and nothing on success.
pub(super) fn status_message(protocol: Protocol, exit: &Result<i32, String>) -> Vec<u8> {
    let status = match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(why) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {why}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": format!("error executing command in container: {why}")}]},
            "code": 500,
        }),
    };
    if protocol.json_status() {
        return status.to_string().into_bytes();
    }
    match status["message"].as_str() {
        Some(message) => message.as_bytes().to_vec(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn json(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn v4_status_carries_success_or_the_exit_code() {
        assert_eq!(json(status_message(Protocol::V4, &Ok(0))), json!({"metadata": {}, "status": "Success"}));
        let failure = json(status_message(Protocol::V5, &Ok(3)));
        assert_eq!(failure["status"], "Failure");
        assert_eq!(failure["reason"], "NonZeroExitCode");
        assert_eq!(failure["details"]["causes"], json!([{"reason": "ExitCode", "message": "3"}]));
        let error = json(status_message(Protocol::Base64V4, &Err("no such command".into())));
        assert_eq!(error["reason"], "InternalError");
        assert_eq!(error["code"], 500);
        assert!(error["message"].as_str().unwrap().contains("no such command"));
    }

    #[test]
    fn older_versions_get_text_and_only_on_failure() {
        assert!(status_message(Protocol::V3, &Ok(0)).is_empty());
        let text = String::from_utf8(status_message(Protocol::V2, &Ok(2))).unwrap();
        assert_eq!(text, "command terminated with non-zero exit code: exit status 2");
        let text = String::from_utf8(status_message(Protocol::V1, &Err("boom".into()))).unwrap();
        assert!(text.ends_with("boom"), "{text}");
    }
}
