//! End to end, on the real control plane: the guide's HTTP server (examples/guide: warp +
//! tokio on the WasmEdge socket API, built by examples/guide/build.sh) runs unchanged on a
//! node, pushed in the guide's image layout and in wasm-to-oci layout. Its pod is the
//! guide's (no ports declared, the node's tolerations); the tests reach it as the guide's
//! readers do, through `kubectl port-forward` (1.32 over WebSocket, 1.20 over SPDY), and
//! as a cluster does, at the node IP and through a Service's Endpoints.
//!
//! The node runs in a network namespace of its own, so its 8080 (the port the program
//! binds, and cannot be told otherwise) is not this machine's: tests that run the server
//! take turns on it.

use crate::common;
mod ports;
mod serving;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::registry::{ImageKind, RawPusher, sha256, tar_layer};
use common::{Cluster, netns::Netns, node::TestNode, node::phase, node::pod};
use serde_json::{Value, json};

/// The node's kubelet API port (healthz on +1000); guide tests use 10540-10549.
const PORT: u16 = 10540;
/// The port the guide's program binds.
const GUIDE: u16 = 8080;
/// What the program answers at `/`, as the guide writes it (no newline).
const HELLO: &str = "Hello, World!";

/// The node every test here shares, in its own network namespace, and the guide's images.
struct Guide {
    cluster: &'static Cluster,
    netns: Netns,
    node: TestNode,
    /// The guide's layout: `FROM scratch`, `COPY http-server.wasm /`, `CMD [...]`.
    docker_image: String,
    /// The module as `wasm-to-oci push` writes it.
    wasm_to_oci_image: String,
}

/// The shared node and images, made once from a thread that lives as long as the process
/// (what it starts dies with the thread that started it). `None`: the test is skipped.
fn guide() -> Option<&'static Guide> {
    static GUIDE_NODE: OnceLock<Option<&'static Guide>> = OnceLock::new();
    let cluster = common::cluster()?;
    *GUIDE_NODE.get_or_init(|| {
        let module = guide_module()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let docker_image = push_docker_layout(&cluster.registry, &module);
            let wasm_to_oci_image = push_wasm_to_oci(&cluster.registry, &module);
            let netns = Netns::create("guide");
            let node = TestNode::join_at(cluster, "guide", PORT, &cluster.registry, &[], Some(&netns));
            common::forget_at_exit(cluster, &node);
            netns.forget_at_exit();
            let g = Guide { cluster, netns, node, docker_image, wasm_to_oci_image };
            tx.send(&*Box::leak(Box::new(g))).unwrap();
            loop {
                std::thread::park();
            }
        });
        Some(rx.recv().expect("the guide's test node joined"))
    })
}

/// The shared node; returns from the test (skipping it) when there is no control plane
/// or no toolchain outside CI.
macro_rules! require_guide {
    () => {
        match $crate::guide::guide() {
            Some(g) => g,
            None => return,
        }
    };
}
pub(crate) use require_guide;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The guide's module, built (once, then cached) by examples/guide/build.sh. `None` when
/// Debian's toolchain is missing outside CI; in CI a failed build fails the test.
fn guide_module() -> Option<PathBuf> {
    let script = Path::new(common::REPO).join("examples/guide/build.sh");
    if !Path::new("/usr/bin/rustc").exists() && !in_ci() {
        eprintln!("SKIPPED: Debian's rustc is missing; run: sudo bash {}", script.display());
        return None;
    }
    let build = Command::new("bash").arg(&script).output().expect("bash runs");
    if !build.status.success() {
        let err = String::from_utf8_lossy(&build.stderr);
        assert!(
            !in_ci(),
            "CI=true: building the guide's module failed; run: sudo bash {}\n{err}",
            script.display()
        );
        eprintln!("SKIPPED: {} failed:\n{err}", script.display());
        return None;
    }
    let stdout = String::from_utf8_lossy(&build.stdout);
    Some(PathBuf::from(stdout.lines().last().expect("build.sh prints the module's path").trim()))
}

/// Pushes the module as `docker build` pushes the guide's Dockerfile: a Docker v2 manifest,
/// one gzip layer holding `http-server.wasm`, a `linux/amd64` config whose `Cmd` runs it.
fn push_docker_layout(registry: &str, module: &Path) -> String {
    let wasm = std::fs::read(module).unwrap();
    let tar = tar_layer(&[("http-server.wasm", &wasm)], false);
    let layer = tar_layer(&[("http-server.wasm", &wasm)], true);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/http-server.wasm"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
        "history": [
            {"created_by": "COPY http-server.wasm / # buildkit", "comment": "buildkit.dockerfile.v0"},
            {"created_by": "CMD [\"/http-server.wasm\"]", "comment": "buildkit.dockerfile.v0", "empty_layer": true},
        ],
    });
    let repo = format!("krustlet-test/guide-docker-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(RawPusher::new(registry).image(&repo, "v1", ImageKind::DockerV2, &[layer], config));
    format!("{registry}/{repo}:v1")
}

/// Pushes the module with `krustlet-wasi push --format wasm-to-oci`.
fn push_wasm_to_oci(registry: &str, module: &Path) -> String {
    let reference = format!("{registry}/krustlet-test/guide-wasm-to-oci-{}:v1", std::process::id());
    let out = Command::new(common::AGENT)
        .args(["push", "--format", "wasm-to-oci", "--insecure-registries", registry])
        .arg(module)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(out.status.success(), "push {reference}: {}", String::from_utf8_lossy(&out.stderr));
    reference
}

impl Guide {
    /// Waits until no other test's server holds the node's 8080; the caller's pods go when
    /// the returned turn ends.
    fn turn(&'static self) -> Turn {
        static PORT_8080: Mutex<()> = Mutex::new(());
        let guard = PORT_8080.lock().unwrap_or_else(|p| p.into_inner());
        Turn { _guard: guard, guide: self, pods: Vec::new() }
    }

    /// `http://NODE_IP:8080/PATH`.
    fn at_node_ip(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.netns.node_ip, GUIDE, path)
    }
}

/// One test's hold on the node's 8080; deletes the pods it made (and waits) when dropped,
/// so the next test finds the port free.
struct Turn {
    _guard: MutexGuard<'static, ()>,
    guide: &'static Guide,
    pods: Vec<String>,
}

impl Turn {
    /// Applies the guide's pod (no ports declared, this node's tolerations) of `image`,
    /// named `<name>-<pid>`, with `labels`; returns its name.
    fn pod(&mut self, name: &str, image: &str, labels: Value) -> String {
        let name = format!("{name}-{}", std::process::id());
        let mut p = pod(&name, &self.guide.node.name, image);
        p["metadata"]["labels"] = labels;
        p["spec"]["containers"][0]["name"] = json!("wasm-demo-app");
        self.guide.cluster.apply(&p);
        self.pods.push(name.clone());
        name
    }

    /// Waits until the pod is Running and its server answers at the node IP.
    fn serving(&self, name: &str) -> Value {
        let running =
            self.guide.cluster.wait_pod(name, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
        common::wait_for_explained(
            &format!("pod {name} answering at the node IP"),
            Duration::from_secs(30),
            || self.guide.at_node_ip("/").filter(|(status, _)| *status == 200),
            || self.guide.cluster.explain_pod("default", name),
        );
        running
    }

    /// Deletes a pod and waits until it is gone.
    fn delete(&mut self, name: &str) {
        self.guide.cluster.kubectl_ok(&[
            "delete",
            "pod",
            "-n",
            "default",
            name,
            "--wait=true",
            "--timeout=60s",
        ]);
        self.pods.retain(|p| p != name);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.pods) {
            self.guide.cluster.kubectl(&[
                "delete",
                "pod",
                "-n",
                "default",
                &name,
                "--wait=true",
                "--timeout=60s",
            ]);
        }
    }
}

/// One HTTP/1.1 GET of `path` on its own connection: (status, body), or `None` when the
/// connection is refused or closed before a whole answer.
fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let addr = format!("{host}:{port}").parse().ok()?;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: Option<usize> = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    });
    // A body cut short is no answer.
    (length.is_none_or(|n| n == body.len())).then(|| (status, body.to_string()))
}
