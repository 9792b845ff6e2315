//! A joined, Ready test node (agent process + its data dir), and pods scheduled onto it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Agent, Cluster};

/// An agent that joined the cluster as `name`, listening on `port`.
pub struct TestNode {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub agent: Agent,
    pub args: Vec<String>,
    /// What the agent is run through (`ip netns exec NS`), if anything.
    prefix: Vec<String>,
    cluster: &'static Cluster,
}

impl TestNode {
    /// Bootstraps a fresh node (approving its serving CSR) and waits until it is Ready.
    pub fn join(cluster: &'static Cluster, tag: &str, port: u16, registry: &str) -> TestNode {
        Self::join_with(cluster, tag, port, registry, &[])
    }

    /// Like `join`, with extra agent flags.
    pub fn join_with(
        cluster: &'static Cluster,
        tag: &str,
        port: u16,
        registry: &str,
        extra: &[&str],
    ) -> TestNode {
        Self::join_at(cluster, tag, port, registry, extra, None)
    }

    /// Like `join_with`, the agent running in the network namespace `netns` (its IP the
    /// node IP), when given.
    pub fn join_at(
        cluster: &'static Cluster,
        tag: &str,
        port: u16,
        registry: &str,
        extra: &[&str],
        netns: Option<&super::netns::Netns>,
    ) -> TestNode {
        let prefix = netns.map(|n| n.prefix()).unwrap_or_default();
        let node_ip = netns.map_or("127.0.0.1".to_string(), |n| n.node_ip.clone());
        Self::join_prefixed(cluster, tag, port, registry, extra, &node_ip, prefix)
    }

    /// Like `join_with`, the agent run through `prefix` (e.g. a shell that moves it into a
    /// cgroup first, then execs it; the agent's path and flags follow), with `node_ip`.
    pub fn join_prefixed(
        cluster: &'static Cluster,
        tag: &str,
        port: u16,
        registry: &str,
        extra: &[&str],
        node_ip: &str,
        prefix: Vec<String>,
    ) -> TestNode {
        let name = format!("kw-{tag}-{}", std::process::id());
        super::turns::claim(&name, &[port, port + 1000]);
        cluster.forget_node(&name);
        let dir = super::sweep::node_dir(&name);
        let bootstrap = cluster.bootstrap_file(dir.path());
        let args: Vec<String> = [
            "--node-ip",
            node_ip,
            "--node-name",
            &name,
            "--hostname",
            &name,
            "--port",
            &port.to_string(),
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
            "--bootstrap-file",
            &bootstrap.to_string_lossy(),
            "--insecure-registries",
            registry,
            "--healthz-port",
            &(port + 1000).to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let mut agent = Agent::start_with(&dir.path().join("logs"), &prefix, &args);
        agent.wait_output("BOOTSTRAP: TLS certificate requires manual approval", Duration::from_secs(90));
        cluster.kubectl_ok(&["certificate", "approve", &format!("{name}-tls")]);
        agent.wait_output("node registered and Ready", Duration::from_secs(60));
        wait_schedulable(cluster, &name);
        TestNode { name, port, dir, agent, args, prefix, cluster }
    }

    /// Stops the agent (SIGTERM) and starts it again with the same data dir.
    pub fn restart(&mut self) {
        let (status, _) = self.agent.terminate();
        assert!(status.success(), "agent exit {status}");
        self.agent = Agent::start_with(&self.dir.path().join("logs"), &self.prefix, &self.args);
        self.agent.wait_output("node registered and Ready", Duration::from_secs(60));
    }

    /// Whether the node's agent process still runs.
    pub fn agent_alive(&self) -> bool {
        self.agent.alive()
    }

    /// Starts the agent again (it was stopped with `agent.terminate()`), same data dir.
    pub fn restart_stopped(&mut self) {
        self.agent = Agent::start_with(&self.dir.path().join("logs"), &self.prefix, &self.args);
        self.agent.wait_output("node registered and Ready", Duration::from_secs(60));
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The CRI log file of a container run.
    pub fn log_file(&self, pod: &Value, container: &str, run: u32) -> PathBuf {
        let m = &pod["metadata"];
        let dir = format!(
            "{}_{}_{}",
            m["namespace"].as_str().unwrap(),
            m["name"].as_str().unwrap(),
            m["uid"].as_str().unwrap()
        );
        self.data_dir().join("logs").join(dir).join(container).join(format!("{run}.log"))
    }

    /// Lines of text a container run wrote (stdout and stderr), empty if none yet.
    pub fn log_lines(&self, pod: &Value, container: &str, run: u32) -> Vec<String> {
        krustlet_wasi::logs::read_lines(&self.log_file(pod, container, run))
            .map(|v| v.into_iter().map(|(_, l)| l).collect())
            .unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // The agent goes before its data dir, and so do the mounts it leaves.
        self.agent.kill();
        super::unmount_below(self.dir.path());
        // Leave no Node behind for the lifecycle controller to evict from.
        self.cluster.forget_node(&self.name);
        super::turns::release(&self.name);
    }
}

/// Waits until the node lifecycle controller has lifted `node.kubernetes.io/not-ready`,
/// which admission puts on every new Node: until then nothing is scheduled onto it.
pub fn wait_schedulable(cluster: &Cluster, node: &str) {
    let start = std::time::Instant::now();
    loop {
        let taints = cluster.get_json(&["node", node]).map(|n| n["spec"]["taints"].clone());
        let tainted = taints.as_ref().and_then(|t| t.as_array()).is_none_or(|t| {
            t.iter().any(|t| {
                t["key"] == "node.kubernetes.io/not-ready" || t["key"] == "node.kubernetes.io/unreachable"
            })
        });
        if !tainted {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "node {node} still not schedulable after 90 s; taints: {}\n{}",
            taints.unwrap_or(Value::Null),
            cluster.daemon_log_tail("kube-controller-manager", 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pod for `node` running `image`, tolerating the Wasm taints and selecting the node.
pub fn pod(name: &str, node: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [
                {"key": "kubernetes.io/arch", "operator": "Equal", "value": "wasm32-wasi", "effect": "NoSchedule"},
                {"key": "kubernetes.io/arch", "operator": "Equal", "value": "wasm32-wasi", "effect": "NoExecute"},
            ],
            "containers": [{"name": "main", "image": image}],
        },
    })
}

impl Cluster {
    /// `kubectl apply` of a JSON object.
    pub fn apply(&self, object: &Value) {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until the pod satisfies `cond`; panics with what the cluster says of it otherwise.
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        super::poll_until(
            &format!("pod {name}: {what}"),
            timeout,
            Duration::from_millis(200),
            || self.get_json(&["pod", name, "-n", "default"]).filter(|p| cond(p)),
            || self.explain_pod("default", name),
        )
    }

    /// The pod's events as (reason, message), oldest first.
    pub fn pod_events(&self, name: &str) -> Vec<(String, String)> {
        let sel = format!("involvedObject.name={name}");
        let ev = self.get_json(&["events", "-n", "default", "--field-selector", &sel]).unwrap_or(Value::Null);
        let mut items: Vec<Value> = ev["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|e| e["firstTimestamp"].as_str().unwrap_or("").to_string());
        items
            .iter()
            .map(|e| (e["reason"].as_str().unwrap_or("").into(), e["message"].as_str().unwrap_or("").into()))
            .collect()
    }
}

/// `status.containerStatuses[0]`.
pub fn main_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}
