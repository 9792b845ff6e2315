//! Shared end-to-end harness: the real local control plane (started through
//! `bootstrap/cluster.sh`), kubectl against it, bootstrap files, and agent processes.
//!
//! Outside CI, a machine without the control plane skips cluster tests with a message
//! naming the command that enables them; with `CI=true` they fail loudly instead.

#![allow(dead_code)] // not every part of the harness has a user in every build

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agent;
pub mod bystander;
pub mod forward;
pub mod guests;
pub mod kubelet_api;
pub mod netns;
pub mod node;
pub mod registry;
pub mod seeded;
pub mod sweep;
pub mod turns;

pub use agent::Agent;
pub use sweep::{forget_at_exit, unmount_below};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const AGENT: &str = env!("CARGO_BIN_EXE_krustlet-wasi");

/// The running control plane, as `bootstrap/cluster.sh env` describes it.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub registry: String,
    /// Where the control-plane daemons write their logs (`$KRUSTLET_CP_DIR/logs`).
    pub logs: PathBuf,
}

/// The control plane, started if needed; `None` (test skipped) only outside CI. The
/// calling test shares it with the others until it ends (see [`turns`]).
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    turns::share_cluster();
    CLUSTER.get_or_init(start_cluster).as_ref()
}

/// Returns from the test (skipping it) when there is no control plane outside CI.
#[macro_export]
macro_rules! require_cluster {
    () => {
        match $crate::common::cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

fn start_cluster() -> Option<Cluster> {
    let script = Path::new(REPO).join("bootstrap/cluster.sh");
    let up = Command::new("bash").arg(&script).arg("up").output();
    let fail = |why: String| -> Option<Cluster> {
        if in_ci() {
            panic!("CI=true but the control plane could not start: {why}");
        }
        eprintln!(
            "SKIPPED: no control plane ({why}).\n  Enable cluster tests with: sudo bootstrap/cluster.sh install && bootstrap/cluster.sh up"
        );
        None
    };
    match up {
        Err(e) => return fail(format!("running {} failed: {e}", script.display())),
        Ok(o) if !o.status.success() => {
            return fail(format!(
                "bootstrap/cluster.sh up exited {}: {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(_) => {}
    }
    let env = Command::new("bash").arg(&script).arg("env").output().ok()?;
    let text = String::from_utf8_lossy(&env.stdout).to_string();
    let var = |name: &str| {
        text.lines().find_map(|l| {
            let l = l.trim().trim_start_matches("export ");
            let v = l.strip_prefix(name)?.strip_prefix('=')?;
            Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
        })
    };
    match var("KUBECONFIG") {
        Some(k) => {
            let cluster = Cluster {
                kubeconfig: PathBuf::from(k),
                registry: var("KRUSTLET_TEST_REGISTRY").unwrap_or_else(|| "127.0.0.1:5000".into()),
                logs: PathBuf::from(var("KRUSTLET_CP_DIR").unwrap_or_default()).join("logs"),
            };
            cluster.forget_dead_test_nodes();
            sweep::forget_dead_runs();
            Some(cluster)
        }
        None => fail(format!("bootstrap/cluster.sh env printed no KUBECONFIG: {text}")),
    }
}

impl Cluster {
    /// The last `lines` lines of a control-plane daemon's log, for failure messages.
    pub fn daemon_log_tail(&self, daemon: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.logs.join(format!("{daemon}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!("---- last lines of {daemon}.log ----\n{}", all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// What the control plane says about a pod that is not where a test wants it: its
    /// status, its events, the nodes' taints, and the scheduler's and controller
    /// manager's last log lines.
    pub fn explain_pod(&self, namespace: &str, pod: &str) -> String {
        let status = self.get_json(&["pod", pod, "-n", namespace]).map(|p| p["status"].clone());
        let sel = format!("involvedObject.name={pod}");
        let events = self.kubectl(&["get", "events", "-n", namespace, "--field-selector", &sel]);
        let taints = self.kubectl(&[
            "get",
            "nodes",
            "-o",
            "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status,TAINTS:.spec.taints[*].key",
        ]);
        format!(
            "pod {namespace}/{pod} status: {:#}\nevents:\n{}\nnodes:\n{}\n{}\n{}",
            status.unwrap_or(Value::Null),
            String::from_utf8_lossy(&events.stdout),
            String::from_utf8_lossy(&taints.stdout),
            self.daemon_log_tail("kube-scheduler", 15),
            self.daemon_log_tail("kube-controller-manager", 15),
        )
    }

    /// Runs kubectl as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and panics with its output unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get ... -o json`, or `None` if the object does not exist.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
    }

    /// Writes a bootstrap kubeconfig with `bootstrap/bootstrap.sh` into `dir`.
    pub fn bootstrap_file(&self, dir: &Path) -> PathBuf {
        let out = Command::new("bash")
            .arg(Path::new(REPO).join("bootstrap/bootstrap.sh"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("CONFIG_DIR", dir)
            .env("FILE_NAME", "bootstrap.conf")
            .output()
            .expect("bootstrap.sh runs");
        assert!(out.status.success(), "bootstrap.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        dir.join("bootstrap.conf")
    }

    /// Deletes the test nodes (`kw-*`) of earlier test processes whose Lease is no longer
    /// renewed (every 10 s by a live agent): shared nodes outlive their tests, and a dead
    /// node counts as Ready for a while, where the scheduler could put a test's pod.
    fn forget_dead_test_nodes(&self) {
        let Some(leases) = self.get_json(&["leases", "-n", "kube-node-lease"]) else { return };
        let now = k8s_openapi::jiff::Timestamp::now();
        for lease in leases["items"].as_array().into_iter().flatten() {
            let name = lease["metadata"]["name"].as_str().unwrap_or("");
            let renewed = lease["spec"]["renewTime"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
            let dead = renewed
                .is_none_or(|t| now.duration_since(t) > k8s_openapi::jiff::SignedDuration::from_secs(20));
            if name.starts_with("kw-") && dead {
                self.forget_node(name);
            }
        }
    }

    /// Deletes what a test node left behind (ignores what is already gone).
    pub fn forget_node(&self, name: &str) {
        let tls = format!("{name}-tls");
        self.kubectl(&["delete", "node", name, "--ignore-not-found", "--wait=false"]);
        self.kubectl(&["delete", "csr", name, &tls, "--ignore-not-found"]);
        self.kubectl(&["-n", "kube-node-lease", "delete", "lease", name, "--ignore-not-found"]);
    }
}

/// A node shared by the tests that name `tag`, started from a thread that lives as long
/// as the process (the agent gets SIGTERM when the thread that started it ends), and swept
/// when the process exits.
pub fn shared_node(tag: &'static str, port: u16) -> Option<&'static node::TestNode> {
    shared_node_with(tag, port, &cluster()?.registry)
}

/// Like [`shared_node`], pulling over plain HTTP from `insecure` (`host:port,...`).
pub fn shared_node_with(tag: &'static str, port: u16, insecure: &str) -> Option<&'static node::TestNode> {
    type Cell = std::sync::Arc<OnceLock<&'static node::TestNode>>;
    static NODES: std::sync::Mutex<Option<std::collections::HashMap<&'static str, Cell>>> =
        std::sync::Mutex::new(None);
    let cluster = cluster()?;
    // One join per tag; nodes of different tags join at the same time.
    let cell = NODES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_default()
        .entry(tag)
        .or_default()
        .clone();
    let node = cell.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let insecure = insecure.to_string();
        std::thread::spawn(move || {
            let n: &'static node::TestNode =
                Box::leak(Box::new(node::TestNode::join(cluster, tag, port, &insecure)));
            tx.send(n).unwrap();
            loop {
                std::thread::park();
            }
        });
        let n = rx.recv().expect("the shared node joined");
        forget_at_exit(cluster, n);
        n
    });
    Some(node)
}

/// Flags of a standalone agent (no cluster) named `name` on 127.0.0.1:`port`, running the
/// static pods of `manifests` with its state in `data`; loopback clients may use its API.
pub fn standalone_args(manifests: &Path, data: &Path, name: &str, port: u16) -> Vec<String> {
    let (manifests, data) = (manifests.to_string_lossy(), data.to_string_lossy());
    let port = port.to_string();
    let args = [
        "--pod-manifest-path",
        &manifests,
        "--data-dir",
        &data,
        "--node-ip",
        "127.0.0.1",
        "--hostname",
        name,
        "--node-name",
        name,
        "--port",
        &port,
        "--healthz-port",
        "0",
        "--allow-anonymous-localhost",
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// Both kubectls: the installed one (1.32) and Debian's 1.20 from the control plane's
/// cache, which speaks only SPDY. CI must have both.
pub fn kubectls() -> Vec<PathBuf> {
    let mut k = vec![PathBuf::from("kubectl")];
    let old = PathBuf::from("/var/cache/krustlet-wasi/k8s-1.20.2/bin/kubectl-1.20");
    let cache =
        std::env::var("KRUSTLET_CP_CACHE").map(|c| PathBuf::from(c).join("bin/kubectl-1.20")).unwrap_or(old);
    if cache.exists() {
        k.push(cache);
    } else {
        assert!(std::env::var("CI").is_err(), "CI needs kubectl-1.20 (bootstrap/cluster.sh install)");
        eprintln!("kubectl-1.20 not found; run bootstrap/cluster.sh install to test SPDY with it");
    }
    k
}

/// Polls `f` every 250 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(what, timeout, f, String::new)
}

/// Like [`wait_for`]; on timeout the panic message also carries `explain()`.
pub fn wait_for_explained<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    poll_until(what, timeout, Duration::from_millis(250), f, explain)
}

/// Calls `f` every `every` until it returns `Some`; after `timeout` panics naming `what`,
/// with `explain()`.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", explain());
        }
        std::thread::sleep(every);
    }
}

/// Reads a PEM certificate file the agent wrote.
pub fn inspect_file(path: &Path) -> krustlet_wasi::certs::CertInfo {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    krustlet_wasi::certs::inspect(&pem, &path.display().to_string()).unwrap()
}
