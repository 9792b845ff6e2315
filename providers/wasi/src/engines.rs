//! The two wasmtime engines: the main one (commands and modules, memory mapped per
//! instance, copy-on-write images) and the one HTTP proxies run on, whose pooling
//! allocator keeps instance slots, memories and stacks ready between requests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{Error, Result, boxed};
use crate::host::ProxyHost;
use crate::ticker::Ticker;

/// Default number of HTTP request instances the pool holds, node-wide: how many
/// requests of all served artifacts together can run at once.
pub const DEFAULT_HTTP_POOL: u32 = 1000;

/// Core instances, tables per request instance the pool provides for: a C or Rust
/// component has 3 or 4 core instances (the program, the preview1 adapter, shims).
const CORE_INSTANCES_PER_INSTANCE: u32 = 8;

/// Bytes of a request instance's linear memory that stay resident when its pool slot is
/// freed, where the kernel has `PAGEMAP_SCAN` (Linux 6.7+): the pages the instance wrote,
/// up to this many, are copied back from the artifact's memory image (or zeroed) in
/// place instead of being dropped with `madvise`, so the next request on the slot takes
/// no page faults for them (and the process no TLB shootdowns). The rest is dropped as
/// without it. The cost: a freed slot keeps up to this much memory (what its last
/// instance dirtied) until reused; the pool reuses the most recently freed slot of the
/// same artifact first, so about this much per request that ran at once at the peak.
/// Without `PAGEMAP_SCAN` nothing is kept (wasmtime would `memset` this many bytes
/// whatever the instance touched).
const HTTP_MEMORY_KEEP_RESIDENT: usize = 16 << 20;
/// The same for each table of a request instance (its function references).
const HTTP_TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// The main engine's configuration: guests are interrupted by epochs (no fuel); the
/// rest is wasmtime's default (memories reserved per instance, copy-on-write images).
fn config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config
}

/// The engine for modules and commands.
pub(crate) fn main_engine() -> Result<Engine> {
    Engine::new(&config()).map_err(|err| Error::EngineCreate(boxed(err)))
}

/// Where HTTP proxies are linked and run.
pub(crate) struct HttpEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: ComponentLinker<ProxyHost>,
    pub(crate) ticker: Arc<Ticker>,
    /// How many of one served pod's requests start and compute at once (0: no bound; see
    /// `serve::lanes`).
    pub(crate) lanes: usize,
    /// False when the pool was off or could not be had: proxies share the main engine.
    pooled: bool,
}

impl HttpEngine {
    /// A pooled engine with `instances` request slots (its own ticker), or, when
    /// `instances` is 0 or the machine refuses the pool's address space, the main one;
    /// each served pod runs `lanes` requests at once.
    pub(crate) fn new(
        instances: u32,
        lanes: usize,
        main: &Engine,
        main_ticker: &Arc<Ticker>,
        tick: Duration,
    ) -> Result<Self> {
        let pooled = match instances {
            0 => None,
            n => match Engine::new(&pooled_config(n)) {
                Ok(engine) => Some(engine),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), instances = n,
                        "no pooling allocator for HTTP instances; they are allocated one by one");
                    None
                }
            },
        };
        let (engine, ticker) = match &pooled {
            Some(engine) => (engine.clone(), Arc::new(Ticker::start(engine.clone(), tick)?)),
            None => (main.clone(), Arc::clone(main_ticker)),
        };
        let mut linker = ComponentLinker::new(&engine);
        // All of WASI, not only the proxy world: guests built with a preview1 adapter
        // import the filesystem, environment and sockets too.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| crate::net::linker::shadow_sockets(&mut linker))
            .map_err(|err| Error::EngineCreate(boxed(err)))?;
        Ok(HttpEngine { engine, linker, ticker, lanes, pooled: pooled.is_some() })
    }

    /// `component`, compiled by the main engine, on this engine: mapped from `file` (the
    /// compile cache's copy of its code) when there is one, else copied over.
    pub(crate) fn adopt(&self, component: &Component, file: Option<&Path>) -> wasmtime::Result<Component> {
        if !self.pooled {
            return Ok(component.clone());
        }
        if let Some(file) = file {
            // SAFETY: the compile cache's file of this component, written by this runtime
            // (see `DiskCache`) with the main engine, whose configuration differs from this
            // one only in how instances are allocated; wasmtime checks the header and the
            // engine settings before loading it. One that fails (removed meanwhile) is
            // copied over instead.
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(component) => return Ok(component),
                Err(err) => tracing::debug!(file = %file.display(), error = %format!("{err:#}"),
                    "cache file not mapped into the HTTP engine; copying the code"),
            }
        }
        let code = component.serialize()?;
        // SAFETY: `code` was serialized just now by this process's main engine, whose
        // configuration differs from this one only in how instances are allocated;
        // wasmtime checks the header and the engine settings before loading it.
        unsafe { Component::deserialize(&self.engine, &code) }
    }
}

/// The main configuration with a pool of `instances` request instances: as many
/// component instances, memories and async stacks, a few core instances and tables
/// each. Each memory slot reserves 4 GiB of address space (not memory). Freed slots keep
/// what their instance dirtied resident (see [`HTTP_MEMORY_KEEP_RESIDENT`]) when the
/// kernel can say which pages those are.
fn pooled_config(instances: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let core = instances.saturating_mul(CORE_INSTANCES_PER_INSTANCE);
    pool.total_component_instances(instances)
        .total_core_instances(core)
        .total_memories(instances)
        .total_tables(core)
        .total_stacks(instances)
        .total_gc_heaps(0);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(HTTP_MEMORY_KEEP_RESIDENT)
            .table_keep_resident(HTTP_TABLE_KEEP_RESIDENT);
    }
    let mut config = config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code moves between the engines only if their compiled code is compatible.
    use std::hash::{DefaultHasher, Hash, Hasher};

    fn hash(engine: &Engine) -> u64 {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn pooled_engine_accepts_the_main_engines_code() {
        let main = main_engine().unwrap();
        let pooled = Engine::new(&pooled_config(4)).unwrap();
        assert_eq!(hash(&main), hash(&pooled));
    }
}
