//! Flags, defaults and pod annotations of serving traffic: the address pods' listeners
//! are bound to, and the per-request deadline and concurrency cap of `wasi:http` pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::parse::parse_duration;
use super::{ConfigError, invalid};

/// Default `--pod-listen-address`: `0.0.0.0`, every IPv4 address of the node. Pods use
/// the node's network, so a pod's port must answer on the node IP (what Services and
/// Endpoints point at) and on loopback (where `kubectl port-forward` connects); binding
/// the wildcard is the one choice that reaches both.
pub const DEFAULT_POD_LISTEN_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The port a `wasi:http` component with no TCP `containerPort` is served on: 8080, the
/// default of `wasmtime serve` and of runwasi's wasmtime shim.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Default `--http-request-timeout`: 30 s per request, from its arrival to the end of the
/// guest's handler (Go's and most proxies' order of magnitude for a whole request). Past
/// it the request's instance is stopped and the client gets `500`. Pod annotation
/// [`REQUEST_TIMEOUT_ANNOTATION`] overrides it. The same as the Wasmtime host's own default
/// (`runtime/wasm.rs` checks it).
pub const DEFAULT_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `--http-max-concurrent`: 100 requests in flight per `wasi:http` container, each
/// an instance with its own memory (up to the container's memory limit); one more is
/// answered `503` at once. Pod annotation [`MAX_CONCURRENT_ANNOTATION`] overrides it. The
/// same as the Wasmtime host's own default (`runtime/wasm.rs` checks it). Of these, the
/// Wasmtime host starts and computes at most one per guest thread at once
/// (`krustlet_wasi_provider::DEFAULT_HTTP_LANES_PER_GUEST_THREAD`, no flag): the others wait
/// their turn without an instance, so that a busy pod keeps few pool slots, warm, in
/// rotation (13% less CPU per request at 64 connections on 2 cores); a request that waits
/// for I/O, or computes past `LANE_LEASE` (5 ms), lets the next one start.
pub const DEFAULT_HTTP_MAX_CONCURRENT: usize = 100;

/// Pod annotation: the request timeout of the pod's `wasi:http` containers (a Go
/// duration, at least 1ms and at most the node's `--http-request-timeout`).
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "krustlet-wasi.dev/http-request-timeout";
/// Pod annotation: the concurrency cap of the pod's `wasi:http` containers (1 to the
/// node's `--http-max-concurrent`).
pub const MAX_CONCURRENT_ANNOTATION: &str = "krustlet-wasi.dev/http-max-concurrent";

/// The largest concurrency cap a flag or an annotation may set.
const MAX_CONCURRENT_CEILING: usize = 10_000;

/// Serving flags (flattened into [`super::Flags`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServingFlags {
    /// Address pods' listeners are bound to: the ports of wasi:http components and the
    /// sockets command components bind (a WasmEdge socket module's bind to the wildcard
    /// address goes here). kubectl port-forward connects here, or to loopback when it is a
    /// wildcard. Default: 0.0.0.0 (the node IP and loopback).
    #[arg(long, env = "KRUSTLET_POD_LISTEN_ADDRESS", value_name = "IP")]
    pub pod_listen_address: Option<String>,

    /// Time a wasi:http request may take before its instance is stopped and the client
    /// gets 500 (a Go duration). Pod annotation krustlet-wasi.dev/http-request-timeout
    /// may lower it, never raise it. Default: 30s.
    #[arg(long, env = "KRUSTLET_HTTP_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub http_request_timeout: Option<String>,

    /// Requests in flight at once per wasi:http container; one more gets 503. Pod
    /// annotation krustlet-wasi.dev/http-max-concurrent may lower it, never raise it.
    /// Default: 100.
    #[arg(long, env = "KRUSTLET_HTTP_MAX_CONCURRENT", value_name = "N")]
    pub http_max_concurrent: Option<String>,
}

/// The per-container limits of a served `wasi:http` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    pub max_concurrent: usize,
}

/// How pods serve traffic unless their annotations say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub listen_address: IpAddr,
    pub http: HttpSettings,
}

impl Default for Serving {
    /// `0.0.0.0`, 30 s, 100.
    fn default() -> Self {
        Serving {
            listen_address: DEFAULT_POD_LISTEN_ADDRESS,
            http: HttpSettings {
                request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
                max_concurrent: DEFAULT_HTTP_MAX_CONCURRENT,
            },
        }
    }
}

fn concurrency(flag: &'static str, raw: &str) -> Result<usize, ConfigError> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENT_CEILING).contains(&n) => Ok(n),
        _ => Err(invalid(flag, format!("{raw:?} is not an integer from 1 to {MAX_CONCURRENT_CEILING}"))),
    }
}

pub(super) fn resolve(flags: &ServingFlags) -> Result<Serving, ConfigError> {
    let mut serving = Serving::default();
    if let Some(raw) = &flags.pod_listen_address {
        serving.listen_address = raw.trim().parse().map_err(|_| {
            invalid("pod-listen-address", format!("{raw:?} is not an IP address (0.0.0.0 for every one)"))
        })?;
    }
    if let Some(raw) = &flags.http_request_timeout {
        serving.http.request_timeout = parse_duration("http-request-timeout", raw, Duration::from_millis(1))?;
    }
    if let Some(raw) = &flags.http_max_concurrent {
        serving.http.max_concurrent = concurrency("http-max-concurrent", raw)?;
    }
    Ok(serving)
}

impl HttpSettings {
    /// These settings (the node's) with the pod's annotations applied. An annotation may
    /// only lower a node setting: one that cannot be used, or that asks for more than the
    /// node allows, is an error naming it, the value and the node's flag.
    pub fn for_pod(self, annotations: Option<&BTreeMap<String, String>>) -> Result<HttpSettings, String> {
        let mut out = self;
        let Some(annotations) = annotations else { return Ok(out) };
        let named = |e: ConfigError| format!("annotation {}", e.to_string().trim_start_matches("--"));
        if let Some(raw) = annotations.get(REQUEST_TIMEOUT_ANNOTATION) {
            let asked =
                parse_duration(REQUEST_TIMEOUT_ANNOTATION, raw, Duration::from_millis(1)).map_err(named)?;
            if asked > self.request_timeout {
                return Err(above(
                    REQUEST_TIMEOUT_ANNOTATION,
                    raw,
                    "http-request-timeout",
                    &go_duration(self.request_timeout),
                ));
            }
            out.request_timeout = asked;
        }
        if let Some(raw) = annotations.get(MAX_CONCURRENT_ANNOTATION) {
            let asked = concurrency(MAX_CONCURRENT_ANNOTATION, raw).map_err(named)?;
            if asked > self.max_concurrent {
                return Err(above(
                    MAX_CONCURRENT_ANNOTATION,
                    raw,
                    "http-max-concurrent",
                    &self.max_concurrent.to_string(),
                ));
            }
            out.max_concurrent = asked;
        }
        Ok(out)
    }
}

/// An annotation that asks for more than the node's flag allows.
fn above(annotation: &str, raw: &str, flag: &str, node: &str) -> String {
    format!("annotation {annotation}: {raw:?} is above the node's --{flag} ({node}); a pod may only lower it")
}

/// A duration as Go prints it, to the millisecond: `30s`, `1m30s`, `250ms`, `2h0m0s`.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = match frac {
        0 => format!("{s}s"),
        f => format!("{s}.{}s", format!("{f:03}").trim_end_matches('0')),
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_annotations_set_the_http_limits() {
        assert_eq!(resolve(&ServingFlags::default()).unwrap(), Serving::default());
        let flags = ServingFlags {
            pod_listen_address: Some("127.0.0.2".into()),
            http_request_timeout: Some("2s".into()),
            http_max_concurrent: Some("7".into()),
        };
        let s = resolve(&flags).unwrap();
        assert_eq!(s.listen_address, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(s.http, HttpSettings { request_timeout: Duration::from_secs(2), max_concurrent: 7 });
        let bad = ServingFlags { http_max_concurrent: Some("0".into()), ..ServingFlags::default() };
        assert!(resolve(&bad).unwrap_err().to_string().starts_with("--http-max-concurrent"));
        let bad = ServingFlags { pod_listen_address: Some("any".into()), ..ServingFlags::default() };
        assert!(resolve(&bad).is_err());

        let a: BTreeMap<String, String> = [
            (REQUEST_TIMEOUT_ANNOTATION.to_string(), "250ms".to_string()),
            (MAX_CONCURRENT_ANNOTATION.to_string(), "1".to_string()),
        ]
        .into();
        let pod = s.http.for_pod(Some(&a)).unwrap();
        assert_eq!(pod, HttpSettings { request_timeout: Duration::from_millis(250), max_concurrent: 1 });
        assert_eq!(s.http.for_pod(None).unwrap(), s.http);
        let bad: BTreeMap<String, String> = [(MAX_CONCURRENT_ANNOTATION.to_string(), "lots".into())].into();
        let err = s.http.for_pod(Some(&bad)).unwrap_err();
        assert!(err.starts_with("annotation krustlet-wasi.dev/http-max-concurrent: \"lots\""), "{err}");
    }

    #[test]
    fn annotations_may_only_lower_the_nodes_http_limits() {
        let node = Serving::default().http;
        let with = |k: &str, v: &str| -> BTreeMap<String, String> { [(k.to_string(), v.to_string())].into() };
        let err = node.for_pod(Some(&with(MAX_CONCURRENT_ANNOTATION, "500"))).unwrap_err();
        assert_eq!(
            err,
            "annotation krustlet-wasi.dev/http-max-concurrent: \"500\" is above the node's --http-max-concurrent (100); a pod may only lower it"
        );
        let err = node.for_pod(Some(&with(REQUEST_TIMEOUT_ANNOTATION, "1m"))).unwrap_err();
        assert_eq!(
            err,
            "annotation krustlet-wasi.dev/http-request-timeout: \"1m\" is above the node's --http-request-timeout (30s); a pod may only lower it"
        );
        // Past Go's longest duration: an error naming the annotation, never a panic.
        let err = node.for_pod(Some(&with(REQUEST_TIMEOUT_ANNOTATION, "5124095576030431h"))).unwrap_err();
        assert!(
            err.starts_with("annotation krustlet-wasi.dev/http-request-timeout:") && err.contains("longer"),
            "{err}"
        );
        assert_eq!(node.for_pod(Some(&with(MAX_CONCURRENT_ANNOTATION, "100"))).unwrap(), node);
        let lower = node.for_pod(Some(&with(REQUEST_TIMEOUT_ANNOTATION, "30s"))).unwrap();
        assert_eq!(lower.request_timeout, Duration::from_secs(30));
        assert_eq!(go_duration(Duration::from_millis(90_500)), "1m30.5s");
        assert_eq!(go_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }
}
