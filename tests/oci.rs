//! End-to-end tests of `krustlet_wasi::oci` against real registries (CNCF distribution):
//! the shared one at `$KRUSTLET_TEST_REGISTRY` (default 127.0.0.1:5000, started by
//! `bootstrap/cluster.sh up`) and private `docker-registry` processes started here for
//! the offline and authentication cases. Outside CI, tests skip when no registry answers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use krustlet_wasi::oci::{ArtifactFormat, OciError, PullPolicy, PushFormat, RegistryAuth, Store, push};
use serde_json::{Value, json};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// bcrypt (cost 4) of "s3cret", for the htpasswd file of the authenticated registry.
const HTPASSWD: &str = "tester:$2a$04$NJOjND86e/qUKzSu2JbsM.1P2SgOdQ8qWYqxe2LM.byzwNYS3i5kC\n";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// GET `path` on `addr` over plain HTTP; the status code, or `None` if nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Skips (outside CI) or fails (in CI) with a message naming how to get a registry.
fn unavailable<T>(why: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true but {why} (bootstrap/cluster.sh install && bootstrap/cluster.sh up)");
    }
    eprintln!("SKIPPED: {why}. Enable these tests with: bootstrap/cluster.sh up");
    None
}

/// The shared registry's `host:port`; in CI it is started if it does not answer.
fn shared_registry() -> Option<String> {
    let addr = std::env::var("KRUSTLET_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    if http_status(&addr, "/v2/").is_some() {
        return Some(addr);
    }
    if in_ci() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bootstrap/cluster.sh");
        let _ = Command::new("bash").arg(script).arg("up").status();
        if http_status(&addr, "/v2/").is_some() {
            return Some(addr);
        }
    }
    unavailable(&format!("no OCI registry answers at {addr}"))
}

macro_rules! require {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

/// A private `docker-registry` on a free loopback port; killed when dropped.
struct OwnRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    fn start(with_auth: bool) -> Option<OwnRegistry> {
        if !Path::new(REGISTRY_BIN).exists() {
            return unavailable(&format!("{REGISTRY_BIN} is not installed"));
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {addr}}}\n",
            dir.path().join("data").display()
        );
        if with_auth {
            std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
            config += &format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                dir.path().join("htpasswd").display()
            );
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let mut reg = OwnRegistry { child, addr, _dir: dir };
        let start = Instant::now();
        while http_status(&reg.addr, "/v2/").is_none() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited ({status}) before answering on {}", reg.addr);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not answer on {}",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A repository name unique to this test run.
fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("oci-test/{name}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A small valid module whose bytes differ per `name`.
fn module(name: &str) -> Vec<u8> {
    wat::parse_str(format!(r#"(module (func (export "{name}")))"#)).unwrap()
}

fn write_module(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let bytes = module(name);
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Pushes arbitrary blobs and manifests, as another tool (docker, oras) would have.
struct RawPusher {
    client: oci_client::Client,
    registry: String,
}

impl RawPusher {
    fn new(registry: &str) -> RawPusher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry.to_string()]),
            ..Default::default()
        };
        RawPusher { client: oci_client::Client::new(config), registry: registry.to_string() }
    }

    fn reference(&self, repo_and_tag: &str) -> oci_client::Reference {
        format!("{}/{repo_and_tag}", self.registry).parse().unwrap()
    }

    /// Uploads `bytes` to `repo`; returns the descriptor (with `media_type`).
    async fn blob(&self, repo: &str, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        self.client.push_blob(&self.reference(repo), bytes.to_vec(), &digest).await.unwrap();
        json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() })
    }

    /// Uploads `manifest` as `repo:tag`; returns its descriptor.
    async fn manifest(&self, repo: &str, tag: &str, media_type: &str, manifest: &Value) -> Value {
        let body = serde_json::to_vec(manifest).unwrap();
        let reference = self.reference(&format!("{repo}:{tag}"));
        let content_type = http::HeaderValue::from_str(media_type).unwrap();
        self.client.push_manifest_raw(&reference, body.clone(), content_type).await.unwrap();
        json!({ "mediaType": media_type, "digest": sha256(&body), "size": body.len() })
    }
}

/// A tar layer (gzip if `gzip`) of `(path, bytes)` files.
fn tar_layer(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, path, *data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    if !gzip {
        return tar;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes an image (`docker` picks Docker v2 media types) with `layers` and `config`.
async fn push_image(
    p: &RawPusher,
    repo: &str,
    tag: &str,
    docker: bool,
    layers: &[Vec<u8>],
    config: Value,
) -> Value {
    let (manifest_type, config_type, layer_type) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    let mut descs = Vec::new();
    for layer in layers {
        descs.push(p.blob(repo, layer_type, layer).await);
    }
    let config = p.blob(repo, config_type, &serde_json::to_vec(&config).unwrap()).await;
    let manifest =
        json!({ "schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": descs });
    p.manifest(repo, tag, manifest_type, &manifest).await
}

fn store(dir: &Path, registry: &str) -> Store {
    Store::new(dir.join("images"), vec![registry.to_string()])
}

fn creds(registry: &str, user: &str, pass: &str) -> RegistryAuth {
    let json =
        json!({ "auths": { format!("http://{registry}/v2/"): { "username": user, "password": pass } } });
    let data = BTreeMap::from([(".dockerconfigjson".to_string(), serde_json::to_vec(&json).unwrap())]);
    RegistryAuth::from_secret_data("kubernetes.io/dockerconfigjson", &data).unwrap()
}

#[tokio::test]
async fn cncf_and_wasm_to_oci_pushes_pull_back_identical_bytes() {
    let registry = require!(shared_registry());
    let dir = tempfile::tempdir().unwrap();
    let insecure = vec![registry.clone()];
    for (format, expected) in
        [(PushFormat::Cncf, ArtifactFormat::CncfWasm), (PushFormat::WasmToOci, ArtifactFormat::WasmToOci)]
    {
        let (path, bytes) = write_module(dir.path(), &format!("{format:?}"));
        let image = format!("{registry}/{}:v1", unique("push"));
        let digest = push(&path, &image, format, &insecure, &RegistryAuth::anonymous()).await.unwrap();
        let pulled = store(dir.path(), &registry)
            .pull(&image, PullPolicy::Always, &RegistryAuth::anonymous())
            .await
            .unwrap();
        assert_eq!(pulled.format, expected);
        assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), bytes);
        assert_eq!(pulled.wasm_digest, sha256(&bytes));
        assert!(pulled.wasm_path.starts_with(dir.path().join("images/blobs/sha256")), "{pulled:?}");
        let repo = image.rsplit_once(':').unwrap().0;
        assert_eq!(pulled.image_id, format!("{repo}@{digest}"));
        assert_eq!((pulled.image.as_str(), pulled.entrypoint.len()), (image.as_str(), 0));
    }
}

#[tokio::test]
async fn plain_images_yield_the_module_their_entrypoint_names() {
    let registry = require!(shared_registry());
    let p = RawPusher::new(&registry);
    let dir = tempfile::tempdir().unwrap();
    let (server, other) = (module("server"), module("other"));

    // OCI: FROM scratch / COPY http-server.wasm / / CMD ["/http-server.wasm"]
    let repo = unique("oci-image");
    let layer = tar_layer(&[("http-server.wasm", &server), ("etc/motd", b"hi")], true);
    let config =
        json!({ "architecture": "wasm", "os": "wasip1", "config": { "Cmd": ["/http-server.wasm"] } });
    let m = push_image(&p, &repo, "v1", false, &[layer], config).await;
    let image = format!("{registry}/{repo}:v1");
    let pulled = store(dir.path(), &registry)
        .pull(&image, PullPolicy::IfNotPresent, &RegistryAuth::anonymous())
        .await
        .unwrap();
    assert_eq!(pulled.format, ArtifactFormat::OciImage);
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), server);
    assert_eq!(pulled.entrypoint, ["/http-server.wasm"]);
    assert_eq!(pulled.image_id, format!("{registry}/{repo}@{}", m["digest"].as_str().unwrap()));

    // Docker v2: a later layer replaces the module; Entrypoint ++ Cmd; an uncompressed layer.
    let repo = unique("docker-image");
    let layers = [tar_layer(&[("./app.wasm", &other)], true), tar_layer(&[("app.wasm", &server)], false)];
    let config = json!({ "config": { "Entrypoint": ["/app.wasm"], "Cmd": ["--port", "8080"] } });
    push_image(&p, &repo, "v2", true, &layers, config).await;
    let image = format!("{registry}/{repo}:v2");
    let pulled = store(dir.path(), &registry)
        .pull(&image, PullPolicy::Always, &RegistryAuth::anonymous())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), server);
    assert_eq!(pulled.entrypoint, ["/app.wasm", "--port", "8080"]);

    // An image with two modules and no entrypoint naming one is refused, listing them.
    let repo = unique("ambiguous");
    let layer = tar_layer(&[("a.wasm", &server), ("b.wasm", &other)], true);
    push_image(&p, &repo, "v1", false, &[layer], json!({ "config": { "Cmd": ["run"] } })).await;
    let err = store(dir.path(), &registry)
        .pull(&format!("{registry}/{repo}:v1"), PullPolicy::Always, &RegistryAuth::anonymous())
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::WasmNotInImage { .. }) && err.to_string().contains("/a.wasm, /b.wasm"),
        "{err}"
    );
}

#[tokio::test]
async fn an_index_resolves_to_its_wasi_entry() {
    let registry = require!(shared_registry());
    let p = RawPusher::new(&registry);
    let dir = tempfile::tempdir().unwrap();
    let repo = unique("index");
    let (linux, wasi) = (module("linux"), module("wasi"));
    let linux_m =
        push_image(&p, &repo, "amd64", false, &[tar_layer(&[("x.wasm", &linux)], true)], json!({})).await;
    let wasi_m =
        push_image(&p, &repo, "wasi", false, &[tar_layer(&[("y.wasm", &wasi)], true)], json!({})).await;
    let index_type = "application/vnd.oci.image.index.v1+json";
    let entry = |m: &Value, os: &str, arch: &str| {
        let mut e = m.clone();
        e["platform"] = json!({ "os": os, "architecture": arch });
        e
    };
    let index = json!({ "schemaVersion": 2, "mediaType": index_type,
        "manifests": [entry(&linux_m, "linux", "amd64"), entry(&wasi_m, "wasip1", "wasm")] });
    let index_desc = p.manifest(&repo, "multi", index_type, &index).await;
    let image = format!("{registry}/{repo}:multi");
    let pulled = store(dir.path(), &registry)
        .pull(&image, PullPolicy::Always, &RegistryAuth::anonymous())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), wasi);
    assert_eq!(pulled.image_id, format!("{registry}/{repo}@{}", index_desc["digest"].as_str().unwrap()));

    let index = json!({ "schemaVersion": 2, "mediaType": index_type,
        "manifests": [entry(&linux_m, "linux", "amd64"), entry(&wasi_m, "linux", "arm64")] });
    p.manifest(&repo, "nowasm", index_type, &index).await;
    let err = store(dir.path(), &registry)
        .pull(&format!("{registry}/{repo}:nowasm"), PullPolicy::Always, &RegistryAuth::anonymous())
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::NoWasmPlatform { .. })
            && err.to_string().contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_images_are_not_found_and_foreign_artifacts_unsupported() {
    let registry = require!(shared_registry());
    let p = RawPusher::new(&registry);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), &registry);
    let anon = RegistryAuth::anonymous();
    let (path, _) = write_module(dir.path(), "present");
    let repo = unique("missing");
    push(&path, &format!("{registry}/{repo}:v1"), PushFormat::Cncf, std::slice::from_ref(&registry), &anon)
        .await
        .unwrap();
    for image in
        [format!("{registry}/{repo}:no-such-tag"), format!("{registry}/{}:v1", unique("no-such-repo"))]
    {
        let err = s.pull(&image, PullPolicy::Always, &anon).await.unwrap_err();
        assert!(err.is_not_found() && err.to_string().contains("not found"), "{image}: {err:?}");
    }

    let repo = unique("text");
    let layer = p.blob(&repo, "text/plain", b"hello").await;
    let config = p.blob(&repo, "application/vnd.example.config.v1+json", b"{}").await;
    let manifest =
        json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] });
    p.manifest(&repo, "v1", OCI_MANIFEST, &manifest).await;
    let err = s.pull(&format!("{registry}/{repo}:v1"), PullPolicy::Always, &anon).await.unwrap_err();
    assert!(matches!(err, OciError::UnsupportedArtifact { .. }), "{err:?}");
    assert!(
        err.to_string().contains("text/plain") && err.to_string().contains("vnd.example.config"),
        "{err}"
    );
}

#[tokio::test]
async fn stored_images_are_used_without_a_registry() {
    let mut reg = require!(OwnRegistry::start(false));
    let dir = tempfile::tempdir().unwrap();
    let anon = RegistryAuth::anonymous();
    let (path, bytes) = write_module(dir.path(), "offline");
    let image = format!("{}/{}:v1", reg.addr, unique("offline"));
    push(&path, &image, PushFormat::Cncf, &[reg.addr.clone()], &anon).await.unwrap();

    let started = Instant::now();
    let first = store(dir.path(), &reg.addr).pull(&image, PullPolicy::IfNotPresent, &anon).await.unwrap();
    let uncached = started.elapsed();
    reg.kill();

    // A new Store on the same directory: what an agent restart sees.
    let s = store(dir.path(), &reg.addr);
    let started = Instant::now();
    let again = s.pull(&image, PullPolicy::IfNotPresent, &anon).await.unwrap();
    let cached = started.elapsed();
    assert_eq!(again, first);
    assert_eq!(std::fs::read(&again.wasm_path).unwrap(), bytes);
    assert_eq!(s.pull(&image, PullPolicy::Never, &anon).await.unwrap(), first);
    eprintln!("pull of {image}: uncached {uncached:?}, cached (IfNotPresent, registry down) {cached:?}");

    // The registry really is gone: Always must fail, and Never knows only what was pulled.
    let err = s.pull(&image, PullPolicy::Always, &anon).await.unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    let err = s.pull(&format!("{}/never/pulled:v1", reg.addr), PullPolicy::Never, &anon).await.unwrap_err();
    assert!(
        matches!(err, OciError::NotPresent { .. }) && err.to_string().contains("imagePullPolicy is Never"),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_from_a_pull_secret_open_a_protected_registry() {
    let reg = require!(OwnRegistry::start(true));
    let dir = tempfile::tempdir().unwrap();
    let insecure = [reg.addr.clone()];
    let (path, bytes) = write_module(dir.path(), "secret");
    let image = format!("{}/{}:v1", reg.addr, unique("private"));
    let good = creds(&reg.addr, "tester", "s3cret");

    let err = push(&path, &image, PushFormat::Cncf, &insecure, &RegistryAuth::anonymous()).await.unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "anonymous push: {err:?}");
    push(&path, &image, PushFormat::Cncf, &insecure, &good).await.unwrap();

    let s = store(dir.path(), &reg.addr);
    for auth in [
        RegistryAuth::anonymous(),
        creds(&reg.addr, "tester", "wrong"),
        creds("other.example", "tester", "s3cret"),
    ] {
        let err = s.pull(&image, PullPolicy::Always, &auth).await.unwrap_err();
        assert!(matches!(err, OciError::Unauthorized { .. }), "{auth:?}: {err:?}");
        assert!(err.to_string().contains("imagePullSecrets"), "{err}");
    }
    let pulled = s.pull(&image, PullPolicy::Always, &good).await.unwrap();
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), bytes);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_agree_and_leave_no_temp_files() {
    let registry = require!(shared_registry());
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = write_module(dir.path(), "concurrent");
    let image = format!("{registry}/{}:v1", unique("concurrent"));
    push(&path, &image, PushFormat::WasmToOci, std::slice::from_ref(&registry), &RegistryAuth::anonymous())
        .await
        .unwrap();
    let s = store(dir.path(), &registry);
    let pulls = (0..8).map(|_| {
        let (s, image) = (s.clone(), image.clone());
        tokio::spawn(async move { s.pull(&image, PullPolicy::Always, &RegistryAuth::anonymous()).await })
    });
    for result in futures::future::join_all(pulls).await {
        assert_eq!(std::fs::read(result.unwrap().unwrap().wasm_path).unwrap(), bytes);
    }
    let leftovers = std::fs::read_dir(dir.path().join("images/tmp")).unwrap().count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn file_references_and_digest_pins() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = write_module(dir.path(), "local");
    let s = Store::new(dir.path().join("images"), vec![]);
    let image = format!("file://{}", path.display());
    let pulled = s.pull(&image, PullPolicy::Never, &RegistryAuth::anonymous()).await.unwrap();
    assert_eq!((pulled.format, pulled.wasm_digest.clone()), (ArtifactFormat::LocalFile, sha256(&bytes)));
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), bytes);
    let err =
        s.pull("file:///no/such.wasm", PullPolicy::Always, &RegistryAuth::anonymous()).await.unwrap_err();
    assert!(err.to_string().contains("/no/such.wasm"), "{err}");

    let registry = require!(shared_registry());
    let repo = format!("{registry}/{}", unique("pinned"));
    let digest = push(
        &path,
        &format!("{repo}:v1"),
        PushFormat::Cncf,
        std::slice::from_ref(&registry),
        &RegistryAuth::anonymous(),
    )
    .await
    .unwrap();
    let pinned = format!("{repo}@{digest}");
    assert_eq!(PullPolicy::from_k8s(None, &pinned), PullPolicy::IfNotPresent);
    let pulled = store(dir.path(), &registry)
        .pull(&pinned, PullPolicy::IfNotPresent, &RegistryAuth::anonymous())
        .await
        .unwrap();
    assert_eq!((pulled.image_id, pulled.wasm_digest), (pinned.clone(), sha256(&bytes)));
}
