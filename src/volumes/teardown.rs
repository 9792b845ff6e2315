//! Removing a pod's directory: its volumes' tmpfs mounts are unmounted first, and the
//! directory stays whole while anything below it is still mounted, so a removal never
//! reaches across a mount into files that are not the pod's directory's own.

use std::io;
use std::path::{Path, PathBuf};

use super::{mountinfo, tmpfs};

/// Why a pod's directory was left in place (or only partly removed).
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("unmounting {} failed: {source}", path.display())]
    Unmount { path: PathBuf, source: io::Error },
    #[error("{} is still mounted; the pod's directory is left in place", path.display())]
    StillMounted { path: PathBuf },
    #[error("reading {} failed: {source}", mountinfo::MOUNTINFO)]
    MountTable { source: io::Error },
    #[error("removing {} failed: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
}

/// Removes the directory of a pod this agent ran: unmounts the volumes mounted at
/// `<pod_dir>/volumes/<name>` (the only place the agent mounts), then removes it all.
/// Cheap: a few `stat`s, no read of the node's whole mount table.
pub fn remove_pod_dir(pod_dir: &Path) -> Result<(), TeardownError> {
    for path in volume_mounts(pod_dir) {
        tmpfs::unmount(&path).map_err(|source| TeardownError::Unmount { path, source })?;
    }
    if let Some(path) = volume_mounts(pod_dir).into_iter().next() {
        return Err(TeardownError::StillMounted { path });
    }
    remove(pod_dir)
}

/// Removes the directory of a pod gone while the agent was down: every mount at or below
/// it in `table` (read from `/proc/self/mountinfo` once for the whole sweep) is unmounted,
/// deepest first, and the table read again to be sure none is left before anything is
/// removed.
pub fn remove_gone_pod_dir(pod_dir: &Path, table: &[mountinfo::MountPoint]) -> Result<(), TeardownError> {
    let Ok(canonical) = pod_dir.canonicalize() else { return Ok(()) };
    let mounted = mountinfo::below(table, &canonical);
    if !mounted.is_empty() {
        for path in mounted {
            tmpfs::unmount(&path).map_err(|source| TeardownError::Unmount { path, source })?;
        }
        let now = mountinfo::read().map_err(|source| TeardownError::MountTable { source })?;
        if let Some(path) = mountinfo::below(&now, &canonical).into_iter().next() {
            return Err(TeardownError::StillMounted { path });
        }
    }
    remove(pod_dir)
}

/// The directories under `<pod_dir>/volumes` that are mount points.
fn volume_mounts(pod_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| tmpfs::is_mount_point(p).unwrap_or(false)).collect()
}

fn remove(dir: &Path) -> Result<(), TeardownError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(TeardownError::Remove { path: dir.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::tmpfs::MemoryMedium;

    fn pod_dir_with_volumes(data: &Path, mount: bool) -> PathBuf {
        let pod = data.join("pods/uid-1");
        for v in ["secret", "scratch"] {
            std::fs::create_dir_all(pod.join("volumes").join(v)).unwrap();
        }
        if mount {
            tmpfs::ensure_mounted(&pod.join("volumes/secret"), 1 << 20).unwrap();
        }
        std::fs::write(pod.join("volumes/secret/token"), "t").unwrap();
        std::fs::write(pod.join("status.json"), "{}").unwrap();
        pod
    }

    #[test]
    fn a_pod_dir_without_mounts_is_removed() {
        let data = tempfile::tempdir().unwrap();
        let pod = pod_dir_with_volumes(data.path(), false);
        remove_pod_dir(&pod).unwrap();
        assert!(!pod.exists());
        remove_pod_dir(&pod).unwrap();
        remove_gone_pod_dir(&pod, &[]).unwrap();
    }

    /// Where the test may mount (root in CI): both removals unmount first.
    #[test]
    fn mounted_volumes_are_unmounted_before_the_removal() {
        let data = tempfile::tempdir().unwrap();
        if tmpfs::probe(data.path()) == MemoryMedium::Disk {
            return;
        }
        let pod = pod_dir_with_volumes(data.path(), true);
        let secret = pod.join("volumes/secret").canonicalize().unwrap();
        assert!(tmpfs::is_mount_point(&secret).unwrap());
        remove_pod_dir(&pod).unwrap();
        assert!(!pod.exists());
        let table = mountinfo::read().unwrap();
        assert!(!table.iter().any(|m| m.path == secret), "unmounted");

        let pod = pod_dir_with_volumes(data.path(), true);
        let table = mountinfo::read().unwrap();
        assert_eq!(mountinfo::below(&table, &pod.canonicalize().unwrap()), std::slice::from_ref(&secret));
        remove_gone_pod_dir(&pod, &table).unwrap();
        assert!(!pod.exists());
        assert!(!mountinfo::read().unwrap().iter().any(|m| m.path == secret), "unmounted");
    }
}
