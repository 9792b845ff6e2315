//! The node's resources, provoked from outside: a busy guest under `limits.cpu`, a wasi:http
//! pod under `limits.memory` flooded with requests that allocate, exec instances inside
//! their container's limit, a node whose `--system-reserved` leaves 1Gi (its allocatable,
//! admission of a pod bound past the scheduler, a guest refused at its budget, eviction
//! under memory pressure), an annotation above the node's ceiling, and an agent the kernel
//! OOM-kills in a small cgroup. Agent ports 10515-10529.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::node::{TestNode, main_status, phase, pod};
use crate::common::{self, Cluster, guests, kubelet_api};

/// The shared node of these tests.
const PORT: u16 = 10515;
/// The node whose reservation leaves it 1Gi.
const BUDGET_PORT: u16 = 10516;
/// The node in a small memory cgroup.
const OOM_PORT: u16 = 10517;
/// Host ports the wasi:http pods serve on (pods use the node's network).
const HTTP_PORT: u16 = 20515;

/// Images of the guests, tagged for these tests (other pieces push their own `v1`).
fn image(cluster: &Cluster, guest: &str) -> String {
    guests::publish(&cluster.registry, guest, "res1", "cncf")
}

fn name(what: &str) -> String {
    format!("res-{what}-{}", std::process::id())
}

fn delete(cluster: &Cluster, names: &[&str]) {
    let mut args = vec!["delete", "pod", "-n", "default", "--wait=false", "--ignore-not-found"];
    args.extend_from_slice(names);
    cluster.kubectl(&args);
}

/// `/stats/summary` of the node, read from its kubelet API with the admin's certificate.
fn summary(cluster: &Cluster, port: u16) -> Value {
    let mut tls = kubelet_api::connect(port, &kubelet_api::tls_config(cluster, true));
    let answer = kubelet_api::ask(&mut tls, "/stats/summary");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// A pod's cumulative CPU time in `summary`, in nanoseconds.
fn pod_cpu(summary: &Value, pod: &str) -> Option<u64> {
    let pods = summary["pods"].as_array()?;
    pods.iter().find(|p| p["podRef"]["name"] == pod)?["cpu"]["usageCoreNanoSeconds"].as_u64()
}

#[test]
fn a_busy_guest_under_a_cpu_limit_uses_well_under_a_core() {
    let cluster = require_cluster!();
    let node = common::shared_node("res", PORT).unwrap();
    let spin = name("spin");
    let mut p = pod(&spin, &node.name, &image(cluster, "spin"));
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "200m", "memory": "32Mi"}});
    cluster.apply(&p);
    cluster.wait_pod(&spin, "Running", Duration::from_secs(90), |p| phase(p) == "Running");
    let first = common::wait_for("the pod in /stats/summary", Duration::from_secs(30), || {
        pod_cpu(&summary(cluster, PORT), &spin).filter(|n| *n > 0).map(|n| (Instant::now(), n))
    });
    std::thread::sleep(Duration::from_secs(6));
    let cpu = pod_cpu(&summary(cluster, PORT), &spin).expect("still in the summary");
    let cores = (cpu - first.1) as f64 / 1e9 / first.0.elapsed().as_secs_f64();
    // Behaviour, not a speed goal: it runs, and far from a whole core (unlimited, a busy
    // loop takes one).
    assert!(cores > 0.02 && cores < 0.5, "a busy guest under limits.cpu 200m used {cores:.3} cores");
    delete(cluster, &[&spin]);
}

/// Sends `GET path` to 127.0.0.1:`port` and reads the whole answer: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut tcp = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(t) => t,
        Err(e) => return (0, e.to_string()),
    };
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    if let Err(e) = tcp.write_all(request.as_bytes()) {
        return (0, e.to_string());
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())
}

/// A wasi:http pod serving `http_hello` on [`HTTP_PORT`] + `offset`.
fn http_pod(cluster: &Cluster, node: &TestNode, name: &str, offset: u16) -> Value {
    let mut p = pod(name, &node.name, &image(cluster, "http_hello"));
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": HTTP_PORT + offset}]);
    p
}

#[test]
fn a_wasi_http_pod_at_its_memory_limit_answers_503_and_keeps_serving() {
    let cluster = require_cluster!();
    let node = common::shared_node("res", PORT).unwrap();
    let web = name("grow");
    let mut p = http_pod(cluster, node, &web, 0);
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "64Mi"}});
    cluster.apply(&p);
    cluster.wait_pod(&web, "Running", Duration::from_secs(120), |p| phase(p) == "Running");
    common::wait_for("the server answers", Duration::from_secs(30), || {
        (get(HTTP_PORT, "/").0 == 200).then_some(())
    });
    let rss_before = node.agent.peak_rss().unwrap_or(0);
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let all: Vec<_> = (0..30).map(|_| s.spawn(|| get(HTTP_PORT, "/grow?mb=20"))).collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 503, "every answer is 200 or 503: {status} {body:?}");
    }
    assert!(
        answers.iter().any(|(s, b)| *s == 503 && b.contains("memory limit")),
        "30 requests of 20 MiB under 64Mi: some must be refused naming the limit: {answers:?}"
    );
    assert!(answers.iter().any(|(s, _)| *s == 200), "some fit: {answers:?}");
    assert_eq!(get(HTTP_PORT, "/").0, 200, "the pod keeps serving");
    let p = cluster.get_json(&["pod", &web, "-n", "default"]).unwrap();
    assert_eq!((phase(&p), &main_status(&p)["restartCount"]), ("Running", &json!(0)), "{:#}", p["status"]);
    let grew = node.agent.peak_rss().unwrap_or(0).saturating_sub(rss_before);
    eprintln!("agent peak RSS grew by {} MiB under the flood", grew >> 20);
    delete(cluster, &[&web]);
}

#[test]
fn exec_instances_share_their_containers_memory_limit() {
    let cluster = require_cluster!();
    let node = common::shared_node("res", PORT).unwrap();
    let holder = name("hold");
    let mut p = pod(&holder, &node.name, &image(cluster, "tool"));
    p["spec"]["containers"][0]["args"] = json!(["alloc", "40", "hold"]);
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "64Mi"}});
    cluster.apply(&p);
    cluster.wait_pod(&holder, "Running", Duration::from_secs(90), |p| phase(p) == "Running");
    common::wait_for("the main run holds 40 MiB", Duration::from_secs(30), || {
        let logs = cluster.kubectl(&["logs", "-n", "default", &holder]);
        String::from_utf8_lossy(&logs.stdout).contains("allocated 40 MiB").then_some(())
    });
    let exec = |mb: &str| cluster.kubectl(&["exec", "-n", "default", &holder, "--", "tool", "alloc", mb]);
    // 40 MiB more would fit in an instance of its own; beside the main run's 40 it does not.
    let refused = exec("40");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the exec passed the container's limit: {stderr}");
    assert!(stderr.contains("137"), "killed as OOM, exit code 137: {stderr}");
    let fits = exec("8");
    assert!(
        String::from_utf8_lossy(&fits.stdout).contains("allocated 8 MiB"),
        "what is left under the limit is usable: {}",
        String::from_utf8_lossy(&fits.stderr)
    );
    let p = cluster.get_json(&["pod", &holder, "-n", "default"]).unwrap();
    assert_eq!(main_status(&p)["restartCount"], 0, "the main run is unharmed: {:#}", p["status"]);
    delete(cluster, &[&holder]);
}

#[test]
fn an_annotation_above_the_nodes_http_ceiling_fails_the_container() {
    let cluster = require_cluster!();
    let node = common::shared_node("res", PORT).unwrap();
    let (greedy, forever) = (name("greedy"), name("forever"));
    let mut p = http_pod(cluster, node, &greedy, 1);
    p["metadata"]["annotations"] = json!({"krustlet-wasi.dev/http-max-concurrent": "5000"});
    cluster.apply(&p);
    let mut q = http_pod(cluster, node, &forever, 2);
    q["metadata"]["annotations"] = json!({"krustlet-wasi.dev/http-request-timeout": "5124095576030431h"});
    cluster.apply(&q);
    let waiting = |name: &str| {
        let p = cluster.wait_pod(name, "CreateContainerConfigError", Duration::from_secs(90), |p| {
            main_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        });
        main_status(&p)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(
        waiting(&greedy),
        "annotation krustlet-wasi.dev/http-max-concurrent: \"5000\" is above the node's --http-max-concurrent (100); a pod may only lower it"
    );
    let message = waiting(&forever);
    assert!(
        message.starts_with("annotation krustlet-wasi.dev/http-request-timeout: \"5124095576030431h\"")
            && message.contains("longer than"),
        "{message}"
    );
    assert!(node.agent_alive(), "no panic");
    delete(cluster, &[&greedy, &forever]);
}

/// `MemTotal` of this machine, in bytes.
fn mem_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

/// A quantity as the API server shows it (`24683772Ki`, `924Mi`), in bytes.
fn bytes(q: &Value) -> u64 {
    q.as_str().and_then(krustlet_wasi::base::quantity::units).unwrap_or(0)
}

#[test]
fn a_node_with_1gi_left_reports_it_refuses_guests_past_it_and_evicts_best_effort_first() {
    let cluster = require_cluster!();
    let reserved = mem_total() - (1 << 30);
    let flag = format!("memory={reserved}");
    let node = TestNode::join_with(
        cluster,
        "res-budget",
        BUDGET_PORT,
        &cluster.registry,
        &["--system-reserved", &flag],
    );
    let status = cluster.get_json(&["node", &node.name]).unwrap()["status"].clone();
    let capacity = bytes(&status["capacity"]["memory"]);
    // Capacity less the reservation less the default hard threshold (memory.available<100Mi).
    let expected = capacity.saturating_sub(reserved).saturating_sub(100 << 20);
    assert_eq!(bytes(&status["allocatable"]["memory"]), expected / 1024 * 1024, "{status:#}");

    // Bound by nodeName, past the scheduler: the node's admission refuses what does not fit.
    let big = name("big");
    let mut p = pod(&big, &node.name, &image(cluster, "tool"));
    p["spec"]["nodeName"] = json!(node.name);
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "2Gi"}});
    cluster.apply(&p);
    let rejected = cluster.wait_pod(&big, "rejected", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(rejected["status"]["reason"], "OutOfmemory", "{:#}", rejected["status"]);
    let message = rejected["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with(
            "Pod Node didn't have enough resource: memory, requested: 2147483648, used: 0, capacity: "
        ),
        "{message}"
    );

    // A guest allowed 2Gi by its own limit is refused at the node's budget, and the agent lives.
    let hog = name("hog");
    let mut p = pod(&hog, &node.name, &image(cluster, "hog"));
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["resources"] =
        json!({"requests": {"memory": "16Mi"}, "limits": {"memory": "2Gi"}});
    cluster.apply(&p);
    let done = cluster.wait_pod(&hog, "OOMKilled", Duration::from_secs(90), |p| {
        main_status(p)["state"]["terminated"]["reason"] == "OOMKilled"
    });
    let terminated = &main_status(&done)["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137);
    assert!(terminated["message"].as_str().unwrap_or("").contains("node's memory budget"), "{terminated:#}");
    assert!(node.agent_alive(), "the agent lives");

    // Memory pressure: what the guests hold comes within the threshold of the budget.
    let tool = image(cluster, "tool");
    let (guaranteed, best_effort) = (name("guaranteed"), name("besteffort"));
    let mut g = pod(&guaranteed, &node.name, &tool);
    g["spec"]["containers"][0]["args"] = json!(["alloc", "380", "hold"]);
    g["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "400Mi", "cpu": "100m"}});
    cluster.apply(&g);
    cluster.wait_pod(&guaranteed, "Running", Duration::from_secs(90), |p| phase(p) == "Running");
    let mut b = pod(&best_effort, &node.name, &tool);
    b["spec"]["containers"][0]["args"] = json!(["alloc", "480", "hold"]);
    cluster.apply(&b);
    let evicted =
        cluster.wait_pod(&best_effort, "Evicted", Duration::from_secs(90), |p| phase(p) == "Failed");
    assert_eq!(evicted["status"]["reason"], "Evicted", "{:#}", evicted["status"]);
    let message = evicted["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi, available: ")
            && message.contains("Container main was using ")
            && message.ends_with("request is 0, has larger consumption of memory. "),
        "{message}"
    );
    let events = cluster.pod_events(&best_effort);
    assert!(events.iter().any(|(r, m)| r == "Evicted" && m == message), "{events:?}");
    let g = cluster.get_json(&["pod", &guaranteed, "-n", "default"]).unwrap();
    assert_eq!((phase(&g), &main_status(&g)["restartCount"]), ("Running", &json!(0)), "{:#}", g["status"]);
    assert!(node.agent_alive());
    delete(cluster, &[&big, &hog, &guaranteed, &best_effort]);
}

/// A memory cgroup of `bytes` this test makes (as root), removed when dropped.
struct Cgroup {
    dir: PathBuf,
    procs: PathBuf,
}

impl Cgroup {
    /// In the hierarchy that has the memory controller: v2 (`memory.max`), else v1.
    fn new(bytes: u64) -> Result<Cgroup, String> {
        let me = krustlet_wasi::base::cgroupfs::MemoryCgroup::of_self().ok_or("no memory cgroup mounted")?;
        let dir = me.mount.join(format!("kw-res-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let limit = if me.v2 { "memory.max" } else { "memory.limit_in_bytes" };
        std::fs::write(dir.join(limit), bytes.to_string()).map_err(|e| format!("{limit}: {e}"))?;
        Ok(Cgroup { procs: dir.join("cgroup.procs"), dir })
    }

    fn oom_kills(&self, v2: bool) -> u64 {
        let file = if v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone; retried while the last one exits.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs the agent in `cgroup`: a shell moves itself there, then becomes the agent.
fn in_cgroup(procs: &Path) -> Vec<String> {
    let script = format!("echo $$ > {} && exec \"$@\"", procs.display());
    ["sh".to_string(), "-c".to_string(), script, "sh".to_string()].to_vec()
}

#[test]
fn an_agent_the_kernel_oom_kills_charges_the_pods_that_were_running() {
    let cluster = require_cluster!();
    let v2 = krustlet_wasi::base::cgroupfs::MemoryCgroup::of_self().is_some_and(|c| c.v2);
    let cgroup = match Cgroup::new(384 << 20) {
        Ok(c) => c,
        Err(why) if std::env::var("CI").is_err() => {
            eprintln!("SKIPPED: this test makes a memory cgroup as root ({why})");
            return;
        }
        Err(why) => panic!("cannot make a memory cgroup: {why}"),
    };
    // No reserve and no threshold: the guests' budget is the whole cgroup, so a guest can
    // take the agent's own memory and the kernel must choose.
    let none = ["--eviction-hard", "", "--default-memory-limit", "0"];
    let mut node = TestNode::join_prefixed(
        cluster,
        "res-oom",
        OOM_PORT,
        &cluster.registry,
        &none,
        "127.0.0.1",
        in_cgroup(&cgroup.procs),
    );
    let hog = name("agent-oom");
    let mut p = pod(&hog, &node.name, &image(cluster, "hog"));
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "16Mi"}});
    cluster.apply(&p);
    common::wait_for("the kernel to kill the agent", Duration::from_secs(120), || node.agent.try_exit());
    assert!(cgroup.oom_kills(v2) >= 1, "the kernel's OOM killer struck in the agent's cgroup");
    // The guest would do it again: the pod now runs something harmless (a pod's image may
    // change), and the agent starts again in the same cgroup.
    let tool = image(cluster, "tool");
    cluster.kubectl_ok(&["set", "image", "-n", "default", &format!("pod/{hog}"), &format!("main={tool}")]);
    node.restart_stopped();
    let p = cluster.wait_pod(&hog, "charged OOMKilled", Duration::from_secs(60), |p| {
        main_status(p)["lastState"]["terminated"]["reason"] == "OOMKilled"
    });
    let last = &main_status(&p)["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{last:#}");
    assert!(
        last["message"].as_str().unwrap_or("").contains("node agent was killed for lack of memory"),
        "{last:#}"
    );
    // Restarted after the back-off, counted.
    let p = cluster.wait_pod(&hog, "restarted", Duration::from_secs(60), |p| {
        main_status(p)["restartCount"] == 1 && main_status(p)["state"]["running"].is_object()
    });
    assert_eq!(phase(&p), "Running");
    assert!(node.agent.logs().contains("the previous agent was killed for lack of memory"));
    delete(cluster, &[&hog]);
    drop(node);
}
