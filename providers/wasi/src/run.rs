//! Running a guest: [`Runtime::run`] builds the WASI context and store, spawns the
//! guest as a tokio task, and returns a [`RunHandle`] to wait for or stop it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;
use wasmtime::{Engine, InstancePre, Store};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::artifact::{Artifact, Compiled, Entry};
use crate::error::{Error, Result, boxed};
use crate::exit::ExitStatus;
use crate::host::{Host, MemoryLimiter, SyncReader, SyncWriter};
use crate::runtime::Runtime;
use crate::spec::RunSpec;
use crate::ticker::Ticker;

/// Bytes a guest may have in flight to a stdout/stderr sink before its writes wait.
const STDIO_BUDGET: usize = 64 * 1024;

/// How long a finished guest's buffered output may take to reach its sinks.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

impl Runtime {
    /// Starts `artifact` with `spec` as a task on the current tokio runtime.
    ///
    /// Errors are about setting up (a preopen that cannot be opened, no tokio
    /// runtime, an artifact from another `Runtime`); everything after that —
    /// instantiation traps, exits, memory exhaustion — is the handle's
    /// [`ExitStatus`]. The task runs in the caller's tracing span.
    pub fn run(&self, artifact: &Artifact, spec: RunSpec) -> Result<RunHandle> {
        let tokio = tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime)?;
        let compiled = Arc::clone(&artifact.compiled);
        if !Engine::same(&compiled.engine, &self.inner.engine) {
            return Err(Error::ForeignArtifact { digest: compiled.digest.clone() });
        }
        let limiter = MemoryLimiter::new(spec.memory_limit);
        let (wasi, outputs) = wasi_context(spec)?;
        let host = Host { wasi, limiter };
        let store = new_store(&self.inner.engine, host);
        let guest = guest(store, compiled, outputs, Arc::clone(&self.inner.ticker));
        let task = tokio.spawn(guest.instrument(tracing::Span::current()));
        Ok(RunHandle { task, status: None })
    }
}

/// The handles kept on the guest's stdout and stderr, to drain them at exit.
type Outputs = [Arc<dyn StdoutStream + Sync>; 2];

/// Builds the WASI preview1 context (which also serves components) from the spec.
fn wasi_context(spec: RunSpec) -> Result<(WasiP1Ctx, Outputs)> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&spec.argv).envs(&spec.env);
    for preopen in &spec.preopens {
        let perms = if preopen.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        builder.preopened_dir(&preopen.host, &preopen.guest, perms).map_err(|err| Error::Preopen {
            host: preopen.host.clone(),
            guest: preopen.guest.clone(),
            source: boxed(err),
        })?;
    }
    if let Some(stdin) = spec.stdin {
        builder.stdin(AsyncStdinStream::new(SyncReader::new(stdin)));
    }
    let outputs = [spec.stdout, spec.stderr].map(|sink| -> Arc<dyn StdoutStream + Sync> {
        match sink {
            Some(sink) => Arc::new(AsyncStdoutStream::new(STDIO_BUDGET, SyncWriter::new(sink))),
            None => Arc::new(tokio::io::empty()),
        }
    });
    let [stdout, stderr] = &outputs;
    builder.stdout(Arc::clone(stdout)).stderr(Arc::clone(stderr));
    Ok((builder.build_p1(), outputs))
}

/// A store that yields to tokio every epoch tick and enforces the memory limit.
fn new_store(engine: &Engine, host: Host) -> Store<Host> {
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
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
    };
    let status = ExitStatus::from_run(result, store.data().limiter.exceeded);
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

/// A running guest. [`wait`](Self::wait) for its [`ExitStatus`]; [`stop`](Self::stop)
/// it, or hand a [`Stopper`] to whoever may need to.
///
/// Dropping the handle stops the guest: whoever owns the handle owns the guest.
#[derive(Debug)]
pub struct RunHandle {
    task: JoinHandle<ExitStatus>,
    status: Option<ExitStatus>,
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

    /// A cloneable handle that can stop the guest while another task waits on it.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.task.abort_handle())
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

/// Stops one guest from anywhere; see [`RunHandle::stop`].
#[derive(Debug, Clone)]
pub struct Stopper(AbortHandle);

impl Stopper {
    /// Same as [`RunHandle::stop`].
    pub fn stop(&self) {
        self.0.abort();
    }
}
