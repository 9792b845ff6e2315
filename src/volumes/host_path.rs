//! hostPath volumes: the kubelet's `type` checks (and creation for `*OrCreate`).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Checks (or creates) `path` as `type_` demands. `Err` is the kubelet's message.
pub(crate) fn check(path: &Path, type_: Option<&str>) -> Result<(), String> {
    let shown = path.display();
    let kind = std::fs::metadata(path).ok().map(|m| m.file_type());
    let require = |ok: fn(&std::fs::FileType) -> bool, what: &str| match &kind {
        Some(k) if ok(k) => Ok(()),
        _ => Err(format!("hostPath type check failed: {shown} is not {what}")),
    };
    match type_.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if kind.is_none() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| format!("creating hostPath directory {shown} failed: {e}")),
        "FileOrCreate" if kind.is_none() => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(|e| format!("creating hostPath file {shown} failed: {e}")),
        "DirectoryOrCreate" | "Directory" => require(|k| k.is_dir(), "a directory"),
        "FileOrCreate" | "File" => require(|k| k.is_file(), "a file"),
        "Socket" => require(|k| k.is_socket(), "a socket file"),
        "CharDevice" => require(|k| k.is_char_device(), "a character device"),
        "BlockDevice" => require(|k| k.is_block_device(), "a block device"),
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}
