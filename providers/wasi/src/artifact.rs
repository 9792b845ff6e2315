//! A loaded, linked guest ([`Artifact`]) and how its kind is told from the binary header.

use std::fmt;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::InstancePre;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::error::{Error, Result};
use crate::host::{Host, ProxyHost};

/// How an artifact runs: a core module (WASI preview1 `_start`), a command component
/// (`wasi:cli/run`), or an HTTP proxy component (`wasi:http/incoming-handler`, served
/// on listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// A core WebAssembly module importing `wasi_snapshot_preview1`. Standard preview1 has
    /// no socket API; a module that imports WasmEdge's socket functions gets them
    /// ([`Artifact::uses_wasmedge_sockets`]).
    Module,
    /// A WebAssembly component exporting `wasi:cli/run`.
    Component,
    /// A WebAssembly component exporting `wasi:http/incoming-handler` (the
    /// `wasi:http/proxy` world): a server, not a command.
    HttpProxy,
}

/// Where a [`Runtime::load`](crate::Runtime::load) got its compiled code from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadSource {
    /// Compiled now with Cranelift (and written to the disk cache if there is one).
    Compiled,
    /// Deserialized from the disk cache: no compilation.
    Disk,
    /// Already loaded by this runtime: neither compiled nor read from disk.
    Memory,
}

/// A compiled, pre-linked guest, ready for any number of concurrent runs.
/// Cheap to clone; all clones share the compiled code.
#[derive(Clone)]
pub struct Artifact {
    pub(crate) compiled: Arc<Compiled>,
    pub(crate) source: LoadSource,
}

impl Artifact {
    /// The content digest the artifact was loaded under.
    pub fn digest(&self) -> &str {
        &self.compiled.digest
    }

    /// Module or component.
    pub fn kind(&self) -> ArtifactKind {
        match self.compiled.entry {
            Entry::Module(_) => ArtifactKind::Module,
            Entry::Component(_) => ArtifactKind::Component,
            Entry::Proxy(_) => ArtifactKind::HttpProxy,
        }
    }

    /// True for a module that imports WasmEdge's socket functions (`sock_*` in
    /// `wasi_snapshot_preview1`): a program that may bind, listen and connect, as a
    /// command component may with wasi:sockets. False for every component.
    pub fn uses_wasmedge_sockets(&self) -> bool {
        match &self.compiled.entry {
            Entry::Module(pre) => crate::host::wasmedge::imports_sockets(pre.module()),
            Entry::Component(_) | Entry::Proxy(_) => false,
        }
    }

    /// Where this load's code came from (compiled, disk cache, or memory).
    pub fn source(&self) -> LoadSource {
        self.source
    }

    /// True when nothing was compiled for this load.
    pub fn cache_hit(&self) -> bool {
        self.source != LoadSource::Compiled
    }
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Artifact")
            .field("digest", &self.digest())
            .field("kind", &self.kind())
            .field("source", &self.source)
            .finish()
    }
}

/// What the in-memory map holds per digest.
pub(crate) struct Compiled {
    pub(crate) digest: String,
    pub(crate) engine: Engine,
    pub(crate) entry: Entry,
}

/// The pre-linked entrypoint: imports resolved, exports looked up, once per digest.
pub(crate) enum Entry {
    Module(InstancePre<Host>),
    Component(CommandPre<Host>),
    Proxy(ProxyPre<ProxyHost>),
}

/// The 8-byte preamble of a binary core module: `\0asm`, version 1, layer 0.
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
/// The preamble of a binary component: `\0asm`, version 0x0d, layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Tells a core module from a component by the version and layer fields after
/// `\0asm` (a component's exports, read once it is compiled, tell a proxy apart).
pub(crate) fn detect_kind(bytes: &[u8], digest: &str) -> Result<ArtifactKind> {
    let unknown = |reason: String| Error::UnknownFormat { digest: digest.to_owned(), reason };
    let header: [u8; 8] = bytes
        .get(..8)
        .and_then(|head| head.try_into().ok())
        .ok_or_else(|| unknown(format!("only {} bytes long", bytes.len())))?;
    if header == MODULE_HEADER {
        Ok(ArtifactKind::Module)
    } else if header == COMPONENT_HEADER {
        Ok(ArtifactKind::Component)
    } else if header[..4] == MODULE_HEADER[..4] {
        let version = u16::from_le_bytes([header[4], header[5]]);
        let layer = u16::from_le_bytes([header[6], header[7]]);
        Err(unknown(format!(
            "unsupported version {version:#x} layer {layer} (want 1/0 for a module, 0xd/1 for a component)"
        )))
    } else {
        Err(unknown(format!("no \\0asm magic (starts with {:02x?})", &header[..4])))
    }
}

/// Checks that the caller's digest can name a cache file: `[A-Za-z0-9:._+-]`, not
/// starting with `.`, at most 200 bytes. Kept as is, so different digests never
/// share a file.
pub(crate) fn validate_digest(digest: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidDigest { digest: digest.to_owned(), reason };
    if digest.is_empty() {
        return Err(invalid("empty"));
    }
    if digest.len() > 200 {
        return Err(invalid("longer than 200 bytes"));
    }
    if digest.starts_with('.') {
        return Err(invalid("starts with '.'"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '+' | '-');
    if !digest.chars().all(allowed) {
        return Err(invalid("only [A-Za-z0-9:._+-] are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_module_and_component_headers() {
        assert_eq!(detect_kind(&MODULE_HEADER, "d").unwrap(), ArtifactKind::Module);
        assert_eq!(detect_kind(&COMPONENT_HEADER, "d").unwrap(), ArtifactKind::Component);
    }

    #[test]
    fn rejects_short_text_and_unknown_versions() {
        assert!(matches!(detect_kind(b"\0as", "d"), Err(Error::UnknownFormat { .. })));
        assert!(matches!(detect_kind(b"(module)", "d"), Err(Error::UnknownFormat { .. })));
        let mut future = MODULE_HEADER;
        future[4] = 2;
        let err = detect_kind(&future, "d").unwrap_err();
        assert!(err.to_string().contains("not a WebAssembly binary"), "{err}");
    }

    #[test]
    fn digests_are_checked() {
        validate_digest("sha256:0123abcdef").unwrap();
        for bad in ["", "../etc", "a/b", ".hidden", "a b"] {
            assert!(validate_digest(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_digest(&"a".repeat(201)).is_err());
    }
}
