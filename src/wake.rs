//! Waiting for a change in a few directories: inotify on them (creations, writes, renames,
//! deletions), with a slow tick as a safety net. Used by `logs -f` (a run's log directory
//! and its pod's state directory) and by static pods (`--pod-manifest-path`). Where
//! inotify cannot be had (no instances left, a directory not there) it polls. Needs a
//! tokio runtime with I/O enabled.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use rustix::io::Errno;
use tokio::io::unix::AsyncFd;

/// How often to look without inotify.
const POLL: Duration = Duration::from_millis(100);
/// How long to wait for an inotify event before looking anyway (an event can be missed if
/// a directory is replaced; this bounds the delay then).
const SAFETY_TICK: Duration = Duration::from_secs(1);

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
        let Some(fd) = &self.inotify else {
            tokio::time::sleep(POLL).await;
            return;
        };
        let drained = tokio::time::timeout(SAFETY_TICK, async {
            let mut guard = fd.readable().await?;
            let mut buf = [0u8; 4096];
            loop {
                match rustix::io::read(fd.get_ref(), &mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(Errno::AGAIN) => {
                        guard.clear_ready();
                        return Ok(());
                    }
                    Err(e) => return Err(std::io::Error::from(e)),
                }
            }
        })
        .await;
        if let Ok(Err(_)) = drained {
            // The inotify descriptor failed: poll from now on.
            self.inotify = None;
        }
    }
}
