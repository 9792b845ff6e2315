//! How much an emptyDir holds, for `sizeLimit`: the disk blocks of its files, as `du`
//! counts them (the kubelet's measure), found without following a symlink out of it and
//! without counting further than the limit.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes on disk under `dir` (blocks of 512 bytes), counting stops once past `limit`
/// (the result is then some value above it). Entries that vanish while counting are skipped.
pub fn disk_usage(dir: &Path, limit: u64) -> u64 {
    let mut used = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not follow symlinks: a link to `/` is a few bytes.
            let Ok(meta) = entry.metadata() else { continue };
            used = used.saturating_add(meta.blocks().saturating_mul(512));
            if used > limit {
                return used;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_below_the_dir_without_following_links_and_stops_past_the_limit() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), vec![1u8; 256 * 1024]).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("root")).unwrap();
        let used = disk_usage(t.path(), u64::MAX);
        assert!((256 * 1024..400 * 1024).contains(&used), "{used}");
        assert!(disk_usage(t.path(), 1000) > 1000);
        assert_eq!(disk_usage(&t.path().join("missing"), 10), 0);
    }
}
