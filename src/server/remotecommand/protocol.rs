//! The remote command sub-protocol versions, how one is chosen from what a client offers, and
//! which streams a client is asked for.

/// A version of Kubernetes' remote command sub-protocol (with its WebSocket encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `channel.k8s.io`: SPDY v1, or binary WebSocket channels before v4. Errors are plain text.
    V1,
    /// `v2.channel.k8s.io` (SPDY): streams only for what was asked for.
    V2,
    /// `v3.channel.k8s.io` (SPDY): adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `metav1.Status` with the exit code.
    V4,
    /// `v5.channel.k8s.io` (WebSocket): v4 plus the CLOSE signal that half-closes a stream.
    V5,
    /// `base64.channel.k8s.io` (WebSocket): v1 with base64 text messages.
    Base64V1,
    /// `v4.base64.channel.k8s.io` (WebSocket): v4 with base64 text messages.
    Base64V4,
}

/// What a SPDY client may be answered with, best first.
const SPDY_PREFERENCE: [Protocol; 4] = [Protocol::V4, Protocol::V3, Protocol::V2, Protocol::V1];
/// What a WebSocket client may be answered with, best first.
const WS_PREFERENCE: [Protocol; 5] =
    [Protocol::V5, Protocol::V4, Protocol::Base64V4, Protocol::V1, Protocol::Base64V1];

impl Protocol {
    /// The name on the wire (`X-Stream-Protocol-Version`, `Sec-WebSocket-Protocol`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::Base64V1 => "base64.channel.k8s.io",
            Protocol::Base64V4 => "v4.base64.channel.k8s.io",
        }
    }

    /// Whether the error stream carries a JSON `metav1.Status` (else: text, and only on failure).
    pub fn json_status(self) -> bool {
        matches!(self, Protocol::V4 | Protocol::V5 | Protocol::Base64V4)
    }

    /// Whether a SPDY client opens a resize stream for a tty (v3 and later).
    pub(super) fn spdy_resize(self) -> bool {
        matches!(self, Protocol::V3 | Protocol::V4)
    }

    /// Whether WebSocket messages are base64 text rather than binary.
    pub(super) fn base64(self) -> bool {
        matches!(self, Protocol::Base64V1 | Protocol::Base64V4)
    }
}

/// Picks the SPDY protocol version from the client's `X-Stream-Protocol-Version` header values
/// (one per header, or comma-separated). Prefers v4, as the kubelet does; `None` when nothing
/// offered is known (answer 403 Forbidden, as the kubelet's handshake does).
pub fn negotiate_spdy(offered: &[&str]) -> Option<Protocol> {
    pick(offered, &SPDY_PREFERENCE)
}

/// Picks the WebSocket protocol from the client's `Sec-WebSocket-Protocol` header values.
/// Prefers v5, then v4, then the base64 and pre-v4 encodings; `None` when nothing offered is
/// known.
pub fn negotiate_ws(offered: &[&str]) -> Option<Protocol> {
    pick(offered, &WS_PREFERENCE)
}

fn pick(offered: &[&str], preference: &[Protocol]) -> Option<Protocol> {
    let offered: Vec<&str> = offered.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
    preference.iter().copied().find(|p| offered.contains(&p.name()))
}

/// What the client asked for (the `stdin`, `stdout`, `stderr` and `tty` query parameters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Wanted {
    /// Reads the query string of an exec or attach request. The API server asks the kubelet with
    /// `input`, `output`, `error` and `tty` set to `1`; client-go, talking to a server directly,
    /// sends `stdin`, `stdout`, `stderr` and `tty` set to `true`. Both spellings are read.
    pub fn from_query(query: &str) -> Wanted {
        let mut wanted = Wanted::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let yes = value == "1" || value.eq_ignore_ascii_case("true");
            match key {
                "stdin" | "input" => wanted.stdin = yes,
                "stdout" | "output" => wanted.stdout = yes,
                "stderr" | "error" => wanted.stderr = yes,
                "tty" => wanted.tty = yes,
                _ => {}
            }
        }
        wanted
    }

    /// As the kubelet: with a tty, stderr is merged into stdout, so there is no stderr stream.
    pub(super) fn normalized(self) -> Wanted {
        Wanted { stderr: self.stderr && !self.tty, ..self }
    }

    /// Whether nothing at all was asked for (the kubelet answers 400 Bad Request).
    pub fn is_empty(self) -> bool {
        !self.stdin && !self.stdout && !self.stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdy_prefers_v4_whatever_the_order() {
        let offered = ["v2.channel.k8s.io", "channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"];
        assert_eq!(negotiate_spdy(&offered), Some(Protocol::V4));
        assert_eq!(negotiate_spdy(&["channel.k8s.io, v3.channel.k8s.io"]), Some(Protocol::V3));
        assert_eq!(negotiate_spdy(&["channel.k8s.io"]), Some(Protocol::V1));
        assert_eq!(negotiate_spdy(&["v5.channel.k8s.io"]), None, "v5 is WebSocket-only");
        assert_eq!(negotiate_spdy(&[]), None);
    }

    #[test]
    fn websocket_prefers_v5_then_v4() {
        assert_eq!(negotiate_ws(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), Some(Protocol::V5));
        assert_eq!(negotiate_ws(&["v4.base64.channel.k8s.io,v4.channel.k8s.io"]), Some(Protocol::V4));
        assert_eq!(negotiate_ws(&["v4.base64.channel.k8s.io"]), Some(Protocol::Base64V4));
        assert_eq!(negotiate_ws(&["base64.channel.k8s.io"]), Some(Protocol::Base64V1));
        assert_eq!(negotiate_ws(&["v3.channel.k8s.io"]), None, "v2 and v3 are SPDY-only");
    }

    #[test]
    fn the_query_says_which_streams_and_a_tty_drops_stderr() {
        let w = Wanted::from_query("command=sh&stdin=true&stdout=true&stderr=1&tty=0&container=c");
        assert_eq!(w, Wanted { stdin: true, stdout: true, stderr: true, tty: false });
        let w = Wanted::from_query("command=cat&input=1&output=1&error=1");
        assert_eq!(w, Wanted { stdin: true, stdout: true, stderr: true, tty: false });
        let w = Wanted::from_query("stdout=1&stderr=1&tty=1").normalized();
        assert_eq!(w, Wanted { stdin: false, stdout: true, stderr: false, tty: true });
        assert!(Wanted::from_query("command=ls").is_empty());
        assert!(Protocol::V4.json_status() && Protocol::V5.json_status() && !Protocol::V3.json_status());
    }
}
