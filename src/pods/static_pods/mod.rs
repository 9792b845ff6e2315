//! Static pods from `--pod-manifest-path`: each Pod YAML/JSON file in the directory (or
//! the one file, when the path is a file) is a pod of this node. A rescan reports what was added, changed (a new UID: the old pod is
//! replaced) or removed; a malformed file is reported with its name and skipped.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use super::status::report::SOURCE_ANNOTATION;

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

/// The manifest directory (or file) and what it held at the last scan.
pub struct Manifests {
    dir: PathBuf,
    node_name: String,
    seen: HashMap<PathBuf, Seen>,
}

impl Manifests {
    /// `dir` is the `--pod-manifest-path`: a directory or a single manifest file.
    pub fn new(dir: &Path, node_name: &str) -> Self {
        Manifests { dir: dir.to_path_buf(), node_name: node_name.to_string(), seen: HashMap::new() }
    }

    /// Compares the directory with the last scan. A file is read again only when its
    /// modification time or size changed.
    pub fn rescan(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let files = match manifest_files(&self.dir) {
            Ok(f) => f,
            // Gone (as the kubelet treats it): no manifests, so its static pods stop.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.seen.is_empty() {
                    warn!(path = %self.dir.display(), "--pod-manifest-path no longer exists; stopping its static pods");
                }
                Vec::new()
            }
            Err(e) => {
                error!(path = %self.dir.display(), error = %e, "--pod-manifest-path: cannot read it");
                return changes;
            }
        };
        // A set, not a scan per known file: a rescan of N manifests costs O(N), not O(N²).
        let present: std::collections::HashSet<&PathBuf> = files.iter().map(|(f, _)| f).collect();
        let gone: Vec<PathBuf> = self.seen.keys().filter(|p| !present.contains(p)).cloned().collect();
        for path in gone {
            self.look_at(path, None, &mut changes);
        }
        for (path, stamp) in files {
            self.look_at(path, Some(stamp), &mut changes);
        }
        changes
    }

    /// Looks again at only the entries `names` of the directory (what inotify said
    /// changed): O(changes), not O(manifests). Under a single-file manifest path, any name
    /// of the file's directory is a rescan of that one file.
    pub fn rescan_names(&mut self, names: &[OsString]) -> Vec<Change> {
        if !self.dir.is_dir() {
            return self.rescan();
        }
        let mut changes = Vec::new();
        for name in names {
            let path = self.dir.join(name);
            let stamp = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() && is_manifest_name(name) => Some(stamp_of(&meta)),
                _ => None,
            };
            self.look_at(path, stamp, &mut changes);
        }
        changes
    }

    /// Brings one file up to date: `stamp` is its modification time and size now, or
    /// `None` when it is no longer a manifest (removed, renamed away, not a file).
    fn look_at(&mut self, path: PathBuf, stamp: Option<(SystemTime, u64)>, changes: &mut Vec<Change>) {
        let Some(stamp) = stamp else {
            if let Some(uid) = self.seen.remove(&path).and_then(|s| s.uid) {
                info!(file = %path.display(), "static pod manifest removed");
                changes.push(Change::Remove(uid));
            }
            return;
        };
        if self.seen.get(&path).is_some_and(|s| s.stamp == stamp) {
            return;
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
        let uid = new.as_ref().and_then(|p| p.uid());
        let changed = old != uid;
        if let Some(old) = old.filter(|_| changed) {
            changes.push(Change::Remove(old));
        }
        if let Some(pod) = new.filter(|_| changed) {
            info!(file = %path.display(), pod = pod.name_any(), "static pod manifest loaded");
            changes.push(Change::Upsert(Box::new(pod)));
        }
        self.seen.insert(path, Seen { stamp, uid });
    }
}

/// A regular, visible `.yaml`, `.yml` or `.json` file's name.
fn is_manifest_name(name: &OsStr) -> bool {
    let name = name.to_str().unwrap_or("");
    [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) && !name.starts_with('.')
}

fn stamp_of(meta: &std::fs::Metadata) -> (SystemTime, u64) {
    (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len())
}

/// Whether `--pod-manifest-path` can be used: a readable directory or file.
pub fn check_readable(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path)?.is_dir() {
        std::fs::read_dir(path).map(|_| ())
    } else {
        std::fs::File::open(path).map(|_| ())
    }
}

/// What to watch for changes of `path`: the directory itself, or a file's directory (an
/// editor or `mv` replaces the file, and a watch on the old inode would go quiet).
pub fn watched_dir(path: &Path) -> PathBuf {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
        _ => path.to_path_buf(),
    }
}

/// The manifests at `path` with their stamps: the file itself when it is a file (whatever
/// its name, as the kubelet does), else the directory's regular, visible `.yaml`, `.yml`
/// and `.json` files.
fn manifest_files(path: &Path) -> std::io::Result<Vec<(PathBuf, (SystemTime, u64))>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), stamp_of(&meta))]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let path = entry?.path();
        if !path.file_name().is_some_and(is_manifest_name) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => out.push((path, stamp_of(&meta))),
            _ => {}
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one manifest into the static pod the kubelet would make of it: named
/// `<name>-<node>`, namespace `default` unless set, bound to this node, with a UID that
/// hashes the node, the file and its content (so an edit is a new pod).
pub fn static_pod(text: &str, path: &Path, node_name: &str) -> Result<Pod, String> {
    // YAML 1.2 booleans only: `value: yes` stays the string "yes".
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| format!("not YAML or JSON: {e}"))?;
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
    let mut pod: Pod = serde_json::from_value(value)
        .map_err(|e| format!("not a valid Pod: {}", crate::base::error::json_without_values(&e)))?;
    let name = pod.metadata.name.clone().filter(|n| !n.is_empty()).ok_or("metadata.name is missing")?;
    check_names(&pod, &format!("{name}-{node_name}"))?;
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
    // The pod is held as long as it runs: no room kept for more (pushes double it).
    tolerations.shrink_to_fit();
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

/// The names a static pod's files and logs are named by, checked as the API server would
/// check them (they become paths under the data dir): the pod's name (with the node's),
/// its namespace, and its containers' and volumes' names, each unique.
fn check_names(pod: &Pod, full_name: &str) -> Result<(), String> {
    use crate::base::names::{is_dns_label, is_dns_subdomain};
    if !is_dns_subdomain(full_name) {
        return Err(format!(
            "metadata.name: the pod's name {full_name:?} (name-node) is not a valid DNS-1123 subdomain \
             (lowercase letters, digits, '-' and '.', at most 253)"
        ));
    }
    if let Some(ns) = pod.metadata.namespace.as_deref()
        && !is_dns_label(ns)
    {
        return Err(format!("metadata.namespace: {ns:?} is not a valid DNS-1123 label"));
    }
    let spec = pod.spec.as_ref().ok_or("spec is missing")?;
    let containers =
        spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| ("container", &c.name));
    let volumes = spec.volumes.iter().flatten().map(|v| ("volume", &v.name));
    let mut seen = std::collections::HashSet::new();
    for (what, name) in containers.chain(volumes) {
        if !is_dns_label(name) {
            return Err(format!("{what} name {name:?} is not a valid DNS-1123 label"));
        }
        if !seen.insert((what, name)) {
            return Err(format!("{what} name {name:?} is used twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
