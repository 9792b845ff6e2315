//! [`RunSpec`]: everything one guest run needs from the caller — argv, env, preopened
//! directories, stdio, a memory limit, listeners, a network policy and HTTP limits.
//! Nothing Kubernetes-shaped. Also [`HttpLimits`] and [`add_preopens`], which puts the
//! preopens into a WASI context (both a command run and a served instance use it).

use std::fmt;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::cgroup::Cgroup;
use crate::error::{Error, Result, boxed};
use crate::net::NetworkPolicy;
use crate::output::Sink;

/// Where a preopened directory comes from on the host.
#[derive(Debug, Clone)]
pub enum HostDir {
    /// A path, opened with the agent's own rights when the guest starts. Only for paths
    /// no guest can change.
    Path(PathBuf),
    /// A directory the caller already opened (an `O_PATH` handle is enough): the guest
    /// gets exactly that directory, whatever its path names by the time it starts.
    Opened(Arc<OwnedFd>),
}

/// A host directory made visible to the guest.
#[derive(Debug, Clone)]
pub struct Preopen {
    /// The directory on the host.
    pub host: HostDir,
    /// The path the guest sees it at (e.g. `/data`).
    pub guest: String,
    /// When true the guest can read but every write, create, truncate, rename or
    /// delete fails inside the guest (preview1 reports `EPERM`).
    pub read_only: bool,
}

impl Preopen {
    /// A directory the guest may only read.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen { host: HostDir::Path(host.into()), guest: guest.into(), read_only: true }
    }

    /// A directory the guest may read and write.
    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen { host: HostDir::Path(host.into()), guest: guest.into(), read_only: false }
    }

    /// A directory the caller opened, e.g. resolved safely beneath a volume root.
    pub fn opened(dir: OwnedFd, guest: impl Into<String>, read_only: bool) -> Self {
        Preopen { host: HostDir::Opened(Arc::new(dir)), guest: guest.into(), read_only }
    }
}

impl fmt::Display for HostDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostDir::Path(p) => write!(f, "{}", p.display()),
            HostDir::Opened(fd) => write!(f, "directory handle {}", fd.as_raw_fd()),
        }
    }
}

/// A guest's standard input.
pub type Stdin = Pin<Box<dyn AsyncRead + Send + 'static>>;

/// What to run a guest with. Build it with [`RunSpec::new`] and the `with`-style
/// setters; hand it to [`Runtime::run`](crate::Runtime::run).
pub struct RunSpec {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) preopens: Vec<Preopen>,
    pub(crate) stdin: Option<Stdin>,
    pub(crate) stdout: Option<Sink>,
    pub(crate) stderr: Option<Sink>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) listeners: Vec<TcpListener>,
    pub(crate) network: NetworkPolicy,
    pub(crate) http: HttpLimits,
    pub(crate) max_handles: Option<usize>,
    pub(crate) cgroup: Option<Cgroup>,
}

impl RunSpec {
    /// A spec with every default:
    ///
    /// * argv: empty (set it with [`argv`](Self::argv); `argv[0]` is the program name)
    /// * env: empty
    /// * preopens: none (the guest sees no filesystem)
    /// * stdin: closed (reads return end-of-file)
    /// * stdout, stderr: discarded
    /// * memory limit: none beyond wasm's own (4 GiB per 32-bit memory); for an HTTP
    ///   proxy it applies to each request's instance on its own
    /// * listeners: none (an [`HttpProxy`](crate::ArtifactKind::HttpProxy) artifact
    ///   needs at least one; other kinds close any they are given)
    /// * network: [`NetworkPolicy::default`], no sockets at all
    /// * handles: wasmtime-wasi's own cap (a million open files, streams and sockets)
    /// * HTTP limits: [`HttpLimits::default`], 30 s per request and 100 requests in
    ///   flight
    /// * cgroup: a group of its own directly under the node's root group (no limits but
    ///   the node's memory budget)
    pub fn new() -> Self {
        RunSpec {
            argv: Vec::new(),
            env: Vec::new(),
            preopens: Vec::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            memory_limit: None,
            listeners: Vec::new(),
            network: NetworkPolicy::default(),
            http: HttpLimits::default(),
            max_handles: None,
            cgroup: None,
        }
    }

    /// Sets the whole argv, `argv[0]` included.
    pub fn argv<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Appends one environment variable. Order is kept; duplicates are passed as is.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Appends several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds a preopened directory.
    pub fn preopen(mut self, preopen: Preopen) -> Self {
        self.preopens.push(preopen);
        self
    }

    /// Sets standard input. The guest's reads wait for data; end-of-file ends them.
    pub fn stdin(mut self, reader: impl AsyncRead + Send + 'static) -> Self {
        self.stdin = Some(Box::pin(reader));
        self
    }

    /// Sets where standard output goes. The writer is dropped when the guest ends.
    pub fn stdout(mut self, writer: impl AsyncWrite + Send + 'static) -> Self {
        self.stdout = Some(Box::pin(writer));
        self
    }

    /// Sets where standard error goes. The writer is dropped when the guest ends.
    pub fn stderr(mut self, writer: impl AsyncWrite + Send + 'static) -> Self {
        self.stderr = Some(Box::pin(writer));
        self
    }

    /// Caps the guest's total linear memory in bytes. Growing past it kills the guest
    /// with [`ExitStatus::OutOfMemory`](crate::ExitStatus::OutOfMemory).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Sets the listeners an HTTP proxy artifact serves HTTP/1.1 on, already bound and
    /// listening. They are closed when the run ends, so their ports are free once
    /// [`RunHandle::wait`](crate::RunHandle::wait) has returned.
    pub fn listeners(mut self, listeners: Vec<TcpListener>) -> Self {
        self.listeners = listeners;
        self
    }

    /// Sets what the guest may do with wasi:sockets.
    pub fn network(mut self, policy: NetworkPolicy) -> Self {
        self.network = policy;
        self
    }

    /// Sets the per-request timeout and the concurrency cap of an HTTP proxy.
    pub fn http(mut self, limits: HttpLimits) -> Self {
        self.http = limits;
        self
    }
}

impl RunSpec {
    /// Caps the handles the guest may hold at once (open files and directories, streams,
    /// sockets: every WASI resource, preopens included). Opening one more traps the guest
    /// (wasmtime-wasi reports a full table as a trap, not as `EMFILE`); a WasmEdge socket
    /// past it is `EMFILE`.
    pub fn max_handles(mut self, n: usize) -> Self {
        self.max_handles = Some(n);
        self
    }

    /// Puts the run in `cgroup`: its memory (every instance's, for an HTTP server) and its
    /// CPU count there, under the group's limits and its parents'.
    pub fn cgroup(mut self, cgroup: Cgroup) -> Self {
        self.cgroup = Some(cgroup);
        self
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec::new()
    }
}

impl fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunSpec")
            .field("argv", &self.argv)
            // Values may hold secrets: show only the names.
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("preopens", &self.preopens)
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("memory_limit", &self.memory_limit)
            .field("listeners", &self.listeners.iter().map(TcpListener::local_addr).collect::<Vec<_>>())
            .field("network", &self.network)
            .field("http", &self.http)
            .field("max_handles", &self.max_handles)
            .field("cgroup", &self.cgroup)
            .finish()
    }
}

/// Default time one request's instance may run: [`HttpLimits::default`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of requests one served artifact runs at once: [`HttpLimits::default`].
pub const DEFAULT_MAX_CONCURRENT: usize = 100;

/// How a served artifact bounds its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long one request's instance may run, from the moment the request was read to
    /// the end of the guest's handler (its response body included). Past it the
    /// instance is killed: a 500 if no response was sent yet, else a cut-off body.
    /// At least 1 ms.
    pub request_timeout: Duration,
    /// How many requests may run at once; one more gets a 503 at once. Each running
    /// request has its own instance, so the memory this artifact can use is up to
    /// this many times the memory limit, and never more than its cgroup's. At least 1.
    pub max_concurrent: usize,
}

impl Default for HttpLimits {
    /// [`DEFAULT_REQUEST_TIMEOUT`] (30 s) and [`DEFAULT_MAX_CONCURRENT`] (100).
    fn default() -> Self {
        HttpLimits { request_timeout: DEFAULT_REQUEST_TIMEOUT, max_concurrent: DEFAULT_MAX_CONCURRENT }
    }
}

/// Opens every preopen into the context being built.
pub(crate) fn add_preopens(builder: &mut WasiCtxBuilder, preopens: &[Preopen]) -> Result<()> {
    for preopen in preopens {
        let perms = if preopen.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        builder.preopened_dir(host_path(&preopen.host), &preopen.guest, perms).map_err(|err| {
            Error::Preopen {
                host: preopen.host.to_string(),
                guest: preopen.guest.clone(),
                source: boxed(err),
            }
        })?;
    }
    Ok(())
}

/// The path wasmtime-wasi opens for a preopen. wasmtime-wasi 48 takes only paths, so an
/// opened directory goes by its `/proc/self/fd` link: opening that reopens the very
/// directory the handle refers to, with no lookup of the path it once had.
fn host_path(host: &HostDir) -> PathBuf {
    match host {
        HostDir::Path(path) => path.clone(),
        HostDir::Opened(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
    }
}
