//! Flags and defaults of what each pod may use of the agent's one process, beyond what its
//! spec asks: the memory a container without `limits.memory` gets, the handles (open
//! files, streams, sockets) a container may hold, and the threads new images compile on.

use super::{ConfigError, invalid};

/// Default `--default-memory-limit`: 512Mi of linear memory and tables per container that
/// sets no `resources.limits.memory`. Every guest shares the agent's process, so a guest
/// without a limit could otherwise take the whole node (wasm's own ceiling is 4 GiB per
/// memory, and a component has several). 512Mi runs an interpreter-based component
/// (CPython is tens of MiB) with room to spare; a pod that needs more says so with
/// `limits.memory`, as on a node whose LimitRange sets a default.
pub const DEFAULT_MEMORY_LIMIT: u64 = 512 * 1024 * 1024;

/// Default `--max-open-files`: 1024 handles per container run (and per exec instance), the
/// soft `RLIMIT_NOFILE` a container gets from containerd and most init systems. Each open
/// file holds one of the agent's own file descriptors, so without a cap one guest could
/// use them all, and then no log, pull or API connection of any pod would work.
pub const DEFAULT_MAX_OPEN_FILES: usize = 1024;

/// Default `--compile-threads`: none given, so one per CPU
/// (`std::thread::available_parallelism`). Cranelift compiles a new image's functions in
/// parallel on these threads only, whatever number of images is new at once, at the
/// guests' scheduling priority (nice +10 to the agent): a compile uses the cores running
/// guests leave idle and shares the rest with them evenly, and the agent's own work (status
/// reports, pods starting from cached code) goes first. Fewer keep cores free of compiling
/// at the cost of slower first starts (`bench/newimage.sh`).
pub const DEFAULT_COMPILE_THREADS: Option<usize> = None;

/// Default `--image-gc-high-threshold`: the kubelet's 85. When more of the `--data-dir`
/// filesystem than this (in percent) is used, images no pod uses are removed, least
/// recently used first, until its use is down to `--image-gc-low-threshold`.
pub const DEFAULT_IMAGE_GC_HIGH: u8 = 85;
/// Default `--image-gc-low-threshold`: the kubelet's 80.
pub const DEFAULT_IMAGE_GC_LOW: u8 = 80;
/// How often disk use is compared with the thresholds (the kubelet's image GC period);
/// also whenever a pod goes away.
pub const IMAGE_GC_PERIOD: std::time::Duration = std::time::Duration::from_secs(300);

/// Per-pod limit flags (flattened into [`super::Flags`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitFlags {
    /// Memory (linear memories and tables) of a container that sets no
    /// resources.limits.memory, as a quantity (`512Mi`); `0` for none. Beyond it the
    /// container is OOMKilled, as it would be beyond its own limit. Default: 512Mi.
    #[arg(long, env = "KRUSTLET_DEFAULT_MEMORY_LIMIT", value_name = "SIZE")]
    pub default_memory_limit: Option<String>,

    /// Handles a container may hold at once: open files and directories (its volumes
    /// included), streams and sockets. Opening one more stops the container with a trap
    /// (exit code 134). Default: 1024.
    #[arg(long, env = "KRUSTLET_MAX_OPEN_FILES", value_name = "N")]
    pub max_open_files: Option<String>,

    /// Threads that compile new images, all images together (at least 1); they run at the
    /// guests' priority. Default: one per CPU.
    #[arg(long, env = "KRUSTLET_COMPILE_THREADS", value_name = "N")]
    pub compile_threads: Option<String>,

    /// Percent of the --data-dir filesystem in use at which image garbage collection
    /// runs (0-100; 100 turns it off). Default: 85.
    #[arg(long, env = "KRUSTLET_IMAGE_GC_HIGH_THRESHOLD", value_name = "PERCENT")]
    pub image_gc_high_threshold: Option<String>,

    /// Percent of that filesystem image garbage collection frees down to (below the high
    /// threshold). Default: 80.
    #[arg(long, env = "KRUSTLET_IMAGE_GC_LOW_THRESHOLD", value_name = "PERCENT")]
    pub image_gc_low_threshold: Option<String>,
}

/// When images are garbage collected: percents of the `--data-dir` filesystem in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGc {
    pub high: u8,
    pub low: u8,
}

/// What each container may use unless its spec says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimits {
    /// For a container without `limits.memory` (`None`: no cap).
    pub default_memory_limit: Option<u64>,
    /// Handles one run may hold at once.
    pub max_open_files: usize,
    pub image_gc: ImageGc,
    /// Threads that compile new images, node-wide (`None`: one per CPU).
    pub compile_threads: Option<usize>,
}

impl Default for PodLimits {
    /// A 512Mi default memory limit, 1024 handles, image GC at 85/80 %, a compile thread per CPU.
    fn default() -> Self {
        PodLimits {
            default_memory_limit: Some(DEFAULT_MEMORY_LIMIT),
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            image_gc: ImageGc { high: DEFAULT_IMAGE_GC_HIGH, low: DEFAULT_IMAGE_GC_LOW },
            compile_threads: DEFAULT_COMPILE_THREADS,
        }
    }
}

pub(super) fn resolve(flags: &LimitFlags) -> Result<PodLimits, ConfigError> {
    let default_memory_limit = match flags.default_memory_limit.as_deref().map(str::trim) {
        None => Some(DEFAULT_MEMORY_LIMIT),
        Some("0") => None,
        Some(q) => match crate::base::quantity::bytes(q) {
            Some(n) if n >= 1024 * 1024 => Some(n),
            _ => {
                let why = format!("{q:?} is not a size of at least 1Mi (e.g. 512Mi), or 0 for none");
                return Err(invalid("default-memory-limit", why));
            }
        },
    };
    let max_open_files = match flags.max_open_files.as_deref().map(str::trim) {
        None => DEFAULT_MAX_OPEN_FILES,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n >= 16 => n,
            _ => return Err(invalid("max-open-files", format!("{n:?} is not an integer of at least 16"))),
        },
    };
    let percent = |flag, raw: &Option<String>, default: u8| match raw.as_deref().map(str::trim) {
        None => Ok(default),
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= 100 => Ok(p),
            _ => Err(invalid(flag, format!("{p:?} is not a percentage from 0 to 100"))),
        },
    };
    let high = percent("image-gc-high-threshold", &flags.image_gc_high_threshold, DEFAULT_IMAGE_GC_HIGH)?;
    let low = percent("image-gc-low-threshold", &flags.image_gc_low_threshold, DEFAULT_IMAGE_GC_LOW)?;
    if low > high {
        let why = format!("{low} is above --image-gc-high-threshold {high}");
        return Err(invalid("image-gc-low-threshold", why));
    }
    let compile_threads = match flags.compile_threads.as_deref().map(str::trim) {
        None => DEFAULT_COMPILE_THREADS,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(invalid("compile-threads", format!("{n:?} is not an integer of at least 1"))),
        },
    };
    Ok(PodLimits { default_memory_limit, max_open_files, image_gc: ImageGc { high, low }, compile_threads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_memory_limit_is_a_quantity_or_none() {
        let flags = |v: &str| LimitFlags { default_memory_limit: Some(v.into()), ..LimitFlags::default() };
        assert_eq!(resolve(&LimitFlags::default()).unwrap(), PodLimits::default());
        assert_eq!(resolve(&flags("1Gi")).unwrap().default_memory_limit, Some(1 << 30));
        assert_eq!(resolve(&flags("0")).unwrap().default_memory_limit, None);
        let err = resolve(&flags("lots")).unwrap_err().to_string();
        assert!(err.contains("--default-memory-limit") && err.contains("\"lots\""), "{err}");
        assert!(resolve(&flags("10Ki")).is_err());
    }

    #[test]
    fn compile_threads_are_one_per_cpu_unless_given() {
        let flags = |v: &str| LimitFlags { compile_threads: Some(v.into()), ..LimitFlags::default() };
        assert_eq!(resolve(&LimitFlags::default()).unwrap().compile_threads, None);
        assert_eq!(resolve(&flags(" 1 ")).unwrap().compile_threads, Some(1));
        for bad in ["0", "-1", "two"] {
            let err = resolve(&flags(bad)).unwrap_err().to_string();
            assert!(err.contains("--compile-threads"), "{bad:?}: {err}");
        }
    }
}
