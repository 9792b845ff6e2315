//! The start-up sweep: pods deleted while the agent was down left their directories under
//! `--data-dir` (volumes with Secret files and service account tokens, status files, logs).
//! Once every pod the node still has is known, whatever belongs to no known pod goes,
//! its volumes' mounts first.

use std::collections::HashSet;
use std::path::Path;

use tracing::{info, warn};

use crate::base::error::chain;
use crate::volumes::{self, mountinfo, mountinfo::MountPoint};

/// Removes `<data>/pods/<uid>` and `<data>/logs/<ns>_<pod>_<uid>` of every UID not in
/// `known`; returns how many directories went. A pod directory's volumes may still be
/// mounted (tmpfs for its Secrets and tokens): every mount below it in the mount table is
/// unmounted first, and a directory with a mount left is kept (with a warning).
pub fn sweep(data_dir: &Path, known: &HashSet<String>) -> usize {
    let mut removed = 0;
    // Read once, and only when there is a gone pod's directory to remove.
    let mut mounts: Option<Result<Vec<MountPoint>, String>> = None;
    let uid_of_pod_dir = |name: &str| Some(name.to_string());
    let uid_of_log_dir = |name: &str| name.rsplit_once('_').map(|(_, uid)| uid.to_string());
    for (dir, uid_of, pods) in [
        (data_dir.join("pods"), &uid_of_pod_dir as &dyn Fn(&str) -> Option<String>, true),
        (data_dir.join("logs"), &uid_of_log_dir, false),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uid) = uid_of(&name) else { continue };
            if known.contains(&uid) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let result = if pods {
                if mounts.is_none() {
                    mounts = Some(mountinfo::read().map_err(|e| {
                        format!("cannot read {} to unmount its volumes first: {e}", mountinfo::MOUNTINFO)
                    }));
                }
                match &mounts {
                    Some(Ok(table)) => {
                        volumes::remove_gone_pod_dir(&entry.path(), table).map_err(|e| chain(&e))
                    }
                    Some(Err(e)) => Err(e.clone()),
                    None => continue,
                }
            } else {
                std::fs::remove_dir_all(entry.path()).map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => {
                    removed += 1;
                    info!(path = %entry.path().display(), "removed the files of a pod that is gone");
                }
                Err(e) => {
                    warn!(path = %entry.path().display(), error = %e, "could not remove the files of a gone pod")
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_of_unknown_pods_go() {
        let data = tempfile::tempdir().unwrap();
        let mk = |p: &str| std::fs::create_dir_all(data.path().join(p)).unwrap();
        for p in [
            "pods/live/volumes/token",
            "pods/gone/volumes/secret",
            "logs/ns_web_live/main",
            "logs/ns_old_gone/main",
        ] {
            mk(p);
        }
        std::fs::write(data.path().join("pods/stray-file"), "x").unwrap();
        let known = HashSet::from(["live".to_string()]);
        assert_eq!(sweep(data.path(), &known), 2);
        assert!(data.path().join("pods/live/volumes/token").exists());
        assert!(data.path().join("logs/ns_web_live/main").exists());
        assert!(!data.path().join("pods/gone").exists());
        assert!(!data.path().join("logs/ns_old_gone").exists());
        assert!(data.path().join("pods/stray-file").exists(), "only directories");
        assert_eq!(sweep(&data.path().join("missing"), &known), 0);
    }

    /// Where the test may mount (root in CI): a gone pod's volume tmpfs, which no agent
    /// remembers, is unmounted before its directory goes; a live pod's stays mounted.
    #[test]
    fn the_mounts_of_gone_pods_are_unmounted_first() {
        let data = tempfile::tempdir().unwrap();
        if volumes::probe(data.path()) == volumes::MemoryMedium::Disk {
            return;
        }
        let mount = |uid: &str| {
            let dir = data.path().join("pods").join(uid).join("volumes/secret");
            std::fs::create_dir_all(&dir).unwrap();
            let dir = dir.canonicalize().unwrap();
            rustix::mount::mount("tmpfs", &dir, "tmpfs", rustix::mount::MountFlags::empty(), None).unwrap();
            std::fs::write(dir.join("token"), "t").unwrap();
            dir
        };
        let (gone, live) = (mount("gone"), mount("live"));
        assert_eq!(sweep(data.path(), &HashSet::from(["live".to_string()])), 1);
        let table = mountinfo::read().unwrap();
        assert!(!table.iter().any(|m| m.path == gone), "unmounted");
        assert!(!data.path().join("pods/gone").exists());
        assert!(table.iter().any(|m| m.path == live), "the live pod's mount stays");
        assert_eq!(std::fs::read_to_string(live.join("token")).unwrap(), "t");
        rustix::mount::unmount(&live, rustix::mount::UnmountFlags::empty()).unwrap();
    }
}
