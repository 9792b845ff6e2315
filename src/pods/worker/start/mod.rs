//! Starting one run of one container, for the executor: resolve its env (which may read
//! ConfigMaps and Secrets), open its mounts beneath their volumes, create its log, and
//! hand it to the runtime. Each failure is the reason the kubelet would show. Its network
//! (ports, listeners, socket rules) is chosen by `crate::network`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use tracing::{Instrument, debug, debug_span};

use crate::base::error::chain;
use crate::base::quantity;
use crate::events::Kind;
use crate::logs::{self, LogFile, Stream};
use crate::metrics::Counted;
use crate::metrics::Metrics;
use crate::network::Network;
use crate::pods::directory::{ContainerEntry, ExecFn};
use crate::pods::env;
use crate::pods::worker::trace::{StartTrace, Timed};
use crate::pods::{Host, Logs, Objects};
use crate::runtime::{
    ContainerNetwork, ContainerRun, ContainerRuntime, CountersFn, Group, PulledImage, Running,
};
use crate::volumes::{self, VolumeLayout};

/// What an attached client's input may get ahead of a `stdin: true` guest's reads: 64 KiB
/// (then the client waits, as with a pipe).
const STDIN_BUFFER: usize = 64 * 1024;

/// Why a run could not start: the kubelet's reason and the whole message.
pub type StartError = (&'static str, String);

/// What one start needs.
pub struct StartRequest<R: ContainerRuntime> {
    pub runtime: Arc<R>,
    /// ConfigMaps and Secrets the env names.
    pub objects: Objects,
    pub host: Arc<Host>,
    pub logs: Logs,
    pub metrics: Arc<Metrics>,
    pub network: Network,
    pub pod: Arc<Pod>,
    pub container: Container,
    pub image: PulledImage<R::Image>,
    pub layout: Arc<VolumeLayout>,
    pub log_dir: std::path::PathBuf,
    pub number: u32,
    /// The container's resource group (see `executor/runs.rs`), if the runtime makes them.
    pub group: Option<Group>,
    /// The pod's start trace: env reads are timed in it.
    pub trace: StartTrace,
}

/// An Event about a container's first start: what the node chose for it.
pub use crate::network::Note;

/// A started run, and what the kubelet API needs to exec into it.
pub struct Started {
    pub running: Box<dyn Running>,
    pub entry: ContainerEntry,
    /// Events to publish when this is the container's first run.
    pub notes: Vec<Note>,
    /// The run's request counters, if it serves requests.
    pub counters: Option<CountersFn>,
}

/// Starts run `number` of the container.
pub async fn start<R: ContainerRuntime>(req: StartRequest<R>) -> Result<Started, StartError> {
    let StartRequest {
        runtime,
        objects,
        host,
        logs: logs_handle,
        metrics,
        network,
        pod,
        container,
        image,
        layout,
        log_dir,
        number,
        group,
        trace,
    } = req;
    let ctx = host.context(&pod);
    let began = std::time::Instant::now();
    let source = Timed { source: objects.source(), trace: &trace };
    let env = env::resolve_env(&source, &ctx, &container)
        .instrument(debug_span!("env"))
        .await
        .map_err(|e| ("CreateContainerConfigError", config_message(objects.client.is_some(), chain(&e))))?;
    let create = |message: String| ("CreateContainerError", message);
    // Opened at every start, beneath each volume: a guest may have changed its subPaths.
    let mounts = layout.mounts(&container).map_err(|e| create(chain(&e)))?;
    let opened = volumes::open_all(&mounts).map_err(|e| create(chain(&e)))?;
    let argv = env::argv(&container, &image.entrypoint, &image.cmd, &image.module_path, &env)
        .map_err(|e| ("CreateContainerConfigError", chain(&e)))?;
    let log_path = logs::container_log(&log_dir, &container.name, number);
    let log = LogFile::create(&logs_handle.registry, &log_path, logs_handle.limits)
        .map_err(|e| create(chain(&e)))?;
    // The kubelet keeps the current run's log and the previous one's (`--previous`).
    logs::remove_runs_before(&log_dir, &container.name, number.saturating_sub(1));
    let (limits, defaulted) =
        crate::pods::resources::group_limits(&container, host.limits.default_memory_limit);
    let memory_limit = limits.memory_limit;
    let mut notes: Vec<Note> = Vec::new();
    if let Some(limit) = memory_limit.filter(|_| defaulted) {
        let message = format!(
            "container {} sets no memory limit: it may use {}, the node's --default-memory-limit",
            container.name,
            quantity::format_bytes(limit)
        );
        notes.push((Kind::Normal, "DefaultMemoryLimit", message));
    }
    let network = network.container(&host.serving, &pod, &container, image.kind.guest(), &mut notes)?;
    let counted = |stream| -> Box<Counted<logs::LogWriter>> {
        Box::new(Counted { inner: log.writer(stream), metrics: metrics.clone() })
    };
    // `stdin: true`: the guest reads what `kubectl attach -i` sends; otherwise its stdin
    // is closed, as a container runtime's.
    let (stdin, stdin_writer) = match container.stdin {
        Some(true) => {
            let (guest, host) = tokio::io::duplex(STDIN_BUFFER);
            let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(guest);
            (Some(reader), Some(Arc::new(tokio::sync::Mutex::new(Some(host)))))
        }
        _ => (None, None),
    };
    let run = ContainerRun {
        argv,
        env: env.clone(),
        mounts: opened,
        stdin,
        stdout: counted(Stream::Stdout),
        stderr: counted(Stream::Stderr),
        memory_limit,
        max_handles: host.limits.max_open_files,
        network: Some(network.clone()),
        group: group.clone(),
    };
    let resolved = began.elapsed();
    let running = runtime.start(&image.image, run).map_err(|e| (e.reason, chain(&e)))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    debug!(env_and_mounts_ms = ms(resolved), total_ms = ms(began.elapsed()), "container started");
    // An exec instance listens on nothing, and its sockets follow the pod's rules.
    let exec_network = ContainerNetwork { tcp_ports: Vec::new(), udp_ports: Vec::new(), ..network };
    let exec: ExecFn = Arc::new(move |mut run: ContainerRun| {
        run.network = run.network.or_else(|| Some(exec_network.clone()));
        runtime.start(&image.image, run)
    });
    let max_handles = host.limits.max_open_files;
    let entry = ContainerEntry {
        run: number,
        running: true,
        exec: Some(exec),
        env,
        mounts,
        memory_limit,
        max_handles,
        started: std::time::SystemTime::now(),
        // The group's: what every instance of the container uses (a server's requests too).
        usage: group.as_ref().map(|g| g.usage.clone()).or_else(|| running.usage()),
        group,
        stdin: stdin_writer,
    };
    let counters = running.counters();
    Ok(Started { running, entry, notes, counters })
}

/// A ConfigMap or Secret that cannot be read, said so; standalone, also why it cannot be
/// there.
pub fn config_message(connected: bool, message: String) -> String {
    if connected {
        return message;
    }
    format!(
        "{message} (this node runs standalone: without an API server, static pods cannot use ConfigMaps, Secrets or service account tokens)"
    )
}
