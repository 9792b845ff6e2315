//! Static pods (`--pod-manifest-path`): how the manifest directory is watched.

use std::time::Duration;

/// After inotify reports a change in `--pod-manifest-path`, how long to let the writer
/// finish before reading the files (an editor may write a file in several steps). Only
/// the files inotify named are read again.
pub const MANIFEST_SETTLE: Duration = Duration::from_millis(10);

/// How often the whole manifest directory is listed again without an event from inotify
/// (the kubelet's `--file-check-frequency` default). Events name the files that changed,
/// so this full look is only a safety net for a lost event or a replaced directory; where
/// inotify cannot be had, the directory is polled every 100 ms instead.
pub const MANIFEST_RESCAN_PERIOD: Duration = Duration::from_secs(20);
