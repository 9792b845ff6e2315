//! Running a guest: [`Runtime::run`] builds the WASI context and store, spawns the
//! guest (or, for an HTTP proxy, its server) as a tokio task, and returns a
//! [`RunHandle`] to wait for, shut down or stop it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

use crate::usage::{Meter, Metered, Usage};
use wasmtime::{Engine, InstancePre, Store};
use wasmtime_wasi::cli::{AsyncStdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtxBuilder, WasiView};

use crate::artifact::{Artifact, Compiled, Entry};
use crate::cgroup::{Cgroup, CgroupSpec, cpu};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::host::wasmedge::Sockets;
use crate::host::{Host, MemoryLimiter, SyncReader};
use crate::net::GuestNet;
use crate::outgoing::Outgoing;
use crate::output::{DRAIN_TIMEOUT, DirectOutput};
use crate::runtime::Runtime;
use crate::serve::{self, Control, HttpStats};
use crate::spec::{RunSpec, add_preopens};
use crate::ticker::Ticker;

impl Runtime {
    /// Starts `artifact` with `spec` as a task on this runtime's guest threads (never
    /// the caller's; it may be called from any thread, in or out of a tokio runtime) and
    /// returns at once.
    ///
    /// An [`HttpProxy`](crate::ArtifactKind::HttpProxy) artifact is served on the
    /// spec's listeners until [`RunHandle::shutdown`] or [`RunHandle::stop`]; each
    /// request gets its own instance with the spec's argv, env, preopens, network
    /// policy and memory limit (stdin is closed). Any other artifact runs once, and
    /// the spec's listeners, if any, are closed at once.
    ///
    /// Every instance of the run (each request's, for a server) charges its memory and
    /// CPU to the spec's [`Cgroup`](crate::Cgroup), or to a new group directly under the
    /// node's root group when the spec has none.
    ///
    /// Errors are about setting up (a preopen that cannot be opened, an artifact from
    /// another `Runtime`, a proxy without listeners); everything after that —
    /// instantiation traps, exits, memory exhaustion — is the handle's [`ExitStatus`].
    /// The task runs in the caller's tracing span and logs to the caller's subscriber.
    pub fn run(&self, artifact: &Artifact, mut spec: RunSpec) -> Result<RunHandle> {
        let guests = self.inner.guests.handle();
        // What setting up spawns (a server and its output tasks) lands on the guest threads too.
        let _entered = guests.enter();
        let cgroup = spec.cgroup.take().unwrap_or_else(|| self.cgroup(CgroupSpec::default()));
        let usage = Arc::new(Usage::default());
        let compiled = Arc::clone(&artifact.compiled);
        let foreign = || Error::ForeignArtifact { digest: compiled.digest.clone() };
        if let Entry::Proxy(pre) = &compiled.entry {
            let http = self.http_engine()?;
            if !Engine::same(&compiled.engine, &http.engine) {
                return Err(foreign());
            }
            let meter = Meter { usage: Arc::clone(&usage), cgroup };
            let (task, control) = serve::start(guests, &http, &compiled.digest, pre.clone(), spec, meter)?;
            return Ok(RunHandle { task, status: None, control: Some(control), usage });
        }
        if !Engine::same(&compiled.engine, &self.inner.engine) {
            return Err(foreign());
        }
        let ticker = Arc::clone(&self.inner.ticker);
        drop(std::mem::take(&mut spec.listeners));
        let limiter =
            MemoryLimiter::new(spec.memory_limit).metered(Arc::clone(&usage)).charging(cgroup.clone());
        let sockets = Sockets::new(&spec.network, spec.max_handles);
        let (wasi, outputs, net) = wasi_context(spec)?;
        let mut host = Host::new(wasi, Outgoing::new(net), limiter, self.inner.ticker.activity());
        host.sockets = sockets;
        let store = new_store(&self.inner.engine, host, cgroup.clone());
        let meter = Meter { usage: Arc::clone(&usage), cgroup };
        let guest = Metered::new(guest(store, compiled, outputs, ticker), meter);
        let task = guests.spawn(guest.instrument(tracing::Span::current()).with_current_subscriber());
        Ok(RunHandle { task, status: None, control: None, usage })
    }
}

/// The handles kept on the guest's stdout and stderr, to drain them at exit.
type Outputs = [Arc<dyn StdoutStream + Sync>; 2];

/// Builds the WASI preview1 context (which also serves components) from the spec.
fn wasi_context(spec: RunSpec) -> Result<(WasiP1Ctx, Outputs, GuestNet)> {
    let max_handles = spec.max_handles;
    let mut builder = WasiCtxBuilder::new();
    builder.args(&spec.argv).envs(&spec.env);
    add_preopens(&mut builder, &spec.preopens)?;
    let net = spec.network.apply(&mut builder);
    if let Some(stdin) = spec.stdin {
        builder.stdin(AsyncStdinStream::new(SyncReader::new(stdin)));
    }
    let outputs = [spec.stdout, spec.stderr].map(|sink| -> Arc<dyn StdoutStream + Sync> {
        match sink {
            Some(sink) => Arc::new(DirectOutput::new(sink)),
            None => Arc::new(tokio::io::empty()),
        }
    });
    let [stdout, stderr] = &outputs;
    builder.stdout(Arc::clone(stdout)).stderr(Arc::clone(stderr));
    let mut wasi = builder.build_p1();
    if let Some(n) = max_handles {
        wasi.ctx().table.set_max_capacity(n);
    }
    Ok((wasi, outputs, net))
}

/// A store that enforces the memory limits and yields to tokio every few epoch ticks (its
/// group's CPU weight), sleeping while its group is over its CPU quota.
fn new_store(engine: &Engine, host: Host, cgroup: Cgroup) -> Store<Host> {
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.limiter);
    crate::ticker::track_wasm(&mut store);
    store.set_epoch_deadline(cgroup.ticks());
    store.epoch_deadline_callback(move |ctx| Ok(cpu::epoch_yield(&cgroup, &ctx.data().in_wasm)));
    store
}

/// The guest task: instantiate, run the entrypoint, drain output, map the result.
/// Holds the ticker so the epoch keeps advancing while the guest lives.
async fn guest(
    mut store: Store<Host>,
    compiled: Arc<Compiled>,
    outputs: Outputs,
    _ticker: Arc<Ticker>,
) -> ExitStatus {
    let result = match &compiled.entry {
        Entry::Module(pre) => run_module(&mut store, pre).await,
        Entry::Component(pre) => run_component(&mut store, pre).await,
        // `Runtime::run` serves proxies; they never reach this task.
        Entry::Proxy(_) => Err(wasmtime::Error::msg("an HTTP proxy is served, not run")),
    };
    let status = ExitStatus::from_run(result, store.data().limiter.refused.as_ref());
    drop(store);
    drain(&outputs).await;
    tracing::debug!(digest = %compiled.digest, %status, "guest finished");
    status
}

async fn run_module(store: &mut Store<Host>, pre: &InstancePre<Host>) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
    start.call_async(&mut *store, ()).await?;
    Ok(0)
}

async fn run_component(store: &mut Store<Host>, pre: &CommandPre<Host>) -> wasmtime::Result<i32> {
    let command = pre.instantiate_async(&mut *store).await?;
    match command.wasi_cli_run().call_run(&mut *store).await? {
        Ok(()) => Ok(0),
        Err(()) => Ok(1),
    }
}

/// Waits (bounded) until output the guest wrote but did not flush reaches its sink.
async fn drain(outputs: &Outputs) {
    for output in outputs {
        let mut stream = output.p2_stream();
        let flushed = async {
            stream.flush().ok()?;
            stream.write_ready().await.ok()
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, flushed).await.is_err() {
            tracing::debug!("guest output not drained within {DRAIN_TIMEOUT:?}");
        }
    }
}

/// A running guest (or HTTP server). [`wait`](Self::wait) for its [`ExitStatus`];
/// [`shutdown`](Self::shutdown) or [`stop`](Self::stop) it, or hand a [`Stopper`] to
/// whoever may need to.
///
/// Dropping the handle stops the guest: whoever owns the handle owns the guest.
#[derive(Debug)]
pub struct RunHandle {
    task: JoinHandle<ExitStatus>,
    status: Option<ExitStatus>,
    control: Option<Control>,
    usage: Arc<Usage>,
}

impl RunHandle {
    /// Waits for the guest to end. Cancel-safe; once it returned, it returns the same
    /// status again at once.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = &self.status {
            return status.clone();
        }
        let status = match (&mut self.task).await {
            Ok(status) => status,
            Err(err) if err.is_cancelled() => ExitStatus::Stopped,
            Err(err) => ExitStatus::Trapped { message: format!("guest task panicked: {err}") },
        };
        self.status = Some(status.clone());
        status
    }

    /// Stops the guest: a guest in wasm code ends at its next epoch yield (one tick,
    /// 10 ms by default), one blocked in a host call ends at once. `wait` then
    /// returns [`ExitStatus::Stopped`] — unless the guest had already finished, in
    /// which case its own status stands.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Ends the run gracefully. An HTTP server stops accepting at once (its listeners
    /// are closed: their ports are free once [`wait`](Self::wait) returns), lets the
    /// requests in flight finish for up to `grace`, then cuts the rest; `wait` then
    /// returns [`ExitStatus::Stopped`]. Calling it again can only shorten the grace.
    /// Any other guest is stopped at once, as by [`stop`](Self::stop): wasm has no
    /// signal to ask a guest to leave.
    pub fn shutdown(&self, grace: Duration) {
        match &self.control {
            Some(control) => control.shutdown(grace),
            None => self.stop(),
        }
    }

    /// What the run uses now: its guest's CPU time and memory; for an HTTP server, the
    /// sum over its request instances (the CPU time of all of them so far, the memory
    /// of those running). Memory goes back to zero when the guest ends.
    pub fn usage(&self) -> Arc<Usage> {
        Arc::clone(&self.usage)
    }

    /// The counters of an HTTP server; `None` for any other guest.
    pub fn http_stats(&self) -> Option<Arc<HttpStats>> {
        self.control.as_ref().map(|control| Arc::clone(&control.stats))
    }

    /// A cloneable handle that can stop the guest while another task waits on it.
    pub fn stopper(&self) -> Stopper {
        Stopper { abort: self.task.abort_handle(), control: self.control.clone() }
    }

    /// True once the guest has ended (for any reason).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stops one guest from anywhere; see [`RunHandle::stop`] and [`RunHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct Stopper {
    abort: AbortHandle,
    control: Option<Control>,
}

impl Stopper {
    /// Same as [`RunHandle::stop`].
    pub fn stop(&self) {
        self.abort.abort();
    }

    /// Same as [`RunHandle::shutdown`].
    pub fn shutdown(&self, grace: Duration) {
        match &self.control {
            Some(control) => control.shutdown(grace),
            None => self.stop(),
        }
    }
}
