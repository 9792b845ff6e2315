//! The provider's error type: one variant per step that can fail before a guest runs.
//!
//! Once a guest is running, nothing is an `Error` any more: traps, exits, memory
//! exhaustion and stops are all reported as an [`ExitStatus`](crate::ExitStatus).

use std::path::PathBuf;

/// A boxed error from wasmtime or the OS, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building the runtime, loading an artifact or
/// starting a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wasmtime `Engine` could not be created from the configuration.
    #[error("failed to create the wasmtime engine")]
    EngineCreate(#[source] BoxError),

    /// The compile-cache directory could not be created.
    #[error("failed to create the compile cache directory {dir}")]
    CacheDirCreate {
        /// The configured cache directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The epoch ticker thread could not be spawned.
    #[error("failed to spawn the epoch ticker thread")]
    TickerSpawn(#[source] std::io::Error),

    /// The tokio runtime the guests run on could not be started.
    #[error("failed to start the guest threads")]
    GuestThreads(#[source] std::io::Error),

    /// The threads that compile could not be started.
    #[error("failed to start the compile threads")]
    CompileThreads(#[source] BoxError),

    /// The wasm file given to [`Runtime::load_file`](crate::Runtime::load_file) could not
    /// be read.
    #[error("failed to read artifact {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The digest is empty or too long to be used as a cache key.
    #[error("invalid artifact digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The bytes are not a WebAssembly binary this runtime understands.
    #[error("artifact {digest} is not a WebAssembly binary: {reason}")]
    UnknownFormat {
        /// The digest of the artifact.
        digest: String,
        /// What the header looked like.
        reason: String,
    },

    /// Cranelift rejected or failed to compile the module or component.
    #[error("failed to compile artifact {digest}")]
    Compile {
        /// The digest of the artifact.
        digest: String,
        /// The wasmtime error (validation or compilation).
        #[source]
        source: BoxError,
    },

    /// The compiled code could not be written to the disk cache.
    #[error("failed to write compile cache file {path}")]
    CacheWrite {
        /// The cache file being written.
        path: PathBuf,
        /// The serialization or I/O error.
        #[source]
        source: BoxError,
    },

    /// The artifact's imports are not satisfied by WASI, or it lacks its entrypoint
    /// (`_start` for a core module, `wasi:cli/run` for a component).
    #[error("link error in artifact {digest}")]
    Link {
        /// The digest of the artifact.
        digest: String,
        /// The wasmtime error naming the missing import or export.
        #[source]
        source: BoxError,
    },

    /// The artifact was loaded by a different [`Runtime`](crate::Runtime).
    #[error("artifact {digest} was loaded by another Runtime")]
    ForeignArtifact {
        /// The digest of the artifact.
        digest: String,
    },

    /// A directory to preopen could not be opened on the host.
    #[error("failed to preopen host directory {host} as {guest}")]
    Preopen {
        /// The host directory (a path, or which handle).
        host: String,
        /// The path the guest would have seen.
        guest: String,
        /// The wasmtime-wasi error (usually an I/O error).
        #[source]
        source: BoxError,
    },

    /// An HTTP proxy artifact was run without a listener to serve on.
    #[error("artifact {digest} is a wasi:http proxy and needs at least one listener to serve on")]
    NoListener {
        /// The digest of the artifact.
        digest: String,
    },

    /// A listener handed to `run` could not be served on (e.g. it is not listening,
    /// or cannot be made non-blocking).
    #[error("cannot serve on listener {address}")]
    Listener {
        /// The listener's local address, or why it has none.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Converts a wasmtime error into a boxed std error, keeping its message chain.
pub(crate) fn boxed(err: wasmtime::Error) -> BoxError {
    err.into_boxed_dyn_error()
}
