//! Per-guest store data ([`Host`] for commands and modules, [`ProxyHost`] for one HTTP
//! request): the WASI and wasi:http contexts, the memory limiter, and the adapters that
//! turn a caller's `AsyncRead`/`AsyncWrite` into what wasmtime-wasi's stdio wants; how
//! each store shows its networking to the component linker's socket shadows (`NetView`).
//! The WasmEdge socket ABI ([`wasmedge`]) lives beneath: host functions on a [`Host`],
//! whose `sockets` field holds their state.

pub(crate) mod wasmedge;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::cgroup::{Cgroup, Refusal};
use crate::net::GuestNet;
use crate::net::linker::NetView;
use crate::outgoing::Outgoing;
use crate::ticker::{Activity, InWasm, TracksWasm};
use wasmedge::Sockets;

/// What a command or module guest's store holds. Core modules use `wasi` through the
/// preview1 linker; components use it through its [`WasiView`] impl, and may send
/// outgoing wasi:http requests.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: Outgoing,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) in_wasm: InWasm,
    /// The module's WasmEdge sockets (none unless the run sets its policy).
    pub(crate) sockets: Sockets,
}

impl Host {
    pub(crate) fn new(wasi: WasiP1Ctx, hooks: Outgoing, limiter: MemoryLimiter, activity: Activity) -> Self {
        let sockets = Sockets::default();
        Host { wasi, http: WasiHttpCtx::new(), hooks, limiter, in_wasm: InWasm::new(activity), sockets }
    }
}

impl TracksWasm for Host {
    fn in_wasm(&mut self) -> &mut InWasm {
        &mut self.in_wasm
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// What one table element costs the host: a pointer (a funcref or externref slot).
pub(crate) const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let table = self.wasi.ctx().table;
        WasiHttpCtxView { ctx: &mut self.http, table, hooks: &mut self.hooks }
    }
}

/// The store of one HTTP request's instance: a plain WASI context (no preview1 state to
/// set up per request) and the wasi:http context.
pub(crate) struct ProxyHost {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: Outgoing,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) in_wasm: InWasm,
    /// When the guest traps at its next epoch check: its request's deadline (until a
    /// request takes the instance, the deadline of its instantiation).
    pub(crate) deadline: std::time::Instant,
}

impl TracksWasm for ProxyHost {
    fn in_wasm(&mut self) -> &mut InWasm {
        &mut self.in_wasm
    }
}

impl WasiView for ProxyHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for ProxyHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Which limit refused a memory growth: the error the guest traps with, and what its
/// exit status or its HTTP answer says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OutOfMemory {
    /// The run's own cap ([`RunSpec::memory_limit`](crate::RunSpec::memory_limit)).
    #[error("growing its memory to {requested} bytes would pass its memory limit of {limit} bytes")]
    Store { limit: u64, requested: u64 },
    /// The run's cgroup, or a parent below the node's root group.
    #[error("growing its memory by {growth} bytes would pass the memory limit of {limit} bytes")]
    Group { limit: u64, growth: u64 },
    /// The node's root group: every guest on the node together.
    #[error(
        "growing its memory by {growth} bytes would pass the node's memory budget for guests, {budget} bytes"
    )]
    Node { budget: u64, growth: u64 },
}

/// Caps the total linear memory and table space of all instances in one store (a
/// component has several), charges every growth to the run's cgroup chain (all or
/// nothing, up to the node's budget) and gives it all back when the store is dropped,
/// and remembers which limit refused a growth, if one did.
///
/// Growing past a limit traps — the guest is killed, as the kernel would kill a
/// native container — rather than letting `memory.grow` return -1.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    /// The store's own cap in bytes; `None` means only the cgroups' limits apply.
    limit: Option<u64>,
    /// Sum of the current sizes of every memory and table in the store.
    committed: u64,
    /// The growth approved last, undone if the allocation then fails.
    last_approved: u64,
    /// Set once a growth was refused: by which limit.
    pub(crate) refused: Option<OutOfMemory>,
    /// Where the committed bytes are published, if anywhere.
    usage: Option<Arc<crate::usage::Usage>>,
    /// The group the committed bytes are charged to, with its parents.
    cgroup: Option<Cgroup>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        MemoryLimiter { limit, committed: 0, last_approved: 0, refused: None, usage: None, cgroup: None }
    }

    /// Also publishes the bytes committed to `usage`.
    pub(crate) fn metered(mut self, usage: Arc<crate::usage::Usage>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Also charges the bytes committed to `cgroup` and its parents.
    pub(crate) fn charging(mut self, cgroup: Cgroup) -> Self {
        self.cgroup = Some(cgroup);
        self
    }

    /// Approves `growth` more bytes (of a memory or a table) unless they pass the store's
    /// cap or a cgroup's limit.
    fn grow(&mut self, growth: usize) -> wasmtime::Result<bool> {
        let growth = u64::try_from(growth).unwrap_or(u64::MAX);
        let requested = self.committed.saturating_add(growth);
        let refused = match (self.limit, &self.cgroup) {
            (Some(limit), _) if requested > limit => Some(OutOfMemory::Store { limit, requested }),
            (_, Some(cgroup)) => cgroup.try_charge(growth).err().map(|refusal| match refusal {
                Refusal::Group { limit } => OutOfMemory::Group { limit, growth },
                Refusal::Node { budget } => OutOfMemory::Node { budget, growth },
            }),
            _ => None,
        };
        if let Some(refused) = refused {
            self.refused = Some(refused.clone());
            return Err(wasmtime::Error::new(refused));
        }
        self.committed = requested;
        if let Some(usage) = &self.usage {
            usage.add_memory(growth);
        }
        self.last_approved = growth;
        Ok(true)
    }

    /// Gives `bytes` back to the cgroups and the usage.
    fn release(&mut self, bytes: u64) {
        self.committed = self.committed.saturating_sub(bytes);
        if let Some(cgroup) = &self.cgroup {
            cgroup.uncharge(bytes);
        }
        if let Some(usage) = &self.usage {
            usage.sub_memory(bytes);
        }
    }

    /// The growth approved last did not happen after all.
    fn undo_last(&mut self) -> wasmtime::Result<()> {
        let last = std::mem::take(&mut self.last_approved);
        self.release(last);
        Ok(())
    }
}

impl Drop for MemoryLimiter {
    /// The store and its memories are going: their bytes go back to the cgroups.
    fn drop(&mut self) {
        self.release(self.committed);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // Wasm's own maximum: memory.grow returns -1, as the spec says.
            return Ok(false);
        }
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last()
    }

    /// Tables count against the same cap: each element is a pointer the host allocates
    /// ([`TABLE_ELEMENT_BYTES`]), so a guest cannot grow a funcref table past its memory
    /// limit either.
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.grow(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo_last()
    }
}

/// A caller's reader made `Sync` (wasmtime-wasi requires it) without a lock that is
/// ever contended: the reader is only reached through `&mut self`.
pub(crate) struct SyncReader(Mutex<Pin<Box<dyn AsyncRead + Send>>>);

impl SyncReader {
    pub(crate) fn new(reader: Pin<Box<dyn AsyncRead + Send>>) -> Self {
        SyncReader(Mutex::new(reader))
    }
}

impl AsyncRead for SyncReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let reader = match self.get_mut().0.get_mut() {
            Ok(reader) => reader,
            Err(poisoned) => poisoned.into_inner(),
        };
        reader.as_mut().poll_read(cx, buf)
    }
}

impl NetView for Host {
    fn net(&mut self) -> (&GuestNet, &mut ResourceTable) {
        let Host { wasi, hooks, .. } = self;
        (&hooks.net, wasi.ctx().table)
    }
}

impl NetView for ProxyHost {
    fn net(&mut self) -> (&GuestNet, &mut ResourceTable) {
        (&self.hooks.net, &mut self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 65536;

    #[test]
    fn limiter_counts_all_memories_and_remembers_refusal() {
        let mut limiter = MemoryLimiter::new(Some(3 * PAGE as u64));
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(limiter.memory_growing(0, PAGE, None).unwrap());
        assert!(limiter.refused.is_none());
        assert!(limiter.memory_growing(PAGE, 2 * PAGE, None).is_err());
        let limit = 3 * PAGE as u64;
        assert_eq!(limiter.refused, Some(OutOfMemory::Store { limit, requested: 4 * PAGE as u64 }));
    }

    #[test]
    fn limiter_respects_wasm_maximum_and_failed_growth() {
        let mut limiter = MemoryLimiter::new(Some(2 * PAGE as u64));
        assert!(!limiter.memory_growing(0, 2 * PAGE, Some(PAGE)).unwrap());
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        limiter.memory_grow_failed(wasmtime::Error::msg("mmap")).unwrap();
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(limiter.refused.is_none());
    }

    #[test]
    fn the_cgroup_chain_is_charged_and_given_everything_back() {
        let node = Cgroup::root(Some(10 * PAGE as u64));
        let pod = node.child(crate::CgroupSpec { memory_limit: Some(4 * PAGE as u64), ..Default::default() });
        let usage = Arc::new(crate::usage::Usage::default());
        let mut a = MemoryLimiter::new(None).charging(pod.clone()).metered(Arc::clone(&usage));
        let mut b = MemoryLimiter::new(None).charging(pod.clone());
        assert!(a.memory_growing(0, 3 * PAGE, None).unwrap());
        assert!(b.table_growing(0, 10, None).unwrap());
        assert!(b.memory_growing(0, PAGE, None).is_err());
        let growth = PAGE as u64;
        assert_eq!(b.refused, Some(OutOfMemory::Group { limit: 4 * growth, growth }));
        assert_eq!(
            (pod.memory_bytes(), node.memory_bytes(), usage.memory_bytes()),
            (3 * growth + 80, 3 * growth + 80, 3 * growth)
        );
        let mut c = MemoryLimiter::new(None).charging(node.child(crate::CgroupSpec::default()));
        assert!(c.memory_growing(0, 8 * PAGE, None).is_err());
        assert_eq!(c.refused, Some(OutOfMemory::Node { budget: 10 * growth, growth: 8 * growth }));
        drop((a, b, c));
        assert_eq!((pod.memory_bytes(), node.memory_bytes(), usage.memory_bytes()), (0, 0, 0));
    }

    #[test]
    fn no_limit_allows_growth() {
        let mut limiter = MemoryLimiter::new(None);
        assert!(limiter.memory_growing(0, 1 << 32, None).unwrap());
    }
}
