//! [`RunSpec`]: everything one guest run needs from the caller — argv, env, preopened
//! directories, stdio and a memory limit. Nothing Kubernetes-shaped.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// The path the guest sees it at (e.g. `/data`).
    pub guest: String,
    /// When true the guest can read but every write, create, truncate, rename or
    /// delete fails inside the guest (preview1 reports `EPERM`).
    pub read_only: bool,
}

impl Preopen {
    /// A directory the guest may only read.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen { host: host.into(), guest: guest.into(), read_only: true }
    }

    /// A directory the guest may read and write.
    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Preopen { host: host.into(), guest: guest.into(), read_only: false }
    }
}

/// A guest's standard input.
pub type Stdin = Pin<Box<dyn AsyncRead + Send + 'static>>;

/// A sink for a guest's standard output or error.
pub type Sink = Pin<Box<dyn AsyncWrite + Send + 'static>>;

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
}

impl RunSpec {
    /// A spec with every default:
    ///
    /// * argv: empty (set it with [`argv`](Self::argv); `argv[0]` is the program name)
    /// * env: empty
    /// * preopens: none (the guest sees no filesystem)
    /// * stdin: closed (reads return end-of-file)
    /// * stdout, stderr: discarded
    /// * memory limit: none beyond wasm's own (4 GiB per 32-bit memory)
    pub fn new() -> Self {
        RunSpec {
            argv: Vec::new(),
            env: Vec::new(),
            preopens: Vec::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            memory_limit: None,
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
            .finish()
    }
}
