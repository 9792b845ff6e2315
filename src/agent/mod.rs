//! The agent's life as named steps ([`run`]): prepare the host, join the cluster (or run
//! standalone: static pods and the API only), listen, start the runtime, register the
//! node, start pods, the kubelet API and the background tasks, then a shutdown that
//! reaches every task and waits for them. One-off set-up helpers are in `setup.rs`.

mod setup;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::base::host::{self, Machine};
use crate::config::{Config, SHUTDOWN_GRACE};
use crate::events::Recorder;
use crate::network::notices::Notice;
use crate::node::allocatable::Resources;
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{ImageService, RuntimeService};
use crate::{bootstrap, certs, files, node, oci, pods, runtime, server};
use setup::NetworkRules;

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
/// Waiting for a CSR approval or for registration is interrupted by `shutdown` too.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let started = Instant::now();
    // Beside the start-up: the first pull's reference parse would otherwise build it.
    oci::warm_parser();
    tokio::pin!(shutdown);
    let prepared = prepare_host(&cfg)?;
    let Some(cluster) = until(&mut shutdown, join_or_standalone(&cfg)).await.transpose()? else {
        return Ok(());
    };
    // Listen before the node is announced: the API server may call us right away.
    let listener = listen(&cfg).await?;
    let (tls, authn) = server::tls::server_config(&cfg.cert_file, &cfg.private_key_file, &cluster.ca_pem)?;
    let machine = host::machine();
    let allocatable = node_allocatable(&cfg, &machine);
    // Ready to run pods before the node is announced, so the first pod waits for nothing.
    let (runtime, store) = start_runtime(&cfg, &allocatable)?;
    let runtime_version = format!("{}://{}", runtime.name(), runtime.version());
    let recorder = match &cluster.client {
        Some(c) => Recorder::new(c.clone(), &cfg.node_name),
        None => Recorder::local(&cfg.node_name),
    };
    let registering = register_node(&cfg, &cluster, &machine, &runtime_version, &recorder);
    let Some(node) = until(&mut shutdown, registering).await.transpose()? else { return Ok(()) };
    let (network, notices) = setup::network_rules(&cfg);
    let api = pods::Api {
        client: cluster.client.clone(),
        recorder: recorder.clone(),
        node_name: cfg.node_name.clone(),
        node_uid: node.as_ref().and_then(|n| n.metadata.uid.clone()),
    };
    let handles = setup::pod_handles(&cfg, &prepared, &allocatable, api, &runtime, &network);
    info!(node = %cfg.node_name, elapsed_ms = started.elapsed().as_millis() as u64, standalone = cluster.standalone, "node registered and Ready");

    let (stop, _) = broadcast::channel::<()>(1);
    let mut tasks = vec![serve_api(&cfg, listener, tls, authn, &cluster, &handles, &stop)];
    tasks.extend(start_housekeeping(&cfg, store, runtime, &handles, notices, &recorder, &stop));
    tasks.push(start_pods(&cfg, handles, &stop));
    let node = node.map(|node| Registered { node, machine, runtime_version });
    tasks.extend(start_cluster_tasks(&cfg, cluster, node, &network, &recorder, &stop));
    tasks.extend(serve_healthz(&cfg, &stop).await);
    wait_for_shutdown(shutdown, stop, tasks).await;
    Ok(())
}

/// `step`'s outcome, or `None` when `shutdown` comes first (a step that is done wins).
async fn until<T>(
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    step: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        r = step => Some(r),
        _ = shutdown.as_mut() => None,
    }
}

/// The host, ready to run pods: what it found, and the record of this run (kept until
/// [`run`] returns; a kernel OOM kill leaves it for the next start to see).
pub(super) struct Host {
    _agent_run: node::oom::AgentRun,
    /// How the previous agent was seen killed for lack of memory, if it was.
    pub(super) agent_oom_killed: Option<String>,
    pub(super) memory_medium: crate::volumes::MemoryMedium,
}

/// Prepares the host: the data dir (owner-only), `--pod-manifest-path` readable, this run
/// recorded, the open files limit raised, and where memory-backed volumes may live.
fn prepare_host(cfg: &Config) -> Result<Host, AgentError> {
    setup::secure_data_dir(&cfg.data_dir)?;
    if let Some(path) = &cfg.pod_manifest_path {
        crate::pods::static_pods::check_readable(path)
            .map_err(|e| AgentError::ManifestDir { path: path.clone(), why: e.to_string() })?;
    }
    info!(node = %cfg.node_name, node_ip = %cfg.node_ip, data_dir = %cfg.data_dir.display(), "starting krustlet-wasi");
    let (agent_run, agent_oom_killed) = node::oom::AgentRun::begin(&cfg.data_dir);
    if let Some(how) = &agent_oom_killed {
        warn!(
            "the previous agent was killed for lack of memory ({how}): its pods' running containers are charged as OOMKilled"
        );
    }
    setup::raise_open_files_limit(cfg.max_pods, cfg.pod_limits.max_open_files);
    let memory_medium = crate::volumes::probe(&cfg.data_dir);
    Ok(Host { _agent_run: agent_run, agent_oom_killed, memory_medium })
}

/// The cluster joined, or none: the node's client, the CA the kubelet API's clients chain
/// to, and what renewing the certificates needs.
pub(super) struct Cluster {
    /// None standalone.
    pub(super) client: Option<Client>,
    ca_pem: Vec<u8>,
    pub(super) renewal: Option<Renewal>,
    pub(super) standalone: bool,
}

/// What certificate rotation needs of the bootstrap.
pub(super) struct Renewal {
    swap: bootstrap::ClientSwap,
    server: String,
    ca_pem: Vec<u8>,
}

/// Joins the cluster (bootstrap: it may wait for a CSR approval), or runs standalone when
/// there is nothing to join with and nobody asked to join (then static pods are needed).
async fn join_or_standalone(cfg: &Config) -> Result<Cluster, AgentError> {
    let standalone = !cfg.kubeconfig.exists() && !cfg.bootstrap_explicit && !cfg.bootstrap_file.exists();
    if standalone {
        if cfg.pod_manifest_path.is_none() {
            return Err(AgentError::NothingToRun {
                kubeconfig: cfg.kubeconfig.clone(),
                bootstrap: cfg.bootstrap_file.clone(),
            });
        }
        info!("no cluster to join: running standalone (static pods only, no node registration)");
        let ca_pem = setup::standalone_certificate(cfg)?;
        return Ok(Cluster { client: None, ca_pem, renewal: None, standalone });
    }
    let creds = bootstrap::run(cfg).await?;
    let renewal = Renewal { swap: creds.swap, server: creds.server, ca_pem: creds.ca_pem.clone() };
    Ok(Cluster { client: Some(creds.client), ca_pem: creds.ca_pem, renewal: Some(renewal), standalone })
}

/// Binds the kubelet API's listener (`--addr`, `--port`).
async fn listen(cfg: &Config) -> Result<tokio::net::TcpListener, AgentError> {
    let addr = std::net::SocketAddr::new(cfg.addr, cfg.port);
    tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { addr, source })
}

/// The node's allocatable (capacity less reservations and hard eviction thresholds), logged.
fn node_allocatable(cfg: &Config, machine: &Machine) -> Resources {
    let allocatable =
        node::allocatable::of(cfg, machine, host::memory_and_disk(&cfg.data_dir).disk_total_bytes);
    info!(
        cpu_millis = allocatable.cpu_millis,
        memory = allocatable.memory_bytes,
        capacity_memory = machine.memory_bytes,
        "allocatable: capacity less --system-reserved, --kube-reserved and the hard eviction thresholds; the memory is every guest's budget"
    );
    allocatable
}

/// Starts the Wasmtime runtime over the image store; the allocatable memory is every
/// guest's budget.
fn start_runtime(
    cfg: &Config,
    allocatable: &Resources,
) -> Result<(Arc<WasmRuntime>, oci::Store), AgentError> {
    let store = oci::Store::new(cfg.data_dir.join("images"), cfg.insecure_registries.clone())
        .with_max_image_size(cfg.image_max_size);
    let runtime = runtime::wasm::build(
        store.clone(),
        cfg.data_dir.join("wasm-cache"),
        allocatable.memory_bytes,
        cfg.pod_limits.compile_threads,
    )?;
    Ok((Arc::new(runtime), store))
}

/// Registers the Node when connected (`None` standalone).
async fn register_node(
    cfg: &Config,
    cluster: &Cluster,
    machine: &Machine,
    runtime_version: &str,
    recorder: &Recorder,
) -> Result<Option<Node>, AgentError> {
    let Some(client) = &cluster.client else { return Ok(None) };
    Ok(Some(node::register(client, cfg, machine, runtime_version, recorder).await?))
}

/// Serves the kubelet API on `listener` and records its address for `krustlet-wasi exec`.
fn serve_api(
    cfg: &Config,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    authn: server::tls::Authenticator,
    cluster: &Cluster,
    handles: &pods::Handles<WasmRuntime>,
    stop: &broadcast::Sender<()>,
) -> JoinHandle<()> {
    let anonymous_localhost = cluster.standalone && cfg.allow_anonymous_localhost;
    let api = Arc::new(server::ServerState {
        node_name: cfg.node_name.clone(),
        authn,
        authz: server::authz::Authorizer::new(cluster.client.clone(), &cfg.node_name),
        pods: handles.directory.clone(),
        metrics: handles.metrics.clone(),
        logs: handles.logs.registry.clone(),
        allow_anonymous_localhost: anonymous_localhost,
        limits: cfg.api_limits,
        cpu_rates: Default::default(),
        pod_address: crate::network::dial_address(cfg.serving.listen_address),
    });
    let record = server::endpoint::Endpoint {
        addr: cfg.addr,
        port: listener.local_addr().map(|a| a.port()).unwrap_or(cfg.port),
        cert_file: std::path::absolute(&cfg.cert_file).unwrap_or_else(|_| cfg.cert_file.clone()),
        anonymous_localhost,
        pid: std::process::id(),
    };
    if let Err(e) = record.write(&cfg.data_dir) {
        warn!(error = %e, "cannot record the kubelet API address; krustlet-wasi exec will not find it");
    }
    tokio::spawn(server::run(listener, tls, api, stop.subscribe()))
}

/// The node's housekeeping: network notices as Events, image garbage collection (woken
/// when a pod goes away), and giving freed memory back to the system.
fn start_housekeeping(
    cfg: &Config,
    store: oci::Store,
    runtime: Arc<WasmRuntime>,
    handles: &pods::Handles<WasmRuntime>,
    notices: mpsc::Receiver<Notice>,
    recorder: &Recorder,
    stop: &broadcast::Sender<()>,
) -> Vec<JoinHandle<()>> {
    let (directory, gc_wake) = (handles.directory.clone(), handles.wakes.image_gc.clone());
    let image_gc = oci::gc::run(
        store,
        cfg.pod_limits.image_gc,
        cfg.data_dir.clone(),
        move || directory.images(),
        move |report| report.modules_removed.iter().for_each(|m| runtime.remove(m)),
        gc_wake,
        stop.subscribe(),
    );
    vec![
        tokio::spawn(crate::network::notices::publish(notices, recorder.clone(), stop.subscribe())),
        tokio::spawn(image_gc),
        tokio::spawn(crate::trim::run(handles.wakes.memory_trim.clone(), stop.subscribe())),
    ]
}

/// Runs the pods: those the API binds to this node and the static pods of
/// `--pod-manifest-path`.
fn start_pods(
    cfg: &Config,
    handles: Arc<pods::Handles<WasmRuntime>>,
    stop: &broadcast::Sender<()>,
) -> JoinHandle<()> {
    tokio::spawn(pods::run(handles, cfg.max_pods, cfg.pod_manifest_path.clone(), stop.subscribe()))
}

/// The registered Node and what its status is posted from.
struct Registered {
    node: Node,
    machine: Machine,
    runtime_version: String,
}

/// What runs only when connected: certificate rotation (unless
/// `--rotate-certificates=false`), the NetworkPolicy watch (with
/// `--enforce-network-policy`) and the node's heartbeat.
fn start_cluster_tasks(
    cfg: &Config,
    cluster: Cluster,
    node: Option<Registered>,
    network: &NetworkRules,
    recorder: &Recorder,
    stop: &broadcast::Sender<()>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let Some(client) = cluster.client else { return tasks };
    let renewal = cluster.renewal.filter(|_| {
        if !cfg.rotate_certificates {
            info!("--rotate-certificates=false: the certificates in use are kept until a restart");
        }
        cfg.rotate_certificates
    });
    if let Some(Renewal { swap, server, ca_pem }) = renewal {
        // Both certificates are renewed in the background; the client's every holder and
        // the kubelet API's TLS pick the new ones up without a restart.
        let rotation = bootstrap::Rotation {
            cfg: cfg.clone(),
            client: client.clone(),
            swap,
            recorder: recorder.clone(),
            server,
            ca_pem,
        };
        tasks.push(tokio::spawn(rotation.clone().client(stop.subscribe())));
        tasks.push(tokio::spawn(rotation.serving(stop.subscribe())));
    }
    if cfg.network.enforce_policy {
        let watch = crate::network::policy::watch::Watch {
            client: client.clone(),
            policies: network.rules.policies(),
            recorder: recorder.clone(),
            node: node::node_ref(&cfg.node_name),
        };
        tasks.push(tokio::spawn(crate::network::policy::watch::run(watch, stop.subscribe())));
    }
    if let Some(Registered { node, machine, runtime_version }) = node {
        tasks.push(tokio::spawn(node::heartbeat(
            client,
            cfg.clone(),
            machine,
            runtime_version,
            node,
            recorder.clone(),
            stop.subscribe(),
        )));
    }
    tasks
}

/// Serves `/healthz` on loopback (`--healthz-port`, 0: off). Not fatal when it cannot
/// listen: the node works without it, but says so.
async fn serve_healthz(cfg: &Config, stop: &broadcast::Sender<()>) -> Option<JoinHandle<()>> {
    if cfg.healthz_port == 0 {
        return None;
    }
    let healthz = std::net::SocketAddr::from(([127, 0, 0, 1], cfg.healthz_port));
    match tokio::net::TcpListener::bind(healthz).await {
        Ok(l) => Some(tokio::spawn(server::run_healthz(l, stop.subscribe()))),
        Err(e) => {
            warn!(%healthz, error = %e, "--healthz-port: cannot listen; /healthz is not served");
            None
        }
    }
}

/// Waits for `shutdown`, tells every task to stop, and waits for them for
/// [`SHUTDOWN_GRACE`].
async fn wait_for_shutdown(
    shutdown: Pin<&mut impl Future<Output = ()>>,
    stop: broadcast::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
) {
    shutdown.await;
    info!("shutting down");
    let _ = stop.send(());
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "tasks did not stop in time; exiting anyway");
    }
}
