//! Writing a volume's payload (relative path -> bytes and mode) into its directory in place:
//! each file atomically (temp + rename), unchanged files untouched, stale files removed, so
//! a guest holding the directory open sees every update.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileData {
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// Relative path (normalized by [`normalize`]) -> content.
pub(crate) type Payload = BTreeMap<String, FileData>;

/// Mode of the directories the agent creates for a pod's volumes and inside them:
/// owner-only (they hold secrets; the guests read them through the agent).
pub(crate) const DIR_MODE: u32 = 0o700;

/// `path` without `.` components and repeated slashes, or `None` unless it is relative,
/// names something below the directory, and has no `..` component (the API's rule for
/// item paths and subPaths).
pub(crate) fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A mode from the API (`0..=0o777`, given as an int) as permission bits.
pub(crate) fn mode_bits(mode: i32) -> u32 {
    mode.unsigned_abs() & 0o777
}

/// Creates `dir` (and parents) with [`DIR_MODE`] if missing.
pub(crate) fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Like [`ensure_dir`], and sets an existing `dir` to [`DIR_MODE`] too (one an older
/// agent, or another part of this one, made with a wider mode).
pub(crate) fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    ensure_dir(dir)?;
    if std::fs::metadata(dir)?.permissions().mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes `dir` hold exactly `payload`; returns the path that failed on error.
pub(crate) fn sync_dir(dir: &Path, payload: &Payload) -> Result<(), (PathBuf, std::io::Error)> {
    ensure_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for (rel, data) in payload {
        let path = dir.join(rel);
        write_if_changed(&path, data).map_err(|e| (path, e))?;
    }
    remove_stale(dir, dir, payload).map_err(|e| (dir.to_path_buf(), e))
}

fn write_if_changed(path: &Path, data: &FileData) -> std::io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o777 == data.mode
        && std::fs::read(path).is_ok_and(|old| old == data.bytes)
    {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path)?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(data.mode).open(&tmp)?;
        // open() filters the mode through the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(data.mode))?;
        f.write_all(&data.bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes entries under `dir` that are neither a payload file nor a directory on the way
/// to one.
fn remove_stale(root: &Path, dir: &Path, payload: &Payload) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let wanted_file = payload.keys().any(|k| Path::new(k) == rel);
        let wanted_dir = payload.keys().any(|k| Path::new(k).starts_with(rel) && Path::new(k) != rel);
        let kind = entry.file_type()?;
        if kind.is_dir() && wanted_dir {
            remove_stale(root, &path, payload)?;
        } else if kind.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if !(kind.is_file() && wanted_file) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, mode: u32) -> FileData {
        FileData { bytes: text.as_bytes().to_vec(), mode }
    }

    #[test]
    fn paths_are_normalized_or_rejected() {
        assert_eq!(normalize("a"), Some("a".into()));
        assert_eq!(normalize("./a//b/"), Some("a/b".into()));
        for bad in ["", ".", "..", "../a", "a/../b", "/a", "./"] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sync_writes_exactly_the_payload() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let v = dir.path().join("vol");
        let first: Payload = [("a".into(), file("1", 0o666)), ("d/e/f".into(), file("2", 0o600))].into();
        sync_dir(&v, &first).map_err(|(p, e)| anyhow::anyhow!("{}: {e}", p.display()))?;
        assert_eq!(std::fs::read_to_string(v.join("d/e/f"))?, "2");
        assert_eq!(std::fs::metadata(v.join("d/e/f"))?.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(v.join("a"))?.permissions().mode() & 0o777, 0o666, "not umasked");
        std::fs::write(v.join("stray"), "x")?;
        std::fs::create_dir_all(v.join("d/old"))?;

        let second: Payload = [("a".into(), file("1", 0o400)), ("d/g".into(), file("3", 0o644))].into();
        sync_dir(&v, &second).map_err(|(p, e)| anyhow::anyhow!("{}: {e}", p.display()))?;
        let mut names: Vec<_> = walk(&v);
        names.sort();
        assert_eq!(names, ["a", "d", "d/g"]);
        assert_eq!(
            std::fs::metadata(v.join("a"))?.permissions().mode() & 0o777,
            0o400,
            "mode change rewrites"
        );
        Ok(())
    }

    #[test]
    fn a_directory_in_the_way_of_a_file_is_replaced() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("x/y"))?;
        let payload: Payload = [("x".into(), file("now a file", 0o644))].into();
        sync_dir(dir.path(), &payload).map_err(|(p, e)| anyhow::anyhow!("{}: {e}", p.display()))?;
        assert_eq!(std::fs::read_to_string(dir.path().join("x"))?, "now a file");
        Ok(())
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                out.push(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned());
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        out
    }
}
