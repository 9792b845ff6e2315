//! Every flag and environment variable of the agent, its documented default, and validation.
//!
//! Parsing is clap's; turning flags into a [`Config`] is pure: facts about the host
//! (hostname, addresses, home directory) come in as [`HostFacts`], gathered by the caller,
//! so every default can be tested without touching the machine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

mod api;
mod certs;
pub(crate) mod commands;
pub(crate) mod eviction;
mod flags;
mod limits;
mod network;
mod parse;
mod pods;
mod probes;
mod process;
mod reserved;
mod serving;
mod statics;

pub use crate::base::host::HostFacts;
pub use api::{
    API_CLIENT_MAX_IN_FLIGHT, ApiFlags, ApiLimits, DEFAULT_API_IDLE_TIMEOUT,
    DEFAULT_API_MAX_ANONYMOUS_CONNECTIONS, DEFAULT_API_MAX_CONNECTIONS, DEFAULT_API_READ_HEADER_TIMEOUT,
    DEFAULT_PORT_FORWARD_MAX_CONNECTIONS, EVENTS_MAX_IN_FLIGHT, EVENTS_MAX_WAITING,
};
pub use certs::{CERT_APPROVAL_REMINDER, CERT_APPROVAL_REMINDER_MAX, CERT_ROTATION_WINDOW, CertFlags};
pub use flags::Flags;
pub use limits::{
    DEFAULT_COMPILE_THREADS, DEFAULT_IMAGE_GC_HIGH, DEFAULT_IMAGE_GC_LOW, DEFAULT_MAX_OPEN_FILES,
    DEFAULT_MEMORY_LIMIT, IMAGE_GC_PERIOD, ImageGc, LimitFlags, PodLimits,
};
pub use network::{
    DEFAULT_ENFORCE_NETWORK_POLICY, DEFAULT_POD_EGRESS_DENY, MIN_UNDECLARED_PORT, NETWORK_EVENT_DESTINATIONS,
    NETWORK_EVENT_INTERVAL, NETWORK_EVENT_QUEUE, NetworkFlags, NetworkSettings, POD_LOOKUPS_IN_FLIGHT,
    POLICY_SETTLE, UDP_REPLY_PEERS, UDP_REPLY_WINDOW,
};
use parse::{
    default_node_ip, non_empty_path, parse_duration, parse_ip, parse_max_pods, parse_port, validate_dns_name,
};
pub use parse::{parse_labels, parse_registries};
pub use pods::{
    AUTHORIZER_LAG_POLL, AUTHORIZER_LAG_WAIT, CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX,
    CONFIG_RETRY_VISIBLE_AFTER, CRASH_LIMIT, DISK_CHECK_PERIOD, FIRST_REPORT_DELAY, MAX_ENV_TOTAL,
    MAX_ENV_VALUE, MEMORY_VOLUME_SIZE, MIRROR_RECREATE_DELAY, PUBLISH_RETRY,
};
pub use probes::{
    PROBE_FAILURE_THRESHOLD, PROBE_MIN_PERIOD, PROBE_OUTPUT_LIMIT, PROBE_PERIOD, PROBE_SUCCESS_THRESHOLD,
    PROBE_TIMEOUT,
};
pub use process::{MEMORY_TRIM_DELAY, RUNTIME_BLOCKING_THREADS, RUNTIME_EVENT_INTERVAL};
pub use reserved::{Reserved, ReservedFlags};
pub use serving::{
    DEFAULT_HTTP_PORT, HttpSettings, MAX_CONCURRENT_ANNOTATION, REQUEST_TIMEOUT_ANNOTATION, Serving,
    ServingFlags,
};
pub use statics::{MANIFEST_RESCAN_PERIOD, MANIFEST_SETTLE};

/// Default port of the kubelet API (the port every kubelet listens on).
pub const DEFAULT_PORT: u16 = 10250;
/// Default `--healthz-port`, the kubelet's (plain HTTP on 127.0.0.1; 0 disables it).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10248;
/// Default `--container-log-max-size`: a log file is rotated past this size (kubelet: 10Mi).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default `--container-log-max-files`: rotated files kept per container run (kubelet: 5).
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;
/// Default `--image-max-size`: what one image may download (its layers together) and what
/// one layer, or a `file://` module, may unpack to. Wasm modules are a few megabytes; the
/// largest in common use (language runtimes such as python.wasm) are tens of megabytes.
/// 256Mi leaves ten times that room, while a module this large already costs several
/// times its size in memory to compile, in the one process every pod shares.
pub const DEFAULT_IMAGE_MAX_SIZE: u64 = 256 * 1024 * 1024;
/// Default `--sync-frequency`: how often running pods' volumes from the API are refreshed
/// (the kubelet's default sync period).
pub const DEFAULT_SYNC_FREQUENCY: Duration = Duration::from_secs(60);
/// Default `--max-pods`, the kubelet's own default.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Default `--bootstrap-file`, where kubeadm puts a kubelet's bootstrap kubeconfig.
pub const DEFAULT_BOOTSTRAP_FILE: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// How long the node's Lease is valid (`spec.leaseDurationSeconds`), as the kubelet sets it.
pub const LEASE_DURATION: Duration = Duration::from_secs(40);
/// How often the Lease is renewed (a quarter of its duration, as the kubelet does).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// How often the Node status (conditions, capacity) is re-posted even when nothing changed.
pub const NODE_STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// How soon the status is re-posted while the Node is Ready but still carries the
/// `node.kubernetes.io/not-ready` taint that admission puts on new nodes. The node
/// lifecycle controller lifts it when it sees the Node change; a 1.20 controller whose
/// first try failed does not retry until the next change, so the agent makes one sooner.
pub const NODE_NOT_READY_TAINT_RECHECK: Duration = Duration::from_secs(3);
/// Default `--eviction-hard`: the kubelet's memory (100Mi) and inode (5%) thresholds; disk
/// pressure at 1Gi free rather than the kubelet's 10%, since a Wasm node's modules and
/// logs take megabytes (on a 250G disk, 10% would call 24G free "pressure" and stop all
/// scheduling); PIDs at 10% free.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<1Gi,nodefs.inodesFree<5%,pid.available<10%";
/// How long a clean shutdown may take before the agent gives up waiting on its tasks.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// The validated configuration the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node_ip: IpAddr,
    pub node_name: String,
    pub hostname: String,
    pub bootstrap_file: PathBuf,
    pub kubeconfig: PathBuf,
    pub cert_file: PathBuf,
    pub private_key_file: PathBuf,
    pub data_dir: PathBuf,
    pub addr: IpAddr,
    pub port: u16,
    pub max_pods: u32,
    pub node_labels: BTreeMap<String, String>,
    pub insecure_registries: Vec<String>,
    /// 0: no healthz listener.
    pub healthz_port: u16,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub image_max_size: u64,
    pub sync_frequency: Duration,
    pub eviction_hard: eviction::Thresholds,
    pub pod_manifest_path: Option<PathBuf>,
    pub allow_anonymous_localhost: bool,
    /// Renew both certificates while running (`--rotate-certificates`).
    pub rotate_certificates: bool,
    /// Timeouts and connection caps of the kubelet API.
    pub api_limits: ApiLimits,
    pub pod_limits: PodLimits,
    /// Listen address and HTTP limits of pods that serve traffic.
    pub serving: Serving,
    /// Egress deny ranges and NetworkPolicy enforcement of pods' sockets.
    pub network: NetworkSettings,
    /// `--system-reserved` and `--kube-reserved`, together: taken from the capacity to make
    /// the allocatable.
    pub reserved: Reserved,
    /// `--bootstrap-file` was given (a missing file is then an error, not standalone mode).
    pub bootstrap_explicit: bool,
}

/// A flag whose value cannot be used. Displays as one line naming the flag.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("--{flag}: {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { flag, problem: problem.into() }
}

/// Whether `--log-format` asks for JSON lines (default: text).
pub fn log_format_json(flags: &Flags) -> Result<bool, ConfigError> {
    match flags.log_format.as_deref().map(str::trim) {
        None | Some("text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(invalid("log-format", format!("{other:?} is neither text nor json"))),
    }
}

/// `--data-dir`, else `~/.krustlet` (shared by the agent and the local commands).
pub fn resolve_data_dir(flags: &Flags, host: &HostFacts) -> Result<PathBuf, ConfigError> {
    match &flags.data_dir {
        Some(d) => non_empty_path("data-dir", d),
        None => host
            .home
            .as_ref()
            .map(|h| h.join(".krustlet"))
            .ok_or_else(|| invalid("data-dir", "not set and $HOME is not set; pass one")),
    }
}

impl Config {
    /// Resolves flags and host facts into a validated configuration.
    pub fn resolve(flags: &Flags, host: &HostFacts) -> Result<Config, ConfigError> {
        let node_ip = match &flags.node_ip {
            Some(raw) => parse_ip("node-ip", raw)?,
            None => default_node_ip(&host.addresses).ok_or_else(|| {
                invalid("node-ip", "not set and the host has no non-loopback address; pass one")
            })?,
        };
        let hostname = match &flags.hostname {
            Some(h) => validate_dns_name("hostname", h.trim())?,
            None => validate_dns_name("hostname", &host.hostname.to_lowercase())
                .map_err(|e| invalid("hostname", format!("not set and the host's {}", e.problem)))?,
        };
        let node_name = match &flags.node_name {
            Some(n) => validate_dns_name("node-name", n.trim())?,
            None => validate_dns_name("node-name", &host.hostname.to_lowercase())
                .map_err(|e| invalid("node-name", format!("not set and the hostname {}", e.problem)))?,
        };
        let data_dir = resolve_data_dir(flags, host)?;
        let config_dir = data_dir.join("config");
        let kubeconfig = match (&flags.kubeconfig, &host.kubeconfig_env) {
            (Some(k), _) => non_empty_path("kubeconfig", k)?,
            (None, Some(k)) if !k.as_os_str().is_empty() => k.clone(),
            _ => config_dir.join("kubeconfig"),
        };
        Ok(Config {
            node_ip,
            node_name,
            hostname,
            bootstrap_explicit: flags.bootstrap_file.is_some(),
            pod_manifest_path: match &flags.pod_manifest_path {
                Some(p) => Some(non_empty_path("pod-manifest-path", p)?),
                None => None,
            },
            allow_anonymous_localhost: flags.allow_anonymous_localhost,
            rotate_certificates: flags.certs.rotate_certificates.unwrap_or(true),
            api_limits: api::resolve(&flags.api)?,
            pod_limits: limits::resolve(&flags.limits)?,
            serving: serving::resolve(&flags.serving)?,
            network: network::resolve(&flags.network)?,
            reserved: reserved::parse("system-reserved", flags.reserved.system_reserved.as_deref())?
                .plus(reserved::parse("kube-reserved", flags.reserved.kube_reserved.as_deref())?),
            bootstrap_file: flags
                .bootstrap_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_BOOTSTRAP_FILE)),
            kubeconfig,
            cert_file: flags.cert_file.clone().unwrap_or_else(|| config_dir.join("krustlet.crt")),
            private_key_file: flags
                .private_key_file
                .clone()
                .unwrap_or_else(|| config_dir.join("krustlet.key")),
            addr: match &flags.addr {
                Some(a) => parse_ip("addr", a)?,
                None => IpAddr::from([0, 0, 0, 0]),
            },
            port: match &flags.port {
                Some(p) => parse_port(p)?,
                None => DEFAULT_PORT,
            },
            max_pods: match &flags.max_pods {
                Some(m) => parse_max_pods(m)?,
                None => DEFAULT_MAX_PODS,
            },
            node_labels: match &flags.node_labels {
                Some(l) => parse_labels(l)?,
                None => BTreeMap::new(),
            },
            insecure_registries: match &flags.insecure_registries {
                Some(r) => parse_registries(r)?,
                None => Vec::new(),
            },
            healthz_port: match &flags.healthz_port {
                Some(p) => p
                    .trim()
                    .parse()
                    .map_err(|_| invalid("healthz-port", format!("{p:?} is not a port number (0-65535)")))?,
                None => DEFAULT_HEALTHZ_PORT,
            },
            container_log_max_size: match &flags.container_log_max_size {
                Some(q) => match crate::base::quantity::bytes(q) {
                    Some(n) if n >= 1024 => n,
                    _ => {
                        return Err(invalid(
                            "container-log-max-size",
                            format!("{q:?} is not a size of at least 1Ki (e.g. 10Mi)"),
                        ));
                    }
                },
                None => DEFAULT_LOG_MAX_SIZE,
            },
            container_log_max_files: match &flags.container_log_max_files {
                Some(n) => match n.trim().parse::<u32>() {
                    Ok(n) if n >= 2 => n,
                    _ => {
                        return Err(invalid(
                            "container-log-max-files",
                            format!("{n:?} must be an integer of at least 2"),
                        ));
                    }
                },
                None => DEFAULT_LOG_MAX_FILES,
            },
            image_max_size: match &flags.image_max_size {
                Some(q) => match crate::base::quantity::bytes(q) {
                    Some(n) if n >= 1024 * 1024 => n,
                    _ => {
                        return Err(invalid(
                            "image-max-size",
                            format!("{q:?} is not a size of at least 1Mi (e.g. 256Mi)"),
                        ));
                    }
                },
                None => DEFAULT_IMAGE_MAX_SIZE,
            },
            sync_frequency: match &flags.sync_frequency {
                Some(d) => parse_duration("sync-frequency", d, Duration::from_secs(1))?,
                None => DEFAULT_SYNC_FREQUENCY,
            },
            eviction_hard: eviction::parse(flags.eviction_hard.as_deref().unwrap_or(DEFAULT_EVICTION_HARD))
                .map_err(|why| invalid("eviction-hard", why))?,
            data_dir,
        })
    }

    /// Directory holding the kubeconfig, keys and certificates.
    pub fn config_dir(&self) -> PathBuf {
        self.data_dir.join("config")
    }
}

#[cfg(test)]
mod tests;
