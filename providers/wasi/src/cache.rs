//! The on-disk compile cache: `<dir>/<digest>-<engine hash>.cwasm`, written atomically,
//! read back with `deserialize_file`. A bad file is a miss, never an error.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

use crate::error::{Error, Result};

/// Code read back from the cache.
pub(crate) enum Cached {
    Module(Module),
    Component(Component),
}

/// One cache directory, bound to one engine's compatibility hash so that a cache
/// written by another wasmtime version or another CPU/config is never read.
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_hash: String,
}

impl DiskCache {
    /// Creates `dir` if needed.
    pub(crate) fn open(dir: PathBuf, engine: &Engine) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::CacheDirCreate { dir: dir.clone(), source })?;
        let mut hasher = Fnv64::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache { dir, engine_hash: format!("{:016x}", hasher.finish()) })
    }

    /// The file for `digest` (already validated: no `/`, no leading `.`).
    pub(crate) fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Removes the cached code for `digest`, if any.
    pub(crate) fn remove(&self, digest: &str) {
        if crate::artifact::validate_digest(digest).is_ok() {
            let _ = std::fs::remove_file(self.path(digest));
        }
    }

    /// Loads the cached code for `digest`. `None` when there is no file; a file that
    /// cannot be deserialized is logged, removed and also reported as `None`.
    pub(crate) fn read(&self, engine: &Engine, digest: &str) -> Option<Cached> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        match deserialize(engine, &path) {
            Ok(cached) => Some(cached),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %format!("{err:#}"),
                    "discarding unreadable compile cache file; recompiling");
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::debug!(path = %path.display(), %err, "could not remove cache file");
                }
                None
            }
        }
    }

    /// Writes `bytes` (serialized code) for `digest`: a temp file in the same
    /// directory, synced, then renamed over the final name.
    pub(crate) fn write(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.path(digest);
        let temp = self.dir.join(format!(
            ".{digest}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path));
        written.map_err(|err| {
            let _ = std::fs::remove_file(&temp);
            Error::CacheWrite { path, source: Box::new(err) }
        })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Cached> {
    // SAFETY: `deserialize_file` trusts the file to be code that this engine
    // serialized. The cache directory belongs to this runtime (the node agent) and
    // only `DiskCache::write` puts files there, with names that include the engine's
    // compatibility hash; wasmtime additionally checks the header and its engine
    // settings, so foreign or truncated files fail here instead of running.
    match Engine::detect_precompiled_file(path)? {
        Some(Precompiled::Module) => Ok(Cached::Module(unsafe { Module::deserialize_file(engine, path)? })),
        Some(Precompiled::Component) => {
            Ok(Cached::Component(unsafe { Component::deserialize_file(engine, path)? }))
        }
        None => Err(wasmtime::Error::msg("not a precompiled wasmtime artifact")),
    }
}

/// 64-bit FNV-1a: a hash that is the same in every build and process, unlike
/// `DefaultHasher`, so cache file names are stable.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        let mut hasher = Fnv64::default();
        hasher.write(b"a");
        assert_eq!(hasher.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn garbage_file_is_a_miss_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = DiskCache::open(dir.path().join("c"), &engine).unwrap();
        assert!(cache.read(&engine, "sha256:x").is_none());
        cache.write("sha256:x", b"not a cwasm").unwrap();
        assert!(cache.path("sha256:x").exists());
        assert!(cache.read(&engine, "sha256:x").is_none());
        assert!(!cache.path("sha256:x").exists());
    }
}
