//! The agent's life: bootstrap -> register -> heartbeat, pods and the kubelet API (or, with
//! no cluster, standalone: static pods and the API only), then a shutdown that reaches
//! every task and waits for them.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::base::host;
use crate::config::{Config, SHUTDOWN_GRACE};
use crate::events::Recorder;
use crate::runtime::{ImageService, RuntimeService};
use crate::{bootstrap, certs, files, node, oci, pods, runtime, server};

/// Why the agent stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--data-dir {path}: cannot create it: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("--pod-manifest-path {path}: not a readable directory or file: {why}")]
    ManifestDir { path: std::path::PathBuf, why: String },
    #[error(
        "nothing to run: no kubeconfig at {kubeconfig} and no bootstrap file at {bootstrap}; join a cluster with --bootstrap-file (bootstrap/bootstrap.sh writes one) or run static pods without one with --pod-manifest-path DIR"
    )]
    NothingToRun { kubeconfig: std::path::PathBuf, bootstrap: std::path::PathBuf },
    #[error("--addr/--port {addr}: cannot listen: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("kubelet API TLS: {0}")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error("starting the Wasmtime runtime failed: {0}")]
    Runtime(#[from] runtime::wasm::BuildError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error(transparent)]
    File(#[from] files::FileError),
    #[error(transparent)]
    Cert(#[from] certs::CertError),
}

/// Runs until `shutdown` resolves (then returns `Ok`) or a step fails for good.
/// Waiting for a CSR approval is interrupted by `shutdown` too.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let started = Instant::now();
    tokio::pin!(shutdown);
    secure_data_dir(&cfg.data_dir)?;
    if let Some(path) = &cfg.pod_manifest_path {
        crate::pods::manifests::check_readable(path)
            .map_err(|e| AgentError::ManifestDir { path: path.clone(), why: e.to_string() })?;
    }
    info!(node = %cfg.node_name, node_ip = %cfg.node_ip, data_dir = %cfg.data_dir.display(), "starting krustlet-wasi");
    // Recorded until `run` returns; a kernel OOM kill leaves it for the next start to see.
    let (_agent_run, agent_oom_killed) = node::oom::AgentRun::begin(&cfg.data_dir);
    if let Some(how) = &agent_oom_killed {
        warn!(
            "the previous agent was killed for lack of memory ({how}): its pods' running containers are charged as OOMKilled"
        );
    }
    raise_open_files_limit(cfg.max_pods, cfg.pod_limits.max_open_files);
    let memory_medium = crate::volumes::probe(&cfg.data_dir);

    // Standalone when there is nothing to join with and nobody asked to join.
    let standalone = !cfg.kubeconfig.exists() && !cfg.bootstrap_explicit && !cfg.bootstrap_file.exists();
    let (client, ca_pem, renewal) = if standalone {
        if cfg.pod_manifest_path.is_none() {
            return Err(AgentError::NothingToRun {
                kubeconfig: cfg.kubeconfig.clone(),
                bootstrap: cfg.bootstrap_file.clone(),
            });
        }
        info!("no cluster to join: running standalone (static pods only, no node registration)");
        (None, standalone_certificate(&cfg)?, None)
    } else {
        let creds = tokio::select! {
            r = bootstrap::run(&cfg) => r?,
            _ = &mut shutdown => return Ok(()),
        };
        let renewal = (creds.swap, creds.server);
        (Some(creds.client), creds.ca_pem.clone(), Some((renewal, creds.ca_pem)))
    };

    // Listen before the node is announced: the API server may call us right away.
    let addr = std::net::SocketAddr::new(cfg.addr, cfg.port);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { addr, source })?;
    let (tls, authn) = server::tls::server_config(&cfg.cert_file, &cfg.private_key_file, &ca_pem)?;
    let machine = host::machine();
    let allocatable =
        node::allocatable::of(&cfg, &machine, host::memory_and_disk(&cfg.data_dir).disk_total_bytes);
    info!(
        cpu_millis = allocatable.cpu_millis,
        memory = allocatable.memory_bytes,
        capacity_memory = machine.memory_bytes,
        "allocatable: capacity less --system-reserved, --kube-reserved and the hard eviction thresholds; the memory is every guest's budget"
    );
    // Ready to run pods before the node is announced, so the first pod waits for nothing.
    let store = oci::Store::new(cfg.data_dir.join("images"), cfg.insecure_registries.clone())
        .with_max_image_size(cfg.image_max_size);
    let runtime = Arc::new(runtime::wasm::build(
        store.clone(),
        cfg.data_dir.join("wasm-cache"),
        allocatable.memory_bytes,
        cfg.pod_limits.compile_threads,
    )?);
    let runtime_version = format!("{}://{}", runtime.name(), runtime.version());
    let recorder = match &client {
        Some(c) => Recorder::new(c.clone(), &cfg.node_name),
        None => Recorder::local(&cfg.node_name),
    };
    let node = match &client {
        Some(c) => Some(tokio::select! {
            r = node::register(c, &cfg, &machine, &runtime_version, &recorder) => r?,
            _ = &mut shutdown => return Ok(()),
        }),
        None => None,
    };
    let (network, notices) = network_rules(&cfg);
    let shared = Arc::new(pods::Shared {
        runtime: runtime.clone(),
        client: client.clone(),
        recorder,
        node_name: cfg.node_name.clone(),
        node_uid: node.as_ref().and_then(|n| n.uid()),
        node_ip: cfg.node_ip,
        data_dir: cfg.data_dir.clone(),
        memory_medium,
        allocatable: (allocatable.cpu_millis, allocatable.memory_bytes),
        directory: pods::directory::Directory::default(),
        metrics: network.metrics.clone(),
        logs: crate::logs::LogRegistry::new(),
        log_limits: crate::logs::LogLimits {
            max_size: cfg.container_log_max_size,
            max_files: cfg.container_log_max_files,
        },
        sync_frequency: cfg.sync_frequency,
        objects: Arc::new(pods::cache::ObjectCache::new(cfg.sync_frequency)),
        limits: cfg.pod_limits,
        serving: cfg.serving,
        prober: pods::probes::Prober::start(),
        image_gc: Arc::default(),
        memory_trim: Arc::default(),
        network: network.rules.clone(),
        resources: pods::resources::NodeResources {
            allocatable: pods::resources::Amounts {
                cpu_millis: allocatable.cpu_millis,
                memory_bytes: allocatable.memory_bytes,
                ephemeral_storage_bytes: allocatable.ephemeral_storage_bytes,
            },
            memory_budget: Some(allocatable.memory_bytes),
            eviction_hard: cfg.eviction_hard.clone(),
            agent_oom_killed,
        },
    });
    info!(node = %cfg.node_name, elapsed_ms = started.elapsed().as_millis() as u64, standalone, "node registered and Ready");

    let (stop, _) = broadcast::channel::<()>(1);
    let api = Arc::new(server::ServerState {
        node_name: cfg.node_name.clone(),
        authn,
        authz: server::authz::Authorizer::new(client.clone(), &cfg.node_name),
        pods: shared.directory.clone(),
        metrics: shared.metrics.clone(),
        logs: shared.logs.clone(),
        allow_anonymous_localhost: standalone && cfg.allow_anonymous_localhost,
        limits: cfg.api_limits,
        cpu_rates: Default::default(),
        pod_address: cfg.serving.dial_address(),
    });
    let record = server::endpoint::Endpoint {
        addr: cfg.addr,
        port: listener.local_addr().map(|a| a.port()).unwrap_or(cfg.port),
        cert_file: std::path::absolute(&cfg.cert_file).unwrap_or_else(|_| cfg.cert_file.clone()),
        anonymous_localhost: standalone && cfg.allow_anonymous_localhost,
        pid: std::process::id(),
    };
    if let Err(e) = record.write(&cfg.data_dir) {
        warn!(error = %e, "cannot record the kubelet API address; krustlet-wasi exec will not find it");
    }
    let recorder = shared.recorder.clone();
    let (directory, gc_wake) = (shared.directory.clone(), shared.image_gc.clone());
    let image_gc = oci::gc::run(
        store,
        cfg.pod_limits.image_gc,
        cfg.data_dir.clone(),
        move || directory.images(),
        move |report| report.modules_removed.iter().for_each(|m| runtime.remove(m)),
        gc_wake,
        stop.subscribe(),
    );
    let mut tasks = vec![
        tokio::spawn(crate::network::notices::publish(notices, recorder.clone(), stop.subscribe())),
        tokio::spawn(image_gc),
        tokio::spawn(crate::trim::run(shared.memory_trim.clone(), stop.subscribe())),
        tokio::spawn(server::run(listener, tls, api, stop.subscribe())),
        tokio::spawn(pods::run(
            shared,
            cfg.node_name.clone(),
            cfg.max_pods,
            cfg.pod_manifest_path.clone(),
            stop.subscribe(),
        )),
    ];
    let renewal = renewal.filter(|_| {
        if !cfg.rotate_certificates {
            info!("--rotate-certificates=false: the certificates in use are kept until a restart");
        }
        cfg.rotate_certificates
    });
    if let (Some(c), Some(((swap, server), ca_pem))) = (&client, renewal) {
        // Both certificates are renewed in the background; the client's every holder and
        // the kubelet API's TLS pick the new ones up without a restart.
        let rotation = bootstrap::Rotation {
            cfg: cfg.clone(),
            client: c.clone(),
            swap,
            recorder: recorder.clone(),
            server,
            ca_pem,
        };
        tasks.push(tokio::spawn(rotation.clone().client(stop.subscribe())));
        tasks.push(tokio::spawn(rotation.serving(stop.subscribe())));
    }
    if let Some(c) = client.as_ref().filter(|_| cfg.network.enforce_policy) {
        let watch = crate::network::policy::watch::Watch {
            client: c.clone(),
            policies: network.rules.policies(),
            recorder: recorder.clone(),
            node: node::node_ref(&cfg.node_name),
        };
        tasks.push(tokio::spawn(crate::network::policy::watch::run(watch, stop.subscribe())));
    }
    if let (Some(c), Some(n)) = (client, node) {
        tasks.push(tokio::spawn(node::heartbeat(
            c,
            cfg.clone(),
            machine,
            runtime_version,
            n,
            recorder,
            stop.subscribe(),
        )));
    }
    if cfg.healthz_port != 0 {
        let healthz = std::net::SocketAddr::from(([127, 0, 0, 1], cfg.healthz_port));
        match tokio::net::TcpListener::bind(healthz).await {
            Ok(l) => tasks.push(tokio::spawn(server::run_healthz(l, stop.subscribe()))),
            // Not fatal: the node works without it, but say so.
            Err(e) => warn!(%healthz, error = %e, "--healthz-port: cannot listen; /healthz is not served"),
        }
    }

    shutdown.await;
    info!("shutting down");
    let _ = stop.send(());
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "tasks did not stop in time; exiting anyway");
    }
    Ok(())
}

/// Creates the data dir, owner-only: it holds the node's keys, pods' Secrets and tokens
/// (on disk where the agent may not mount a tmpfs) and their logs. A wider mode found on an
/// existing one is narrowed, and said so; one the agent may not change is only warned of.
fn secure_data_dir(path: &std::path::Path) -> Result<(), AgentError> {
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
struct NetworkRules {
    rules: crate::network::Network,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Pods' network rules: the agent's own ports (never a pod's, never reachable from one),
/// the node's addresses (the node IP and every interface's), `--pod-listen-address` and
/// the network flags.
fn network_rules(
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
fn standalone_certificate(cfg: &Config) -> Result<Vec<u8>, AgentError> {
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
fn raise_open_files_limit(max_pods: u32, max_open_files: usize) {
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
