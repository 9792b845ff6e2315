//! End-to-end tests of `krustlet_wasi::oci` against real registries (CNCF distribution):
//! the shared one at `$KRUSTLET_TEST_REGISTRY` (default 127.0.0.1:5000, started by
//! `bootstrap/cluster.sh up`) and private `docker-registry` processes started here for
//! the offline and authentication cases. Outside CI, tests skip when no registry answers.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::registry::{
    ImageKind, OCI_MANIFEST, OwnRegistry, PASSWORD, RawPusher, USER, platform_entry, sha256, shared_registry,
    tar_layer, unique_repo as unique,
};
use krustlet_wasi::oci::{
    ArtifactFormat, FileImages, OciError, PullPolicy, PushFormat, RegistryAuth, Store, push,
};
use serde_json::json;

macro_rules! require {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
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
            .pull(&image, PullPolicy::Always, &RegistryAuth::anonymous(), FileImages::Refused)
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
    let m = p.image(&repo, "v1", ImageKind::Oci, &[layer], config).await;
    let image = format!("{registry}/{repo}:v1");
    let pulled = store(dir.path(), &registry)
        .pull(&image, PullPolicy::IfNotPresent, &RegistryAuth::anonymous(), FileImages::Refused)
        .await
        .unwrap();
    assert_eq!(pulled.format, ArtifactFormat::OciImage);
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), server);
    assert!(pulled.entrypoint.is_empty());
    assert_eq!(pulled.cmd, ["/http-server.wasm"]);
    assert_eq!(pulled.image_id, format!("{registry}/{repo}@{}", m["digest"].as_str().unwrap()));

    // Docker v2: a later layer replaces the module; Entrypoint and Cmd; an uncompressed layer.
    let repo = unique("docker-image");
    let layers = [tar_layer(&[("./app.wasm", &other)], true), tar_layer(&[("app.wasm", &server)], false)];
    let config = json!({ "config": { "Entrypoint": ["/app.wasm"], "Cmd": ["--port", "8080"] } });
    p.image(&repo, "v2", ImageKind::DockerV2, &layers, config).await;
    let image = format!("{registry}/{repo}:v2");
    let pulled = store(dir.path(), &registry)
        .pull(&image, PullPolicy::Always, &RegistryAuth::anonymous(), FileImages::Refused)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), server);
    assert_eq!(
        (pulled.entrypoint, pulled.cmd),
        (vec!["/app.wasm".to_string()], vec!["--port".into(), "8080".into()])
    );

    // An image with two modules and no entrypoint naming one is refused, listing them.
    let repo = unique("ambiguous");
    let layer = tar_layer(&[("a.wasm", &server), ("b.wasm", &other)], true);
    p.image(&repo, "v1", ImageKind::Oci, &[layer], json!({ "config": { "Cmd": ["run"] } })).await;
    let err = store(dir.path(), &registry)
        .pull(
            &format!("{registry}/{repo}:v1"),
            PullPolicy::Always,
            &RegistryAuth::anonymous(),
            FileImages::Refused,
        )
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
        p.image(&repo, "amd64", ImageKind::Oci, &[tar_layer(&[("x.wasm", &linux)], true)], json!({})).await;
    let wasi_m =
        p.image(&repo, "wasi", ImageKind::Oci, &[tar_layer(&[("y.wasm", &wasi)], true)], json!({})).await;
    let entries = [platform_entry(&linux_m, "linux", "amd64"), platform_entry(&wasi_m, "wasip1", "wasm")];
    let index_desc = p.index(&repo, "multi", &entries).await;
    let image = format!("{registry}/{repo}:multi");
    let pulled = store(dir.path(), &registry)
        .pull(&image, PullPolicy::Always, &RegistryAuth::anonymous(), FileImages::Refused)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), wasi);
    assert_eq!(pulled.image_id, format!("{registry}/{repo}@{}", index_desc["digest"].as_str().unwrap()));

    let entries = [platform_entry(&linux_m, "linux", "amd64"), platform_entry(&wasi_m, "linux", "arm64")];
    p.index(&repo, "nowasm", &entries).await;
    let err = store(dir.path(), &registry)
        .pull(
            &format!("{registry}/{repo}:nowasm"),
            PullPolicy::Always,
            &RegistryAuth::anonymous(),
            FileImages::Refused,
        )
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
        let err = s.pull(&image, PullPolicy::Always, &anon, FileImages::Refused).await.unwrap_err();
        assert!(err.is_not_found() && err.to_string().contains("not found"), "{image}: {err:?}");
    }

    let repo = unique("text");
    let layer = p.blob(&repo, "text/plain", b"hello").await;
    let config = p.blob(&repo, "application/vnd.example.config.v1+json", b"{}").await;
    let manifest =
        json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] });
    p.manifest(&repo, "v1", OCI_MANIFEST, &manifest).await;
    let err = s
        .pull(&format!("{registry}/{repo}:v1"), PullPolicy::Always, &anon, FileImages::Refused)
        .await
        .unwrap_err();
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
    let first = store(dir.path(), &reg.addr)
        .pull(&image, PullPolicy::IfNotPresent, &anon, FileImages::Refused)
        .await
        .unwrap();
    let uncached = started.elapsed();
    reg.kill();

    // A new Store on the same directory: what an agent restart sees.
    let s = store(dir.path(), &reg.addr);
    let started = Instant::now();
    let again = s.pull(&image, PullPolicy::IfNotPresent, &anon, FileImages::Refused).await.unwrap();
    let cached = started.elapsed();
    assert_eq!(again, first);
    assert_eq!(std::fs::read(&again.wasm_path).unwrap(), bytes);
    assert_eq!(s.pull(&image, PullPolicy::Never, &anon, FileImages::Refused).await.unwrap(), first);
    eprintln!("pull of {image}: uncached {uncached:?}, cached (IfNotPresent, registry down) {cached:?}");

    // The registry really is gone: Always must fail, and Never knows only what was pulled.
    let err = s.pull(&image, PullPolicy::Always, &anon, FileImages::Refused).await.unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    let err = s
        .pull(&format!("{}/never/pulled:v1", reg.addr), PullPolicy::Never, &anon, FileImages::Refused)
        .await
        .unwrap_err();
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
    let good = creds(&reg.addr, USER, PASSWORD);

    let err = push(&path, &image, PushFormat::Cncf, &insecure, &RegistryAuth::anonymous()).await.unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "anonymous push: {err:?}");
    push(&path, &image, PushFormat::Cncf, &insecure, &good).await.unwrap();

    let s = store(dir.path(), &reg.addr);
    for auth in
        [RegistryAuth::anonymous(), creds(&reg.addr, USER, "wrong"), creds("other.example", USER, PASSWORD)]
    {
        let err = s.pull(&image, PullPolicy::Always, &auth, FileImages::Refused).await.unwrap_err();
        assert!(matches!(err, OciError::Unauthorized { .. }), "{auth:?}: {err:?}");
        assert!(err.to_string().contains("imagePullSecrets"), "{err}");
    }
    let pulled = s.pull(&image, PullPolicy::Always, &good, FileImages::Refused).await.unwrap();
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
        tokio::spawn(async move {
            s.pull(&image, PullPolicy::Always, &RegistryAuth::anonymous(), FileImages::Refused).await
        })
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
    let pulled =
        s.pull(&image, PullPolicy::Never, &RegistryAuth::anonymous(), FileImages::Allowed).await.unwrap();
    assert_eq!((pulled.format, pulled.wasm_digest.clone()), (ArtifactFormat::LocalFile, sha256(&bytes)));
    assert_eq!(std::fs::read(&pulled.wasm_path).unwrap(), bytes);
    let err = s
        .pull("file:///no/such.wasm", PullPolicy::Always, &RegistryAuth::anonymous(), FileImages::Allowed)
        .await
        .unwrap_err();
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
        .pull(&pinned, PullPolicy::IfNotPresent, &RegistryAuth::anonymous(), FileImages::Refused)
        .await
        .unwrap();
    assert_eq!((pulled.image_id, pulled.wasm_digest), (pinned.clone(), sha256(&bytes)));
}
