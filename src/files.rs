//! Small file helpers whose errors name the path: atomic writes with a mode (durable, or
//! only safe from the agent's own crash), reads, owner-only directories, removal, and the
//! sweep of temporary files a crash left behind.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;

/// What a temporary file's name carries after the name of the file it will replace.
const TMP_MARK: &str = ".tmp-";

/// A file operation that failed, with the path and what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path} failed: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path} failed: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("removing {path} failed: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("invalid base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Read { path: path.into(), source })
}

/// The file's contents, or `None` if it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Read { path: path.into(), source }),
    }
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, flushes it to disk, renames
/// it over `path` and flushes the directory, so a reader never sees half a file and, once
/// this returns, a crash or power loss leaves the new file (before, the old one). Parent
/// directories are created (mode 0700: they hold keys).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    write_replacing(path, bytes, mode, true)
}

/// Like [`write_atomic`] without the flushes to disk: a reader never sees half a file, and
/// the agent's own crash leaves the old or the new one (the kernel keeps both), but a power
/// loss may leave either. For what only matters across a crash of the agent or until its
/// next report (a pod's crash journal and its local status view), where two flushes would
/// cost milliseconds on every pod start.
pub fn write_volatile(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    write_replacing(path, bytes, mode, false)
}

fn write_replacing(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<(), FileError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let err = |source| FileError::Write { path: path.into(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    // Unique per process and per call: two writers of one path never share a temp file.
    tmp_name.push(format!("{TMP_MARK}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)?;
    if !durable {
        return Ok(());
    }
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// Creates `dir` (and its parents) if missing and makes it owner-only (0700). Returns the
/// mode it had when that was wider, so the caller can say it was fixed.
pub fn ensure_private_dir(dir: &Path) -> Result<Option<u32>, FileError> {
    let err = |source| FileError::Write { path: dir.into(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o7777;
    if mode == 0o700 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    Ok(Some(mode))
}

pub fn remove_if_exists(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(FileError::Remove { path: path.into(), source: e })
        }
        _ => Ok(()),
    }
}

/// Removes the temporary files [`write_atomic`] left beside `path` when the process died
/// before renaming them (they may hold private keys). Returns how many were removed.
pub fn sweep_temporaries(path: &Path) -> Result<usize, FileError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Ok(0) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let mut prefix = name.to_os_string();
    prefix.push(TMP_MARK);
    let prefix = prefix.as_encoded_bytes();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(FileError::Read { path: dir.into(), source }),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_name().as_encoded_bytes().starts_with(prefix) {
            remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

pub fn decode_b64(data: &str) -> Result<Vec<u8>, FileError> {
    Ok(base64::engine::general_purpose::STANDARD.decode(data.trim())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key.pem");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temp file left");
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("key.pem"));
        assert!(read_if_exists(&p).unwrap().is_none());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_whole_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubeconfig");
        write_atomic(&p, b"old", 0o600).unwrap();
        // A directory where the file should be: the rename fails after the temp file was
        // written, as a full disk or a crash would stop it.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let err = write_atomic(&blocked, b"new", 0o600).unwrap_err();
        assert!(err.to_string().contains("blocked"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(TMP_MARK)), "{names:?}");
    }

    #[test]
    fn private_dirs_are_made_and_fixed_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/data");
        assert_eq!(ensure_private_dir(&data).unwrap(), None, "made 0700");
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777, 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private_dir(&data).unwrap(), Some(0o755), "fixed, and says from what");
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777, 0o700);
        assert_eq!(ensure_private_dir(&data).unwrap(), None);
    }

    #[test]
    fn temporaries_of_a_dead_writer_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("krustlet.key");
        write_atomic(&key, b"key", 0o600).unwrap();
        // What a process killed between write and rename leaves.
        std::fs::write(dir.path().join("krustlet.key.tmp-4242-0"), b"half").unwrap();
        std::fs::write(dir.path().join("krustlet.key.tmp-4242-1"), b"").unwrap();
        std::fs::write(dir.path().join("krustlet.crt"), b"crt").unwrap();
        assert_eq!(sweep_temporaries(&key).unwrap(), 2);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["krustlet.crt", "krustlet.key"]);
        assert_eq!(sweep_temporaries(&dir.path().join("missing/x")).unwrap(), 0);
    }
}
