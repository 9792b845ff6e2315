//! Static pods from `--pod-manifest-path`: each Pod YAML/JSON file in the directory is a
//! pod of this node. A rescan reports what was added, changed (a new UID: the old pod is
//! replaced) or removed; a malformed file is reported with its name and skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use sha2::{Digest, Sha256};
use tracing::{error, info};

use super::report::SOURCE_ANNOTATION;

/// What changed in the directory since the last scan.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A pod to run (new, or the new version of a changed file).
    Upsert(Box<Pod>),
    /// A pod whose file was removed, changed or broken: stop it (by UID).
    Remove(String),
}

/// One manifest file as last seen.
struct Seen {
    stamp: (SystemTime, u64),
    /// The UID of the pod it described, if it was valid.
    uid: Option<String>,
}

/// The manifest directory and what it held at the last scan.
pub struct Manifests {
    dir: PathBuf,
    node_name: String,
    seen: HashMap<PathBuf, Seen>,
}

impl Manifests {
    pub fn new(dir: &Path, node_name: &str) -> Self {
        Manifests { dir: dir.to_path_buf(), node_name: node_name.to_string(), seen: HashMap::new() }
    }

    /// Compares the directory with the last scan. A file is read again only when its
    /// modification time or size changed.
    pub fn rescan(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let files = match manifest_files(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                error!(dir = %self.dir.display(), error = %e, "--pod-manifest-path: cannot read the directory");
                return changes;
            }
        };
        let gone: Vec<PathBuf> =
            self.seen.keys().filter(|p| !files.iter().any(|(f, _)| f == *p)).cloned().collect();
        for path in gone {
            if let Some(uid) = self.seen.remove(&path).and_then(|s| s.uid) {
                info!(file = %path.display(), "static pod manifest removed");
                changes.push(Change::Remove(uid));
            }
        }
        for (path, stamp) in files {
            if self.seen.get(&path).is_some_and(|s| s.stamp == stamp) {
                continue;
            }
            let old = self.seen.get(&path).and_then(|s| s.uid.clone());
            let new = match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| static_pod(&t, &path, &self.node_name))
            {
                Ok(pod) => Some(pod),
                Err(why) => {
                    error!(file = %path.display(), "skipping malformed static pod manifest: {why}");
                    None
                }
            };
            let uid = new.as_ref().and_then(|p| p.metadata.uid.clone());
            let changed = old != uid;
            if let Some(old) = old.filter(|_| changed) {
                changes.push(Change::Remove(old));
            }
            if let Some(pod) = new.filter(|_| changed) {
                info!(file = %path.display(), pod = pod.metadata.name.as_deref().unwrap_or(""), "static pod manifest loaded");
                changes.push(Change::Upsert(Box::new(pod)));
            }
            self.seen.insert(path, Seen { stamp, uid });
        }
        changes
    }
}

/// The regular, visible `.yaml`, `.yml` and `.json` files of `dir`, with their stamps.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, (SystemTime, u64))>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) && !name.starts_with('.');
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if wanted && meta.is_file() {
            out.push((path, (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len())));
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one manifest into the static pod the kubelet would make of it: named
/// `<name>-<node>`, namespace `default` unless set, bound to this node, with a UID that
/// hashes the node, the file and its content (so an edit is a new pod).
pub fn static_pod(text: &str, path: &Path, node_name: &str) -> Result<Pod, String> {
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    match (value["apiVersion"].as_str(), value["kind"].as_str()) {
        (Some("v1"), Some("Pod")) => {}
        (v, k) => {
            return Err(format!(
                "want apiVersion v1, kind Pod; got {:?}, {:?}",
                v.unwrap_or(""),
                k.unwrap_or("")
            ));
        }
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| format!("not a valid Pod: {e}"))?;
    let name = pod.metadata.name.clone().filter(|n| !n.is_empty()).ok_or("metadata.name is missing")?;
    let spec = pod.spec.as_mut().ok_or("spec is missing")?;
    if spec.containers.is_empty() {
        return Err("spec.containers is empty".into());
    }
    spec.node_name = Some(node_name.to_string());
    // A manifest in this node's directory is meant for this node: tolerate its Wasm taints,
    // or the taint manager would evict the mirror pod (NoExecute).
    let tolerations = spec.tolerations.get_or_insert_default();
    for effect in crate::node::TAINT_EFFECTS {
        let tolerated = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(crate::node::TAINT_KEY)
                && t.effect.as_deref().is_none_or(|e| e == effect)
        });
        if !tolerated {
            tolerations.push(Toleration {
                key: Some(crate::node::TAINT_KEY.into()),
                operator: Some("Equal".into()),
                value: Some(crate::node::WASM_ARCH.into()),
                effect: Some(effect.into()),
                toleration_seconds: None,
            });
        }
    }
    let digest = Sha256::new()
        .chain_update(node_name)
        .chain_update(path.to_string_lossy().as_bytes())
        .chain_update(text)
        .finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let uid = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
    let meta = &mut pod.metadata;
    meta.name = Some(format!("{name}-{node_name}"));
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.uid = Some(uid.clone());
    let annotations = meta.annotations.get_or_insert_default();
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    annotations.insert("kubernetes.io/config.hash".into(), uid);
    pod.status = None;
    Ok(pod)
}

#[cfg(test)]
#[path = "manifests_tests.rs"]
mod tests;
