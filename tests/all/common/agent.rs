//! A `krustlet-wasi` process started by a test: its output in files, killed when dropped
//! and when the thread that started it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{AGENT, wait_for};

/// A running `krustlet-wasi` process; killed when dropped.
pub struct Agent {
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Agent {
    /// Starts the agent with `args`; its output goes to files in `log_dir`.
    pub fn start(log_dir: &Path, args: &[String]) -> Agent {
        Agent::start_with(log_dir, &[], args)
    }

    /// Like `start`, the agent run through `prefix` (e.g. `ip netns exec NS`).
    pub fn start_with(log_dir: &Path, prefix: &[String], args: &[String]) -> Agent {
        Agent::start_logging(log_dir, prefix, args, "info,krustlet_wasi=debug")
    }

    /// Like `start_with`, logging as the `RUST_LOG` filter `rust_log` says (the agent's
    /// default is `info`) rather than with the agent's debug lines.
    pub fn start_logging(log_dir: &Path, prefix: &[String], args: &[String], rust_log: &str) -> Agent {
        std::fs::create_dir_all(log_dir).unwrap();
        let n = std::fs::read_dir(log_dir).map(|d| d.count()).unwrap_or(0);
        let stdout = log_dir.join(format!("agent-{n}.out"));
        let stderr = log_dir.join(format!("agent-{n}.err"));
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(AGENT);
                c
            }
            None => Command::new(AGENT),
        };
        // The agent dies with the thread that started it: no orphan nodes after a test run.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("agent starts");
        Agent { child: Some(child), stdout, stderr }
    }

    /// Whether the agent process still runs (not exited, not a zombie), without reaping it.
    pub fn alive(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesized command name.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The agent's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stdout or stderr contains `needle`; panics with the logs otherwise.
    pub fn wait_output(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !(self.output().contains(needle) || self.logs().contains(needle)) {
            if let Some(status) = self.try_exit() {
                panic!("agent exited ({status}) before printing {needle:?}:\n{}", self.logs());
            }
            assert!(
                start.elapsed() < timeout,
                "agent did not print {needle:?} in {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for("the agent to exit", timeout, || self.try_exit())
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let pid = self.child.as_ref().expect("running").id();
        let start = Instant::now();
        let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(ok.success());
        let status = self.wait_exit(Duration::from_secs(30));
        (status, start.elapsed())
    }
}

impl Agent {
    /// Kills the agent (SIGKILL) and waits for it; nothing if it has already gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
