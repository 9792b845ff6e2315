//! End to end, on the real control plane: hostile pods, guests and clients provoking each
//! defect of the hardening issue. Each test shows the attack fails with a clear error
//! and that a bystander pod on the same node kept running.

use crate::common;

use std::time::Duration;

use common::bystander::Bystander;
use common::node::{main_status, phase, pod};
use common::{Cluster, guests};
use serde_json::json;

const PORT: u16 = 10341;

fn exec(cluster: &Cluster, pod: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["exec", "-n", "default", pod, "--"];
    all.extend_from_slice(args);
    cluster.kubectl(&all)
}

/// Item 1, the host escape: a guest that mounts its whole emptyDir replaces the directory
/// another of its mounts uses as subPath with a symlink climbing to a host directory.
/// Neither the next `kubectl exec` nor the next container start may preopen that host
/// directory: both fail naming the subPath, and nothing is written or created there.
#[test]
fn a_symlink_planted_under_a_sub_path_does_not_reach_the_host() {
    let cluster = require_cluster!();
    let node = common::shared_node("hostile", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let bystander = Bystander::start(cluster, node, &image, "subpath");
    let host = tempfile::tempdir().expect("a host directory outside the node's data dir");
    let name = format!("escape-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    // About 20 s of output, then exit 0: restartPolicy Always starts it again at once.
    p["spec"]["containers"][0]["args"] = json!(["count", "100"]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "scratch", "mountPath": "/all"},
        {"name": "scratch", "mountPath": "/work", "subPath": "work"},
    ]);
    p["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    cluster.apply(&p);
    cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let ok = exec(cluster, &name, &["tool", "write", "/work/before", "inside"]);
    assert!(ok.status.success(), "the subPath works before: {}", String::from_utf8_lossy(&ok.stderr));

    let target = format!("{}{}", "../".repeat(40), host.path().display());
    let planted = exec(cluster, &name, &["tool", "plant", "/all/work", &target]);
    let text = String::from_utf8_lossy(&planted.stdout);
    let err = String::from_utf8_lossy(&planted.stderr);
    assert!(text.starts_with("planted"), "the guest could plant it: {text}{err}");

    let out = exec(cluster, &name, &["tool", "write", "/work/pwned", "escaped"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exec with the planted symlink must fail");
    assert!(stderr.contains("subPath \"work\" of volume \"scratch\" is invalid"), "exec error: {stderr}");
    let seen = || std::fs::read_dir(host.path()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    assert!(seen().is_empty(), "the host directory was reached: {:?}", seen());

    // The run ends; its restart must fail the same way, with the kubelet's reason.
    let waiting = cluster.wait_pod(&name, "restart refused", Duration::from_secs(60), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "CreateContainerError"
    });
    let message = main_status(&waiting)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("subPath \"work\" of volume \"scratch\" is invalid"), "status: {message}");
    assert!(seen().is_empty(), "the host directory was reached: {:?}", seen());
    let events = cluster.pod_events(&name);
    assert!(
        events.iter().any(|(r, m)| r == "Failed" && m.contains("subPath \"work\"")),
        "an Event names the subPath: {events:?}"
    );
    bystander.assert_unharmed(cluster);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    bystander.delete(cluster);
}

/// Item 3: a `$(VAR)` expansion bomb (`B=$(A)$(A)`, `C=$(B)$(B)`, ...) once killed the agent,
/// and again at each restart while the pod existed. It now waits in
/// `CreateContainerConfigError` naming the variable, and nothing that large is built.
#[test]
fn an_env_expansion_bomb_is_refused_naming_the_variable() {
    let cluster = require_cluster!();
    let node = common::shared_node("hostile", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let bystander = Bystander::start(cluster, node, &image, "bomb");
    let name = format!("bomb-{}", std::process::id());
    let mut env = vec![json!({"name": "V0", "value": "x".repeat(1000)})];
    for i in 1..48 {
        env.push(json!({"name": format!("V{i}"), "value": format!("$(V{})$(V{})", i - 1, i - 1)}));
    }
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    p["spec"]["containers"][0]["env"] = json!(env);
    cluster.apply(&p);
    let waiting = cluster.wait_pod(&name, "CreateContainerConfigError", Duration::from_secs(60), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let message = main_status(&waiting)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(message, "env var V8 is longer than 131072 bytes after $(VAR) expansion");
    assert!(node.agent_alive(), "the agent lives");
    bystander.assert_unharmed(cluster);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    bystander.delete(cluster);
}

/// Item 3: a pod with no memory limit once took the agent past 3 GB. It now gets the
/// node's `--default-memory-limit`, says so in an Event, and is OOMKilled beyond it.
#[test]
fn a_pod_without_a_memory_limit_gets_the_nodes_default() {
    let cluster = require_cluster!();
    let node = common::node::TestNode::join_with(
        cluster,
        "hostile-mem",
        PORT + 2,
        &cluster.registry,
        &["--default-memory-limit", "64Mi"],
    );
    let tool = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let bystander = Bystander::start(cluster, &node, &tool, "mem");
    let image = guests::publish(&cluster.registry, "hog", "v1", "cncf");
    let name = format!("nolimit-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    cluster.apply(&p);
    let done = cluster.wait_pod(&name, "OOMKilled", Duration::from_secs(60), |p| {
        main_status(p)["state"]["terminated"]["reason"] == "OOMKilled"
    });
    assert_eq!(main_status(&done)["state"]["terminated"]["exitCode"], 137);
    let events = cluster.pod_events(&name);
    assert!(
        events.iter().any(|(r, m)| r == "DefaultMemoryLimit"
            && m == "container main sets no memory limit: it may use 64Mi, the node's --default-memory-limit"),
        "{events:?}"
    );
    let rss = node.agent.peak_rss().unwrap_or(0);
    assert!(rss < 512 << 20, "the agent's peak RSS is {} MiB", rss >> 20);
    bystander.assert_unharmed(cluster);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    bystander.delete(cluster);
}

/// Item 8: names in a static pod manifest become paths under the data dir (the pod's
/// directory, its log directory, one per container). A manifest whose names climb out
/// (`../`) is skipped with the reason, as a malformed one is; the others keep running.
#[test]
fn static_pod_names_that_climb_out_of_the_data_dir_are_refused() {
    let dir = common::sweep::test_dir();
    let (manifests, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    let hello = guests::build("hello");
    let manifest = |meta: &str, container: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n  containers:\n  - name: {container}\n    image: file://{}\n",
            hello.display()
        )
    };
    std::fs::write(manifests.join("ok.yaml"), manifest("{name: fine}", "main")).unwrap();
    let escape = format!("../../../../../../../../..{}/escaped", dir.path().display());
    std::fs::write(manifests.join("c.yaml"), manifest("{name: c}", &format!("\"{escape}\""))).unwrap();
    std::fs::write(
        manifests.join("ns.yaml"),
        manifest(&format!("{{name: n, namespace: \"{escape}\"}}"), "main"),
    )
    .unwrap();
    let args = common::standalone_args(&manifests, &data, "names", PORT + 3);
    let mut agent = common::Agent::start(&dir.path().join("logs"), &args);
    agent.wait_output("running standalone", Duration::from_secs(30));
    common::wait_for("the valid pod's log", Duration::from_secs(60), || {
        let logs = std::fs::read_dir(data.join("logs")).ok()?;
        logs.filter_map(|d| d.ok())
            .any(|d| d.file_name().to_string_lossy().starts_with("default_fine-names_"))
            .then_some(())
    });
    agent.wait_output("is not a valid DNS-1123 label", Duration::from_secs(10));
    let logs = agent.logs();
    assert!(logs.contains("c.yaml") && logs.contains("ns.yaml"), "{logs}");
    assert!(!dir.path().join("escaped").exists(), "nothing was made outside the data dir");
    assert!(agent.try_exit().is_none(), "the agent lives");
}

/// Item 4: a guest that opens files without end once took every file descriptor of the
/// agent (EMFILE), after which no log, pull or API connection of any pod worked. It is now
/// stopped at `--max-open-files` (a trap), and the agent's descriptors stay bounded.
#[test]
fn a_guest_that_opens_files_without_end_is_stopped_at_the_cap() {
    let cluster = require_cluster!();
    let node = common::shared_node("hostile", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let bystander = Bystander::start(cluster, node, &image, "files");
    let name = format!("files-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let mounts = json!([{"name": "data", "mountPath": "/data"}]);
    p["spec"]["initContainers"] =
        json!([{"name": "make", "image": image, "args": ["write", "/data/f", "x"], "volumeMounts": mounts}]);
    p["spec"]["containers"][0]["args"] = json!(["hold", "/data/f", "200000"]);
    p["spec"]["containers"][0]["volumeMounts"] = mounts;
    cluster.apply(&p);
    let done = cluster.wait_pod(&name, "stopped", Duration::from_secs(60), |p| {
        main_status(p)["state"]["terminated"].is_object()
    });
    let terminated = &main_status(&done)["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 134, "{terminated:#}");
    assert!(terminated["message"].as_str().unwrap_or("").contains("resource table"), "{terminated:#}");
    let logs = cluster.kubectl_ok(&["logs", "-n", "default", &name]);
    assert!(logs.contains("holding 1000") && !logs.contains("holding 1100"), "{logs}");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.agent.pid().unwrap())).unwrap().count();
    assert!(fds < 1000, "the agent holds {fds} descriptors after the guest ended");
    bystander.assert_unharmed(cluster);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    bystander.delete(cluster);
}

/// Item 7: a pod deleted while the agent was down once left its directory (volumes with
/// its service account token and Secret files, status, logs) forever. The agent's next
/// start removes what belongs to no pod it still has.
#[test]
fn the_files_of_a_pod_deleted_while_the_agent_was_down_are_swept_at_start() {
    let cluster = require_cluster!();
    let mut node = common::node::TestNode::join(cluster, "hostile-sweep", PORT + 4, &cluster.registry);
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let (gone, kept) = (format!("swept-{}", std::process::id()), format!("kept-{}", std::process::id()));
    for name in [&gone, &kept] {
        let mut p = pod(name, &node.name, &image);
        p["spec"]["containers"][0]["args"] = json!(["serve"]);
        cluster.apply(&p);
    }
    let uid_of = |name: &str| {
        let p = cluster.wait_pod(name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
        p["metadata"]["uid"].as_str().unwrap().to_string()
    };
    let (gone_uid, kept_uid) = (uid_of(&gone), uid_of(&kept));
    let data = node.data_dir();
    let token = data.join("pods").join(&gone_uid).join("volumes");
    assert!(token.exists(), "the pod's volumes (its token) are on disk");
    let (status, _) = node.agent.terminate();
    assert!(status.success());
    cluster.kubectl_ok(&["delete", "pod", &gone, "--grace-period=0", "--force"]);
    node.restart_stopped();
    common::wait_for("the gone pod's files removed", Duration::from_secs(60), || {
        let logs = std::fs::read_dir(data.join("logs")).ok()?;
        let log_left = logs.flatten().any(|d| d.file_name().to_string_lossy().ends_with(&gone_uid));
        (!data.join("pods").join(&gone_uid).exists() && !log_left).then_some(())
    });
    assert!(data.join("pods").join(&kept_uid).exists(), "the other pod's files stay");
    cluster.wait_pod(&kept, "Running again", Duration::from_secs(60), |p| phase(p) == "Running");
    cluster.kubectl(&["delete", "pod", &kept, "--wait=false"]);
}

/// Item 7: `emptyDir.sizeLimit` was ignored. A pod whose emptyDir grows past it is now
/// evicted as the kubelet evicts it: stopped, Failed, reason `Evicted`, not restarted.
#[test]
fn an_empty_dir_past_its_size_limit_evicts_the_pod() {
    let cluster = require_cluster!();
    let node = common::shared_node("hostile", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let bystander = Bystander::start(cluster, node, &image, "disk");
    let name = format!("fill-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "cache", "mountPath": "/data"}]);
    p["spec"]["containers"][0]["args"] = json!(["fill", "/data/f", "3072"]);
    cluster.apply(&p);
    let evicted = cluster.wait_pod(&name, "Evicted", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(evicted["status"]["reason"], "Evicted");
    assert_eq!(
        evicted["status"]["message"],
        "Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\". "
    );
    assert!(main_status(&evicted)["state"]["terminated"].is_object(), "{:#}", evicted["status"]);
    assert_eq!(main_status(&evicted)["restartCount"], 0);
    let events = cluster.pod_events(&name);
    assert!(events.iter().any(|(r, _)| r == "Evicted"), "{events:?}");
    bystander.assert_unharmed(cluster);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    bystander.delete(cluster);
}

/// Item 7: every run of a crash-looping container once kept its log forever. As on the
/// kubelet, the current run's log and the previous one's are kept (`kubectl logs -p`).
#[test]
fn a_crash_loop_keeps_the_logs_of_the_last_two_runs() {
    let cluster = require_cluster!();
    let node = common::shared_node("hostile", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("crashlogs-{}", std::process::id());
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["fail", "2"]);
    cluster.apply(&p);
    let pod = cluster.wait_pod(&name, "the third run", Duration::from_secs(90), |p| {
        main_status(p)["restartCount"].as_u64().unwrap_or(0) >= 2
    });
    common::wait_for("run 0's log removed", Duration::from_secs(10), || {
        (!node.log_file(&pod, "main", 0).exists()).then_some(())
    });
    assert!(node.log_file(&pod, "main", 1).exists() && node.log_file(&pod, "main", 2).exists());
    let previous = cluster.kubectl_ok(&["logs", "-n", "default", &name, "-p"]);
    assert!(previous.contains("failing with 2"), "{previous}");
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
}

/// Item 7: the image store and the compile cache were never collected. With the node's
/// disk past `--image-gc-high-threshold` (0 here: always), images no pod uses are removed
/// when a pod goes away, with their compiled code; images in use stay. A pod that needs a
/// collected image again pulls it again.
#[test]
fn unused_images_and_their_compiled_code_are_collected() {
    use sha2::Digest;
    let cluster = require_cluster!();
    let gc = ["--image-gc-high-threshold", "0", "--image-gc-low-threshold", "0"];
    let node = common::node::TestNode::join_with(cluster, "hostile-gc", PORT + 5, &cluster.registry, &gc);
    let tool = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let bystander = Bystander::start(cluster, &node, &tool, "gc");
    let exit = guests::publish(&cluster.registry, "exit", &format!("gc{}", std::process::id()), "cncf");
    let wasm_hex = hex::encode(sha2::Sha256::digest(std::fs::read(guests::build("exit")).unwrap()));
    let name = format!("gc-{}", std::process::id());
    let mut p = pod(&name, &node.name, &exit);
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["args"] = json!(["0"]);
    cluster.apply(&p);
    cluster.wait_pod(&name, "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    let data = node.data_dir();
    let compiled = || {
        std::fs::read_dir(data.join("wasm-cache"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&format!("sha256:{wasm_hex}")))
    };
    let blob = data.join("images/blobs/sha256").join(&wasm_hex);
    assert!(blob.exists() && compiled(), "pulled and compiled");
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=60s"]);
    common::wait_for("the unused image collected", Duration::from_secs(30), || {
        (!blob.exists() && !compiled()).then_some(())
    });
    let tool_left = std::fs::read_dir(data.join("images/refs")).unwrap().count();
    assert_eq!(tool_left, 1, "the bystander's image stays");
    bystander.assert_unharmed(cluster);
    // Needed again: pulled again.
    cluster.apply(&p);
    cluster.wait_pod(&name, "Succeeded again", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    let events = cluster.pod_events(&name);
    assert!(events.iter().any(|(r, _)| r == "Pulling"), "{events:?}");
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    bystander.delete(cluster);
}
