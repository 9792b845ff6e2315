//! Reads facts about the machine: hostname, addresses, CPUs, memory, disk, and system IDs.
//!
//! Everything here is read-only I/O, gathered once (or on each status refresh for the
//! numbers that change) so the rest of the agent can stay pure.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Facts about the host that defaults depend on, gathered by the caller (see [`facts`]).
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The host's hostname.
    pub hostname: String,
    /// The host's interface addresses, in interface order.
    pub addresses: Vec<IpAddr>,
    /// `$HOME`, if set.
    pub home: Option<PathBuf>,
    /// `$KUBECONFIG`, if set (only its first entry is used).
    pub kubeconfig_env: Option<PathBuf>,
}

/// Gathers what `Config::resolve` needs for its defaults.
pub fn facts() -> HostFacts {
    HostFacts {
        hostname: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        addresses: if_addrs::get_if_addrs()
            .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect::<Vec<IpAddr>>())
            .unwrap_or_default(),
        home: std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from),
        kubeconfig_env: std::env::var_os("KUBECONFIG")
            .filter(|k| !k.is_empty())
            // Like kubectl, take the first entry of a colon-separated list.
            .and_then(|k| std::env::split_paths(&k).next()),
    }
}

/// What the node reports about the machine in `status.nodeInfo` and `status.capacity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    /// The machine's memory (`MemTotal`), or the memory limit of the agent's own cgroup
    /// when that is lower: every guest lives in the agent's process, so that is all the
    /// memory pods can have.
    pub memory_bytes: u64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

/// Free resources, re-read for each status refresh (they drive the pressure conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `MemAvailable`, or what the agent's cgroup has left under its limit when that is
    /// less (its limit less its working set).
    pub memory_available_bytes: u64,
    /// The memory capacity, as [`Machine::memory_bytes`].
    pub memory_total_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_available_bytes: u64,
    /// Inodes of the data dir's filesystem (0 where it does not count them).
    pub inodes_total: u64,
    pub inodes_free: u64,
    pub pids_in_use: u64,
    pub pid_max: u64,
}

/// Reads the machine's fixed facts. Missing files give empty strings, never an error:
/// a container or an unusual distribution may not have them.
pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let total = meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024;
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        memory_bytes: agent_cgroup().and_then(|c| c.limit()).map_or(total, |limit| limit.min(total)),
        machine_id: read("/etc/machine-id"),
        system_uuid: read("/sys/class/dmi/id/product_uuid"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        kernel_version: rustix::system::uname().release().to_string_lossy().into_owned(),
        os_image: os_release_pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
    }
}

/// The memory cgroup the agent runs in (looked up once: a process does not move).
pub fn agent_cgroup() -> Option<&'static super::cgroupfs::MemoryCgroup> {
    static CGROUP: std::sync::OnceLock<Option<super::cgroupfs::MemoryCgroup>> = std::sync::OnceLock::new();
    CGROUP.get_or_init(super::cgroupfs::MemoryCgroup::of_self).as_ref()
}

/// Reads current free memory, disk of `data_dir`, and process counts.
pub fn usage(data_dir: &Path) -> Usage {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let pids_in_use = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .count() as u64
        })
        .unwrap_or(0);
    Usage {
        pids_in_use,
        pid_max: read("/proc/sys/kernel/pid_max").trim().parse().unwrap_or(32768),
        ..memory_and_disk(data_dir)
    }
}

/// Free memory and disk of `data_dir` only (what eviction watches; no PID count, whose
/// capacity then reads 0 and crosses no threshold).
pub fn memory_and_disk(data_dir: &Path) -> Usage {
    let (disk_total, disk_avail, inodes_total, inodes_free) = match rustix::fs::statvfs(data_dir) {
        Ok(s) => (s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize, s.f_files, s.f_favail),
        Err(_) => (0, 0, 0, 0),
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut total = meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024;
    let mut available = meminfo_kib(&meminfo, "MemAvailable").unwrap_or(0) * 1024;
    if let Some(cgroup) = agent_cgroup()
        && let Some(limit) = cgroup.limit()
    {
        total = total.min(limit);
        available = available.min(limit.saturating_sub(cgroup.working_set().unwrap_or(0)));
    }
    Usage {
        memory_available_bytes: available,
        memory_total_bytes: total,
        disk_total_bytes: disk_total,
        disk_available_bytes: disk_avail,
        inodes_total,
        inodes_free,
        pids_in_use: 0,
        pid_max: 0,
    }
}

/// A `Key:   123 kB` line of /proc/meminfo, in KiB.
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let (k, rest) = l.split_once(':')?;
        (k.trim() == key).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

fn os_release_pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release_parse() {
        let m = "MemTotal:       24529920 kB\nMemFree:  100 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(meminfo_kib(m, "MemTotal"), Some(24529920));
        assert_eq!(meminfo_kib(m, "MemAvailable"), Some(2000));
        assert_eq!(meminfo_kib(m, "Nope"), None);
        let os = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_release_pretty_name(os).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    }

    #[test]
    fn this_machine_reports_something_real() {
        let m = machine();
        assert!(m.cpus >= 1 && m.memory_bytes > 0);
        let u = usage(Path::new("/"));
        assert!(u.disk_total_bytes > 0 && u.pids_in_use > 0);
    }
}
