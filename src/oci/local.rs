//! `file://` modules on this node: who may use them (static pods only, see
//! [`FileImages`]), and reading one (a regular file only, up to `--image-max-size`).
//!
//! Symlinks in the path are followed: only static pods get here, and their manifests are
//! written by the node's admin, who may well point at `current.wasm -> v2.wasm`. What the
//! path leads to must be a regular file: it is checked before it is opened (so a device
//! or FIFO is never opened) and again on the open handle (so a swap in between is caught).

use std::io::Seek;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::blobs::Blobs;
use super::limits::{Limit, human};
use super::{ArtifactFormat, FileImages, OciError, Pulled};

/// What a non-regular file is, for the error message.
fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads the module `path` named by `image` into `blobs`, if `files` allows it.
pub(crate) async fn pull(
    blobs: &Blobs,
    image: &str,
    path: &Path,
    files: FileImages,
    cap: u64,
) -> Result<Pulled, OciError> {
    if files == FileImages::Refused {
        // Before anything touches the path: not even whether it exists is revealed.
        return Err(OciError::LocalFileRefused { reference: image.to_string() });
    }
    let (blobs, image_owned, path_owned) = (blobs.clone(), image.to_string(), path.to_path_buf());
    let (wasm_digest, wasm_path) =
        tokio::task::spawn_blocking(move || store(&blobs, &image_owned, &path_owned, cap))
            .await
            .map_err(|e| OciError::LocalFile { path: path.into(), source: std::io::Error::other(e) })??;
    Ok(Pulled {
        image: image.to_string(),
        image_id: format!("file://{}@{wasm_digest}", path.display()),
        wasm_digest,
        wasm_path,
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        format: ArtifactFormat::LocalFile,
    })
}

/// Checks, opens and stores the file. Blocking.
fn store(blobs: &Blobs, image: &str, path: &Path, cap: u64) -> Result<(String, PathBuf), OciError> {
    let io = |source| OciError::LocalFile { path: path.into(), source };
    let not_regular = |kind| OciError::LocalFileNotRegular { path: path.into(), kind };
    let too_large = |size: Option<u64>| OciError::TooLarge {
        reference: image.to_string(),
        what: match size {
            Some(n) => format!("the module {} ({})", path.display(), human(n)),
            None => format!("the module {}", path.display()),
        },
        limit: Limit::LocalFile(cap),
    };
    let before = std::fs::metadata(path).map_err(io)?;
    if !before.is_file() {
        return Err(not_regular(kind(before.file_type())));
    }
    if before.len() > cap {
        return Err(too_large(Some(before.len())));
    }
    // O_NONBLOCK: were the path swapped for a FIFO after the check, opening it would
    // otherwise wait for a writer. It changes nothing for a regular file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32 | rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)
        .map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        return Err(not_regular(kind(opened.file_type())));
    }
    if (opened.dev(), opened.ino()) != (before.dev(), before.ino()) {
        return Err(io(std::io::Error::other("the file was replaced while it was being opened")));
    }
    // The file may grow while it is read: the cap holds on what is read, not on its size.
    // Every pod of a static manifest pulls its file again: most find its content stored
    // already, and then nothing is written (10,000 pods at once were 10,000 copies and
    // fsyncs of the same module).
    if let Some(stored) = blobs.find(&mut file, cap, || too_large(None), io)? {
        return Ok(stored);
    }
    file.rewind().map_err(io)?;
    blobs.ingest(&mut file, cap, || too_large(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pull_with(dir: &Path, target: &Path, files: FileImages, cap: u64) -> Result<Pulled, OciError> {
        let blobs = Blobs::new(dir.join("images"));
        pull(&blobs, &format!("file://{}", target.display()), target, files, cap).await
    }

    fn stored(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("images/blobs/sha256")).map(|d| d.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn refused_unless_allowed_and_nothing_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = pull_with(dir.path(), Path::new("/etc/hostname"), FileImages::Refused, 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::LocalFileRefused { .. }), "{err:?}");
        assert!(err.to_string().contains("only be used by static pods"), "{err}");
        assert_eq!(stored(dir.path()), 0);
    }

    #[tokio::test]
    async fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for (path, what) in [("/dev/zero", "a character device"), ("/tmp", "a directory")] {
            let err = pull_with(dir.path(), Path::new(path), FileImages::Allowed, 1 << 20).await.unwrap_err();
            assert!(
                matches!(&err, OciError::LocalFileNotRegular { kind, .. } if *kind == what),
                "{path}: {err:?}"
            );
        }
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
        let err = pull_with(dir.path(), &fifo, FileImages::Allowed, 1 << 20).await.unwrap_err();
        assert!(err.to_string().contains("is a FIFO, not a regular file"), "{err}");
        assert_eq!(stored(dir.path()), 0);
    }

    #[tokio::test]
    async fn symlinks_are_followed_to_a_regular_file_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("v2.wasm");
        std::fs::write(&real, b"\0asm\x01\0\0\0").unwrap();
        let link = dir.path().join("current.wasm");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let pulled = pull_with(dir.path(), &link, FileImages::Allowed, 1 << 20).await.unwrap();
        assert_eq!(std::fs::read(pulled.wasm_path).unwrap(), b"\0asm\x01\0\0\0");
        assert!(pulled.image_id.starts_with(&format!("file://{}@sha256:", link.display())));

        let big = dir.path().join("big.wasm");
        std::fs::File::create(&big).unwrap().set_len((1 << 20) + 1).unwrap();
        let err = pull_with(dir.path(), &big, FileImages::Allowed, 1 << 20).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("(1.0Mi) of image") && text.contains("--image-max-size=1Mi"), "{text}");
        assert_eq!(stored(dir.path()), 1, "only the module");
    }

    #[tokio::test]
    async fn a_module_pulled_again_is_stored_once_and_a_changed_one_anew() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let first = pull_with(dir.path(), &module, FileImages::Allowed, 1 << 20).await.unwrap();
        let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let stored_inode = inode(&first.wasm_path);
        let again = pull_with(dir.path(), &module, FileImages::Allowed, 1 << 20).await.unwrap();
        assert_eq!((&again.wasm_digest, &again.wasm_path), (&first.wasm_digest, &first.wasm_path));
        assert_eq!(inode(&again.wasm_path), stored_inode, "the stored blob was not written again");

        std::fs::write(&module, b"\0asm\x01\0\0\0\0").unwrap();
        let changed = pull_with(dir.path(), &module, FileImages::Allowed, 1 << 20).await.unwrap();
        assert_ne!(changed.wasm_digest, first.wasm_digest);
        assert_eq!(std::fs::read(&changed.wasm_path).unwrap(), b"\0asm\x01\0\0\0\0");
        assert_eq!(stored(dir.path()), 2);
    }
}
