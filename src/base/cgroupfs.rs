//! The agent's own memory cgroup, as the kernel shows it: its limit (which caps the node's
//! memory capacity), what it uses (which bounds `memory.available`), and how many times the
//! kernel's OOM killer struck in it (so the next agent can tell its predecessor died of
//! memory). cgroup v2 (`memory.max`, `memory.current`, `memory.events`), else the v1 memory
//! controller (`memory.limit_in_bytes`, `memory.usage_in_bytes`, `memory.oom_control`).
//! Where the agent's cgroup is comes from `/proc/self/cgroup`, where it is mounted from
//! `/proc/self/mountinfo`. Read-only; anything missing means "no limit" or "unknown".

use std::path::{Path, PathBuf};

/// A v1 `memory.limit_in_bytes` this large means no limit (the kernel writes
/// `PAGE_COUNTER_MAX` pages, about 2^63 bytes).
const V1_NO_LIMIT: u64 = 1 << 62;

/// One memory cgroup: its directory under the cgroup filesystem, and which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    /// The cgroup's directory, e.g. `/sys/fs/cgroup/system.slice/krustlet-wasi.service`.
    pub dir: PathBuf,
    /// Where its hierarchy is mounted (limits are looked for up to there).
    pub mount: PathBuf,
    pub v2: bool,
}

impl MemoryCgroup {
    /// The memory cgroup this process is in, if the kernel has one mounted.
    pub fn of_self() -> Option<MemoryCgroup> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let found = locate(&read("/proc/self/cgroup"), &read("/proc/self/mountinfo"), |mount| {
            read(&format!("{}/cgroup.controllers", mount.display()))
        })?;
        found.dir.is_dir().then_some(found)
    }

    /// The lowest memory limit of this cgroup and its parents up to the mount, in bytes.
    pub fn limit(&self) -> Option<u64> {
        let (file, none) =
            if self.v2 { ("memory.max", u64::MAX) } else { ("memory.limit_in_bytes", V1_NO_LIMIT) };
        let mut lowest: Option<u64> = None;
        let mut dir = Some(self.dir.as_path());
        while let Some(d) = dir {
            let limit = read_u64(&d.join(file)).filter(|l| *l < none);
            lowest = match (lowest, limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if d == self.mount {
                break;
            }
            dir = d.parent().filter(|p| p.starts_with(&self.mount));
        }
        lowest
    }

    /// What the cgroup uses that the kernel cannot simply drop: its usage less its inactive
    /// file cache, as the kubelet computes a working set.
    pub fn working_set(&self) -> Option<u64> {
        let (usage, inactive) = if self.v2 {
            ("memory.current", "inactive_file")
        } else {
            ("memory.usage_in_bytes", "total_inactive_file")
        };
        let usage = read_u64(&self.dir.join(usage))?;
        let stat = std::fs::read_to_string(self.dir.join("memory.stat")).unwrap_or_default();
        Some(usage.saturating_sub(keyed(&stat, inactive).unwrap_or(0)))
    }

    /// How many processes the kernel's OOM killer killed in this cgroup so far.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        keyed(&std::fs::read_to_string(self.dir.join(file)).ok()?, "oom_kill")
    }
}

/// Finds the memory cgroup of a process from its `/proc/<pid>/cgroup` and `mountinfo`:
/// cgroup v2 when its mount has the memory controller (`controllers` reads a mount's
/// `cgroup.controllers`), else the v1 hierarchy whose controllers include `memory`.
pub fn locate(cgroup: &str, mountinfo: &str, controllers: impl Fn(&Path) -> String) -> Option<MemoryCgroup> {
    let mounts: Vec<(String, PathBuf, String, String)> = mountinfo.lines().filter_map(mount_line).collect();
    let unified = cgroup.lines().find_map(|l| l.strip_prefix("0::"));
    let v2 = mounts.iter().find(|(_, mount, fstype, _)| {
        fstype == "cgroup2" && controllers(mount).split_whitespace().any(|c| c == "memory")
    });
    if let (Some(path), Some((root, mount, _, _))) = (unified, v2) {
        return Some(MemoryCgroup { dir: under(mount, root, path), mount: mount.clone(), v2: true });
    }
    let path = cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        list.split(',').any(|c| c == "memory").then_some(path)
    })?;
    let (root, mount, _, _) = mounts
        .iter()
        .find(|(_, _, fstype, options)| fstype == "cgroup" && options.split(',').any(|o| o == "memory"))?;
    Some(MemoryCgroup { dir: under(mount, root, path), mount: mount.clone(), v2: false })
}

/// `(root, mount point, fstype, super options)` of a mountinfo line.
fn mount_line(line: &str) -> Option<(String, PathBuf, String, String)> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let root = fields.nth(3)?.to_string();
    let mount = PathBuf::from(fields.next()?);
    let mut after = after.split(' ');
    let fstype = after.next()?.to_string();
    let options = after.nth(1).unwrap_or("").to_string();
    Some((root, mount, fstype, options))
}

/// The directory of cgroup `path` under a mount whose root is the cgroup `root`.
fn under(mount: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path).trim_start_matches('/');
    if rel.is_empty() { mount.to_path_buf() } else { mount.join(rel) }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of a `key value` line (memory.stat, memory.events, memory.oom_control).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS_V1: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw
36 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:16 - cgroup cgroup rw,memory
37 25 0:33 / /sys/fs/cgroup/cpu rw,relatime shared:17 - cgroup cgroup rw,cpu";
    const MOUNTS_V2: &str = "29 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate";

    #[test]
    fn the_memory_cgroup_is_found_in_v2_or_in_v1() {
        let v2 = locate("0::/system.slice/kw.service\n", MOUNTS_V2, |_| "cpu memory pids".into()).unwrap();
        assert_eq!(v2.dir, PathBuf::from("/sys/fs/cgroup/system.slice/kw.service"));
        assert!(v2.v2);
        // Hybrid: the unified hierarchy has no memory controller; v1's memory is used.
        let hybrid = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let v1 = locate(hybrid, MOUNTS_V1, |_| "hugetlb".into()).unwrap();
        assert_eq!(v1.dir, PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"));
        assert!(!v1.v2);
        assert_eq!(locate("0::/\n", MOUNTS_V1, |_| String::new()), None);
        // Inside a cgroup namespace whose mount root is the process's own group.
        let ns = "29 24 0:26 /kubepods/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        let inner = locate("0::/kubepods/x\n", ns, |_| "memory".into()).unwrap();
        assert_eq!(inner.dir, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn limits_usage_and_oom_kills_are_read_from_the_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |p: &Path, f: &str, v: &str| std::fs::write(p.join(f), v).unwrap();
        write(root.path(), "memory.max", "max\n");
        write(&root.path().join("a"), "memory.max", "1073741824\n");
        write(&dir, "memory.max", "2147483648\n");
        write(&dir, "memory.current", "500000000\n");
        write(&dir, "memory.stat", "anon 1\ninactive_file 100000000\nactive_file 3\n");
        write(&dir, "memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n");
        let cg = MemoryCgroup { dir: dir.clone(), mount: root.path().to_path_buf(), v2: true };
        assert_eq!(cg.limit(), Some(1 << 30), "the parent's lower limit counts");
        assert_eq!(cg.working_set(), Some(400_000_000));
        assert_eq!(cg.oom_kills(), Some(2));
        write(&dir, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&dir, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n");
        let v1 = MemoryCgroup { dir, mount: root.path().to_path_buf(), v2: false };
        assert_eq!(v1.limit(), None, "v1's largest value is no limit");
        assert_eq!(v1.oom_kills(), Some(5));
    }
}
