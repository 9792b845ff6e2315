//! The agent's life: bootstrap -> register -> heartbeat (and, later, pods and the kubelet
//! API), then a shutdown that reaches every task and waits for them.

use std::future::Future;
use std::time::Instant;

use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::config::{Config, SHUTDOWN_GRACE};
use crate::events::Recorder;
use crate::{bootstrap, files, host, node};

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
    let machine = host::machine();
    let recorder = Recorder::new(creds.client.clone(), &cfg.node_name);
    let node = tokio::select! {
        r = node::register(&creds.client, &cfg, &machine, &recorder) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    info!(node = %cfg.node_name, elapsed_ms = started.elapsed().as_millis() as u64, "node registered and Ready");

    let (stop, _) = broadcast::channel::<()>(1);
    let tasks = vec![tokio::spawn(node::heartbeat(
        creds.client.clone(),
        cfg.clone(),
        machine,
        node,
        stop.subscribe(),
    ))];

    shutdown.await;
    info!("shutting down");
    let _ = stop.send(());
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "tasks did not stop in time; exiting anyway");
    }
    Ok(())
}
