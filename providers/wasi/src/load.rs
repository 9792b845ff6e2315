//! [`Runtime::load`] and [`Runtime::load_file`]: an artifact from memory, else from the
//! disk cache, else compiled on the compile threads (once per digest however many ask at
//! once); then linked, once per digest.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use wasmtime::component::Component;
use wasmtime::{Engine, ExternType, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::artifact::{Artifact, ArtifactKind, Compiled, Entry, LoadSource, detect_kind, validate_digest};
use crate::cache::Cached;
use crate::error::{Error, Result, boxed};
use crate::runtime::{DisplayChain, Runtime, lock};

/// The export that makes a component an HTTP proxy (any 0.2.x version).
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2.";

/// Where the wasm comes from: bytes in memory, or a file read only if it must be compiled.
#[derive(Clone, Copy)]
enum Wasm<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl Wasm<'_> {
    /// Its first 8 bytes (or fewer, if it is shorter): enough to tell its format.
    fn header(self) -> Result<Vec<u8>> {
        match self {
            Wasm::Bytes(bytes) => Ok(bytes[..bytes.len().min(8)].to_vec()),
            Wasm::File(path) => {
                let mut head = Vec::with_capacity(8);
                let read = File::open(path).and_then(|f| f.take(8).read_to_end(&mut head));
                read.map_err(|source| Error::Read { path: path.to_owned(), source })?;
                Ok(head)
            }
        }
    }
}

impl Runtime {
    /// Loads a module or component: from memory if this runtime has seen `digest`,
    /// else from the disk cache, else by compiling `bytes` (and caching the result).
    ///
    /// `digest` is the content digest of `bytes` (e.g. `sha256:<hex>`); the caller
    /// vouches for it — it is the cache key. Concurrent loads of one digest compile once;
    /// the others wait for it. Compiling runs on the runtime's compile threads while this
    /// thread waits, and can take seconds for large guests: from async code, call it in
    /// `spawn_blocking`.
    pub fn load(&self, bytes: &[u8], digest: &str) -> Result<Artifact> {
        self.load_from(Wasm::Bytes(bytes), digest)
    }

    /// [`load`](Self::load) of the wasm file at `path`, which is read only when its code
    /// is neither in memory nor in the disk cache (a cache hit reads its first 8 bytes).
    pub fn load_file(&self, path: &Path, digest: &str) -> Result<Artifact> {
        self.load_from(Wasm::File(path), digest)
    }

    fn load_from(&self, wasm: Wasm<'_>, digest: &str) -> Result<Artifact> {
        validate_digest(digest)?;
        let slot = {
            let mut loaded = lock(&self.inner.loaded);
            Arc::clone(loaded.entry(digest.to_owned()).or_default())
        };
        // Held while compiling: the other loads of this digest wait here.
        let mut slot = lock(&slot);
        if let Some(compiled) = slot.as_ref() {
            self.inner.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Artifact { compiled: Arc::clone(compiled), source: LoadSource::Memory });
        }
        let (entry, source) = self.load_uncached(wasm, digest)?;
        let engine = match &entry {
            Entry::Proxy(pre) => pre.engine().clone(),
            Entry::Module(_) | Entry::Component(_) => self.inner.engine.clone(),
        };
        let compiled = Arc::new(Compiled { digest: digest.to_owned(), engine, entry });
        *slot = Some(Arc::clone(&compiled));
        Ok(Artifact { compiled, source })
    }

    /// Disk cache, then compile; then link.
    fn load_uncached(&self, wasm: Wasm<'_>, digest: &str) -> Result<(Entry, LoadSource)> {
        let kind = detect_kind(&wasm.header()?, digest)?;
        let engine = &self.inner.engine;
        let cached = self.inner.disk.as_ref().and_then(|disk| disk.read(engine, digest));
        let (code, source) = match cached {
            Some(code) if kind_of(&code) == kind => {
                self.inner.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                (code, LoadSource::Disk)
            }
            _ => {
                let code = match wasm {
                    Wasm::Bytes(bytes) => self.compile(bytes, digest, kind)?,
                    Wasm::File(path) => {
                        let bytes = std::fs::read(path)
                            .map_err(|source| Error::Read { path: path.to_owned(), source })?;
                        self.compile(&bytes, digest, kind)?
                    }
                };
                self.inner.stats.compiled.fetch_add(1, Ordering::Relaxed);
                (code, LoadSource::Compiled)
            }
        };
        Ok((self.link(code, digest)?, source))
    }

    /// Compiles with Cranelift on the compile threads and writes the result to the disk
    /// cache. A failed cache write is logged, not returned: the compiled code is still good.
    fn compile(&self, bytes: &[u8], digest: &str, kind: ArtifactKind) -> Result<Cached> {
        let started = Instant::now();
        let engine = &self.inner.engine;
        let compile_error = |err| Error::Compile { digest: digest.to_owned(), source: boxed(err) };
        let code = self.inner.compiler.run(|| match kind {
            ArtifactKind::Module => Module::from_binary(engine, bytes).map(Cached::Module),
            ArtifactKind::Component | ArtifactKind::HttpProxy => {
                Component::from_binary(engine, bytes).map(Cached::Component)
            }
        });
        let code = code.map_err(compile_error)?;
        tracing::info!(
            digest,
            ?kind,
            elapsed_ms = started.elapsed().as_millis() as u64,
            threads = self.inner.compiler.threads(),
            "compiled artifact"
        );
        if let Some(disk) = &self.inner.disk {
            let serialized = match &code {
                Cached::Module(module) => module.serialize(),
                Cached::Component(component) => component.serialize(),
            };
            let written = serialized
                .map_err(|err| Error::CacheWrite { path: disk.path(digest), source: boxed(err) })
                .and_then(|bytes| disk.write(digest, &bytes));
            if let Err(err) = written {
                tracing::warn!(digest, error = %DisplayChain(&err), "compile cache not updated");
            }
        }
        Ok(code)
    }

    /// Resolves imports against WASI and looks up the entrypoint, once per digest.
    fn link(&self, code: Cached, digest: &str) -> Result<Entry> {
        let link_error = |err| Error::Link { digest: digest.to_owned(), source: boxed(err) };
        match code {
            Cached::Module(module) => {
                match module.get_export("_start") {
                    Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {}
                    _ => {
                        return Err(link_error(wasmtime::Error::msg(
                            "module does not export a `_start` function of type [] -> []",
                        )));
                    }
                }
                // A module with WasmEdge socket imports gets a linker of its own.
                let sockets =
                    crate::host::wasmedge::link(&self.inner.module_linker, &module).map_err(link_error)?;
                let linker = sockets.as_ref().unwrap_or(&self.inner.module_linker);
                let pre = linker.instantiate_pre(&module).map_err(link_error)?;
                Ok(Entry::Module(pre))
            }
            Cached::Component(component) if is_proxy(&component, &self.inner.engine) => {
                let http = self.http_engine()?;
                // The cache file, just written or just read, maps straight into the HTTP
                // engine; without one the code is copied over.
                let file = self.inner.disk.as_ref().map(|disk| disk.path(digest));
                let pre = http
                    .adopt(&component, file.as_deref().filter(|f| f.exists()))
                    .and_then(|component| http.linker.instantiate_pre(&component))
                    .and_then(ProxyPre::new)
                    .map_err(link_error)?;
                Ok(Entry::Proxy(pre))
            }
            Cached::Component(component) => {
                let pre = self
                    .inner
                    .component_linker
                    .instantiate_pre(&component)
                    .and_then(CommandPre::new)
                    .map_err(link_error)?;
                Ok(Entry::Component(pre))
            }
        }
    }
}

/// True when the component exports `wasi:http/incoming-handler`: it is served, not run.
fn is_proxy(component: &Component, engine: &Engine) -> bool {
    component.component_type().exports(engine).any(|(name, _)| name.starts_with(INCOMING_HANDLER))
}

/// The binary format of cached code (a proxy is a component here).
fn kind_of(code: &Cached) -> ArtifactKind {
    match code {
        Cached::Module(_) => ArtifactKind::Module,
        Cached::Component(_) => ArtifactKind::Component,
    }
}
