//! A network namespace for a test node, so that its IP is not loopback (the endpoints
//! controller refuses loopback pod IPs, so Services need this): a veth pair in
//! 10.201.0.0/16 joins it to this host, and socat carries the API server's and the
//! registry's loopback ports in, so the node's kubeconfig and registry flags stay as they
//! are. Needs root (CI runs as root). Traffic stays between the namespace and this host.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How many namespaces one test process may make.
const PER_PROCESS: u32 = 16;

/// Loopback ports of this host the namespace reaches at its own 127.0.0.1.
const CARRIED: [u16; 2] = [6443, 5000];

pub struct Netns {
    pub name: String,
    /// This host's end of the veth pair.
    pub host_ip: String,
    /// The namespace's end: the node's IP.
    pub node_ip: String,
    socats: Vec<Child>,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    /// Makes the namespace `kw-<tag>-<pid>` and its link; removes the namespaces of test
    /// processes that died. Each namespace of a process has links and a /30 of its own
    /// (up to [`PER_PROCESS`] of them).
    pub fn create(tag: &str) -> Netns {
        static MADE: AtomicU32 = AtomicU32::new(0);
        forget_dead();
        let pid = std::process::id();
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        assert!(n < PER_PROCESS, "more than {PER_PROCESS} network namespaces in one test process");
        let name = format!("kw-{tag}-{pid}");
        let (host_if, ns_if) = (format!("kwh{}-{n}", pid % 100_000), format!("kwn{}-{n}", pid % 100_000));
        // 16,384 /30s in 10.201.0.0/16: PER_PROCESS of them for each process.
        let slot = (pid % (16_384 / PER_PROCESS)) * PER_PROCESS + n;
        let (a, b) = (slot / 64, (slot % 64) * 4);
        let (host_ip, node_ip) = (format!("10.201.{a}.{}", b + 1), format!("10.201.{a}.{}", b + 2));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        run(&["ip", "link", "set", &ns_if, "netns", &name]);
        run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        run(&["ip", "link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &name];
            all.extend_from_slice(args);
            run(&all);
        };
        inside(&["ip", "addr", "add", &format!("{node_ip}/30"), "dev", &ns_if]);
        inside(&["ip", "link", "set", &ns_if, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        let mut socats = Vec::new();
        for port in CARRIED {
            let here = format!("TCP-LISTEN:{port},bind={host_ip},fork,reuseaddr");
            socats.push(spawn(&["socat", &here, &format!("TCP:127.0.0.1:{port}")]));
            let there = format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr");
            socats.push(spawn(&[
                "ip",
                "netns",
                "exec",
                &name,
                "socat",
                &there,
                &format!("TCP:{host_ip}:{port}"),
            ]));
        }
        let ns = Netns { name, host_ip, node_ip, socats };
        for port in CARRIED {
            ns.wait_carried(port);
        }
        ns
    }

    /// Deletes the namespace when the process exits, for one that is never dropped (its
    /// socat processes die with the process).
    pub fn forget_at_exit(&self) {
        let name = self.name.clone();
        super::sweep::at_exit(move || {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        });
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name].iter().map(|s| s.to_string()).collect()
    }

    /// Waits until a connection to 127.0.0.1:`port` inside the namespace gets through.
    fn wait_carried(&self, port: u16) {
        let start = Instant::now();
        loop {
            let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.name, "bash", "-c", &probe])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "port {port} not carried into {}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    let mut cmd = Command::new(args[0]);
    // Dies with the test process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
    cmd.args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        for s in &mut self.socats {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Removes `kw-*-<pid>` namespaces whose test process is gone.
fn forget_dead() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|_| name.starts_with("kw-"))
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
