//! The start-up sweep: pods deleted while the agent was down left their directories under
//! `--data-dir` (volumes with Secret files and service account tokens, status files, logs).
//! Once every pod the node still has is known, whatever belongs to no known pod goes.

use std::collections::HashSet;
use std::path::Path;

use tracing::{info, warn};

/// Removes `<data>/pods/<uid>` and `<data>/logs/<ns>_<pod>_<uid>` of every UID not in
/// `known`; returns how many directories went.
pub fn sweep(data_dir: &Path, known: &HashSet<String>) -> usize {
    let mut removed = 0;
    let uid_of_pod_dir = |name: &str| Some(name.to_string());
    let uid_of_log_dir = |name: &str| name.rsplit_once('_').map(|(_, uid)| uid.to_string());
    for (dir, uid_of) in [
        (data_dir.join("pods"), &uid_of_pod_dir as &dyn Fn(&str) -> Option<String>),
        (data_dir.join("logs"), &uid_of_log_dir),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uid) = uid_of(&name) else { continue };
            if known.contains(&uid) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
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
}
