//! Opening a directory *beneath* a volume root: every path a guest can change (a subPath
//! inside a writable volume) is resolved by the kernel with `openat2(RESOLVE_BENEATH)`, so a
//! symlink the guest planted can never lead the agent out of the volume, and the directory
//! handed to the runtime is the one that was checked (no path is opened twice).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a directory beneath a root could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// The path leaves the root: through `..`, an absolute path, or a symlink pointing out.
    #[error("it leads outside the volume")]
    Escapes,
    /// The path (or one of its parents) is not a directory.
    #[error("it is not a directory")]
    NotDirectory,
    /// The path does not exist and was not to be created.
    #[error("it does not exist")]
    Missing,
    /// The kernel has no `openat2` (Linux before 5.6): the agent refuses to resolve
    /// guest-controlled paths without it.
    #[error("the kernel has no openat2 (Linux 5.6 or later is needed to open volume paths safely)")]
    Unsupported,
    /// Any other failure of the root or of a step.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// How often one `openat2` is retried after `EAGAIN` (a rename raced the lookup).
const RACE_RETRIES: usize = 16;

/// Opens the directory `rel` (relative, already normalized: only normal components)
/// beneath the directory `root`, as an `O_PATH` handle. With `create`, missing directories
/// on the way are made, each created *inside* a parent that was itself opened beneath the
/// root, with the root's permission bits (as the kubelet makes subPaths: an emptyDir's
/// stay owner-only, a hostPath's are as open as the host directory). Symlinks inside the
/// volume are followed as long as they stay in it.
pub fn open_dir(root: &Path, rel: &Path, create: bool) -> Result<OwnedFd, BeneathError> {
    let root_fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| match e {
        Errno::NOTDIR => BeneathError::NotDirectory,
        Errno::NOENT => BeneathError::Missing,
        e => BeneathError::Io(e.into()),
    })?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => return Err(BeneathError::Escapes),
        }
    }
    if parts.is_empty() {
        return Ok(root_fd);
    }
    if create {
        let root_mode = rustix::fs::fstat(&root_fd).map_err(|e| BeneathError::Io(e.into()))?.st_mode & 0o777;
        let mut parent = rustix::io::dup(&root_fd).map_err(|e| BeneathError::Io(e.into()))?;
        let mut prefix = std::path::PathBuf::new();
        for part in parts {
            prefix.push(part);
            match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(root_mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(classify(e)),
            }
            parent = beneath(&root_fd, &prefix)?;
        }
        return Ok(parent);
    }
    beneath(&root_fd, rel)
}

/// One `openat2(root, rel, O_PATH|O_DIRECTORY, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)`.
fn beneath(root: &impl AsFd, rel: &Path) -> Result<OwnedFd, BeneathError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < RACE_RETRIES => tries += 1,
            result => return result.map_err(classify),
        }
    }
}

fn classify(e: Errno) -> BeneathError {
    match e {
        Errno::XDEV | Errno::LOOP | Errno::AGAIN => BeneathError::Escapes,
        Errno::NOTDIR => BeneathError::NotDirectory,
        Errno::NOENT => BeneathError::Missing,
        Errno::NOSYS => BeneathError::Unsupported,
        e => BeneathError::Io(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn ino(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).expect("fstat").st_ino
    }

    fn ino_of(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("metadata"))
    }

    #[test]
    fn opens_directories_and_inner_symlinks_beneath_the_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        symlink("a/b", t.path().join("link")).unwrap();
        let fd = open_dir(t.path(), Path::new("a/b"), false).unwrap();
        assert_eq!(ino(&fd), ino_of(&t.path().join("a/b")));
        let fd = open_dir(t.path(), Path::new("link"), false).unwrap();
        assert_eq!(ino(&fd), ino_of(&t.path().join("a/b")), "a symlink inside the volume is fine");
        let fd = open_dir(t.path(), Path::new(""), false).unwrap();
        assert_eq!(ino(&fd), ino_of(t.path()));
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        symlink("../../../../../../../../..", root.join("up")).unwrap();
        symlink(outside.path(), root.join("abs")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        symlink("../..", root.join("d/deep")).unwrap();
        for rel in ["up", "abs", "d/deep", "up/tmp", "../vol", "/etc"] {
            let err = open_dir(&root, Path::new(rel), false).expect_err(rel);
            assert!(matches!(err, BeneathError::Escapes), "{rel}: {err:?}");
            let err = open_dir(&root, Path::new(rel), true).expect_err(rel);
            assert!(matches!(err, BeneathError::Escapes), "{rel} (create): {err:?}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing was created outside");
    }

    #[test]
    fn creation_never_follows_a_symlink_out() {
        let outside = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        symlink(outside.path(), t.path().join("x")).unwrap();
        let err = open_dir(t.path(), Path::new("x/new/dir"), true).expect_err("escape");
        assert!(matches!(err, BeneathError::Escapes), "{err:?}");
        assert!(!outside.path().join("new").exists(), "no directory was made through the symlink");
        let fd = open_dir(t.path(), Path::new("y/new/dir"), true).unwrap();
        assert_eq!(ino(&fd), ino_of(&t.path().join("y/new/dir")));
    }

    #[test]
    fn files_and_missing_paths_are_told_apart() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), "x").unwrap();
        assert!(matches!(open_dir(t.path(), Path::new("f"), false), Err(BeneathError::NotDirectory)));
        assert!(matches!(open_dir(t.path(), Path::new("f"), true), Err(BeneathError::NotDirectory)));
        assert!(matches!(open_dir(t.path(), Path::new("nope"), false), Err(BeneathError::Missing)));
        assert!(matches!(
            open_dir(&t.path().join("f"), Path::new(""), false),
            Err(BeneathError::NotDirectory)
        ));
    }
}
