//! Waiting for a change in a few directories: inotify on them (creations, writes, renames,
//! deletions), with a slow tick as a safety net. Used by `logs -f` (a run's log directory
//! and its pod's state directory) and by static pods (`--pod-manifest-path`). Where
//! inotify cannot be had (no instances left, a directory not there) it polls. Needs a
//! tokio runtime with I/O enabled.

use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use tokio::io::unix::AsyncFd;

/// How often to look without inotify.
const POLL: Duration = Duration::from_millis(100);
/// How long to wait for an inotify event before looking anyway (an event can be missed if
/// a directory is replaced; this bounds the delay then).
const SAFETY_TICK: Duration = Duration::from_secs(1);

/// What a wait for a change saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// Entries of the watched directories, by name (sorted, each once).
    Names(Vec<OsString>),
    /// Anything may have changed: look at everything.
    Anything,
}

/// Waits for a change in a few directories.
pub struct Wake {
    inotify: Option<AsyncFd<OwnedFd>>,
}

impl Wake {
    /// Watches `dirs`; polls every 100 ms if any cannot be watched.
    pub fn watch(dirs: &[&Path]) -> Wake {
        let watched = || -> Result<AsyncFd<OwnedFd>, std::io::Error> {
            let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
            let events = WatchFlags::CREATE
                | WatchFlags::MODIFY
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::MOVED_TO
                | WatchFlags::MOVED_FROM
                | WatchFlags::DELETE
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF;
            for dir in dirs {
                inotify::add_watch(&fd, *dir, events)?;
            }
            // SAFETY: the descriptor is owned by the `AsyncFd` from here on, so it stays open
            // and the same until the `AsyncFd` is dropped.
            Ok(unsafe { AsyncFd::register(fd) }?)
        };
        Wake { inotify: watched().ok() }
    }

    /// Looks every 100 ms.
    #[cfg(test)]
    pub fn polling() -> Wake {
        Wake { inotify: None }
    }

    /// Whether changes are pushed by inotify (else polled).
    #[cfg(test)]
    pub fn is_pushed(&self) -> bool {
        self.inotify.is_some()
    }

    /// Returns after a change (or the safety tick); every pending event is consumed.
    pub async fn wait(&mut self) {
        self.changes(SAFETY_TICK).await;
    }

    /// Returns after a change, with the names that changed in the watched directories;
    /// [`Changed::Anything`] after `tick` without one, when events were lost (the queue
    /// overflowed, a watched directory went) or when polling.
    pub async fn changes(&mut self, tick: Duration) -> Changed {
        let Some(fd) = &self.inotify else {
            tokio::time::sleep(POLL).await;
            return Changed::Anything;
        };
        let read = tokio::time::timeout(tick, async {
            let mut guard = fd.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = inotify::Reader::new(fd.get_ref(), &mut buf);
            let (mut names, mut lost) = (Vec::new(), false);
            loop {
                match reader.next() {
                    Ok(event) => {
                        lost |= event.events().intersects(
                            ReadFlags::QUEUE_OVERFLOW
                                | ReadFlags::DELETE_SELF
                                | ReadFlags::MOVE_SELF
                                | ReadFlags::IGNORED,
                        );
                        match event.file_name() {
                            Some(name) => names.push(OsStr::from_bytes(name.to_bytes()).to_os_string()),
                            None => lost = true,
                        }
                    }
                    Err(Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(std::io::Error::from(e)),
                }
            }
            names.sort_unstable();
            names.dedup();
            Ok(if lost { Changed::Anything } else { Changed::Names(names) })
        })
        .await;
        match read {
            Ok(Ok(changed)) => changed,
            Ok(Err(_)) => {
                // The inotify descriptor failed: poll from now on.
                self.inotify = None;
                Changed::Anything
            }
            Err(_) => Changed::Anything,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_reported_by_name_and_silence_as_anything_after_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut wake = Wake::watch(&[dir.path()]);
        assert!(wake.is_pushed());
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "y").unwrap();
        std::fs::rename(dir.path().join("b.yaml"), dir.path().join("c.yaml")).unwrap();
        let names = ["a.yaml", "b.yaml", "c.yaml"].map(OsString::from).to_vec();
        assert_eq!(wake.changes(Duration::from_secs(5)).await, Changed::Names(names));
        assert_eq!(wake.changes(Duration::from_millis(50)).await, Changed::Anything);
    }

    #[tokio::test]
    async fn a_watched_directory_removed_is_anything() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("m");
        std::fs::create_dir(&inner).unwrap();
        let mut wake = Wake::watch(&[&inner]);
        std::fs::remove_dir(&inner).unwrap();
        assert_eq!(wake.changes(Duration::from_secs(5)).await, Changed::Anything);
    }
}
