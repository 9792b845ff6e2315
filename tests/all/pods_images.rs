//! End to end: pods whose images were built by other tools — plain OCI images (the seed's
//! `FROM scratch` + `COPY app.wasm` shape), Docker v2 manifests, multi-platform indexes —
//! and images in a private registry opened by `imagePullSecrets`.

use crate::common;

use std::time::Duration;

use common::guests;
use common::node::{TestNode, main_status, phase, pod};
use common::registry::{
    ImageKind, OwnRegistry, PASSWORD, RawPusher, USER, platform_entry, tar_layer, unique_repo,
};
use serde_json::{Value, json};

const PORT: u16 = 10281;
const PRIVATE_PORT: u16 = 10282;
const WAIT: Duration = Duration::from_secs(60);

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}-{}-{:x}", std::process::id(), n % 0xfffff)
}

/// Runs an async push to completion from a synchronous test.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A single-layer image of `kind` at `registry` (logging in as [`USER`] if `login`) holding
/// the guest `guest` as `file`, with image `config`; returns `(reference, manifest digest)`.
fn push_guest(
    registry: &str,
    login: bool,
    guest: &str,
    file: &str,
    kind: ImageKind,
    config: Value,
) -> (String, String) {
    let wasm = std::fs::read(guests::build(guest)).unwrap();
    let repo = unique_repo(guest);
    let layer = tar_layer(&[(file, &wasm), ("etc/motd", b"built by another tool")], true);
    let m = block_on(async {
        let pusher = if login { RawPusher::login(registry).await } else { RawPusher::new(registry) };
        pusher.image(&repo, "v1", kind, &[layer], config).await
    });
    (format!("{registry}/{repo}:v1"), m["digest"].as_str().unwrap().to_string())
}

fn terminated(p: &Value) -> &Value {
    &main_status(p)["state"]["terminated"]
}

/// The repository part of `image` pinned to `digest`: what `imageID` must say.
fn pinned(image: &str, digest: &str) -> String {
    format!("{}@{digest}", image.rsplit_once(':').unwrap().0)
}

/// Deletes what a test created when it ends; if it ends in a panic, prints the agent's log.
struct Cleanup<'a> {
    node: &'a TestNode,
    objects: Vec<String>,
}

impl Cleanup<'_> {
    fn pod(&mut self, p: &Value) {
        self.objects.push(format!("pod/{}", p["metadata"]["name"].as_str().unwrap()));
        common::cluster().unwrap().apply(p);
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.node.agent.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- agent log ({}) tail:\n{tail}", self.node.agent.stderr.display());
        }
        if !self.objects.is_empty() {
            let mut args =
                vec!["delete", "-n", "default", "--ignore-not-found", "--wait=true", "--timeout=30s"];
            args.extend(self.objects.iter().map(String::as_str));
            let out = common::cluster().unwrap().kubectl(&args);
            if !out.status.success() && !std::thread::panicking() {
                panic!("cleanup kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn never(name: &str, node: &str, image: &str) -> Value {
    let mut p = pod(name, node, image);
    p["spec"]["restartPolicy"] = json!("Never");
    p
}

#[test]
fn the_seed_image_shape_runs_the_module_its_cmd_names() {
    let cluster = require_cluster!();
    let node = common::shared_node("images", PORT).unwrap();
    let mut cleanup = Cleanup { node, objects: vec![] };
    // FROM scratch / COPY http-server.wasm / / CMD ["/http-server.wasm"]
    let config =
        json!({ "architecture": "wasm", "os": "wasip1", "config": { "Cmd": ["/http-server.wasm"] } });
    let reg = &cluster.registry;
    let (image, digest) = push_guest(reg, false, "hello", "http-server.wasm", ImageKind::Oci, config);
    let name = unique("seed");
    cleanup.pod(&pod(&name, &node.name, &image));
    let p = cluster.wait_pod(&name, "Running", WAIT, |p| phase(p) == "Running");
    assert_eq!(main_status(&p)["imageID"], pinned(&image, &digest).as_str(), "{}", p["status"]);
    common::wait_for("Hello lines in the log store", Duration::from_secs(10), || {
        node.log_lines(&p, "main", 0).iter().any(|l| l == "Hello, World!").then_some(())
    });
}

#[test]
fn an_oci_image_cmd_reaches_the_guest_and_a_pod_command_replaces_it() {
    let cluster = require_cluster!();
    let node = common::shared_node("images", PORT).unwrap();
    let mut cleanup = Cleanup { node, objects: vec![] };
    let reg = &cluster.registry;
    let config = json!({ "config": { "Cmd": ["/app.wasm", "7"] } });
    let (image, digest) = push_guest(reg, false, "exit", "app.wasm", ImageKind::Oci, config);
    let (from_image, overridden) = (unique("cmd7"), unique("command0"));
    cleanup.pod(&never(&from_image, &node.name, &image));
    let mut p = never(&overridden, &node.name, &image);
    p["spec"]["containers"][0]["command"] = json!(["/app.wasm", "0"]);
    cleanup.pod(&p);

    let p = cluster.wait_pod(&from_image, "Failed", WAIT, |p| phase(p) == "Failed");
    assert_eq!(terminated(&p)["exitCode"], 7, "{}", p["status"]);
    assert_eq!(terminated(&p)["reason"], "Error");
    assert_eq!(main_status(&p)["imageID"], pinned(&image, &digest).as_str());
    assert_eq!(node.log_lines(&p, "main", 0), ["exiting with 7", "this goes to stderr"]);
    let p = cluster.wait_pod(&overridden, "Succeeded", WAIT, |p| phase(p) == "Succeeded");
    assert_eq!(terminated(&p)["exitCode"], 0, "{}", p["status"]);
    assert_eq!(node.log_lines(&p, "main", 0)[0], "exiting with 0");
}

#[test]
fn a_docker_v2_image_runs_entrypoint_plus_cmd_and_pod_args_replace_cmd() {
    let cluster = require_cluster!();
    let node = common::shared_node("images", PORT).unwrap();
    let mut cleanup = Cleanup { node, objects: vec![] };
    let reg = &cluster.registry;
    let config = json!({ "architecture": "wasm", "os": "wasi",
        "config": { "Entrypoint": ["/app.wasm"], "Cmd": ["4"] } });
    let (image, digest) = push_guest(reg, false, "exit", "app.wasm", ImageKind::DockerV2, config);
    let (from_image, with_args) = (unique("docker4"), unique("docker9"));
    cleanup.pod(&never(&from_image, &node.name, &image));
    let mut p = never(&with_args, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["9"]);
    cleanup.pod(&p);

    let p = cluster.wait_pod(&from_image, "Failed", WAIT, |p| phase(p) == "Failed");
    assert_eq!(terminated(&p)["exitCode"], 4, "{}", p["status"]);
    assert_eq!(main_status(&p)["imageID"], pinned(&image, &digest).as_str());
    let p = cluster.wait_pod(&with_args, "Failed", WAIT, |p| phase(p) == "Failed");
    assert_eq!(terminated(&p)["exitCode"], 9, "{}", p["status"]);
}

#[test]
fn pod_args_replace_only_cmd_keeping_every_entrypoint_element() {
    let cluster = require_cluster!();
    let node = common::shared_node("images", PORT).unwrap();
    let mut cleanup = Cleanup { node, objects: vec![] };
    let reg = &cluster.registry;
    // The exit guest exits with argv[1]: the image's Entrypoint decides it unless dropped.
    let config = json!({ "config": { "Entrypoint": ["/app.wasm", "6"], "Cmd": ["1"] } });
    let (image, _) = push_guest(reg, false, "exit", "app.wasm", ImageKind::DockerV2, config);
    let (from_image, with_args) = (unique("ep6"), unique("ep6args"));
    cleanup.pod(&never(&from_image, &node.name, &image));
    let mut p = never(&with_args, &node.name, &image);
    p["spec"]["containers"][0]["args"] = json!(["2"]);
    cleanup.pod(&p);
    for name in [&from_image, &with_args] {
        let p = cluster.wait_pod(name, "Failed", WAIT, |p| phase(p) == "Failed");
        assert_eq!(node.log_lines(&p, "main", 0)[0], "exiting with 6", "{name}: argv is Entrypoint ++ args");
        assert_eq!(terminated(&p)["exitCode"], 6, "{name}: {}", p["status"]);
    }
}

#[test]
fn an_image_index_runs_its_wasi_entry_not_the_amd64_one() {
    let cluster = require_cluster!();
    let node = common::shared_node("images", PORT).unwrap();
    let mut cleanup = Cleanup { node, objects: vec![] };
    let reg = cluster.registry.clone();
    let wasm = std::fs::read(guests::build("exit")).unwrap();
    let repo = unique_repo("index");
    // What `docker buildx --platform linux/amd64,wasi/wasm` pushes: a native binary
    // (bogus here) for amd64, the module for wasi/wasm, and an attestation manifest.
    let index = block_on(async {
        let p = RawPusher::new(&reg);
        let elf = tar_layer(&[("app.wasm", b"\x7fELF\x02\x01\x01 not wasm")], true);
        let config =
            json!({ "architecture": "amd64", "os": "linux", "config": { "Cmd": ["/app.wasm", "86"] } });
        let amd64 = p.image(&repo, "amd64", ImageKind::Oci, &[elf], config).await;
        let config = json!({ "architecture": "wasm", "os": "wasi", "config": { "Cmd": ["/app.wasm", "5"] } });
        let layer = tar_layer(&[("app.wasm", &wasm)], true);
        let wasi = p.image(&repo, "wasi", ImageKind::Oci, &[layer], config).await;
        let attestation = p.image(&repo, "att", ImageKind::Oci, &[], json!({})).await;
        let entries = [
            platform_entry(&amd64, "linux", "amd64"),
            platform_entry(&wasi, "wasi", "wasm"),
            platform_entry(&attestation, "unknown", "unknown"),
        ];
        p.index(&repo, "multi", &entries).await
    });
    let image = format!("{reg}/{repo}:multi");
    let name = unique("index");
    cleanup.pod(&never(&name, &node.name, &image));
    let p = cluster.wait_pod(&name, "Failed", WAIT, |p| phase(p) == "Failed");
    assert_eq!(terminated(&p)["exitCode"], 5, "the wasi entry's Cmd ran: {}", p["status"]);
    let index_digest = index["digest"].as_str().unwrap();
    assert_eq!(main_status(&p)["imageID"], pinned(&image, index_digest).as_str(), "the index digest");
}

/// Creates an image pull secret of `kind` whose data key `key` holds `config`.
fn pull_secret(name: &str, kind: &str, key: &str, config: &Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Secret", "type": kind,
        "metadata": { "name": name, "namespace": "default" },
        "stringData": { key: config.to_string() } })
}

#[test]
fn a_private_registry_is_opened_only_by_image_pull_secrets() {
    let cluster = require_cluster!();
    let private = match OwnRegistry::start(true) {
        Some(r) => r,
        None => return,
    };
    let registries = format!("{},{}", cluster.registry, private.addr);
    let mut node = TestNode::join(cluster, "private", PRIVATE_PORT, &registries);
    let mut cleanup = Cleanup { node: &node, objects: vec![] };
    let host = private.addr.as_str();
    let config = json!({ "config": { "Cmd": ["/app.wasm", "0"] } });
    let (image, digest) = push_guest(host, true, "exit", "app.wasm", ImageKind::Oci, config);

    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let (good_json, wrong_json, cfg) = (unique("json"), unique("wrong"), unique("cfg"));
    let secrets = [
        pull_secret(
            &good_json,
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            &json!({ "auths": { host: { "auth": b64(&format!("{USER}:{PASSWORD}")) } } }),
        ),
        pull_secret(
            &wrong_json,
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            &json!({ "auths": { host: { "auth": b64(&format!("{USER}:not-{PASSWORD}")) } } }),
        ),
        pull_secret(
            &cfg,
            "kubernetes.io/dockercfg",
            ".dockercfg",
            &json!({ host: { "username": USER, "password": PASSWORD, "email": "t@example.com" } }),
        ),
    ];
    for s in &secrets {
        cleanup.objects.push(format!("secret/{}", s["metadata"]["name"].as_str().unwrap()));
        cluster.apply(s);
    }
    // Always: a cached image must not let a pod without credentials skip the registry.
    let with = |name: &str, secret: Option<&str>| {
        let mut p = never(name, &node.name, &image);
        p["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        if let Some(s) = secret {
            p["spec"]["imagePullSecrets"] = json!([{ "name": s }]);
        }
        p
    };
    for (name, secret) in [(unique("anon"), None), (unique("badpass"), Some(wrong_json.as_str()))] {
        cleanup.pod(&with(&name, secret));
        let p = cluster.wait_pod(&name, "ErrImagePull", WAIT, |p| {
            main_status(p)["state"]["waiting"]["reason"] == "ErrImagePull"
        });
        let msg = main_status(&p)["state"]["waiting"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("unauthorized"), "{name}: {msg}");
        assert_eq!(phase(&p), "Pending");
    }
    for secret in [&good_json, &cfg] {
        let name = unique("authed");
        cleanup.pod(&with(&name, Some(secret)));
        let p = cluster.wait_pod(&name, "Succeeded", WAIT, |p| phase(p) == "Succeeded");
        assert_eq!(terminated(&p)["exitCode"], 0, "secret {secret}: {}", p["status"]);
        assert_eq!(main_status(&p)["imageID"], pinned(&image, &digest).as_str());
    }
    drop(cleanup);
    // TestNode's Drop runs kubectl without the cluster's kubeconfig; remove the node here.
    node.agent.terminate();
    cluster.forget_node(&node.name);
}
