//! Wasmtime host for krustlet-wasi: `RunSpec` in, `RunHandle` out. No Kubernetes types.
//!
//! One [`Runtime`] per process owns the wasmtime engine, an epoch ticker thread and
//! the compile caches. [`Runtime::load`] turns wasm bytes (a WASI preview1 core module,
//! a `wasi:cli/command` component or a `wasi:http/proxy` component) into an
//! [`Artifact`]; [`Runtime::run`] starts it as a task on the runtime's own guest threads
//! with the argv, env, preopens, stdio, memory limit, network policy and [`Cgroup`] of a
//! [`RunSpec`] — a proxy is served on the spec's listeners, an instance per request — and
//! returns a [`RunHandle`] whose `wait` gives an [`ExitStatus`].
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
mod cgroup;
mod compile;
mod engines;
mod error;
mod exit;
mod guests;
mod host;
mod load;
mod net;
mod outgoing;
mod output;
mod run;
mod runtime;
mod serve;
mod spec;
mod ticker;
mod usage;

pub use artifact::{Artifact, ArtifactKind, LoadSource};
pub use cgroup::cpu::{CPU_PERIOD, MAX_TICKS_PER_YIELD, MILLICORES_PER_TICK};
pub use cgroup::{Cgroup, CgroupSpec};
pub use engines::DEFAULT_HTTP_POOL;
pub use error::{BoxError, Error, Result};
pub use exit::{ExitStatus, KILLED_EXIT_CODE, TRAP_EXIT_CODE};
pub use guests::{DEFAULT_GUEST_BLOCKING_THREADS, GUEST_NICE};
pub use net::{DEFAULT_LOOKUP_TIMEOUT, DEFAULT_RESOLVER_THREADS, LOOKUP_QUEUE, Lookups};
pub use net::{NetworkPolicy, PortRules, SocketRules, Transport, Verdict, canonical, is_node_local};
pub use outgoing::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT};
pub use output::Sink;
pub use run::{RunHandle, Stopper};
pub use runtime::{
    CacheStats, DEFAULT_EPOCH_TICK, DEFAULT_HTTP_LANES_PER_GUEST_THREAD, Runtime, RuntimeBuilder,
};
pub use serve::{HttpStats, HttpStatsSnapshot, LANE_LEASE};
pub use spec::{
    DEFAULT_MAX_CONCURRENT, DEFAULT_REQUEST_TIMEOUT, HostDir, HttpLimits, Preopen, RunSpec, Stdin,
};
pub use usage::Usage;

/// This runtime's name: the scheme of the container IDs and of the runtime version a
/// node reports for it (`wasmtime://<container>`, `wasmtime://48.0.8`).
pub const RUNTIME_NAME: &str = "wasmtime";

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
        send_sync::<super::HttpStats>();
        send_sync::<super::Lookups>();
        send_sync::<super::NetworkPolicy>();
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
