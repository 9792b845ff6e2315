//! End to end: what a newcomer runs from examples/. The first README command
//! (`examples/standalone.sh`), the static pod templates with the local `pods` and `logs`
//! commands, every manifest in examples/pods on the real cluster as its comment describes
//! it, and `examples/demo.sh` (the whole cluster flow).

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{AGENT, Agent, REPO, wait_for};
use serde_json::{Value, json};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs an examples/ script with the tests' agent build instead of a release build.
fn script(name: &str, env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(Path::new(REPO).join("examples").join(name))
        .env("KRUSTLET_WASI_BIN", AGENT)
        .envs(env.iter().copied())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `krustlet-wasi ARGS --data-dir DATA`.
fn local(data: &Path, args: &[&str]) -> Output {
    Command::new(AGENT).args(args).arg("--data-dir").arg(data).output().unwrap()
}

#[test]
fn the_first_readme_command_runs_hello_world_standalone() {
    // Its wasi:http pod wants port 8080 of this host (it would take the next free port,
    // which the test does not know).
    let _port = common::turns::host_8080();
    let out = script("standalone.sh", &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.contains("hello-standalone")).unwrap_or_else(|| panic!("{all}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[..5], ["default", "hello-standalone", "1/1", "Running", "0"], "{all}");
    assert!(stdout.lines().filter(|l| *l == "Hello, World!").count() >= 3, "{all}");
    // The wasi:http pod answered curl, and logged the request.
    assert!(stdout.contains("Hello, World!\nHTTP 200\n"), "{all}");
    assert!(stdout.lines().any(|l| l == "GET /"), "{all}");
}

/// Builds the guests with examples/build.sh into `out`; returns the directory it printed.
fn build_examples(out: &Path) -> PathBuf {
    let built =
        Command::new("bash").arg(Path::new(REPO).join("examples/build.sh")).arg(out).output().unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let dir = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    for guest in ["hello", "exit", "show"] {
        assert!(dir.join(format!("{guest}.wasm")).is_file(), "{} has no {guest}.wasm", dir.display());
    }
    dir
}

#[test]
fn static_templates_run_standalone_and_local_commands_show_them() {
    let dir = common::sweep::test_dir();
    let wasm = build_examples(&dir.path().join("wasm"));
    let (manifests, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    for name in ["hello", "exit", "show"] {
        let template = std::fs::read_to_string(format!("{REPO}/examples/static/{name}.yaml.in")).unwrap();
        let manifest = template.replace("@WASM_DIR@", &wasm.to_string_lossy());
        std::fs::write(manifests.join(format!("{name}.yaml")), manifest).unwrap();
    }
    let args = common::standalone_args(&manifests, &data, "laptop", 10331);
    let _agent = Agent::start(&dir.path().join("logs"), &args);

    // `pods`: the three, each in the state its comment promises.
    let table = wait_for("the three static pods settled", Duration::from_secs(60), || {
        let out = local(&data, &["pods"]);
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = |pod: &str| {
            table.lines().find(|l| l.split_whitespace().nth(1) == Some(pod)).map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", c[2], c[3])
            })
        };
        (status("hello-laptop")? == "1/1 Running"
            && status("exit-laptop")? == "0/1 Error"
            && status("show-laptop")? == "0/1 Completed")
            .then_some(table)
    });
    assert!(table.starts_with("NAMESPACE"), "{table}");

    // `logs`: stdout and stderr of the exit guest, in order.
    let out = local(&data, &["logs", "exit-laptop"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exiting with 3\nthis goes to stderr\n",
        "{}",
        text(&out)
    );
    // What the show guest saw: downward API files, its env, a writable emptyDir.
    let out = local(&data, &["logs", "show-laptop", "-n", "default", "-c", "show"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    for line in [
        "arg[1]=@/podinfo/labels",
        "env:GREETING=Hello from the pod spec",
        "env:POD_NAME=show-laptop",
        "file:/podinfo/labels:app=\"show\"",
        "file:/podinfo/name:show-laptop",
        "write:/scratch/note.txt:ok",
        "file:/scratch/note.txt:written by the guest",
    ] {
        assert!(shown.lines().any(|l| l == line), "no line {line:?} in:\n{shown}");
    }
    // --tail, and -f from another process receiving lines as they are written.
    wait_for("three lines from hello", Duration::from_secs(10), || {
        (String::from_utf8_lossy(&local(&data, &["logs", "hello-laptop"]).stdout).lines().count() >= 3)
            .then_some(())
    });
    let out = local(&data, &["logs", "hello-laptop", "--tail", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!\n".repeat(2));
    let mut follow = Command::new(AGENT)
        .args(["logs", "-f", "hello-laptop", "--tail", "0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        assert_eq!(lines.next().unwrap().unwrap(), "Hello, World!");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();

    // Mistakes get one line naming what was wrong, and exit 1.
    for (args, says) in [
        (&["logs", "nothere"][..], "pod \"nothere\" not found"),
        (&["logs", "hello"], "did you mean hello-laptop? a static pod is named <name>-<node-name>"),
        (&["logs", "show-laptop", "-c", "nope"], "container nope is not valid for pod show-laptop"),
        (&["logs", "hello-laptop", "--previous"], "previous terminated container \"hello\""),
    ] {
        let out = local(&data, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", text(&out));
    }
    let out = local(&dir.path().join("nowhere"), &["pods"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent has run with this data dir"));
}

/// Each document of an examples/pods manifest, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap().into_iter().filter(|v| !v.is_null()).collect()
}

#[test]
fn example_manifests_run_on_the_cluster_as_their_comments_say() {
    let cluster = require_cluster!();
    let node = common::node::TestNode::join(cluster, "examples", 10332, &cluster.registry);
    let wasm = build_examples(&node.dir.path().join("wasm"));
    for guest in ["hello", "exit", "show"] {
        let reference = format!("{}/examples/{guest}:v1", cluster.registry);
        let out = Command::new(AGENT)
            .args(["push", "--insecure-registries", &cluster.registry])
            .arg(wasm.join(format!("{guest}.wasm")))
            .arg(&reference)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    // In a namespace of their own, pinned to this node: otherwise exactly as written.
    let ns = format!("examples-{}", std::process::id());
    cluster.kubectl(&["delete", "namespace", &ns, "--ignore-not-found"]);
    cluster.kubectl_ok(&["create", "namespace", &ns]);
    let mut names = Vec::new();
    for file in ["hello.yaml", "exit.yaml", "show.yaml", "show-cluster.yaml"] {
        for mut object in documents(&Path::new(REPO).join("examples/pods").join(file)) {
            object["metadata"]["namespace"] = json!(ns);
            if object["kind"] == "Pod" {
                assert_eq!(object["spec"]["nodeSelector"]["kubernetes.io/arch"], "wasm32-wasi", "{file}");
                object["spec"]["nodeSelector"]["kubernetes.io/hostname"] = json!(node.name);
                let image = object["spec"]["containers"][0]["image"].as_str().unwrap();
                let image = image.replace("127.0.0.1:5000", &cluster.registry);
                object["spec"]["containers"][0]["image"] = json!(image);
                names.push(object["metadata"]["name"].as_str().unwrap().to_string());
            }
            cluster.apply(&object);
        }
    }
    assert_eq!(names, ["hello", "exit", "show", "show-cluster"]);

    let get = |pod: &str| cluster.get_json(&["pod", pod, "-n", &ns]).unwrap_or(Value::Null);
    let logs =
        |pod: &str| String::from_utf8_lossy(&cluster.kubectl(&["logs", "-n", &ns, pod]).stdout).into_owned();
    let settled = |pod: &str, phase: &str| {
        common::wait_for_explained(
            &format!("pod {pod} {phase}"),
            Duration::from_secs(60),
            || {
                let p = get(pod);
                (p["status"]["phase"] == phase).then_some(p)
            },
            || cluster.explain_pod(&ns, pod),
        )
    };
    settled("hello", "Running");
    wait_for("Hello, World! from hello", Duration::from_secs(10), || {
        logs("hello").lines().any(|l| l == "Hello, World!").then_some(())
    });
    let exit = settled("exit", "Failed");
    assert_eq!(exit["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    assert_eq!(logs("exit"), "exiting with 3\nthis goes to stderr\n");
    settled("show", "Succeeded");
    let shown = logs("show");
    for line in
        ["env:POD_NAME=show", "file:/podinfo/name:show", "file:/scratch/note.txt:written by the guest"]
    {
        assert!(shown.lines().any(|l| l == line), "no line {line:?} in:\n{shown}");
    }
    settled("show-cluster", "Succeeded");
    let shown = logs("show-cluster");
    for line in [
        "env:GREETING=Hello from a ConfigMap",
        "env:CONFIG_color=blue",
        "file:/config/greeting:Hello from a ConfigMap",
        "file:/config/color:blue",
    ] {
        assert!(shown.lines().any(|l| l == line), "no line {line:?} in:\n{shown}");
    }
    cluster.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);

    // The same files, unchanged but for the registry, are static pods for a node that
    // pulls from that registry (here a standalone one).
    let dir = node.dir.path().join("static");
    let (manifests, data) = (dir.join("manifests"), dir.join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    for file in ["hello.yaml", "exit.yaml", "show.yaml"] {
        let text = std::fs::read_to_string(Path::new(REPO).join("examples/pods").join(file)).unwrap();
        std::fs::write(manifests.join(file), text.replace("127.0.0.1:5000", &cluster.registry)).unwrap();
    }
    let mut args = common::standalone_args(&manifests, &data, "static", 10334);
    args.extend(["--insecure-registries".to_string(), cluster.registry.clone()]);
    let _agent = Agent::start(&dir.join("logs"), &args);
    wait_for("the example pods as static pods", Duration::from_secs(60), || {
        let table = String::from_utf8_lossy(&local(&data, &["pods"]).stdout).into_owned();
        let status =
            |pod: &str| table.lines().find(|l| l.split_whitespace().nth(1) == Some(pod)).map(String::from);
        let all = [("hello-static", "Running"), ("exit-static", "Error"), ("show-static", "Completed")];
        all.iter()
            .all(|(pod, want)| status(pod).is_some_and(|l| l.split_whitespace().nth(3) == Some(want)))
            .then_some(())
    });
}

#[test]
fn the_demo_script_runs_the_seed_flow() {
    // Its pods select any wasm node, as a reader's would: the demo's node must be the only
    // one taking them, and its wasi:http pod wants port 8080 of this host.
    let Some(alone) = common::turns::cluster_alone() else { return };
    let cluster = alone.cluster;
    let _port = common::turns::host_8080();
    let node = format!("kw-demo-{}", std::process::id());
    let out = script("demo.sh", &[("DEMO_NODE", &node), ("DEMO_PORT", "10333")]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let columns = |name: &str| -> Vec<String> {
        let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(name));
        line.unwrap_or_else(|| panic!("no row {name} in:\n{all}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // kubectl get nodes -o wide: Ready, the loopback InternalIP, the Wasmtime runtime.
    let row = columns(&node);
    assert_eq!(row[1], "Ready", "{all}");
    assert!(
        row.contains(&"127.0.0.1".to_string()) && row.last().unwrap().starts_with("wasmtime://"),
        "{all}"
    );
    // kubectl get pods -o wide: hello Running on the demo node.
    let row = columns("hello");
    assert_eq!(row[1..3], ["1/1", "Running"], "{all}");
    assert!(row.contains(&node), "{all}");
    // The wasi:http pod through kubectl port-forward and curl.
    assert!(stdout.contains("Hello, World!\nHTTP 200\n"), "{all}");
    // The guide's app, built by examples/guide/build.sh, its pod as the guide writes it.
    let guide = stdout.split("examples/guide/pod.yaml | kubectl apply -f -\n").nth(1);
    assert!(guide.is_some_and(|g| g.contains("Hello, World!\nHTTP 200\n")), "{all}");
    for pod in ["wasi-http-demo", "wasm-demo-app"] {
        assert!(cluster.get_json(&["pod", pod, "-n", "default"]).is_none(), "pod {pod} left behind");
    }
    // kubectl logs hello --tail 3.
    let logs = stdout.split("kubectl logs hello --tail 3\n").nth(1).unwrap_or_else(|| panic!("{all}"));
    assert!(logs.starts_with("Hello, World!\nHello, World!\nHello, World!\n"), "{all}");
    // It cleaned up after itself.
    assert!(cluster.get_json(&["node", &node]).is_none(), "node {node} left behind");
    assert!(cluster.get_json(&["pod", "hello", "-n", "default"]).is_none(), "pod hello left behind");
}
