//! Memory-backed volumes on a tmpfs of their own, as the kubelet mounts them: the
//! start-up check of whether the agent may mount at all, mounting a volume's directory
//! (once: a mount an earlier agent made is found again), and unmounting it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use tracing::{debug, info, warn};

/// Where this node keeps memory-backed volumes (secret, projected, downwardAPI, emptyDir
/// `medium: Memory`), decided once at start-up by [`probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMedium {
    /// A tmpfs per volume, mounted by the agent (it runs as root or with CAP_SYS_ADMIN).
    Tmpfs,
    /// On the data dir's disk, owner-only (directories 0700, secret files 0600 unless the
    /// pod sets a mode): the agent may not mount.
    #[default]
    Disk,
}

/// `statfs` `f_type` of a tmpfs.
const TMPFS_MAGIC: i128 = 0x0102_1994;

/// What the agent's tmpfs mounts are called in the mount table (the kubelet's name too).
const SOURCE: &str = "tmpfs";

/// Nothing on a volume's tmpfs is a program, a device or a set-id file.
const FLAGS: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV).union(MountFlags::NOEXEC);

/// The directory the start-up check mounts on, inside the data dir.
const PROBE_DIR: &str = ".tmpfs-check";

/// The size of the start-up check's tmpfs.
const PROBE_SIZE: u64 = 4096;

/// The mount options of a volume's tmpfs: owner-only, at most `size` bytes (0 would mean
/// no limit to the kernel: at least one byte, which the kernel rounds up to a page).
pub(crate) fn options(size: u64) -> String {
    format!("mode=0700,size={}", size.max(1))
}

/// Mounts a tmpfs of at most `size` bytes on `dir`.
fn mount(dir: &Path, size: u64) -> io::Result<()> {
    let data = std::ffi::CString::new(options(size)).map_err(io::Error::other)?;
    rustix::mount::mount(SOURCE, dir, "tmpfs", FLAGS, data.as_c_str()).map_err(io::Error::from)
}

/// Whether `dir` is a mount point: it lies on another filesystem than its parent.
pub(crate) fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let own = std::fs::symlink_metadata(dir)?;
    let parent = std::fs::metadata(dir.join(".."))?;
    Ok(own.is_dir() && own.dev() != parent.dev())
}

/// Whether `dir` lies on a tmpfs.
pub(crate) fn is_tmpfs(dir: &Path) -> io::Result<bool> {
    let fs = rustix::fs::statfs(dir)?;
    #[allow(clippy::useless_conversion)] // f_type's integer type differs between targets
    let kind = i128::from(fs.f_type);
    Ok(kind == TMPFS_MAGIC)
}

/// How [`ensure_mounted`] found the volume's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mounted {
    /// Mounted now.
    Now,
    /// Already a mount point (an earlier agent's mount, found again after a restart).
    Already,
}

/// Makes `dir` a tmpfs mount point of at most `size` bytes (mode 0700, nosuid, nodev,
/// noexec), unless it already is one (another filesystem mounted there is an error, never
/// mounted over). Files an agent that could not mount left there on
/// disk are removed first: no secret stays on disk beneath the mount.
pub(crate) fn ensure_mounted(dir: &Path, size: u64) -> io::Result<Mounted> {
    super::writer::ensure_dir(dir)?;
    if is_mount_point(dir)? {
        if !is_tmpfs(dir)? {
            return Err(io::Error::other("another filesystem than a tmpfs is mounted there"));
        }
        debug!(dir = %dir.display(), "volume tmpfs found mounted");
        return Ok(Mounted::Already);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    mount(dir, size)?;
    debug!(dir = %dir.display(), size, "volume tmpfs mounted");
    Ok(Mounted::Now)
}

/// Unmounts the mount on `dir`. A mount still in use (a guest being stopped holds a file
/// of it open) is detached instead: it leaves the directory at once and its memory is
/// freed when the last file closes. `dir` being no mount point (any more) is fine.
pub(crate) fn unmount(dir: &Path) -> io::Result<()> {
    match rustix::mount::unmount(dir, UnmountFlags::empty()) {
        Ok(()) | Err(Errno::INVAL | Errno::NOENT) => Ok(()),
        Err(Errno::BUSY) => {
            debug!(dir = %dir.display(), "volume tmpfs busy; detaching it");
            rustix::mount::unmount(dir, UnmountFlags::DETACH).map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// What a trial mount's outcome means: the medium, and why not tmpfs when it is not.
pub(crate) fn decide(trial: Result<(), Errno>) -> (MemoryMedium, Option<String>) {
    match trial {
        Ok(()) => (MemoryMedium::Tmpfs, None),
        Err(Errno::PERM | Errno::ACCESS) => (
            MemoryMedium::Disk,
            Some(
                "the agent may not mount a tmpfs (it runs neither as root nor with CAP_SYS_ADMIN, \
                 or in a container that does not allow mounts)"
                    .into(),
            ),
        ),
        Err(Errno::NODEV) => (MemoryMedium::Disk, Some("the kernel has no tmpfs".into())),
        Err(e) => (MemoryMedium::Disk, Some(format!("a trial tmpfs mount failed: {e}"))),
    }
}

/// Decides, once at start-up, where memory-backed volumes live: tries to mount (and
/// unmount) a small tmpfs inside `data_dir`. When it cannot, says so in one warning and
/// returns [`MemoryMedium::Disk`].
pub fn probe(data_dir: &Path) -> MemoryMedium {
    let dir = data_dir.join(PROBE_DIR);
    let trial = (|| {
        super::writer::ensure_dir(&dir).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        // A check that an earlier agent did not finish.
        if is_mount_point(&dir).unwrap_or(false) {
            let _ = unmount(&dir);
        }
        let data = std::ffi::CString::new(options(PROBE_SIZE)).map_err(|_| Errno::INVAL)?;
        rustix::mount::mount(SOURCE, &dir, "tmpfs", FLAGS, data.as_c_str())?;
        if let Err(e) = unmount(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot unmount the trial tmpfs");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir(&dir);
    let (medium, why) = decide(trial);
    match why {
        None => {
            info!("secrets, service account tokens and memory-backed volumes are kept on a tmpfs per volume")
        }
        Some(why) => warn!(
            data_dir = %data_dir.display(),
            "secrets and service account tokens are stored on disk under the data dir, with owner-only \
             modes (directories 0700, files 0600 unless the pod sets a mode), not in memory: {why}. Run \
             the agent as root or with CAP_SYS_ADMIN to keep them on tmpfs"
        ),
    }
    medium
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_follows_the_trial_mount() {
        assert_eq!(decide(Ok(())), (MemoryMedium::Tmpfs, None));
        for refused in [Errno::PERM, Errno::ACCESS] {
            let (medium, why) = decide(Err(refused));
            assert_eq!(medium, MemoryMedium::Disk);
            assert!(why.unwrap_or_default().contains("CAP_SYS_ADMIN"), "{refused:?}");
        }
        let (medium, why) = decide(Err(Errno::NODEV));
        assert_eq!((medium, why.as_deref()), (MemoryMedium::Disk, Some("the kernel has no tmpfs")));
        assert_eq!(decide(Err(Errno::NOMEM)).0, MemoryMedium::Disk);
    }

    #[test]
    fn options_bound_the_size_and_are_owner_only() {
        assert_eq!(options(64 << 20), "mode=0700,size=67108864");
        assert_eq!(options(0), "mode=0700,size=1", "size=0 would be unlimited");
    }

    /// Where the test process may mount (root in CI), a mount is made, found again rather
    /// than made twice, and unmounted; where it may not, the probe says disk.
    #[test]
    fn mounts_are_made_once_and_unmounted_where_the_agent_may_mount() {
        let data = tempfile::tempdir().unwrap();
        let medium = probe(data.path());
        assert!(!data.path().join(PROBE_DIR).exists(), "the check leaves nothing behind");
        let dir = data.path().join("vol");
        if medium == MemoryMedium::Disk {
            std::fs::create_dir(&dir).unwrap();
            assert!(mount(&dir, 4096).is_err(), "the probe said disk, so mounting fails");
            return;
        }
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("left-on-disk"), "old secret").unwrap();
        assert_eq!(ensure_mounted(&dir, 1 << 20).unwrap(), Mounted::Now);
        assert!(is_mount_point(&dir).unwrap() && is_tmpfs(&dir).unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing from the disk beneath");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(ensure_mounted(&dir, 1 << 20).unwrap(), Mounted::Already);
        let canonical = dir.canonicalize().unwrap();
        let table = super::super::mountinfo::read().unwrap();
        let entries: Vec<_> = table.iter().filter(|m| m.path == canonical).collect();
        assert_eq!(entries.len(), 1, "mounted once: {entries:?}");
        assert_eq!(entries[0].fs_type, "tmpfs");
        // Held open (a guest being stopped): detached all the same.
        let held = std::fs::File::create(dir.join("open")).unwrap();
        unmount(&dir).unwrap();
        drop(held);
        assert!(!is_mount_point(&dir).unwrap());
        assert!(!dir.join("left-on-disk").exists(), "the disk files went before the mount");
        unmount(&dir).unwrap();
    }
}
