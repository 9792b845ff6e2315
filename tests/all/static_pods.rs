//! End to end: static pods from `--pod-manifest-path`. Standalone (no cluster at all):
//! the first README path, manifest add/change/remove, a malformed manifest skipped with its
//! name, and the kubelet API for localhost. Connected: mirror pods in the API.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Agent, guests, wait_for};
use serde_json::Value;

fn manifest(name: &str, wasm: &Path, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra}  containers:\n  - name: main\n    image: file://{}\n",
        wasm.display()
    )
}

/// status.json of every static pod in the data dir, by pod name.
fn statuses(data: &Path) -> Vec<Value> {
    let Ok(dirs) = std::fs::read_dir(data.join("pods")) else { return vec![] };
    dirs.filter_map(|d| std::fs::read(d.ok()?.path().join("status.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn status_of(data: &Path, name: &str) -> Option<Value> {
    statuses(data).into_iter().find(|s| s["name"] == name)
}

fn phase_of(data: &Path, name: &str) -> Option<String> {
    status_of(data, name).and_then(|s| s["status"]["phase"].as_str().map(String::from))
}

fn log_text(data: &Path, ns_pod: &str) -> String {
    let Ok(dirs) = std::fs::read_dir(data.join("logs")) else { return String::new() };
    dirs.filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{ns_pod}_")))
        .filter_map(|p| std::fs::read_to_string(p.join("main/0.log")).ok())
        .collect()
}

#[test]
fn standalone_runs_static_pods_and_follows_the_manifest_directory() {
    let dir = common::sweep::test_dir();
    let (manifests, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    let hello = guests::build("hello");
    std::fs::write(manifests.join("hello.yaml"), manifest("hello", &hello, "")).unwrap();
    std::fs::write(manifests.join("broken.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n")
        .unwrap();
    let port = 10321;
    let args = common::standalone_args(&manifests, &data, "standalone", port);
    let mut agent = Agent::start(&dir.path().join("logs"), &args);
    agent.wait_output("running standalone", Duration::from_secs(30));

    // The seed's hello-world runs, with its output in the log store.
    wait_for("hello Running", Duration::from_secs(60), || {
        (phase_of(&data, "hello-standalone")? == "Running").then_some(())
    });
    wait_for("Hello, World! in the log", Duration::from_secs(10), || {
        log_text(&data, "default_hello-standalone").contains("stdout F Hello, World!").then_some(())
    });
    // The malformed manifest is named and skipped; the others keep running.
    agent.wait_output("skipping malformed static pod manifest", Duration::from_secs(5));
    assert!(agent.logs().contains("broken.yaml"), "{}", agent.logs());

    // A ConfigMap cannot exist without an API server: the pod says so and waits.
    let needs_cm = "  restartPolicy: Never\n  volumes:\n  - {name: c, configMap: {name: settings}}\n";
    std::fs::write(manifests.join("cm.yaml"), manifest("needs-cm", &hello, needs_cm)).unwrap();
    let waiting = wait_for("needs-cm waiting", Duration::from_secs(30), || {
        let s = status_of(&data, "needs-cm-standalone")?;
        let w = s["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    let message = waiting["message"].as_str().unwrap();
    assert!(message.contains("\"settings\" not found") && message.contains("runs standalone"), "{message}");
    std::fs::remove_file(manifests.join("cm.yaml")).unwrap();

    // Added: a pod that completes under Never.
    let exit = guests::build("exit");
    std::fs::write(manifests.join("exit.yaml"), manifest("exiter", &exit, "  restartPolicy: Never\n"))
        .unwrap();
    wait_for("exiter Succeeded", Duration::from_secs(60), || {
        (phase_of(&data, "exiter-standalone")? == "Succeeded").then_some(())
    });
    let s = status_of(&data, "exiter-standalone").unwrap();
    assert_eq!(s["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);

    // A hostPath volume, read by the guest.
    let host_dir = dir.path().join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("greeting"), "from the host\n").unwrap();
    let reader = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: file://{}\n    args: [\"@/host/greeting\"]\n    volumeMounts: [{{name: h, mountPath: /host, readOnly: true}}]\n  volumes:\n  - {{name: h, hostPath: {{path: {}, type: Directory}}}}\n",
        guests::build("show").display(),
        host_dir.display()
    );
    std::fs::write(manifests.join("reader.yaml"), reader).unwrap();
    wait_for("reader Succeeded", Duration::from_secs(60), || {
        (phase_of(&data, "reader-standalone")? == "Succeeded").then_some(())
    });
    assert!(
        log_text(&data, "default_reader-standalone").contains("stdout F file:/host/greeting:from the host\n")
    );

    // Changed: the old pod is replaced by the new version.
    let old_uid = status_of(&data, "hello-standalone").unwrap()["uid"].clone();
    std::fs::write(manifests.join("hello.yaml"), manifest("hello", &hello, "  restartPolicy: OnFailure\n"))
        .unwrap();
    wait_for("hello replaced", Duration::from_secs(30), || {
        let s = status_of(&data, "hello-standalone")?;
        (s["uid"] != old_uid && s["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(
        statuses(&data).iter().filter(|s| s["name"] == "hello-standalone").count(),
        1,
        "the old one is gone"
    );

    // The kubelet API answers localhost without a certificate in this mode.
    let out = Command::new("curl").args(["-sk", &format!("https://127.0.0.1:{port}/pods")]).output().unwrap();
    let pods: Value = serde_json::from_slice(&out.stdout).expect("a PodList");
    assert!(pods["items"].as_array().unwrap().iter().any(|p| p["metadata"]["name"] == "hello-standalone"));
    let logs = Command::new("curl")
        .args([
            "-sk",
            &format!("https://127.0.0.1:{port}/containerLogs/default/hello-standalone/main?tailLines=1"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "Hello, World!\n");

    // Removed: the pod stops and its files go.
    std::fs::remove_file(manifests.join("hello.yaml")).unwrap();
    wait_for("hello removed", Duration::from_secs(30), || {
        status_of(&data, "hello-standalone").is_none().then_some(())
    });
    let (status, _) = agent.terminate();
    assert!(status.success());
}

#[test]
fn a_single_manifest_file_is_followed_too() {
    let dir = common::sweep::test_dir();
    let (etc, data) = (dir.path().join("etc"), dir.path().join("data"));
    std::fs::create_dir_all(&etc).unwrap();
    let hello = guests::build("hello");
    let file = etc.join("hello.pod"); // the kubelet reads a single file whatever its name
    std::fs::write(&file, manifest("single", &hello, "")).unwrap();
    std::fs::write(etc.join("neighbour.yaml"), manifest("neighbour", &hello, "")).unwrap();
    let args = common::standalone_args(&file, &data, "onefile", 10323);
    let mut agent = Agent::start(&dir.path().join("logs"), &args);
    wait_for("single Running", Duration::from_secs(60), || {
        (phase_of(&data, "single-onefile")? == "Running").then_some(())
    });
    // Replaced the way editors save (write aside, rename over): the new version runs.
    let old_uid = status_of(&data, "single-onefile").unwrap()["uid"].clone();
    std::fs::write(etc.join(".hello.pod.swp"), manifest("single", &hello, "  restartPolicy: OnFailure\n"))
        .unwrap();
    std::fs::rename(etc.join(".hello.pod.swp"), &file).unwrap();
    wait_for("single replaced", Duration::from_secs(30), || {
        let s = status_of(&data, "single-onefile")?;
        (s["uid"] != old_uid && s["status"]["phase"] == "Running").then_some(())
    });
    // Only the file given runs, not the other manifests beside it.
    assert_eq!(statuses(&data).len(), 1, "{:?}", statuses(&data));
    // Removed: the pod stops and its files go.
    std::fs::remove_file(&file).unwrap();
    wait_for("single removed", Duration::from_secs(30), || statuses(&data).is_empty().then_some(()));
    let (status, _) = agent.terminate();
    assert!(status.success());
}

/// `krustlet-wasi exec ARGS --data-dir DATA`, with `input` on its stdin.
fn local_exec(data: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(common::AGENT)
        .arg("exec")
        .args(["--data-dir", &data.to_string_lossy()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exec_runs_commands_in_a_standalone_pod_without_kubectl() {
    let dir = common::sweep::test_dir();
    let (manifests, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    let tool = guests::build("tool");
    std::fs::write(manifests.join("tool.yaml"), manifest("tool", &tool, "")).unwrap();
    let text = |o: &std::process::Output| {
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let running = || (phase_of(&data, "tool-execbox")? == "Running").then_some(());

    // An agent that does not open its API to local clients: exec says how to.
    let open = common::standalone_args(&manifests, &data, "execbox", 10324);
    let closed: Vec<String> = open.iter().filter(|a| *a != "--allow-anonymous-localhost").cloned().collect();
    let mut agent = Agent::start(&dir.path().join("logs-closed"), &closed);
    wait_for("tool Running", Duration::from_secs(60), running);
    let out = local_exec(&data, &["tool-execbox", "--", "tool", "echo", "x"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("--allow-anonymous-localhost"), "{:?}", text(&out));
    assert!(agent.terminate().0.success());

    let mut agent = Agent::start(&dir.path().join("logs"), &open);
    agent.wait_output("kubelet API listening", Duration::from_secs(30));
    // Output, and the command's exit code as ours (once the restarted agent has the pod).
    let out = wait_for("exec in the restarted agent", Duration::from_secs(30), || {
        let out = local_exec(&data, &["tool-execbox", "--", "tool", "echo", "hello", "from exec"], b"");
        (out.status.code() == Some(0)).then_some(out)
    });
    assert_eq!(
        (out.status.code(), text(&out).0.as_str()),
        (Some(0), "hello from exec\n"),
        "{:?}",
        text(&out)
    );
    let out = local_exec(&data, &["tool-execbox", "-c", "main", "--", "tool", "fail", "7"], b"");
    assert_eq!(out.status.code(), Some(7), "{:?}", text(&out));
    assert!(text(&out).1.contains("failing with 7"), "{:?}", text(&out));
    // stdin reaches the command, and its end ends `cat`.
    let out = local_exec(&data, &["-i", "tool-execbox", "--", "tool", "cat"], b"line one\nline two\n");
    assert_eq!(
        (out.status.code(), text(&out).0.as_str()),
        (Some(0), "line one\nline two\n"),
        "{:?}",
        text(&out)
    );

    // Mistakes are one line and exit 1.
    for (args, says) in [
        (vec!["nope", "--", "tool"], "pod \"nope\" not found"),
        (
            vec!["tool-execbox", "-c", "other", "--", "tool"],
            "container other is not valid for pod tool-execbox",
        ),
    ] {
        let out = local_exec(&data, &args, b"");
        assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
        assert!(text(&out).1.contains(says), "{args:?}: {:?}", text(&out));
    }
    // A stopped agent is named as such.
    assert!(agent.terminate().0.success());
    let out = local_exec(&data, &["tool-execbox", "--", "tool", "echo", "x"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("still running?"), "{:?}", text(&out));
}

#[test]
fn standalone_without_manifests_says_what_to_do() {
    let dir = common::sweep::test_dir();
    let out = Command::new(common::AGENT)
        .args(["--data-dir", &dir.path().to_string_lossy(), "--node-ip", "127.0.0.1", "--hostname", "x"])
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bootstrap-file") && err.contains("--pod-manifest-path"), "{err}");
}

#[test]
fn connected_static_pods_are_mirrored_into_the_api() {
    let cluster = require_cluster!();
    let dir = common::sweep::test_dir();
    let manifests: PathBuf = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let hello = guests::build("hello");
    std::fs::write(manifests.join("hello.yaml"), manifest("mirrored", &hello, "")).unwrap();
    let mut node = common::node::TestNode::join_with(
        cluster,
        "mirror",
        10322,
        &cluster.registry,
        &["--pod-manifest-path", &manifests.to_string_lossy()],
    );
    let name = format!("mirrored-{}", node.name);
    let pod = cluster.wait_pod(&name, "a Running mirror pod", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    assert!(pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(), "{}", pod["metadata"]);
    assert_eq!(pod["spec"]["nodeName"], node.name.as_str());
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    // kubectl logs works on the mirror pod, through the API server.
    wait_for("kubectl logs of the static pod", Duration::from_secs(10), || {
        let out = cluster.kubectl(&["logs", "-n", "default", &name, "--tail=1"]);
        (String::from_utf8_lossy(&out.stdout) == "Hello, World!\n").then_some(())
    });

    // Deleted by a user: the deletion completes at once (no Terminating) and the node makes
    // a new mirror, as the kubelet does.
    let first_uid = pod["metadata"]["uid"].clone();
    let started = std::time::Instant::now();
    cluster.kubectl_ok(&["delete", "pod", "-n", "default", &name, "--timeout=20s"]);
    assert!(started.elapsed() < Duration::from_secs(15), "kubectl delete took {:?}", started.elapsed());
    let again = cluster.wait_pod(&name, "a new mirror pod", Duration::from_secs(30), |p| {
        p["metadata"]["uid"] != first_uid && p["status"]["phase"] == "Running"
    });
    assert!(again["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());

    // Edited: the mirror is replaced by one of the new version.
    let hash = again["metadata"]["annotations"]["kubernetes.io/config.mirror"].clone();
    std::fs::write(
        manifests.join("hello.yaml"),
        manifest("mirrored", &hello, "  restartPolicy: OnFailure\n"),
    )
    .unwrap();
    cluster.wait_pod(&name, "the mirror of the edited manifest", Duration::from_secs(30), |p| {
        let m = &p["metadata"]["annotations"]["kubernetes.io/config.mirror"];
        m.is_string()
            && *m != hash
            && p["spec"]["restartPolicy"] == "OnFailure"
            && p["status"]["phase"] == "Running"
    });

    // Removed while the agent is down: the mirror is removed when it comes back.
    node.agent.terminate();
    std::fs::remove_file(manifests.join("hello.yaml")).unwrap();
    node.agent = common::Agent::start(&node.dir.path().join("logs"), &node.args);
    wait_for("the orphaned mirror pod to go", Duration::from_secs(30), || {
        cluster.get_json(&["pod", &name, "-n", "default"]).is_none().then_some(())
    });

    // Removed while running: the mirror goes with the static pod.
    std::fs::write(manifests.join("hello.yaml"), manifest("mirrored", &hello, "")).unwrap();
    cluster.wait_pod(&name, "a Running mirror pod", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    std::fs::remove_file(manifests.join("hello.yaml")).unwrap();
    wait_for("the mirror pod to go", Duration::from_secs(30), || {
        cluster.get_json(&["pod", &name, "-n", "default"]).is_none().then_some(())
    });
}

/// `--log-format json`: every line of the agent's log is one JSON object with the stable
/// fields, and a pod's lines name the pod and its namespace.
#[test]
fn json_logs_are_one_object_per_line_naming_the_pod() {
    let dir = common::sweep::test_dir();
    let (manifests, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("hello.yaml"), manifest("hello", &guests::build("hello"), "")).unwrap();
    let mut args = common::standalone_args(&manifests, &data, "jsonlog", 10325);
    args.extend(["--log-format".to_string(), "json".to_string()]);
    let mut agent = Agent::start(&dir.path().join("logs"), &args);
    agent.wait_output("Started container main", Duration::from_secs(60));
    let logs = agent.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "namespace", "pod", "message", "fields"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let started = lines.iter().find(|l| l["message"] == "Started container main").unwrap();
    assert_eq!(
        (started["namespace"].as_str(), started["pod"].as_str()),
        (Some("default"), Some("hello-jsonlog"))
    );
    assert_eq!(started["level"], "INFO");
    assert!(lines.iter().any(|l| l["message"] == "starting krustlet-wasi" && l["pod"].is_null()));
}
