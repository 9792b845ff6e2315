//! Flags and defaults of the kubelet API's connection limits: how long a client has to send
//! its request headers, how long a kept-alive connection may sit idle, how many connections
//! are served at once, how many of those may lack a verified client certificate, and how
//! many connections one port-forward session may forward at once.

use std::time::Duration;

use super::parse::parse_duration;
use super::{ConfigError, invalid};

/// Default `--api-read-header-timeout`: 10 s from the moment a connection is accepted (or,
/// on a kept-alive connection, from the first byte of the next request) to the end of the
/// request's headers; the TLS handshake counts against it, as in Go's `http.Server`. The API
/// server sends a handshake and a few hundred bytes of headers in milliseconds, so 10 s is
/// many times what a slow network needs, while a client that trickles half a header
/// (slowloris) holds its connection for no longer than that.
pub const DEFAULT_API_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--api-idle-timeout`: 90 s, the kubelet's own `IdleTimeout`. It matches the
/// keep-alive timeout of Go's HTTP client (`http.DefaultTransport`, which the API server's
/// connections to kubelets use), so the client drops an idle connection about when the node
/// does and seldom reuses one the node has just closed. A connection is idle only between
/// requests: a response still streaming (`kubectl logs -f`) or an upgraded exec or
/// port-forward session is never idle, however quiet.
pub const DEFAULT_API_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default `--api-max-connections`: 1000 connections at once. The API server opens one per
/// `kubectl logs -f` or `exec` and keeps a small pool for the rest; 1000 covers every one of
/// `--max-pods` 110 pods followed and exec'd into several times over, while bounding the
/// agent's file descriptors and per-connection buffers (TLS and HTTP state, tens of KiB
/// each). Beyond it, new connections wait in the kernel's accept queue until one closes.
pub const DEFAULT_API_MAX_CONNECTIONS: u32 = 1000;
/// Default `--api-max-anonymous-connections`: 100 of those connections may be without a
/// client certificate the cluster CA signed (they only ever get a 401 on a joined node; in
/// standalone mode with `--allow-anonymous-localhost` they are the local `exec` and `logs`
/// clients). The other 900 slots stay for the API server, whatever anonymous clients do.
/// Beyond it, such a connection is answered `503 Service Unavailable` and closed.
pub const DEFAULT_API_MAX_ANONYMOUS_CONNECTIONS: u32 = 100;
/// The other direction: how many requests the agent sends the API server at once (its
/// watches aside, which stay open). Each request in flight is a connection (HTTP/1.1),
/// and each connection stays in the client's pool for 90 s after its last use: without a
/// cap a burst of 1,000 pods opened about 500 TLS connections, which kept 30 MB of
/// buffers after the pods had gone. 32 is far more than the API server answers at once
/// on a small control plane (requests past it wait their turn, as the kubelet's client
/// throttles its own); status reports, events and token requests of a burst still flow.
pub const API_CLIENT_MAX_IN_FLIGHT: usize = 32;
/// Of those, how many may be Events at once. Events are notices: a burst of pod starts
/// makes four each (`Pulled`, `Created`, `Started`, …), and sent as they come they took
/// most of the 32 and the API server's time from the starts' own token requests and
/// status reports. Four lanes keep them flowing, behind the work they report; the
/// kubelet throttles its events harder (5 a second, bursts of 10).
pub const EVENTS_MAX_IN_FLIGHT: usize = 4;
/// Events waiting for a lane beyond this many are dropped (with a warning): what one
/// waiting event holds is small, but a node starting thousands of pods at once must not
/// queue without bound. The kubelet's recorder drops past 1,000 queued too.
pub const EVENTS_MAX_WAITING: usize = 1024;
/// Default `--port-forward-max-connections`: 128 forwarded connections at once per
/// `kubectl port-forward` session (the kubelet sets no cap). A browser opens about six
/// connections to a site and a load generator as many as its concurrency, so 128 leaves
/// room for both, while what one session holds stays bounded: per forwarded connection a
/// socket to the pod, a 16 KiB copy buffer each way and at most 64 KiB of the client's
/// data the pod has not read yet (8 MiB at the cap). Beyond it, the new connection gets
/// `too many forwarded connections` on its error stream (kubectl prints it) and is closed;
/// the others carry on.
pub const DEFAULT_PORT_FORWARD_MAX_CONNECTIONS: u32 = 128;

/// The kubelet API's connection flags (flattened into [`super::Flags`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiFlags {
    /// Time a kubelet API client has to complete the TLS handshake and send its request
    /// headers, counted from the connection's start or, on a kept-alive connection, from the
    /// first byte of the next request; slower clients are disconnected (a Go duration, at
    /// least 1s). Default: 10s.
    #[arg(long, env = "KRUSTLET_API_READ_HEADER_TIMEOUT", value_name = "DURATION")]
    pub api_read_header_timeout: Option<String>,

    /// How long a kubelet API connection may stay open with no request in progress before
    /// the node closes it (streaming responses, exec and port-forward sessions are never
    /// idle; a Go duration, at least 1s). Default: 90s.
    #[arg(long, env = "KRUSTLET_API_IDLE_TIMEOUT", value_name = "DURATION")]
    pub api_idle_timeout: Option<String>,

    /// Most connections the kubelet API serves at once; more wait to be accepted until one
    /// closes. Default: 1000.
    #[arg(long, env = "KRUSTLET_API_MAX_CONNECTIONS", value_name = "N")]
    pub api_max_connections: Option<String>,

    /// Most of those connections that may be without a client certificate signed by the
    /// cluster CA (lower than --api-max-connections); more are answered 503 and closed.
    /// Default: 100.
    #[arg(long, env = "KRUSTLET_API_MAX_ANONYMOUS_CONNECTIONS", value_name = "N")]
    pub api_max_anonymous_connections: Option<String>,

    /// Most connections one `kubectl port-forward` session forwards at once (counting
    /// those whose streams are still being opened); a connection beyond it gets an error
    /// on its error stream and is closed. Default: 128.
    #[arg(long, env = "KRUSTLET_PORT_FORWARD_MAX_CONNECTIONS", value_name = "N")]
    pub port_forward_max_connections: Option<String>,
}

/// The limits the kubelet API enforces on its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
    pub max_anonymous_connections: u32,
    pub port_forward_max_connections: u32,
}

impl Default for ApiLimits {
    /// Header timeout 10 s, idle timeout 90 s, 1000 connections of which 100 anonymous,
    /// 128 forwarded connections per port-forward session.
    fn default() -> Self {
        ApiLimits {
            read_header_timeout: DEFAULT_API_READ_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_API_IDLE_TIMEOUT,
            max_connections: DEFAULT_API_MAX_CONNECTIONS,
            max_anonymous_connections: DEFAULT_API_MAX_ANONYMOUS_CONNECTIONS,
            port_forward_max_connections: DEFAULT_PORT_FORWARD_MAX_CONNECTIONS,
        }
    }
}

/// Resolves the flags into limits, refusing an anonymous cap that would leave no slot for
/// clients with a certificate.
pub(super) fn resolve(flags: &ApiFlags) -> Result<ApiLimits, ConfigError> {
    let d = ApiLimits::default();
    let duration = |flag, raw: &Option<String>, default| match raw {
        Some(raw) => parse_duration(flag, raw, Duration::from_secs(1)),
        None => Ok(default),
    };
    let count = |flag, raw: &Option<String>, min: u32, default| match raw {
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(invalid(flag, format!("{raw:?} is not an integer of at least {min}"))),
        },
        None => Ok(default),
    };
    let limits = ApiLimits {
        read_header_timeout: duration(
            "api-read-header-timeout",
            &flags.api_read_header_timeout,
            d.read_header_timeout,
        )?,
        idle_timeout: duration("api-idle-timeout", &flags.api_idle_timeout, d.idle_timeout)?,
        max_connections: count("api-max-connections", &flags.api_max_connections, 2, d.max_connections)?,
        max_anonymous_connections: count(
            "api-max-anonymous-connections",
            &flags.api_max_anonymous_connections,
            0,
            d.max_anonymous_connections,
        )?,
        port_forward_max_connections: count(
            "port-forward-max-connections",
            &flags.port_forward_max_connections,
            1,
            d.port_forward_max_connections,
        )?,
    };
    if limits.max_anonymous_connections >= limits.max_connections {
        return Err(invalid(
            "api-max-anonymous-connections",
            format!(
                "{} must be lower than --api-max-connections ({}), so clients with a certificate keep a slot",
                limits.max_anonymous_connections, limits.max_connections
            ),
        ));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(header: &str, idle: &str, max: &str, anonymous: &str) -> ApiFlags {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        ApiFlags {
            api_read_header_timeout: some(header),
            api_idle_timeout: some(idle),
            api_max_connections: some(max),
            api_max_anonymous_connections: some(anonymous),
            port_forward_max_connections: None,
        }
    }

    #[test]
    fn the_port_forward_cap_resolves_and_refuses_zero() {
        let cap = |raw: &str| {
            let f = ApiFlags { port_forward_max_connections: Some(raw.into()), ..ApiFlags::default() };
            resolve(&f)
        };
        assert_eq!(resolve(&ApiFlags::default()).unwrap().port_forward_max_connections, 128);
        assert_eq!(cap("7").unwrap().port_forward_max_connections, 7);
        for bad in ["0", "-1", "many"] {
            assert_eq!(cap(bad).unwrap_err().flag, "port-forward-max-connections", "{bad}");
        }
    }

    #[test]
    fn defaults_and_values_resolve() {
        assert_eq!(resolve(&ApiFlags::default()).unwrap(), ApiLimits::default());
        let l = resolve(&flags("2s", "1m", "50", "0")).unwrap();
        assert_eq!(l.read_header_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!((l.max_connections, l.max_anonymous_connections), (50, 0));
        // Only the anonymous cap given: checked against the default global cap.
        assert_eq!(resolve(&flags("", "", "", "999")).unwrap().max_anonymous_connections, 999);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases = [
            (flags("500ms", "", "", ""), "api-read-header-timeout"),
            (flags("", "forever", "", ""), "api-idle-timeout"),
            (flags("", "", "1", "0"), "api-max-connections"),
            (flags("", "", "-5", ""), "api-max-connections"),
            (flags("", "", "", "x"), "api-max-anonymous-connections"),
            (flags("", "", "10", "10"), "api-max-anonymous-connections"),
            (flags("", "", "", "1000"), "api-max-anonymous-connections"),
        ];
        for (f, flag) in cases {
            let e = resolve(&f).unwrap_err();
            assert_eq!(e.flag, flag, "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}
