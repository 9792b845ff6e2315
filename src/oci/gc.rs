//! Image garbage collection, as the kubelet's image GC does it: images no pod uses are
//! removed, least recently used first, until enough space is freed; then every blob no
//! remaining image references goes (manifests, configs, layers, modules). Pulls wait while
//! a collection runs, so a blob being stored is never taken for garbage.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::SystemTime;

use super::OciError;
use super::reference::{self, ImageRef};
use super::store::{IndexEntry, Store};

/// What one collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The references of the images removed, least recently used first.
    pub images_removed: Vec<String>,
    /// Module digests (compile-cache keys) whose blob went with them.
    pub modules_removed: Vec<String>,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

/// A manifest or index larger than this is not looked into for references (the store
/// never keeps one: 4 MiB is the cap on manifests).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

impl Store {
    /// Removes images whose reference is not in `in_use` (references as pods name them),
    /// least recently used first, until at least `want_free` bytes are freed or no unused
    /// image is left; then every unreferenced blob.
    pub async fn collect(&self, in_use: &HashSet<String>, want_free: u64) -> Result<GcReport, OciError> {
        let _exclusive = self.gc_lock().write().await;
        let keep: HashSet<String> = in_use
            .iter()
            .filter_map(|image| match reference::parse(image) {
                Ok(ImageRef::Registry(r)) => Some(reference::index_key(&r)),
                _ => None,
            })
            .collect();
        let mut entries = self.index_entries();
        entries.sort_by_key(|(_, _, used)| *used);
        let mut report = GcReport::default();
        let mut remaining = Vec::new();
        let mut estimate = 0u64;
        for (path, entry, _) in entries {
            if keep.contains(&entry.reference) || estimate >= want_free {
                remaining.push(entry);
                continue;
            }
            estimate = estimate.saturating_add(self.blob_size(&entry.pulled.wasm_digest));
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(image = %entry.reference, "removing unused image");
                report.images_removed.push(entry.reference);
                report.modules_removed.push(entry.pulled.wasm_digest);
            }
        }
        let reachable = self.reachable(&remaining);
        let modules: HashSet<String> = remaining.iter().map(|e| e.pulled.wasm_digest.clone()).collect();
        for (digest, path) in self.all_blobs() {
            if reachable.contains(&digest) {
                continue;
            }
            let size = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(&path).is_ok() {
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        // A module another remaining image shares stays, and so does its compiled code.
        report.modules_removed.retain(|m| !modules.contains(m));
        report.modules_removed.dedup();
        Ok(report)
    }

    /// Every index entry with its file and when it was last used (its mtime: a pull
    /// served from the store touches it).
    fn index_entries(&self) -> Vec<(PathBuf, IndexEntry, SystemTime)> {
        let Ok(dir) = std::fs::read_dir(self.root().join("refs")) else { return Vec::new() };
        dir.flatten()
            .filter_map(|e| {
                let path = e.path();
                let used = e.metadata().and_then(|m| m.modified()).ok()?;
                let entry: IndexEntry = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                Some((path, entry, used))
            })
            .collect()
    }

    /// The blobs the entries need: their manifests (and an index's manifests), configs,
    /// layers, and modules.
    fn reachable(&self, entries: &[IndexEntry]) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut pending: Vec<String> =
            entries.iter().flat_map(|e| [e.manifest_digest.clone(), e.pulled.wasm_digest.clone()]).collect();
        while let Some(digest) = pending.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(path) = self.blob_path(&digest) else { continue };
            if std::fs::metadata(&path).map(|m| m.len() > MAX_MANIFEST).unwrap_or(true) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            let refs = json["manifests"].as_array().into_iter().chain(json["layers"].as_array()).flatten();
            pending
                .extend(refs.chain([&json["config"]]).filter_map(|d| d["digest"].as_str()).map(String::from));
        }
        seen
    }

    /// `(sha256:<hex>, path)` of every blob on disk.
    fn all_blobs(&self) -> Vec<(String, PathBuf)> {
        let Ok(dir) = std::fs::read_dir(self.root().join("blobs/sha256")) else { return Vec::new() };
        dir.flatten()
            .filter_map(|e| Some((format!("sha256:{}", e.file_name().to_str()?), e.path())))
            .collect()
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.root().join("blobs/sha256").join(hex))
    }

    fn blob_size(&self, digest: &str) -> u64 {
        self.blob_path(digest).and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
    }
}

/// Garbage collects images whenever the `--data-dir` filesystem is more than `gc.high`
/// percent used, down to `gc.low` percent: every [`crate::config::IMAGE_GC_PERIOD`], and
/// whenever `wake` is notified (a pod went away), until `shutdown`. `in_use` says which
/// images pods still name; `removed` is told of each collection that removed something
/// (the runtime drops the modules' compiled code).
pub async fn run(
    store: Store,
    gc: crate::config::ImageGc,
    data_dir: PathBuf,
    in_use: impl Fn() -> HashSet<String>,
    removed: impl Fn(&GcReport),
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::config::IMAGE_GC_PERIOD) => {}
            _ = wake.notified() => {}
            _ = shutdown.recv() => return,
        }
        let dir = data_dir.clone();
        let usage = tokio::task::spawn_blocking(move || crate::base::host::usage(&dir)).await;
        let Ok(usage) = usage else { continue };
        let total = usage.disk_total_bytes;
        let used = total.saturating_sub(usage.disk_available_bytes);
        if total == 0 || used.saturating_mul(100) < total.saturating_mul(u64::from(gc.high)) {
            continue;
        }
        let want_free = used.saturating_sub(total / 100 * u64::from(gc.low));
        match store.collect(&in_use(), want_free).await {
            Ok(report) => {
                if !report.images_removed.is_empty() || report.blobs_removed > 0 {
                    tracing::info!(
                        images = report.images_removed.len(),
                        blobs = report.blobs_removed,
                        freed = report.bytes_freed,
                        "image garbage collection"
                    );
                    removed(&report);
                }
            }
            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::blobs::sha256_digest;
    use super::*;
    use crate::oci::{ArtifactFormat, Pulled};

    /// Stores a fake image: a manifest naming a config and a layer, its module, and its
    /// index entry; returns the module's digest.
    async fn image(store: &Store, reference: &str, tag: u8) -> String {
        let blobs = super::super::blobs::Blobs::new(store.root().to_path_buf());
        let (config, _) = blobs.put(&[b'c', tag]).await.unwrap();
        let (layer, _) = blobs.put(&[b'l', tag]).await.unwrap();
        let (module, module_path) = blobs.put(&[b'm', tag]).await.unwrap();
        let manifest = serde_json::json!({"config": {"digest": config}, "layers": [{"digest": layer}]});
        let (manifest, _) = blobs.put(manifest.to_string().as_bytes()).await.unwrap();
        let key = match reference::parse(reference).unwrap() {
            ImageRef::Registry(r) => reference::index_key(&r),
            ImageRef::LocalFile(_) => unreachable!(),
        };
        let pulled = Pulled {
            image: reference.into(),
            image_id: format!("{reference}@{manifest}"),
            wasm_digest: module.clone(),
            wasm_path: module_path,
            entrypoint: vec![],
            cmd: vec![],
            format: ArtifactFormat::CncfWasm,
        };
        let entry = IndexEntry { reference: key.clone(), manifest_digest: manifest, pulled };
        let hash = sha256_digest(key.as_bytes());
        let path = store.root().join("refs").join(format!("{}.json", &hash[7..]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
        module
    }

    #[tokio::test]
    async fn unused_images_go_least_recently_used_first_with_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf(), vec![]);
        let old = image(&store, "reg.example/app/old:1", 1).await;
        std::thread::sleep(std::time::Duration::from_millis(20));
        let newer = image(&store, "reg.example/app/newer:1", 2).await;
        let used = image(&store, "reg.example/app/used:1", 3).await;
        let in_use = HashSet::from(["reg.example/app/used:1".to_string()]);

        // A little to free: only the least recently used unused image goes.
        let report = store.collect(&in_use, 1).await.unwrap();
        assert_eq!(report.images_removed, ["reg.example/app/old:1"]);
        assert_eq!(report.modules_removed, [old]);
        assert_eq!(report.blobs_removed, 4, "manifest, config, layer and module");
        assert_eq!(store.all_blobs().len(), 8);
        // Everything: the image in use and its blobs stay.
        let report = store.collect(&in_use, u64::MAX).await.unwrap();
        assert_eq!(report.images_removed, ["reg.example/app/newer:1"]);
        assert_eq!(report.modules_removed, [newer]);
        let left: HashSet<String> = store.all_blobs().into_iter().map(|(d, _)| d).collect();
        assert_eq!(left.len(), 4);
        assert!(left.contains(&used));
    }
}
