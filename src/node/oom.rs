//! Whether the previous agent died of memory. Every guest lives in the agent's process, so
//! when the machine (or the agent's cgroup) runs out, the kernel's OOM killer picks the
//! agent. At start the agent records its pid, the boot, its memory cgroup and that
//! cgroup's OOM-kill count in `<data-dir>/agent-run.json`, and marks the record clean when
//! it stops on its own. The next agent finds a record not marked clean and asks the kernel
//! whether it killed that agent: the recorded cgroup's OOM-kill count went up, or the
//! kernel log (`/dev/kmsg`, where the agent may read it) says it killed the recorded pid.
//! Then the pods that were running are charged for it (`pods/worker/machine/recover.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::cgroupfs::MemoryCgroup;

/// What an agent records about itself at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    pid: u32,
    boot_id: String,
    /// The agent's memory cgroup, if it had one.
    cgroup: Option<PathBuf>,
    #[serde(default)]
    mount: Option<PathBuf>,
    #[serde(default)]
    v2: bool,
    /// That cgroup's OOM-kill count when the agent started.
    oom_kills: Option<u64>,
    /// The agent stopped on its own (a shutdown, or an error it reported).
    clean: bool,
}

/// This agent's record; marks it clean when dropped (every way `run` returns).
pub struct AgentRun {
    path: PathBuf,
    record: Record,
}

impl AgentRun {
    /// Reads the previous agent's record, then writes this one's. Returns the record's
    /// keeper and, if the kernel killed the previous agent for lack of memory, how that
    /// was seen.
    pub fn begin(data_dir: &Path) -> (AgentRun, Option<String>) {
        let path = data_dir.join("agent-run.json");
        let previous: Option<Record> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let boot_id = boot_id();
        let killed = previous.filter(|p| !p.clean && p.boot_id == boot_id).and_then(|p| {
            let now = p.cgroup.as_ref().and_then(|dir| {
                let mount = p.mount.clone().unwrap_or_else(|| dir.clone());
                MemoryCgroup { dir: dir.clone(), mount, v2: p.v2 }.oom_kills()
            });
            oom_killed(&p, now, &kernel_log())
        });
        let cgroup = crate::base::host::agent_cgroup();
        let record = Record {
            pid: std::process::id(),
            boot_id,
            cgroup: cgroup.map(|c| c.dir.clone()),
            mount: cgroup.map(|c| c.mount.clone()),
            v2: cgroup.is_some_and(|c| c.v2),
            oom_kills: cgroup.and_then(MemoryCgroup::oom_kills),
            clean: false,
        };
        let run = AgentRun { path, record };
        run.write();
        (run, killed)
    }

    fn write(&self) {
        let Ok(bytes) = serde_json::to_vec(&self.record) else { return };
        if let Err(e) = crate::files::write_atomic(&self.path, &bytes, 0o600) {
            tracing::warn!(error = %e, "cannot record this agent's run; an OOM kill of it will not be told apart at the next start");
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        self.record.clean = true;
        self.write();
    }
}

/// Whether the kernel OOM-killed the agent of `previous`: its cgroup's OOM-kill count is
/// now (`oom_kills_now`) above what it recorded, or `kmsg` names its pid as OOM-killed.
fn oom_killed(previous: &Record, oom_kills_now: Option<u64>, kmsg: &str) -> Option<String> {
    if let (Some(before), Some(now)) = (previous.oom_kills, oom_kills_now)
        && now > before
        && let Some(dir) = &previous.cgroup
    {
        return Some(format!(
            "the OOM-kill count of its memory cgroup {} went from {before} to {now}",
            dir.display()
        ));
    }
    let pid = previous.pid;
    let named = kmsg.lines().any(|l| {
        l.contains(&format!("Killed process {pid} "))
            || (l.contains("oom-kill:") && l.contains(&format!(",pid={pid},")))
    });
    named.then(|| format!("the kernel log says the OOM killer killed process {pid}"))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The kernel's log since boot, one record per line, or empty where it may not be read.
/// `/dev/kmsg` gives one record per read and `EAGAIN` at the end (opened non-blocking).
fn kernel_log() -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    // Bounded: a busy log could otherwise keep this reading.
    for _ in 0..200_000 {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            // A record overwritten while reading (EPIPE): go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(oom_kills: Option<u64>) -> Record {
        Record {
            pid: 4242,
            boot_id: "b".into(),
            cgroup: Some("/sys/fs/cgroup/kw".into()),
            oom_kills,
            ..Record::default()
        }
    }

    #[test]
    fn an_oom_kill_is_seen_in_the_cgroup_count_or_the_kernel_log() {
        assert!(oom_killed(&record(Some(1)), Some(2), "").unwrap().contains("went from 1 to 2"));
        assert_eq!(oom_killed(&record(Some(2)), Some(2), ""), None);
        assert_eq!(oom_killed(&record(None), None, ""), None);
        let kmsg =
            "6,1234,5678,-;Memory cgroup out of memory: Killed process 4242 (krustlet-wasi) total-vm:1kB\n";
        assert!(oom_killed(&record(None), None, kmsg).unwrap().contains("process 4242"));
        let other = "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,task=krustlet-wasi,pid=42421,uid=0\n";
        assert_eq!(oom_killed(&record(None), None, other), None, "another pid");
        let ours = "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,task=krustlet-wasi,pid=4242,uid=0\n";
        assert!(oom_killed(&record(None), None, ours).is_some());
    }

    #[test]
    fn a_clean_stop_or_another_boot_is_not_an_oom_kill() {
        let dir = tempfile::tempdir().unwrap();
        let (run, killed) = AgentRun::begin(dir.path());
        assert_eq!(killed, None, "no previous agent");
        drop(run);
        let written: Record =
            serde_json::from_slice(&std::fs::read(dir.path().join("agent-run.json")).unwrap()).unwrap();
        assert!(written.clean && written.pid == std::process::id());
        // A previous agent that did not stop cleanly, on another boot: not charged.
        let stale = Record { boot_id: "another".into(), ..record(Some(0)) };
        std::fs::write(dir.path().join("agent-run.json"), serde_json::to_vec(&stale).unwrap()).unwrap();
        assert_eq!(AgentRun::begin(dir.path()).1, None);
    }
}
