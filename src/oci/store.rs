//! The image store under `<data-dir>/images`: pulling with a policy, content-addressed
//! blobs, and an index of what each reference resolved to, so `IfNotPresent` and `Never`
//! work without a network, also after a restart.
//!
//! Layout: `blobs/sha256/<hex>` (manifests, configs, layers, modules — each verified
//! before it is renamed into place), `refs/<sha256 of reference>.json` (one
//! [`IndexEntry`] per reference, written atomically), `tmp/` (files being written).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_client::Reference;
use serde::{Deserialize, Serialize};

use super::blobs::{Blobs, sha256_digest, write_atomic};
use super::formats::{self, Descriptor, ImageConfig, Manifest, Plan, Rejection};
use super::image::{self, Layer, Unpack};
use super::limits::{Budget, Limit, human};
use super::reference::{self, ImageRef};
use super::registry::Registry;
use super::{ArtifactFormat, FileImages, OciError, PullPolicy, Pulled, RegistryAuth};
use crate::base::turns::Turns;

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IndexEntry {
    /// The normalized reference (the file name is its hash).
    pub(super) reference: String,
    pub(super) manifest_digest: String,
    pub(super) pulled: Pulled,
}

/// Content-addressed images on disk; cheap to clone (clones share the per-reference locks).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    insecure_registries: Vec<String>,
    /// `--image-max-size`: an image's layers together, and what one layer unpacks to.
    max_image_size: u64,
    blobs: Blobs,
    /// One lock per normalized reference: concurrent pulls of one image run one at a time.
    locks: Arc<Turns>,
    /// Pulls hold it shared, garbage collection exclusively (see `gc.rs`).
    gc: Arc<tokio::sync::RwLock<()>>,
}

impl Store {
    /// A store rooted at `root` (normally `<data-dir>/images`; created on first pull).
    /// Registries in `insecure_registries` (`host:port`, as in the image reference) are
    /// reached over plain HTTP; every other registry over HTTPS. Images may be as large as
    /// [`crate::config::DEFAULT_IMAGE_MAX_SIZE`] unless [`Store::with_max_image_size`] says.
    pub fn new(root: PathBuf, insecure_registries: Vec<String>) -> Self {
        Store {
            blobs: Blobs::new(root.clone()),
            root,
            insecure_registries,
            max_image_size: crate::config::DEFAULT_IMAGE_MAX_SIZE,
            locks: Arc::default(),
            gc: Arc::default(),
        }
    }

    /// Caps what one image may download (its layers together) and what one layer, or a
    /// `file://` module, may unpack to (`--image-max-size`).
    pub fn with_max_image_size(mut self, bytes: u64) -> Self {
        self.max_image_size = bytes;
        self
    }

    pub(super) fn gc_lock(&self) -> &tokio::sync::RwLock<()> {
        &self.gc
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `image` available locally according to `policy` and returns the module.
    /// `file:///abs/path.wasm` references are read from disk whatever the policy, if
    /// `files` allows them (static pods only).
    pub async fn pull(
        &self,
        image: &str,
        policy: PullPolicy,
        auth: &RegistryAuth,
        files: FileImages,
    ) -> Result<Pulled, OciError> {
        // An image written in its normalized form (`host/repo:tag`, as most pod specs on a
        // private registry are) is looked up before it is parsed: the parser builds a large
        // regular expression on its first use, tens of milliseconds of a cached pod's start
        // after an agent restart. An entry is only ever stored under a parsed reference's
        // normalized form, so a hit is the image the parse would have found.
        if !image.starts_with("file://") {
            let _no_gc = self.gc.read().await;
            if let Some(pulled) = self.present(image, image, policy).await {
                return Ok(pulled);
            }
        }
        let reference = match reference::parse(image)? {
            ImageRef::LocalFile(path) => {
                return super::local::pull(&self.blobs, image, &path, files, self.max_image_size).await;
            }
            ImageRef::Registry(r) => r,
        };
        let key = reference::index_key(&reference);
        let _no_gc = self.gc.read().await;
        // An image present is read without the pull lock (entries are replaced whole, by a
        // rename): a hundred pods of one image start at once, not one after another. (Under
        // its normalized form it was just looked for.)
        if key != image
            && let Some(pulled) = self.present(&key, image, policy).await
        {
            return Ok(pulled);
        }
        let _turn = self.locks.take(&key).await;
        // Pulled meanwhile by the holder of the lock?
        if let Some(pulled) = self.present(&key, image, policy).await {
            return Ok(pulled);
        }
        if policy == PullPolicy::Never {
            return Err(OciError::NotPresent { reference: image.to_string() });
        }
        let (manifest_digest, pulled) = self.fetch(&reference, image, auth).await?;
        self.save(&key, &manifest_digest, &pulled).await?;
        tracing::info!(image, image_id = %pulled.image_id, wasm = %pulled.wasm_digest, "pulled image");
        Ok(pulled)
    }

    /// The stored image under `key`, unless `policy` asks the registry every time.
    async fn present(&self, key: &str, image: &str, policy: PullPolicy) -> Option<Pulled> {
        if policy == PullPolicy::Always {
            return None;
        }
        let pulled = self.load(key, image).await?;
        tracing::debug!(image, policy = ?policy, "image present in store");
        Some(pulled)
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        let hash = sha256_digest(key.as_bytes());
        let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
        self.root.join("refs").join(format!("{hex}.json"))
    }

    /// The stored result for `key`, if its entry is readable and its module still exists.
    async fn load(&self, key: &str, image: &str) -> Option<Pulled> {
        let path = self.entry_path(key);
        let bytes = tokio::fs::read(&path).await.ok()?;
        let entry: IndexEntry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring malformed image index entry");
                return None;
            }
        };
        let wasm_path = self.blobs.path(&entry.pulled.wasm_digest)?;
        if entry.reference != key || !self.blobs.has(&entry.pulled.wasm_digest).await {
            return None;
        }
        // Used now: image GC removes the least recently used first.
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(Pulled { image: image.to_string(), wasm_path, ..entry.pulled })
    }

    async fn save(&self, key: &str, manifest_digest: &str, pulled: &Pulled) -> Result<(), OciError> {
        let path = self.entry_path(key);
        let entry = IndexEntry {
            reference: key.to_string(),
            manifest_digest: manifest_digest.into(),
            pulled: pulled.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&entry)
            .map_err(|e| OciError::StoreIndex { path: path.clone(), detail: e.to_string() })?;
        write_atomic(&self.root, &path, &bytes).await
    }

    /// Resolves the reference at the registry and stores what the module needs.
    async fn fetch(
        &self,
        r: &Reference,
        image: &str,
        auth: &RegistryAuth,
    ) -> Result<(String, Pulled), OciError> {
        let reg = Registry::connect(r, image, &self.insecure_registries, auth)?;
        let reject = |rejection: Rejection| match rejection {
            Rejection::Malformed(detail) => OciError::BadManifest { reference: image.into(), detail },
            Rejection::Unsupported(detail) => {
                OciError::UnsupportedArtifact { reference: image.into(), detail }
            }
        };
        let (bytes, top_digest) = reg.manifest(None).await?;
        self.blobs.put(&bytes).await?;
        let (config, layers) = match formats::parse_manifest(&bytes).map_err(reject)? {
            Manifest::Image { config, layers } => (config, layers),
            Manifest::Index(entries) => {
                let entry = formats::select_entry(&entries)
                    .map_err(|platforms| OciError::NoWasmPlatform { reference: image.into(), platforms })?;
                let (bytes, _) = reg.manifest(Some(&entry.digest)).await?;
                self.blobs.put(&bytes).await?;
                match formats::parse_manifest(&bytes).map_err(reject)? {
                    Manifest::Image { config, layers } => (config, layers),
                    Manifest::Index(_) => {
                        return Err(reject(Rejection::Unsupported(format!(
                            "index entry {} is itself an index (nested indexes are not supported)",
                            entry.digest
                        ))));
                    }
                }
            }
        };
        let image_id = reference::image_id(r, &top_digest);
        let mut budget = Budget::new(Limit::Image(self.max_image_size));
        let pulled = match formats::plan(config, layers).map_err(reject)? {
            Plan::WasmLayer { format, layer } => {
                let wasm_path = self.fetch_blob(&reg, &layer, "Wasm layer", &mut budget).await?;
                Pulled {
                    image: image.into(),
                    image_id,
                    wasm_digest: layer.digest,
                    wasm_path,
                    entrypoint: Vec::new(),
                    cmd: Vec::new(),
                    format,
                }
            }
            Plan::Image { config, layers } => {
                let (wasm_digest, wasm_path, (entrypoint, cmd)) =
                    self.fetch_image(&reg, image, &config, layers, &mut budget).await?;
                Pulled {
                    image: image.into(),
                    image_id,
                    wasm_digest,
                    wasm_path,
                    entrypoint,
                    cmd,
                    format: ArtifactFormat::OciImage,
                }
            }
        };
        Ok((top_digest, pulled))
    }

    /// For an ordinary image: config and layers, then the module file out of the layers.
    async fn fetch_image(
        &self,
        reg: &Registry,
        image: &str,
        config: &Descriptor,
        layer_descs: Vec<(Descriptor, formats::Compression)>,
        budget: &mut Budget,
    ) -> Result<(String, PathBuf, (Vec<String>, Vec<String>)), OciError> {
        let config_path =
            self.fetch_blob(reg, config, "image config", &mut Budget::new(Limit::Manifest)).await?;
        // Within its cap: checked as it was stored (or now, if it was stored before).
        let config_bytes = tokio::fs::read(&config_path).await.map_err(|source| OciError::StoreIo {
            action: "reading",
            path: config_path.clone(),
            source,
        })?;
        let parsed: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| OciError::BadManifest {
                reference: image.into(),
                detail: format!("image config {}: {e}", config.digest),
            })?;
        let container = parsed.config.unwrap_or_default();
        let mut layers = Vec::with_capacity(layer_descs.len());
        for (desc, compression) in layer_descs {
            let path = self.fetch_blob(reg, &desc, "layer", budget).await?;
            layers.push(Layer { path, digest: desc.digest, compression });
        }
        let entrypoint =
            (container.entrypoint.clone().unwrap_or_default(), container.cmd.clone().unwrap_or_default());
        let (reference, blobs, max_unpacked) = (image.to_string(), self.blobs.clone(), self.max_image_size);
        let found = tokio::task::spawn_blocking(move || {
            let unpack = Unpack { reference: &reference, max_unpacked };
            image::find_module(&unpack, &layers, &container, &blobs)
        })
        .await
        .map_err(|e| OciError::Registry {
            reference: image.into(),
            detail: format!("layer extraction task failed: {e}"),
        })??;
        tracing::debug!(image, module = %found.inner, wasm_digest = %found.digest, "extracted Wasm module from image layers");
        Ok((found.digest, found.path, entrypoint))
    }

    /// The stored blob for `desc`, downloading and verifying it if it is not stored yet,
    /// and counting it against `budget` (also when it was stored already).
    async fn fetch_blob(
        &self,
        reg: &Registry,
        desc: &Descriptor,
        what: &str,
        budget: &mut Budget,
    ) -> Result<PathBuf, OciError> {
        let invalid = || OciError::BadManifest {
            reference: reg.image().to_string(),
            detail: format!("{what} digest {:?} is not sha256:<64 hex>", desc.digest),
        };
        let path = self.blobs.path(&desc.digest).ok_or_else(invalid)?;
        let limit = budget.limit;
        let too_large = |size: Option<u64>| {
            let (reference, digest) = (reg.image().to_string(), desc.digest.clone());
            let what = match size {
                Some(n) => format!("{what} {digest} ({})", human(n)),
                None => format!("{what} {digest}"),
            };
            move || OciError::TooLarge { reference: reference.clone(), what: what.clone(), limit }
        };
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.is_file()
        {
            return if budget.spend(meta.len()) { Ok(path) } else { Err(too_large(Some(meta.len()))()) };
        }
        if let Some(declared) = desc.size.filter(|s| *s > budget.remaining()) {
            return Err(too_large(Some(declared))());
        }
        let writer = self
            .blobs
            .writer(&desc.digest, desc.size, &format!("{what} {}", desc.digest))
            .await?
            .capped(budget.remaining(), too_large(None));
        let (path, written) = reg.blob(desc, writer).await?;
        budget.spend(written);
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_present_image_is_found_as_written_and_in_its_short_forms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf(), Vec::new());
        let (wasm_digest, wasm_path) = store.blobs.put(b"\0asm\x01\0\0\0").await.unwrap();
        let pulled = Pulled {
            image: "127.0.0.1:9/team/app:latest".into(),
            image_id: "127.0.0.1:9/team/app@sha256:1".into(),
            wasm_digest,
            wasm_path,
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            format: ArtifactFormat::CncfWasm,
        };
        store.save("127.0.0.1:9/team/app:latest", "sha256:1", &pulled).await.unwrap();
        let auth = RegistryAuth::anonymous();
        // Nothing listens on port 9: a pull attempt would fail.
        for image in ["127.0.0.1:9/team/app:latest", "127.0.0.1:9/team/app"] {
            let got = store.pull(image, PullPolicy::IfNotPresent, &auth, FileImages::Refused).await;
            let got = got.unwrap_or_else(|e| panic!("{image}: {e}"));
            assert_eq!((got.image.as_str(), got.image_id.as_str()), (image, "127.0.0.1:9/team/app@sha256:1"));
        }
        let other =
            store.pull("127.0.0.1:9/team/other:v1", PullPolicy::Never, &auth, FileImages::Refused).await;
        assert!(matches!(other, Err(OciError::NotPresent { .. })), "{other:?}");
        let bad =
            store.pull("127.0.0.1:9/Team/App:v1", PullPolicy::IfNotPresent, &auth, FileImages::Refused).await;
        assert!(matches!(bad, Err(OciError::BadReference { .. })), "still parsed: {bad:?}");
    }
}
