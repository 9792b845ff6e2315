//! The crash journal: `<pod-dir>/journal.json` says which step of the pod is under way
//! (preparing it, or starting a container) and how many agents began it without finishing.
//! An agent that dies in such a step (a hostile image or guest that crashes the process)
//! leaves the entry behind; the next agent sees it, and after
//! [`crate::config::CRASH_LIMIT`] such deaths fails the pod instead of redoing the step
//! that killed its predecessors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A step that could take the agent down with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// `prepare`, or `start <container>`.
    pub step: String,
    /// How many times it was begun without being finished.
    pub attempts: u32,
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(pod_dir: &Path) -> Journal {
        Journal { path: pod_dir.join("journal.json") }
    }

    /// What an earlier agent left unfinished, if anything.
    pub fn unfinished(&self) -> Option<Entry> {
        serde_json::from_slice(&std::fs::read(&self.path).ok()?).ok()
    }

    /// Records that `step` begins (counting an unfinished attempt of the same step).
    pub fn begin(&self, step: &str) {
        let attempts = self.unfinished().filter(|e| e.step == step).map_or(0, |e| e.attempts) + 1;
        let entry = Entry { step: step.into(), attempts };
        let Ok(bytes) = serde_json::to_vec(&entry) else { return };
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A crash of the agent is what the journal is for, and the kernel keeps its writes
        // across one: no flush to disk on the start path (see `write_volatile`).
        if let Err(e) = crate::files::write_volatile(&self.path, &bytes, 0o600) {
            tracing::warn!(error = %e, "writing the pod's crash journal failed");
        }
    }

    /// Records that the step under way finished, however it ended.
    pub fn end(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_steps_are_counted_and_finished_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(&dir.path().join("pod"));
        assert_eq!(j.unfinished(), None);
        j.begin("prepare");
        j.begin("prepare");
        assert_eq!(j.unfinished(), Some(Entry { step: "prepare".into(), attempts: 2 }));
        j.begin("start main");
        assert_eq!(j.unfinished().map(|e| e.attempts), Some(1), "another step starts over");
        j.end();
        assert_eq!(j.unfinished(), None);
    }
}
