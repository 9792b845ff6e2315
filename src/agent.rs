//! The agent's life: bootstrap -> register -> heartbeat and pods (and, later, the kubelet
//! API), then a shutdown that reaches every task and waits for them.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::config::{Config, SHUTDOWN_GRACE};
use crate::events::Recorder;
use crate::pods::wasm::WasmRuntime;
use crate::{bootstrap, files, host, node, oci, pods, server};

/// Why the agent stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--data-dir {path}: cannot create it: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error(transparent)]
    File(#[from] files::FileError),
    #[error("--addr/--port {addr}: cannot listen: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("kubelet API TLS: {0}")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error("starting the Wasmtime runtime failed: {0}")]
    Runtime(#[from] krustlet_wasi_provider::Error),
}

/// Runs until `shutdown` resolves (then returns `Ok`) or a step fails for good.
/// Waiting for a CSR approval is interrupted by `shutdown` too.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let started = Instant::now();
    tokio::pin!(shutdown);
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|source| AgentError::DataDir { path: cfg.data_dir.clone(), source })?;
    info!(node = %cfg.node_name, node_ip = %cfg.node_ip, data_dir = %cfg.data_dir.display(), "starting krustlet-wasi");

    let creds = tokio::select! {
        r = bootstrap::run(&cfg) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    // Listen before the node is announced: the API server may call us right away.
    let addr = std::net::SocketAddr::new(cfg.addr, cfg.port);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { addr, source })?;
    let (tls, authn) = server::tls::server_config(&cfg.cert_file, &cfg.private_key_file, &creds.ca_pem)?;
    let machine = host::machine();
    // Ready to run pods before the node is announced, so the first pod waits for nothing.
    let wasm =
        krustlet_wasi_provider::Runtime::builder().cache_dir(cfg.data_dir.join("wasm-cache")).build()?;
    let store = oci::Store::new(cfg.data_dir.join("images"), cfg.insecure_registries.clone());
    let shared = Arc::new(pods::Shared {
        runtime: Arc::new(WasmRuntime::new(store, wasm)),
        client: creds.client.clone(),
        recorder: Recorder::new(creds.client.clone(), &cfg.node_name),
        node_ip: cfg.node_ip,
        data_dir: cfg.data_dir.clone(),
        allocatable: (u64::from(machine.cpus) * 1000, machine.memory_bytes),
        directory: pods::directory::Directory::default(),
        metrics: Arc::new(crate::metrics::Metrics::default()),
        logs: crate::logs::LogRegistry::new(),
        log_limits: crate::logs::LogLimits {
            max_size: cfg.container_log_max_size,
            max_files: cfg.container_log_max_files,
        },
    });
    let recorder = Recorder::new(creds.client.clone(), &cfg.node_name);
    let node = tokio::select! {
        r = node::register(&creds.client, &cfg, &machine, &recorder) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    info!(node = %cfg.node_name, elapsed_ms = started.elapsed().as_millis() as u64, "node registered and Ready");

    let (stop, _) = broadcast::channel::<()>(1);
    let api = Arc::new(server::ServerState {
        node_name: cfg.node_name.clone(),
        authn,
        authz: server::authz::Authorizer::new(creds.client.clone(), &cfg.node_name),
        pods: shared.directory.clone(),
        metrics: shared.metrics.clone(),
        logs: shared.logs.clone(),
    });
    let mut tasks = vec![
        tokio::spawn(server::run(listener, tls, api, stop.subscribe())),
        tokio::spawn(node::heartbeat(creds.client.clone(), cfg.clone(), machine, node, stop.subscribe())),
        tokio::spawn(pods::run(shared, cfg.node_name.clone(), cfg.max_pods, stop.subscribe())),
    ];
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
