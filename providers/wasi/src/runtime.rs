//! [`Runtime`]: the one wasmtime engine per process, its linkers (preview1 modules,
//! commands, HTTP proxies), its epoch ticker, its guest threads, the node's root cgroup
//! and its two compile caches (in memory by digest, on disk by digest and engine hash);
//! how artifacts get into them is `load.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::component::Linker as ComponentLinker;
use wasmtime::{Engine, Linker};

use crate::artifact::{Artifact, Compiled, LoadSource};
use crate::cache::DiskCache;
use crate::cgroup::{Cgroup, CgroupSpec};
use crate::compile::CompileThreads;
use crate::engines::{DEFAULT_HTTP_POOL, HttpEngine, main_engine};
use crate::error::{Error, Result, boxed};
use crate::guests::{DEFAULT_GUEST_BLOCKING_THREADS, GuestThreads};
use crate::host::Host;
use crate::net::{DEFAULT_LOOKUP_TIMEOUT, DEFAULT_RESOLVER_THREADS, Lookups, Resolver};
use crate::ticker::Ticker;

/// Default interval between epoch ticks: how long a guest runs before it yields.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default lanes of one served `wasi:http` artifact per guest thread: how many of its
/// requests start and compute at once (see `serve/lanes.rs`); the others wait in order,
/// holding no instance. One per thread keeps every thread busy under load with the fewest
/// pool slots in rotation: with the C hello component at 64 connections on 2 cores, CPU
/// per request was lowest with 2 lanes, higher with 4 and 8, highest unbounded (one slot
/// per connection, each cold when its turn comes; see docs/benchmarks.md).
pub const DEFAULT_HTTP_LANES_PER_GUEST_THREAD: usize = 1;

/// Configures and builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    cache_dir: Option<PathBuf>,
    epoch_tick: Duration,
    http_pool: u32,
    http_lanes: Option<usize>,
    memory_budget: Option<u64>,
    guest_threads: Option<usize>,
    guest_blocking_threads: usize,
    compile_threads: Option<usize>,
    resolver_threads: usize,
    lookup_timeout: Duration,
}

impl RuntimeBuilder {
    /// A builder with every default:
    ///
    /// * cache dir: none — compiled code is kept in memory only, and every process
    ///   compiles each artifact once
    /// * epoch tick: [`DEFAULT_EPOCH_TICK`] (10 ms) — a running guest yields to tokio
    ///   at least this often, which also bounds how long [`RunHandle::stop`] takes
    /// * HTTP instance pool: [`DEFAULT_HTTP_POOL`] (1000) — requests of all served
    ///   artifacts together that can run at once; one more gets a 503. Made on the
    ///   first HTTP proxy load; it reserves 4 GiB of address space (not memory) per slot
    /// * HTTP lanes: [`DEFAULT_HTTP_LANES_PER_GUEST_THREAD`] (1) per guest thread, per
    ///   served artifact — how many of its requests start and
    ///   compute at once; the others wait in order, without an instance (a request waiting
    ///   for I/O, or computing past [`LANE_LEASE`](crate::LANE_LEASE), leaves its lane)
    ///
    /// * memory budget: none — every guest's memory together is bounded only by the
    ///   cgroups runs are given
    /// * guest threads: one per CPU (`std::thread::available_parallelism`) — guests run
    ///   on these threads (a tokio runtime the `Runtime` owns), never on the caller's,
    ///   at nice +[`GUEST_NICE`](crate::GUEST_NICE) (10) relative to the thread that
    ///   calls `build`
    /// * guest blocking threads: at most [`DEFAULT_GUEST_BLOCKING_THREADS`] (64) — the
    ///   guests' file I/O
    /// * compile threads: one per CPU — Cranelift compiles a new artifact's functions in
    ///   parallel on these threads only (all loads together), at the guests' priority, so
    ///   a compile takes all the cores that running guests leave idle and shares the rest
    ///   with them evenly
    /// * resolver threads: [`DEFAULT_RESOLVER_THREADS`] (16) — guests' name lookups of all
    ///   pods together that run at once, each on a thread of its own, made on demand
    /// * lookup timeout: [`DEFAULT_LOOKUP_TIMEOUT`] (5 s) per name lookup
    ///
    /// [`RunHandle::stop`]: crate::RunHandle::stop
    pub fn new() -> Self {
        RuntimeBuilder {
            cache_dir: None,
            epoch_tick: DEFAULT_EPOCH_TICK,
            http_pool: DEFAULT_HTTP_POOL,
            http_lanes: None,
            memory_budget: None,
            guest_threads: None,
            guest_blocking_threads: DEFAULT_GUEST_BLOCKING_THREADS,
            compile_threads: None,
            resolver_threads: DEFAULT_RESOLVER_THREADS,
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
        }
    }

    /// Sets how many threads resolve guests' names, node-wide (at least 1). A thread stuck
    /// in a lookup that timed out still counts until the system resolver gives up.
    pub fn resolver_threads(mut self, n: usize) -> Self {
        self.resolver_threads = n.max(1);
        self
    }

    /// Sets how long one name lookup may take (waiting for a slot included) before the
    /// guest gets `temporary-resolver-failure`; at least 1 ms.
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Bounds the memory (linear memories and tables) of every guest on the node together:
    /// a growth past it is refused, whichever guest asks.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Sets how many threads run guests (at least 1). Guests that want more CPU than
    /// these threads give wait their turn (see
    /// [`CgroupSpec::cpu_request_millis`](crate::CgroupSpec::cpu_request_millis)).
    pub fn guest_threads(mut self, n: usize) -> Self {
        self.guest_threads = Some(n.max(1));
        self
    }

    /// Caps the threads that run the guests' file I/O at once (at least 1).
    pub fn guest_blocking_threads(mut self, n: usize) -> Self {
        self.guest_blocking_threads = n.max(1);
        self
    }

    /// Sets how many threads compile (at least 1): how many cores compiling new artifacts
    /// takes at most, however many are loaded at once.
    pub fn compile_threads(mut self, n: usize) -> Self {
        self.compile_threads = Some(n.max(1));
        self
    }

    /// Keeps compiled code in `dir` (created if missing) across processes.
    /// The directory must be writable only by this process's user: its files are
    /// loaded as native code.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Sets the epoch tick interval (clamped to at least 1 ms).
    pub fn epoch_tick(mut self, every: Duration) -> Self {
        self.epoch_tick = every.max(Duration::from_millis(1));
        self
    }

    /// Sets how many requests of one served artifact start and compute at once (see
    /// the default in [`RuntimeBuilder::new`]); 0 lets every request start at once.
    pub fn http_lanes(mut self, lanes: usize) -> Self {
        self.http_lanes = Some(lanes);
        self
    }

    /// Sets how many HTTP request instances the pooling allocator holds. With 0 (or
    /// when the machine refuses the pool's address space) each request's instance is
    /// allocated on its own, as commands' are: slower, and bounded only per artifact.
    pub fn http_pool(mut self, instances: u32) -> Self {
        self.http_pool = instances;
        self
    }

    /// Creates the engine, the linkers, the cache directory, the ticker thread, the guest
    /// threads and the compile threads.
    pub fn build(self) -> Result<Runtime> {
        let engine = main_engine()?;
        let mut module_linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |host: &mut Host| &mut host.wasi)
            .map_err(|err| Error::EngineCreate(boxed(err)))?;
        let mut component_linker = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker))
            .and_then(|()| crate::net::linker::shadow_sockets(&mut component_linker))
            .map_err(|err| Error::EngineCreate(boxed(err)))?;
        let disk = self.cache_dir.map(|dir| DiskCache::open(dir, &engine)).transpose()?;
        let ticker = Arc::new(Ticker::start(engine.clone(), self.epoch_tick)?);
        let workers = self
            .guest_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
        let guests = GuestThreads::start(workers, self.guest_blocking_threads)?;
        let compiler = CompileThreads::start(self.compile_threads.unwrap_or(workers))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                guests,
                compiler,
                engine,
                module_linker,
                component_linker,
                http: Mutex::new(None),
                http_pool: self.http_pool,
                http_lanes: self
                    .http_lanes
                    .unwrap_or(workers.saturating_mul(DEFAULT_HTTP_LANES_PER_GUEST_THREAD)),
                epoch_tick: self.epoch_tick,
                disk,
                loaded: Mutex::new(HashMap::new()),
                stats: Stats::default(),
                ticker,
                root: Cgroup::root(self.memory_budget),
                resolver: Resolver::new(self.resolver_threads),
                lookup_timeout: self.lookup_timeout,
            }),
        })
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder::new()
    }
}

/// Counters of where loads got their code, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads that compiled with Cranelift.
    pub compiled: u64,
    /// Loads served from the disk cache.
    pub disk_hits: u64,
    /// Loads served from memory.
    pub memory_hits: u64,
}

/// The wasmtime host. Cheap to clone; all clones share one engine and one set of guest
/// threads. Dropping the last clone stops every guest still running (their handles'
/// `wait` returns [`ExitStatus::Stopped`](crate::ExitStatus::Stopped)); it never blocks.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Where every guest runs. First, so that it is shut down first.
    pub(crate) guests: GuestThreads,
    /// Where Cranelift runs.
    pub(crate) compiler: CompileThreads,
    pub(crate) engine: Engine,
    pub(crate) module_linker: Linker<Host>,
    pub(crate) component_linker: ComponentLinker<Host>,
    /// Made on the first HTTP proxy load.
    http: Mutex<Option<Arc<HttpEngine>>>,
    http_pool: u32,
    /// Lanes per served artifact (0: unbounded).
    http_lanes: usize,
    epoch_tick: Duration,
    pub(crate) disk: Option<DiskCache>,
    /// One slot per digest.
    pub(crate) loaded: Mutex<HashMap<String, Slot>>,
    pub(crate) stats: Stats,
    pub(crate) ticker: Arc<Ticker>,
    /// The node's root group: every run's group is inside it.
    pub(crate) root: Cgroup,
    /// Guests' name lookups.
    resolver: Resolver,
    lookup_timeout: Duration,
}

/// A digest's compiled code, once loaded. Its lock is held while the code is being
/// compiled, so concurrent loads of one digest compile once.
pub(crate) type Slot = Arc<Mutex<Option<Arc<Compiled>>>>;

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) compiled: AtomicU64,
    pub(crate) disk_hits: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Runtime {
    /// A builder with the defaults listed on [`RuntimeBuilder::new`].
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// A pod's name lookups on the node's resolver pool: at most `max_in_flight` at once
    /// (at least 1, at most half the pool), [`LOOKUP_QUEUE`](crate::LOOKUP_QUEUE) more waiting, one more failing
    /// at once. Give every run of the pod a clone in its [`NetworkPolicy`](crate::NetworkPolicy).
    pub fn lookups(&self, max_in_flight: usize) -> Lookups {
        Lookups::new(self.inner.resolver.clone(), max_in_flight, self.inner.lookup_timeout)
    }

    /// A new group directly under the node's root group, for a pod or a container.
    pub fn cgroup(&self, spec: CgroupSpec) -> Cgroup {
        self.inner.root.child(spec)
    }

    /// The artifact already loaded under `digest`, without bytes or disk access.
    pub fn cached(&self, digest: &str) -> Option<Artifact> {
        let slot = lock(&self.inner.loaded).get(digest).cloned()?;
        let compiled = lock(&slot).clone()?;
        self.inner.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
        Some(Artifact { compiled, source: LoadSource::Memory })
    }

    /// Drops the in-memory entry for `digest` (running guests keep their code).
    /// Returns whether there was one. The disk cache is left alone.
    pub fn forget(&self, digest: &str) -> bool {
        lock(&self.inner.loaded).remove(digest).is_some()
    }

    /// Drops `digest`'s compiled code from memory and from the disk cache (image garbage
    /// collection removed its module; running guests keep their code).
    pub fn discard(&self, digest: &str) {
        self.forget(digest);
        if let Some(disk) = &self.inner.disk {
            disk.remove(digest);
        }
    }

    /// How many loads compiled, hit the disk cache, or hit memory so far.
    pub fn cache_stats(&self) -> CacheStats {
        let stats = &self.inner.stats;
        CacheStats {
            compiled: stats.compiled.load(Ordering::Relaxed),
            disk_hits: stats.disk_hits.load(Ordering::Relaxed),
            memory_hits: stats.memory_hits.load(Ordering::Relaxed),
        }
    }
}

impl Runtime {
    /// The engine HTTP proxies run on, made on first use.
    pub(crate) fn http_engine(&self) -> Result<Arc<HttpEngine>> {
        let mut http = lock(&self.inner.http);
        if let Some(engine) = http.as_ref() {
            return Ok(Arc::clone(engine));
        }
        let inner = &self.inner;
        let engine = Arc::new(HttpEngine::new(
            inner.http_pool,
            inner.http_lanes,
            &inner.engine,
            &inner.ticker,
            inner.epoch_tick,
        )?);
        *http = Some(Arc::clone(&engine));
        Ok(engine)
    }
}

/// Formats an error with its `source()` chain on one line.
pub(crate) struct DisplayChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
