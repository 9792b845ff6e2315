//! Per-guest store data ([`Host`] for commands and modules, [`ProxyHost`] for one HTTP
//! request): the WASI and wasi:http contexts, the memory limiter, and the adapters that
//! turn a caller's `AsyncRead`/`AsyncWrite` into what wasmtime-wasi's stdio wants.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outgoing::Outgoing;
use crate::ticker::{Activity, InWasm, TracksWasm};

/// What a command or module guest's store holds. Core modules use `wasi` through the
/// preview1 linker; components use it through its [`WasiView`] impl, and may send
/// outgoing wasi:http requests.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: Outgoing,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) in_wasm: InWasm,
}

impl Host {
    pub(crate) fn new(wasi: WasiP1Ctx, hooks: Outgoing, limiter: MemoryLimiter, activity: Activity) -> Self {
        Host { wasi, http: WasiHttpCtx::new(), hooks, limiter, in_wasm: InWasm::new(activity) }
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

/// The error a refused memory growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded: the guest asked for {requested} bytes in total")]
pub(crate) struct MemoryLimitExceeded {
    limit: usize,
    requested: usize,
}

/// Caps the total linear memory and table space of all instances in one store (a
/// component has several) and remembers whether the cap was hit.
///
/// Growing past the cap traps — the guest is killed, as the kernel would kill a
/// native container — rather than letting `memory.grow` return -1.
#[derive(Debug, Default)]
pub(crate) struct MemoryLimiter {
    /// The cap in bytes; `None` means only wasm's own limits apply.
    limit: Option<usize>,
    /// Sum of the current sizes of every memory in the store.
    committed: usize,
    /// The growth approved last, undone if the allocation then fails.
    last_approved: usize,
    /// Set once a growth was refused.
    pub(crate) exceeded: bool,
    /// Where the committed bytes are published, if anywhere.
    usage: Option<Arc<crate::usage::Usage>>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        // A limit beyond the address space is the same as no limit.
        let limit = limit.and_then(|bytes| usize::try_from(bytes).ok());
        MemoryLimiter { limit, ..MemoryLimiter::default() }
    }

    /// Also publishes the bytes committed to `usage`.
    pub(crate) fn metered(mut self, usage: Arc<crate::usage::Usage>) -> Self {
        self.usage = Some(usage);
        self
    }

    fn commit(&mut self, bytes: usize) {
        self.committed = bytes;
        if let Some(usage) = &self.usage {
            usage.set_memory(bytes);
        }
    }

    /// Approves `growth` more bytes (of a memory or a table) unless they pass the cap.
    fn grow(&mut self, growth: usize) -> wasmtime::Result<bool> {
        let requested = self.committed.saturating_add(growth);
        if let Some(limit) = self.limit
            && requested > limit
        {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded { limit, requested }));
        }
        self.commit(requested);
        self.last_approved = growth;
        Ok(true)
    }

    /// The growth approved last did not happen after all.
    fn undo_last(&mut self) -> wasmtime::Result<()> {
        self.commit(self.committed.saturating_sub(self.last_approved));
        self.last_approved = 0;
        Ok(())
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

/// A caller's writer made `Sync` (wasmtime-wasi requires it) without a lock that is
/// ever contended: the writer is only reached through `&mut self`.
pub(crate) struct SyncWriter(Mutex<Pin<Box<dyn AsyncWrite + Send>>>);

impl SyncWriter {
    pub(crate) fn new(writer: Pin<Box<dyn AsyncWrite + Send>>) -> Self {
        SyncWriter(Mutex::new(writer))
    }

    fn inner(self: Pin<&mut Self>) -> Pin<&mut (dyn AsyncWrite + Send)> {
        let writer = match self.get_mut().0.get_mut() {
            Ok(writer) => writer,
            Err(poisoned) => poisoned.into_inner(),
        };
        writer.as_mut()
    }
}

impl AsyncWrite for SyncWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.inner().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

/// A caller's reader made `Sync`, as [`SyncWriter`] does for writers.
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

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 65536;

    #[test]
    fn limiter_counts_all_memories_and_remembers_refusal() {
        let mut limiter = MemoryLimiter::new(Some(3 * PAGE as u64));
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(limiter.memory_growing(0, PAGE, None).unwrap());
        assert!(!limiter.exceeded);
        assert!(limiter.memory_growing(PAGE, 2 * PAGE, None).is_err());
        assert!(limiter.exceeded);
    }

    #[test]
    fn limiter_respects_wasm_maximum_and_failed_growth() {
        let mut limiter = MemoryLimiter::new(Some(2 * PAGE as u64));
        assert!(!limiter.memory_growing(0, 2 * PAGE, Some(PAGE)).unwrap());
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        limiter.memory_grow_failed(wasmtime::Error::msg("mmap")).unwrap();
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(!limiter.exceeded);
    }

    #[test]
    fn no_limit_allows_growth() {
        let mut limiter = MemoryLimiter::new(None);
        assert!(limiter.memory_growing(0, 1 << 32, None).unwrap());
    }
}
