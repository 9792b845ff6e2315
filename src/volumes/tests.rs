//! Tests of preparing volumes (each type, modes, optional, errors, refresh), against temp
//! directories and an in-memory object source.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::fake::FakeSource;
use super::*;

pub(super) fn pod(volumes: Value, mounts: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-1", "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "robot",
            "volumes": volumes,
            "containers": [{"name": "c", "volumeMounts": mounts,
                            "resources": {"limits": {"memory": "64Mi"}}}],
        },
    }))
    .expect("pod fixture parses")
}

pub(super) fn ctx(pod: &Pod) -> PodContext<'_> {
    PodContext { pod, node_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), allocatable: (1000, 1 << 30) }
}

pub(super) fn source() -> FakeSource {
    FakeSource::default()
        .with_config_map("ns", "cfg", &[("a.txt", "alpha"), ("b.txt", "beta")])
        .with_config_map("ns", "kube-root-ca.crt", &[("ca.crt", "-----BEGIN CERTIFICATE-----")])
        .with_secret("ns", "sec", &[("user", b"admin"), ("key", b"\x00\x01")])
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

async fn prepare(src: &FakeSource, volumes: Value) -> (tempfile::TempDir, Result<PodVolumes, VolumeError>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pod(volumes, json!([]));
    let result = PodVolumes::prepare(src, &ctx(&p), dir.path(), MemoryMedium::Disk).await;
    (dir, result)
}

#[tokio::test]
async fn config_map_all_keys_with_default_mode() -> anyhow::Result<()> {
    let (dir, vols) = prepare(&source(), json!([{"name": "cfg", "configMap": {"name": "cfg"}}])).await;
    vols?;
    let v = dir.path().join("volumes/cfg");
    assert_eq!(names(&v), ["a.txt", "b.txt"]);
    assert_eq!(read(&v.join("a.txt")), "alpha");
    assert_eq!(mode(&v.join("b.txt")), 0o644);
    Ok(())
}

#[tokio::test]
async fn config_map_items_paths_and_modes() -> anyhow::Result<()> {
    let mut src = source();
    let cm = src.config_maps.get_mut("ns/cfg").expect("fixture");
    cm.binary_data = Some([("bin".to_string(), ByteString(vec![0, 159, 146, 150]))].into());
    let (dir, vols) = prepare(
        &src,
        json!([{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o600, "items": [
            {"key": "a.txt", "path": "conf/app.conf", "mode": 0o400},
            {"key": "b.txt", "path": "./b"},
            {"key": "bin", "path": "data.bin"},
        ]}}]),
    )
    .await;
    vols?;
    let v = dir.path().join("volumes/cfg");
    assert_eq!(names(&v), ["b", "conf", "data.bin"]);
    assert_eq!(read(&v.join("conf/app.conf")), "alpha");
    assert_eq!(mode(&v.join("conf/app.conf")), 0o400);
    assert_eq!(mode(&v.join("b")), 0o600);
    assert_eq!(std::fs::read(v.join("data.bin"))?, [0, 159, 146, 150]);
    Ok(())
}

#[tokio::test]
async fn optional_missing_objects_and_keys_are_skipped() -> anyhow::Result<()> {
    let (dir, vols) = prepare(
        &source(),
        json!([
            {"name": "gone-cm", "configMap": {"name": "gone", "optional": true}},
            {"name": "gone-sec", "secret": {"secretName": "gone", "optional": true}},
            {"name": "some", "configMap": {"name": "cfg", "optional": true,
                "items": [{"key": "nope", "path": "x"}, {"key": "a.txt", "path": "a"}]}},
        ]),
    )
    .await;
    vols?;
    let root = dir.path().join("volumes");
    assert_eq!(names(&root.join("gone-cm")), Vec::<String>::new());
    assert_eq!(names(&root.join("gone-sec")), Vec::<String>::new());
    assert_eq!(names(&root.join("some")), ["a"]);
    Ok(())
}

#[tokio::test]
async fn missing_required_config_reads_like_the_kubelet() {
    let cases = [
        (json!({"configMap": {"name": "gone"}}), "configmap \"gone\" not found"),
        (json!({"secret": {"secretName": "gone"}}), "secret \"gone\" not found"),
        (
            json!({"configMap": {"name": "cfg", "items": [{"key": "k", "path": "k"}]}}),
            "configmap references non-existent config key: k",
        ),
        (
            json!({"secret": {"secretName": "sec", "items": [{"key": "k", "path": "k"}]}}),
            "references non-existent secret key: k",
        ),
        (
            json!({"projected": {"sources": [{"configMap": {"name": "gone"}}]}}),
            "configmap \"gone\" not found",
        ),
    ];
    for (mut volume, want) in cases {
        volume["name"] = json!("v");
        let (_dir, result) = prepare(&source(), json!([volume.clone()])).await;
        let err = result.expect_err("must fail");
        assert!(matches!(err, VolumeError::MissingConfig { .. }), "{volume}: {err:?}");
        assert_eq!(err.to_string(), format!("MountVolume.SetUp failed for volume \"v\" : {want}"));
    }
}

#[tokio::test]
async fn api_errors_are_not_treated_as_missing() {
    let src = FakeSource { forbidden: vec!["ns/sec".into()], ..source() };
    let (_dir, result) =
        prepare(&src, json!([{"name": "s", "secret": {"secretName": "sec", "optional": true}}])).await;
    let err = result.expect_err("403 must fail even when optional");
    assert!(matches!(err, VolumeError::Api { .. }), "{err:?}");
    assert!(err.to_string().contains("forbidden"), "{err}");
}

#[tokio::test]
async fn secret_bytes_and_modes() -> anyhow::Result<()> {
    let (dir, vols) = prepare(
        &source(),
        json!([{"name": "s", "secret": {"secretName": "sec", "defaultMode": 0o440,
            "items": [{"key": "key", "path": "tls/key", "mode": 0o600}, {"key": "user", "path": "user"}]}}]),
    )
    .await;
    vols?;
    let v = dir.path().join("volumes/s");
    assert_eq!(std::fs::read(v.join("tls/key"))?, [0, 1]);
    assert_eq!(mode(&v.join("tls/key")), 0o600);
    assert_eq!(read(&v.join("user")), "admin");
    assert_eq!(mode(&v.join("user")), 0o440);
    Ok(())
}

#[tokio::test]
async fn downward_api_files() -> anyhow::Result<()> {
    let (dir, vols) = prepare(
        &source(),
        json!([{"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o400},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
        ]}}]),
    )
    .await;
    vols?;
    let v = dir.path().join("volumes/info");
    assert_eq!(read(&v.join("labels")), "app=\"web\"");
    assert_eq!(read(&v.join("name")), "web");
    assert_eq!(mode(&v.join("name")), 0o400);
    assert_eq!(read(&v.join("mem")), "64");
    let (_d, bad) = prepare(
        &source(),
        json!([{"name": "info", "downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "spec.nope"}}]}}]),
    )
    .await;
    assert!(matches!(bad, Err(VolumeError::Downward { .. })), "{bad:?}");
    Ok(())
}

/// The volume every pod of the cluster gets injected.
fn kube_api_access() -> Value {
    json!({"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

#[tokio::test]
async fn kube_api_access_projection() -> anyhow::Result<()> {
    let src = source();
    let (dir, vols) = prepare(&src, json!([kube_api_access()])).await;
    let vols = vols?;
    let v = dir.path().join("volumes/kube-api-access-x7k2p");
    assert_eq!(names(&v), ["ca.crt", "namespace", "token"]);
    assert_eq!(read(&v.join("token")), "token-ns-robot-1");
    assert_eq!(read(&v.join("ca.crt")), "-----BEGIN CERTIFICATE-----");
    assert_eq!(read(&v.join("namespace")), "ns");
    for f in ["token", "ca.crt", "namespace"] {
        assert_eq!(mode(&v.join(f)), 0o644, "{f}");
    }
    let requests = src.token_requests.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(
        serde_json::to_value(&requests)?,
        json!([{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
            "spec": {"audiences": [], "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "uid-1"}}}])
    );
    let due = vols.token_refresh_at().expect("a token is held");
    let in_secs = due.duration_since(SystemTime::now())?.as_secs();
    assert!((2870..=2880).contains(&in_secs), "refresh at 80% of 3600s, got {in_secs}");
    Ok(())
}

#[tokio::test]
async fn token_audience_and_default_service_account() -> anyhow::Result<()> {
    let src = source();
    let dir = tempfile::tempdir()?;
    let mut p = pod(
        json!([{"name": "t", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "vault", "path": "vault/token"}}]}}]),
        json!([]),
    );
    if let Some(spec) = p.spec.as_mut() {
        spec.service_account_name = None;
    }
    PodVolumes::prepare(&src, &ctx(&p), dir.path(), MemoryMedium::Disk).await?;
    assert_eq!(read(&dir.path().join("volumes/t/vault/token")), "token-ns-default-1");
    let requests = src.token_requests.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(requests[0].spec.audiences, ["vault"]);
    assert_eq!(requests[0].spec.expiration_seconds, None);
    Ok(())
}

#[tokio::test]
async fn refresh_rewrites_in_place_and_renews_due_tokens() -> anyhow::Result<()> {
    let mut src = source();
    let dir = tempfile::tempdir()?;
    let p = pod(json!([kube_api_access(), {"name": "cfg", "configMap": {"name": "cfg"}}]), json!([]));
    let mut vols = PodVolumes::prepare(&src, &ctx(&p), dir.path(), MemoryMedium::Disk).await?;
    let cfg = dir.path().join("volumes/cfg");
    let dir_inode = std::fs::metadata(&cfg)?.ino();
    let unchanged_inode = std::fs::metadata(cfg.join("b.txt"))?.ino();

    let cm = src.config_maps.get_mut("ns/cfg").expect("fixture");
    cm.data = Some([("a.txt".to_string(), "ALPHA".to_string()), ("b.txt".into(), "beta".into())].into());
    vols.refresh(&src, &ctx(&p)).await?;
    assert_eq!(read(&cfg.join("a.txt")), "ALPHA");
    assert_eq!(std::fs::metadata(&cfg)?.ino(), dir_inode, "same directory, so open preopens see it");
    assert_eq!(std::fs::metadata(cfg.join("b.txt"))?.ino(), unchanged_inode, "unchanged file not rewritten");
    assert_eq!(src.token_requests.lock().map(|r| r.len()).unwrap_or(0), 1, "token not yet due");

    src.config_maps.get_mut("ns/cfg").expect("fixture").data = Some([("c.txt".into(), "c".into())].into());
    src.token_lifetime = Some(0);
    vols.tokens.values_mut().for_each(|t| t.refresh_at = SystemTime::UNIX_EPOCH);
    vols.refresh(&src, &ctx(&p)).await?;
    assert_eq!(names(&cfg), ["c.txt"], "removed keys disappear");
    assert_eq!(read(&dir.path().join("volumes/kube-api-access-x7k2p/token")), "token-ns-robot-2");

    src.config_maps.remove("ns/cfg");
    let err = vols.refresh(&src, &ctx(&p)).await.expect_err("now missing");
    assert!(matches!(err, VolumeError::MissingConfig { .. }));
    assert_eq!(read(&cfg.join("c.txt")), "c", "old files kept when the refresh fails");
    Ok(())
}

#[tokio::test]
async fn each_object_is_read_once_per_prepare() -> anyhow::Result<()> {
    let src = source();
    let (_dir, vols) = prepare(
        &src,
        json!([{"name": "a", "configMap": {"name": "cfg"}}, {"name": "b", "configMap": {"name": "cfg"}},
               {"name": "c", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}}]),
    )
    .await;
    vols?;
    assert_eq!(src.calls(), ["configmap ns/cfg"]);
    Ok(())
}

#[tokio::test]
async fn unsupported_types_name_the_type() {
    let cases = [
        (json!({"persistentVolumeClaim": {"claimName": "pvc"}}), "persistentVolumeClaim"),
        (json!({"nfs": {"server": "s", "path": "/"}}), "nfs"),
        (json!({"csi": {"driver": "d"}}), "csi"),
        (json!({"ephemeral": {}}), "ephemeral"),
        (
            json!({"projected": {"sources": [{"clusterTrustBundle": {"path": "b"}}]}}),
            "projected clusterTrustBundle",
        ),
    ];
    for (mut volume, kind) in cases {
        volume["name"] = json!("data");
        let (_dir, result) = prepare(&source(), json!([volume])).await;
        let err = result.expect_err("unsupported");
        assert!(matches!(&err, VolumeError::Unsupported { kind: k, .. } if k == kind), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("volume \"data\": type {kind} is not supported on wasm32-wasi nodes")
        );
    }
}

#[tokio::test]
async fn invalid_item_paths_are_rejected() {
    let (_dir, result) = prepare(&source(), json!([{"name": "..", "emptyDir": {}}])).await;
    assert!(matches!(result, Err(VolumeError::InvalidPath { .. })), "volume name: {result:?}");
    for path in ["../x", "/etc/x", "a/../../x", ""] {
        let (_dir, result) = prepare(
            &source(),
            json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "a.txt", "path": path}]}}]),
        )
        .await;
        assert!(matches!(result, Err(VolumeError::InvalidPath { .. })), "{path:?}: {result:?}");
    }
}
