//! End to end: Wasm pods scheduled by the real scheduler onto a joined node, pulled from
//! the real registry, run in Wasmtime, and reported truthfully in their status and events.

use crate::common;

use std::time::{Duration, Instant};

use common::node::{main_status, phase, pod};
use common::{guests, wait_for};
use serde_json::{Value, json};

const PORT: u16 = 10271;

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}-{}-{:x}", std::process::id(), n % 0xfffff)
}

fn terminated(p: &Value) -> &Value {
    &main_status(p)["state"]["terminated"]
}

#[test]
fn hello_world_runs_and_its_output_reaches_the_log_store() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "hello", "v1", "cncf");
    let name = unique("hello");
    let created = Instant::now();
    cluster.apply(&pod(&name, &node.name, &image));
    let p = cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    eprintln!("apply -> Running: {:?}", created.elapsed());
    assert_eq!(p["spec"]["nodeName"], node.name.as_str(), "the real scheduler placed it");
    let s = main_status(&p);
    assert_eq!(s["ready"], true);
    assert_eq!(s["started"], true);
    assert_eq!(s["restartCount"], 0);
    assert!(s["state"]["running"]["startedAt"].is_string());
    assert!(s["imageID"].as_str().unwrap().contains("@sha256:"), "{s}");
    assert!(s["containerID"].as_str().unwrap().starts_with("wasmtime://"), "{s}");
    assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    assert_eq!(p["status"]["podIP"], "127.0.0.1");
    assert!(p["status"]["startTime"].is_string());
    for t in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        let c = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(c["status"], "True", "{t}");
    }
    common::wait_for("two Hello lines in the log store", Duration::from_secs(10), || {
        let lines = node.log_lines(&p, "main", 0);
        (lines.iter().filter(|l| *l == "Hello, World!").count() >= 2).then_some(())
    });
    let raw = std::fs::read_to_string(node.log_file(&p, "main", 0)).unwrap();
    assert!(raw.lines().next().unwrap().contains(" stdout F Hello, World!"), "CRI format: {raw}");
    let events: Vec<String> = cluster.pod_events(&name).into_iter().map(|(r, _)| r).collect();
    for reason in ["Pulling", "Pulled", "Created", "Started"] {
        assert!(events.iter().any(|r| r == reason), "missing event {reason}: {events:?}");
    }
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn exit_codes_decide_succeeded_and_failed_under_restart_policy_never() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "exit", "v1", "wasm-to-oci");
    let (fail, ok) = (unique("exit42"), unique("exit0"));
    for (name, code) in [(&fail, "42"), (&ok, "0")] {
        let mut p = pod(name, &node.name, &image);
        p["spec"]["restartPolicy"] = json!("Never");
        p["spec"]["containers"][0]["args"] = json!([code]);
        cluster.apply(&p);
    }
    let p = cluster.wait_pod(&fail, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(terminated(&p)["exitCode"], 42);
    assert_eq!(terminated(&p)["reason"], "Error");
    assert_eq!(main_status(&p)["restartCount"], 0);
    assert_eq!(node.log_lines(&p, "main", 0), vec!["exiting with 42", "this goes to stderr"]);
    let p = cluster.wait_pod(&ok, "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    assert_eq!(terminated(&p)["exitCode"], 0);
    assert_eq!(terminated(&p)["reason"], "Completed");
    for n in [&fail, &ok] {
        cluster.kubectl_ok(&["delete", "pod", n, "--wait=true", "--timeout=30s"]);
    }
}

#[test]
fn on_failure_restarts_with_crash_loop_back_off() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "exit", "v1", "cncf");
    let name = unique("crash");
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("OnFailure");
    p["spec"]["containers"][0]["args"] = json!(["3"]);
    cluster.apply(&p);
    let p = cluster.wait_pod(&name, "CrashLoopBackOff", Duration::from_secs(60), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let s = main_status(&p);
    // Run 0 died and was restarted at once (restart 1); run 1 died: back-off 10 s, and the
    // count stays 1 until the next run starts, as the kubelet counts.
    assert!(s["state"]["waiting"]["message"].as_str().unwrap().contains("back-off 10s"), "{s}");
    assert_eq!(s["restartCount"], 1, "{s}");
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(phase(&p), "Running", "a restarting pod stays Running, as on the kubelet");
    // The back-off ends with another run: the restart count grows.
    let before = s["restartCount"].as_u64().unwrap();
    cluster.wait_pod(&name, "another restart", Duration::from_secs(30), |p| {
        main_status(p)["restartCount"].as_u64().unwrap_or(0) > before
    });
    // Each back-off is the same event, counted, as the kubelet's recorder does it.
    let sel = format!("involvedObject.name={name},reason=BackOff");
    let backoffs = wait_for("a BackOff event counted twice", Duration::from_secs(20), || {
        let list = cluster.get_json(&["events", "-n", "default", "--field-selector", &sel])?;
        let items = list["items"].as_array()?.clone();
        items.iter().any(|e| e["count"].as_i64() >= Some(2)).then_some(items)
    });
    assert_eq!(backoffs.len(), 1, "one BackOff event object: {backoffs:#?}");
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn a_missing_tag_shows_err_image_pull_then_image_pull_back_off() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let name = unique("notag");
    let image = format!("{}/krustlet-test/hello:no-such-tag", cluster.registry);
    cluster.apply(&pod(&name, &node.name, &image));
    let p = cluster.wait_pod(&name, "ErrImagePull", Duration::from_secs(60), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    assert!(main_status(&p)["state"]["waiting"]["message"].as_str().unwrap().contains("not found"), "{p}");
    assert_eq!(phase(&p), "Pending");
    cluster.wait_pod(&name, "ImagePullBackOff", Duration::from_secs(30), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    assert!(
        cluster.pod_events(&name).iter().any(|(r, m)| r == "Failed" && m.contains("Failed to pull image"))
    );
    // Deleting a pod that is backing off ends cleanly.
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn deleting_a_busy_looping_pod_removes_it_within_seconds() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "spin", "v1", "cncf");
    let name = unique("spin");
    cluster.apply(&pod(&name, &node.name, &image));
    cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let start = Instant::now();
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
    let took = start.elapsed();
    eprintln!("delete of a busy loop: {took:?}");
    assert!(cluster.get_json(&["pod", &name, "-n", "default"]).is_none());
    assert!(cluster.pod_events(&name).iter().any(|(r, _)| r == "Killing"));
}

#[test]
fn exceeding_the_memory_limit_is_oom_killed() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "hog", "v1", "cncf");
    let name = unique("hog");
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "32Mi"}});
    cluster.apply(&p);
    let p = cluster.wait_pod(&name, "Failed", Duration::from_secs(60), |p| phase(p) == "Failed");
    assert_eq!(terminated(&p)["reason"], "OOMKilled", "{}", p["status"]);
    assert_eq!(terminated(&p)["exitCode"], 137);
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn env_args_and_volumes_are_seen_by_the_guest() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "show", "v1", "cncf");
    let name = unique("show");
    cluster.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"greeting": "hello from a configmap", "app.conf": "mode=wasm"}}));
    cluster.apply(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"}, "stringData": {"token": "s3cret"}}));
    let mut p = pod(&name, &node.name, &image);
    p["metadata"]["labels"] = json!({"app": "show"});
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["volumes"] = json!([
        {"name": "conf", "configMap": {"name": name}},
        {"name": "scratch", "emptyDir": {}},
    ]);
    p["spec"]["containers"][0] = json!({
        "name": "main",
        "image": image,
        "command": ["show.wasm"],
        "args": ["$(GREETING)", "@/etc/app/app.conf", "+/scratch/out.txt", "@/scratch/out.txt", "+/etc/app/nope"],
        "env": [
            {"name": "PLAIN", "value": "v1"},
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": name, "key": "greeting"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ],
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/app"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    });
    cluster.apply(&p);
    let p = cluster.wait_pod(&name, "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    let lines = node.log_lines(&p, "main", 0);
    for want in [
        "arg[0]=show.wasm".to_string(),
        "arg[1]=hello from a configmap".into(),
        "env:PLAIN=v1".into(),
        "env:TOKEN=s3cret".into(),
        format!("env:POD_NAME={name}"),
        format!("env:NODE={}", node.name),
        "env:APP=show".into(),
        "file:/etc/app/app.conf:mode=wasm".into(),
        "write:/scratch/out.txt:ok".into(),
        "file:/scratch/out.txt:written by the guest".into(),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {lines:#?}");
    }
    let denied = lines.iter().find(|l| l.starts_with("write:/etc/app/nope:")).unwrap();
    assert_ne!(denied, "write:/etc/app/nope:ok", "configMap volumes are read-only");
    // The service account token volume the cluster injects is there too.
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
    cluster.kubectl_ok(&["delete", "configmap,secret", &name]);
}

#[test]
fn a_missing_configmap_is_a_create_container_config_error() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "show", "v1", "cncf");
    let name = unique("nocm");
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "does-not-exist", "key": "k"}}}]);
    cluster.apply(&p);
    let p = cluster.wait_pod(&name, "CreateContainerConfigError", Duration::from_secs(60), |p| {
        main_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let msg = main_status(&p)["state"]["waiting"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("does-not-exist"), "{msg}");
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn an_agent_restart_resumes_pods_by_restart_policy_and_never_runs_twice() {
    let cluster = require_cluster!();
    let mut node = common::node::TestNode::join(cluster, "restart", 10272, &cluster.registry);
    let hello = guests::publish(&cluster.registry, "hello", "v1", "cncf");
    let exit = guests::publish(&cluster.registry, "exit", "v1", "cncf");
    let (always, done) = (unique("always"), unique("done"));
    cluster.apply(&pod(&always, &node.name, &hello));
    let mut p = pod(&done, &node.name, &exit);
    p["spec"]["restartPolicy"] = json!("Never");
    cluster.apply(&p);
    let running = cluster.wait_pod(&always, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let finished = cluster.wait_pod(&done, "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded");

    node.restart();
    let p = cluster.wait_pod(&always, "restarted and Running", Duration::from_secs(60), |p| {
        phase(p) == "Running" && main_status(p)["restartCount"] == 1 && main_status(p)["ready"] == true
    });
    let last = &main_status(&p)["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{p}");
    assert!(last["message"].as_str().unwrap_or_default().contains("agent restarted"), "{last}");
    common::wait_for("output of the second run", Duration::from_secs(10), || {
        node.log_lines(&running, "main", 1).iter().any(|l| l == "Hello, World!").then_some(())
    });
    // The finished pod is left alone: same status, no second run.
    std::thread::sleep(Duration::from_secs(2));
    let again = cluster.get_json(&["pod", &done, "-n", "default"]).unwrap();
    assert_eq!(phase(&again), "Succeeded");
    assert_eq!(main_status(&again)["restartCount"], 0);
    assert!(!node.log_file(&finished, "main", 1).exists(), "a completed Never pod ran twice");
    for n in [&always, &done] {
        cluster.kubectl_ok(&["delete", "pod", n, "--wait=true", "--timeout=30s"]);
    }
}

#[test]
fn init_containers_run_in_order_before_the_main_container() {
    let cluster = require_cluster!();
    let node = common::shared_node("pods", PORT).unwrap();
    let image = guests::publish(&cluster.registry, "show", "v1", "cncf");
    let name = unique("init");
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["restartPolicy"] = json!("Never");
    p["spec"]["volumes"] = json!([{"name": "work", "emptyDir": {}}]);
    let mount = json!([{"name": "work", "mountPath": "/work"}]);
    p["spec"]["initContainers"] = json!([
        {"name": "first", "image": image, "args": ["+/work/first"], "volumeMounts": mount},
        {"name": "second", "image": image, "args": ["@/work/first", "+/work/second"], "volumeMounts": mount},
    ]);
    p["spec"]["containers"][0]["args"] = json!(["@/work/second"]);
    p["spec"]["containers"][0]["volumeMounts"] = mount;
    cluster.apply(&p);
    let p = cluster.wait_pod(&name, "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded");
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert!(inits.iter().all(|c| c["state"]["terminated"]["reason"] == "Completed"), "{inits:?}");
    // The second init read what the first wrote; the main container read the second's.
    assert!(node.log_lines(&p, "second", 0).contains(&"file:/work/first:written by the guest".to_string()));
    assert!(node.log_lines(&p, "main", 0).contains(&"file:/work/second:written by the guest".to_string()));
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=30s"]);
}

#[test]
fn max_pods_admits_no_more_than_capacity() {
    let cluster = require_cluster!();
    let node =
        common::node::TestNode::join_with(cluster, "maxpods", 10273, &cluster.registry, &["--max-pods", "1"]);
    let image = guests::publish(&cluster.registry, "hello", "v1", "cncf");
    let (first, second) = (unique("cap1"), unique("cap2"));
    // Bound directly (the scheduler would keep the second Pending): the node must refuse it.
    for n in [&first, &second] {
        let mut p = pod(n, &node.name, &image);
        p["spec"]["nodeName"] = json!(node.name);
        cluster.apply(&p);
        if n == &first {
            cluster.wait_pod(n, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
        }
    }
    let p = cluster.wait_pod(&second, "rejected", Duration::from_secs(30), |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "OutOfpods");
    assert!(p["status"]["message"].as_str().unwrap().contains("capacity: 1"), "{}", p["status"]);
    assert_eq!(phase(&cluster.get_json(&["pod", &first, "-n", "default"]).unwrap()), "Running");
    for n in [&first, &second] {
        cluster.kubectl_ok(&["delete", "pod", n, "--wait=true", "--timeout=30s"]);
    }
}
