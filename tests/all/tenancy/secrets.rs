//! Item 7: secrets and tokens live in memory, where no other user of the host reads them,
//! and never in the agent's log. A pod with a Secret volume, a memory-backed emptyDir and
//! the service account token the API server injects: each is a tmpfs of its own under the
//! node's data dir, owner-only; the guest still reads them; an agent restart finds the
//! mounts rather than making them twice; deleting the pod unmounts and removes them; a
//! word on an exec'd command line is not in the agent's log at its default level.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::node::{TestNode, phase, pod};
use crate::common::{self, Agent, guests, wait_for};

/// The agent port of this module's node (secrets: 10530–10534).
const PORT: u16 = 10530;

/// Where the service account token is mounted in every container.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or_else(|e| {
        panic!("{}: {e}", path.display());
    })
}

/// The filesystem types mounted exactly at `path`, as this process's mount table shows
/// (the agent runs in the same mount namespace).
fn mounted_at(path: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let path = path.to_string_lossy().replace(' ', "\\040");
    table
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (left.split(' ').nth(4)? == path).then(|| right.split(' ').next().unwrap_or("").to_string())
        })
        .collect()
}

/// The mount points below `dir` (which need not exist any more).
fn mounts_below(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let prefix = format!("{}/", dir.display());
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(String::from)
        .collect()
}

fn exec(cluster: &common::Cluster, pod: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", "-n", "default", pod, "--", "tool"];
    all.extend_from_slice(args);
    let out = cluster.kubectl(&all);
    assert!(out.status.success(), "exec {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The name of the volume the API server injected for the service account token.
fn token_volume(pod: &Value) -> String {
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let name = volumes.iter().filter_map(|v| v["name"].as_str()).find(|n| n.starts_with("kube-api-access-"));
    name.unwrap_or_else(|| panic!("no kube-api-access volume in {volumes:?}")).to_string()
}

#[test]
fn secrets_and_tokens_are_on_a_tmpfs_owner_only_and_not_in_the_log() {
    let cluster = crate::require_cluster!();
    let mut node = TestNode::join(cluster, "secrets", PORT, &cluster.registry);
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("secrets-{}", std::process::id());
    let password = format!("pw-{}-{:x}", std::process::id(), rand_word());
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &name,
        &format!("--from-literal=password={password}"),
    ]);
    let mut p = pod(&name, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "secret", "mountPath": "/secret"}, {"name": "scratch", "mountPath": "/scratch"}]);
    p["spec"]["volumes"] = json!([
        {"name": "secret", "secret": {"secretName": name}},
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]);
    cluster.apply(&p);
    let running = cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
    let uid = running["metadata"]["uid"].as_str().expect("uid").to_string();
    let token = token_volume(&running);
    let data = node.data_dir().canonicalize().expect("data dir");
    let pod_dir = data.join("pods").join(&uid);
    let volume = |v: &str| -> PathBuf { pod_dir.join("volumes").join(v) };

    // Each memory-backed volume is a tmpfs of its own, owner-only.
    for v in ["secret", token.as_str(), "scratch"] {
        assert_eq!(mounted_at(&volume(v)), ["tmpfs"], "{v}: one tmpfs at {}", volume(v).display());
        assert_eq!(mode(&volume(v)), 0o700, "{v}");
    }
    let scratch = rustix::fs::statfs(volume("scratch")).expect("statfs");
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let size = u64::from(scratch.f_blocks) * u64::try_from(scratch.f_bsize).unwrap_or(0);
    assert_eq!(size, 1 << 20, "the emptyDir's tmpfs is its sizeLimit");
    for d in [&data, &pod_dir, &pod_dir.join("volumes")] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    // The API server sets defaultMode 0644 on both (the kubelet's default); the agent keeps
    // it, and the 0700 directories above keep other users out.
    let spec_mode = |v: &str| {
        let volumes = running["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        let found = volumes.into_iter().find(|x| x["name"] == v).expect("volume");
        let source = if found["secret"].is_object() { &found["secret"] } else { &found["projected"] };
        source["defaultMode"].as_u64().expect("defaultMode set by the API server") as u32
    };
    assert_eq!(mode(&volume("secret").join("password")), spec_mode("secret"));
    assert_eq!(mode(&volume(&token).join("token")), spec_mode(&token));

    // The guest reads them all the same.
    let read = |files: &[&str]| {
        let mut args = vec!["read"];
        args.extend_from_slice(files);
        exec(cluster, &name, &args)
    };
    let namespace_file = format!("{SA_DIR}/namespace");
    assert_eq!(read(&["/secret/password", &namespace_file]), format!("{password}default"));
    let jwt = read(&[&format!("{SA_DIR}/token")]);
    assert!(jwt.starts_with("eyJ"), "the token: {jwt:?}");

    // The agent restarts, at its default log level, with a data dir someone opened up: it
    // narrows it again, says so, and finds its mounts rather than mounting twice.
    let debug_log = node.agent.stderr.clone();
    let (status, _) = node.agent.terminate();
    assert!(status.success(), "agent exit {status}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    node.agent = Agent::start_logging(&node.dir.path().join("logs"), &[], &node.args, "info");
    node.agent.wait_output("node registered and Ready", Duration::from_secs(60));
    assert_eq!(mode(&data), 0o700);
    assert!(node.agent.logs().contains("set the data dir's mode to 0700"), "{}", node.agent.logs());
    wait_for("the pod to serve again after the restart", Duration::from_secs(60), || {
        let out =
            cluster.kubectl(&["exec", "-n", "default", &name, "--", "tool", "read", "/secret/password"]);
        (String::from_utf8_lossy(&out.stdout) == password).then_some(())
    });
    for v in ["secret", token.as_str(), "scratch"] {
        assert_eq!(mounted_at(&volume(v)), ["tmpfs"], "{v}: still one tmpfs after the restart");
    }

    // A word on an exec'd command line reaches the guest, not the agent's log.
    let word = format!("opensesame-{:x}", rand_word());
    assert_eq!(exec(cluster, &name, &["echo", &word]), format!("{word}\n"));
    wait_for("the exec in the agent's log", Duration::from_secs(10), || {
        let logs = node.agent.logs();
        logs.lines().any(|l| l.contains(" exec ") && l.contains(&name) && l.contains("args=3")).then_some(())
    });
    let info_log = node.agent.logs();
    assert!(!info_log.contains(&word), "the exec'd word is in the agent's log:\n{info_log}");
    let debug_log = std::fs::read_to_string(debug_log).unwrap_or_default();
    for (log, level) in [(&info_log, "info"), (&debug_log, "debug")] {
        assert!(!log.contains(&password), "the Secret's value is in the {level} log");
        assert!(!log.contains(jwt.trim()), "the token is in the {level} log");
    }

    // Deleted: the mounts go, then the directory.
    cluster.kubectl_ok(&["delete", "pod", &name, "-n", "default", "--wait=true", "--timeout=60s"]);
    wait_for("the pod's mounts and directory removed", Duration::from_secs(30), || {
        (mounts_below(&pod_dir).is_empty() && !pod_dir.exists()).then_some(())
    });
    cluster.kubectl(&["delete", "secret", &name]);
}

/// A word no other test (or earlier run) uses.
fn rand_word() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::from(t.subsec_nanos()) ^ t.as_secs().rotate_left(32)
}
