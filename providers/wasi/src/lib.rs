//! Wasmtime host for krustlet-wasi: `RunSpec` in, `RunHandle` out. No Kubernetes types.
//!
//! One [`Runtime`] per process owns the wasmtime engine, an epoch ticker thread and
//! the compile caches. [`Runtime::load`] turns wasm bytes (a WASI preview1 core module
//! or a `wasi:cli/command` component) into an [`Artifact`]; [`Runtime::run`] starts it
//! as a tokio task with the argv, env, preopens, stdio and memory limit of a
//! [`RunSpec`] and returns a [`RunHandle`] whose `wait` gives an [`ExitStatus`].
//!
//! ```no_run
//! # async fn demo(wasm: &[u8]) -> krustlet_wasi_provider::Result<()> {
//! use krustlet_wasi_provider::{Preopen, RunSpec, Runtime};
//!
//! let runtime = Runtime::builder().cache_dir("/var/lib/krustlet/wasm-cache").build()?;
//! let artifact = runtime.load(wasm, "sha256:0123abcd")?;
//! let spec = RunSpec::new()
//!     .argv(["hello.wasm", "--verbose"])
//!     .env("GREETING", "hi")
//!     .preopen(Preopen::read_only("/srv/config", "/config"))
//!     .stdout(tokio::io::sink())
//!     .memory_limit(64 << 20);
//! let mut handle = runtime.run(&artifact, spec)?;
//! let status = handle.wait().await;
//! println!("{status} (code {})", status.code());
//! # Ok(())
//! # }
//! ```

mod artifact;
mod cache;
mod error;
mod exit;
mod host;
mod run;
mod runtime;
mod spec;
mod ticker;

pub use artifact::{Artifact, ArtifactKind, LoadSource};
pub use error::{BoxError, Error, Result};
pub use exit::{ExitStatus, KILLED_EXIT_CODE, TRAP_EXIT_CODE};
pub use run::{RunHandle, Stopper};
pub use runtime::{CacheStats, DEFAULT_EPOCH_TICK, Runtime, RuntimeBuilder};
pub use spec::{Preopen, RunSpec, Sink, Stdin};

/// The wasmtime version this provider is linked against, read from the workspace
/// `Cargo.lock` at build time (falls back to `"48.0"` when no lock file is found).
/// The node reports it as `containerRuntimeVersion: wasmtime://<version>`.
pub const WASMTIME_VERSION: &str = env!("KRUSTLET_WASMTIME_VERSION");

#[cfg(test)]
mod tests {
    /// The agent shares these across tasks and threads.
    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::Runtime>();
        send_sync::<super::Artifact>();
        send_sync::<super::Stopper>();
        send_sync::<super::ExitStatus>();
        send_sync::<super::Error>();
        send::<super::RunHandle>();
        send::<super::RunSpec>();
    }

    /// The build script read the real resolved version, not the fallback.
    #[test]
    fn wasmtime_version_matches_the_lock_file() {
        let lock = include_str!("../../../Cargo.lock");
        let resolved = lock
            .split("\n\n")
            .find(|block| block.contains("\nname = \"wasmtime\"\n"))
            .and_then(|block| block.split("\nversion = \"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .expect("wasmtime in Cargo.lock");
        assert_eq!(super::WASMTIME_VERSION, resolved);
        assert!(resolved.starts_with("48."), "{resolved}");
    }
}
