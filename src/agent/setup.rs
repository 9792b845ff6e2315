//! The agent's one-off set-up helpers: the data dir's mode, the open files limit, the
//! node's network rules, the standalone self-signed serving certificate, and the handles
//! pods share.

use std::sync::Arc;

use tracing::{info, warn};

use super::{AgentError, Host};
use crate::base::host;
use crate::config::Config;
use crate::node::allocatable::Resources;
use crate::pods;
use crate::runtime::wasm::WasmRuntime;
use crate::{certs, files};

/// Creates the data dir, owner-only: it holds the node's keys, pods' Secrets and tokens
/// (on disk where the agent may not mount a tmpfs) and their logs. A wider mode found on an
/// existing one is narrowed, and said so; one the agent may not change is only warned of.
pub(super) fn secure_data_dir(path: &std::path::Path) -> Result<(), AgentError> {
    match files::ensure_private_dir(path) {
        Ok(None) => Ok(()),
        Ok(Some(was)) => {
            info!(data_dir = %path.display(), was = format!("{was:04o}"), "set the data dir's mode to 0700 (owner only): it holds keys, Secrets and tokens");
            Ok(())
        }
        Err(files::FileError::Write { source, .. }) if !path.is_dir() => {
            Err(AgentError::DataDir { path: path.to_path_buf(), source })
        }
        Err(e) => {
            warn!(error = %e, "cannot make the data dir owner-only (0700); other users of this host may read what it holds");
            Ok(())
        }
    }
}

/// The node's network rules and the metrics they count into.
pub(super) struct NetworkRules {
    pub rules: crate::network::Network,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Pods' network rules: the agent's own ports (never a pod's, never reachable from one),
/// the node's addresses (the node IP and every interface's), `--pod-listen-address` and
/// the network flags.
pub(super) fn network_rules(
    cfg: &Config,
) -> (NetworkRules, tokio::sync::mpsc::Receiver<crate::network::notices::Notice>) {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let mut node_addresses = host::facts().addresses;
    node_addresses.push(cfg.node_ip);
    let setup = crate::network::Setup {
        settings: cfg.network.clone(),
        listen_address: cfg.serving.listen_address,
        node_addresses,
        agent_ports: vec![
            (cfg.port, "kubelet API (--port)"),
            (cfg.healthz_port, "healthz endpoint (--healthz-port)"),
        ],
        metrics: metrics.clone(),
    };
    let (rules, notices) = crate::network::Network::new(setup);
    (NetworkRules { rules, metrics }, notices)
}

/// Standalone: the serving certificate is self-signed (made once, kept in the files of
/// `--cert-file`/`--private-key-file`); it is also the only "CA" clients could chain to.
pub(super) fn standalone_certificate(cfg: &Config) -> Result<Vec<u8>, AgentError> {
    if cfg.cert_file.exists() && cfg.private_key_file.exists() {
        return Ok(files::read(&cfg.cert_file)?);
    }
    let (cert_pem, key_pem) = certs::self_signed(&cfg.hostname, &[cfg.node_ip])?;
    files::write_atomic(&cfg.private_key_file, key_pem.as_bytes(), 0o600)?;
    files::write_atomic(&cfg.cert_file, cert_pem.as_bytes(), 0o644)?;
    info!(cert_file = %cfg.cert_file.display(), "wrote a self-signed serving certificate");
    Ok(cert_pem.into_bytes())
}

/// Raises the agent's soft limit on open files to its hard limit, and logs it: every pod's
/// open files, logs and connections, and each guest socket, are descriptors of the agent's
/// process (each container is capped by `--max-open-files`), and the soft default (often
/// 1024) would let a few pods exhaust it. Warns when the limit is below `max_pods` pods of
/// one container each holding `max_open_files`: then guests together could exhaust it.
pub(super) fn raise_open_files_limit(max_pods: u32, max_open_files: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut now = limit.current;
    if limit.current < limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => now = limit.maximum,
            Err(e) => warn!(error = %e, "could not raise the open files limit"),
        }
    }
    let shown = |n: Option<u64>| n.map_or("unlimited".to_string(), |n| n.to_string());
    info!(limit = %shown(now), was = %shown(limit.current), "open files limit (RLIMIT_NOFILE)");
    let needed = u64::from(max_pods) * max_open_files as u64;
    if let Some(now) = now.filter(|now| *now < needed) {
        warn!(
            "the open files limit ({now}) is below --max-pods ({max_pods}) x --max-open-files ({max_open_files}) = \
             {needed}: guests together could use every descriptor of the agent, and then no pod's log, pull or \
             connection would work; raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn) or \
             lower --max-open-files"
        );
    }
}

/// The handles pods share (see `pods/handles.rs`); `api`: the node's API connection.
pub(super) fn pod_handles(
    cfg: &Config,
    host: &Host,
    allocatable: &Resources,
    api: pods::Api,
    runtime: &Arc<WasmRuntime>,
    network: &NetworkRules,
) -> Arc<pods::Handles<WasmRuntime>> {
    let pods_host = Arc::new(pods::Host {
        node_ip: cfg.node_ip,
        data_dir: cfg.data_dir.clone(),
        memory_medium: host.memory_medium,
        limits: cfg.pod_limits,
        serving: cfg.serving,
        sync_frequency: cfg.sync_frequency,
        resources: pods::resources::NodeResources {
            allocatable: pods::resources::Amounts {
                cpu_millis: allocatable.cpu_millis,
                memory_bytes: allocatable.memory_bytes,
                ephemeral_storage_bytes: allocatable.ephemeral_storage_bytes,
            },
            memory_budget: Some(allocatable.memory_bytes),
            eviction_hard: cfg.eviction_hard.clone(),
            agent_oom_killed: host.agent_oom_killed.clone(),
        },
    });
    let objects = pods::Objects {
        client: api.client.clone(),
        cache: Arc::new(pods::cache::ObjectCache::new(cfg.sync_frequency)),
    };
    Arc::new(pods::Handles {
        runtime: runtime.clone(),
        api,
        host: pods_host,
        logs: pods::Logs {
            registry: crate::logs::LogRegistry::new(),
            limits: crate::logs::LogLimits {
                max_size: cfg.container_log_max_size,
                max_files: cfg.container_log_max_files,
            },
        },
        objects,
        directory: pods::directory::Directory::default(),
        metrics: network.metrics.clone(),
        network: network.rules.clone(),
        prober: pods::probes::Prober::start(),
        wakes: pods::Wakes::default(),
    })
}
