//! A container's probes as the prober runs them: the kind, the handler with its port
//! resolved, and the timing with the API's defaults filled in.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{
    PROBE_FAILURE_THRESHOLD, PROBE_MIN_PERIOD, PROBE_PERIOD, PROBE_SUCCESS_THRESHOLD, PROBE_TIMEOUT,
};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        })
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// An HTTP GET; success is a status from 200 to 399.
    Http { https: bool, host: Option<String>, port: u16, path: String, headers: Vec<(String, String)> },
    /// A TCP connection that opens.
    Tcp { host: Option<String>, port: u16 },
    /// A new instance of the container's module with this argv; success is exit 0.
    Exec { command: Vec<String> },
    /// A probe this node cannot run, and why (the prober skips it; a Warning says so).
    Unsupported(String),
}

/// One probe, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: Duration) -> Duration {
    v.map_or(default, |s| Duration::from_secs(s.max(0) as u64))
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.map_or(default, |n| n.max(1) as u32)
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => {
            u16::try_from(*n).ok().filter(|p| *p > 0).ok_or(format!("port {n} is not a port number"))
        }
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            let named = container.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name.as_str()));
            named
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or(format!("container {} has no port named {name:?}", container.name))
        }
    }
}

fn handler(container: &Container, probe: &Probe) -> Handler {
    let resolved = (|| -> Result<Handler, String> {
        if let Some(get) = &probe.http_get {
            let https = match get.scheme.as_deref().unwrap_or("HTTP") {
                "HTTP" => false,
                "HTTPS" => true,
                other => return Err(format!("httpGet scheme {other:?} is neither HTTP nor HTTPS")),
            };
            let path = get.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            let headers =
                get.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
            let port = port(container, &get.port)?;
            return Ok(Handler::Http { https, host: get.host.clone(), port, path, headers });
        }
        if let Some(tcp) = &probe.tcp_socket {
            return Ok(Handler::Tcp { host: tcp.host.clone(), port: port(container, &tcp.port)? });
        }
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Err("exec probe has no command".into());
            }
            return Ok(Handler::Exec { command });
        }
        if probe.grpc.is_some() {
            return Err("grpc probes are not supported on this node (use httpGet, tcpSocket or exec)".into());
        }
        Err("the probe names no handler (httpGet, tcpSocket or exec)".into())
    })();
    resolved.unwrap_or_else(Handler::Unsupported)
}

/// The container's probes, startup first.
pub fn probes_of(container: &Container) -> Vec<ProbeSpec> {
    let all = [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
    ];
    all.into_iter()
        .filter_map(|(kind, probe)| {
            let probe = probe.as_ref()?;
            // Liveness and startup probes succeed at once, as the API requires.
            let success = match kind {
                ProbeKind::Readiness => count(probe.success_threshold, PROBE_SUCCESS_THRESHOLD),
                _ => 1,
            };
            Some(ProbeSpec {
                kind,
                handler: handler(container, probe),
                initial_delay: secs(probe.initial_delay_seconds, Duration::ZERO),
                period: secs(probe.period_seconds, PROBE_PERIOD).max(PROBE_MIN_PERIOD),
                timeout: secs(probe.timeout_seconds, PROBE_TIMEOUT).max(Duration::from_secs(1)),
                success_threshold: success,
                failure_threshold: count(probe.failure_threshold, PROBE_FAILURE_THRESHOLD),
            })
        })
        .collect()
}

/// Whether the container has a probe of `kind`.
pub fn has(container: &Container, kind: ProbeKind) -> bool {
    match kind {
        ProbeKind::Startup => container.startup_probe.is_some(),
        ProbeKind::Readiness => container.readiness_probe.is_some(),
        ProbeKind::Liveness => container.liveness_probe.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn probes_get_the_api_defaults_and_named_ports() {
        let c: Container = serde_json::from_value(json!({
            "name": "web", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "healthz",
                "httpHeaders": [{"name": "X-A", "value": "b"}]}, "successThreshold": 2},
            "livenessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 0, "successThreshold": 5},
            "startupProbe": {"exec": {"command": ["probe.wasm", "ok"]}, "failureThreshold": 30},
        }))
        .unwrap();
        let p = probes_of(&c);
        assert_eq!(
            p.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProbeKind::Startup, ProbeKind::Readiness, ProbeKind::Liveness]
        );
        assert_eq!(p[0].handler, Handler::Exec { command: vec!["probe.wasm".into(), "ok".into()] });
        assert_eq!((p[0].failure_threshold, p[0].period, p[0].timeout), (30, PROBE_PERIOD, PROBE_TIMEOUT));
        let want = Handler::Http {
            https: false,
            host: None,
            port: 8080,
            path: "/healthz".into(),
            headers: vec![("X-A".into(), "b".into())],
        };
        assert_eq!((p[1].handler.clone(), p[1].success_threshold, p[1].failure_threshold), (want, 2, 3));
        assert_eq!((p[2].period, p[2].success_threshold), (PROBE_MIN_PERIOD, 1));

        let bad: Container = serde_json::from_value(json!({"name": "c", "image": "i",
            "livenessProbe": {"httpGet": {"port": "nope"}}}))
        .unwrap();
        let Handler::Unsupported(why) = &probes_of(&bad)[0].handler else { panic!() };
        assert_eq!(why, "container c has no port named \"nope\"");
    }
}
