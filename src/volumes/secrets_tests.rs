//! Tests of where secrets live and who may read them: owner-only directories and secret
//! files, the kubelet's modes where the pod sets them, and memory-backed volumes on a
//! tmpfs each (where the test may mount, as root in CI), found again after a restart.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use super::tests::{ctx, pod, source};
use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0)
}

async fn prepare_in(dir: &Path, volumes: Value, medium: MemoryMedium) -> Result<PodVolumes, VolumeError> {
    let p = pod(volumes, json!([]));
    PodVolumes::prepare(&source(), &ctx(&p), dir, medium).await
}

fn token_volume(default_mode: Option<i32>) -> Value {
    let mut v = json!({"name": "token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "cfg", "items": [{"key": "a.txt", "path": "ca.crt"}]}},
    ]}});
    if let Some(m) = default_mode {
        v["projected"]["defaultMode"] = json!(m);
    }
    v
}

#[tokio::test]
async fn secret_files_are_owner_only_unless_the_pod_sets_a_mode() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    prepare_in(
        dir.path(),
        json!([
            {"name": "s", "secret": {"secretName": "sec", "items": [{"key": "key", "path": "tls/key"},
                {"key": "user", "path": "user", "mode": 0o440}]}},
            {"name": "s2", "secret": {"secretName": "sec", "defaultMode": 0o644}},
            token_volume(None),
            {"name": "plain", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}},
            {"name": "cfg", "configMap": {"name": "cfg"}},
        ]),
        MemoryMedium::Disk,
    )
    .await?;
    let v = dir.path().join("volumes");
    assert_eq!(mode(&v.join("s/tls/key")), 0o600, "no defaultMode: owner-only");
    assert_eq!(mode(&v.join("s/user")), 0o440, "an item's mode");
    assert_eq!(mode(&v.join("s2/user")), 0o644, "the volume's defaultMode, as the kubelet");
    assert_eq!(mode(&v.join("token/token")), 0o600, "a token source makes the volume secret");
    assert_eq!(mode(&v.join("token/ca.crt")), 0o600);
    assert_eq!(mode(&v.join("plain/a.txt")), 0o644, "no secret in it: the kubelet's default");
    assert_eq!(mode(&v.join("cfg/a.txt")), 0o644);

    let dir = tempfile::tempdir()?;
    prepare_in(dir.path(), json!([token_volume(Some(0o644))]), MemoryMedium::Disk).await?;
    assert_eq!(mode(&dir.path().join("volumes/token/token")), 0o644, "kube-api-access sets 0644");
    Ok(())
}

#[tokio::test]
async fn the_pods_directories_are_owner_only() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let pod_dir = data.path().join("pods/uid-1");
    // As the pod's journal makes it, before the volumes.
    std::fs::create_dir_all(&pod_dir)?;
    std::fs::set_permissions(&pod_dir, std::fs::Permissions::from_mode(0o755))?;
    let host = tempfile::tempdir()?;
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755))?;
    let p = pod(
        json!([{"name": "s", "secret": {"secretName": "sec", "items": [{"key": "key", "path": "tls/key"}]}},
               {"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": host.path()}}]),
        json!([{"name": "e", "mountPath": "/e", "subPath": "a/b"}, {"name": "h", "mountPath": "/h", "subPath": "x"}]),
    );
    let vols = PodVolumes::prepare(&source(), &ctx(&p), &pod_dir, MemoryMedium::Disk).await?;
    open_all(&vols.mounts(&p.spec.as_ref().expect("spec").containers[0])?)?;
    for d in ["", "volumes", "volumes/s", "volumes/s/tls", "volumes/e", "volumes/e/a", "volumes/e/a/b"] {
        assert_eq!(mode(&pod_dir.join(d)), 0o700, "{d:?}");
    }
    assert_eq!(mode(&host.path().join("x")), 0o755, "a hostPath subPath takes its volume's mode");
    Ok(())
}

/// Where the test may mount: each memory-backed volume is a tmpfs of its own, sized as
/// `memory.rs` says, owner-only; configMap and disk emptyDir volumes are not; a second
/// preparation (an agent restarted) finds the mounts and makes none twice; the removal of
/// the pod's directory unmounts them. Where it may not, the same volumes are on disk.
#[tokio::test]
async fn memory_backed_volumes_are_a_tmpfs_each_where_the_agent_may_mount() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let medium = tmpfs::probe(data.path());
    let pod_dir = data.path().join("pods/uid-1");
    let volumes = json!([
        {"name": "s", "secret": {"secretName": "sec"}},
        token_volume(Some(0o644)),
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "2Mi"}},
        {"name": "disk", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
    ]);
    prepare_in(&pod_dir, volumes.clone(), medium).await?;
    let v = pod_dir.join("volumes");
    let mounted = |name: &str| tmpfs::is_mount_point(&v.join(name)).unwrap_or(false);
    for name in ["s", "token", "info", "mem"] {
        assert_eq!(mounted(name), medium == MemoryMedium::Tmpfs, "{name}");
        assert_eq!(mode(&v.join(name)), 0o700, "{name}");
    }
    assert!(!mounted("disk") && !mounted("cfg"), "not memory-backed");
    assert_eq!(std::fs::read_to_string(v.join("s/user"))?, "admin");
    assert_eq!(mode(&v.join("s/user")), 0o600);
    if medium == MemoryMedium::Disk {
        return Ok(());
    }
    let size = |name: &str| {
        let fs = rustix::fs::statfs(v.join(name)).expect("statfs");
        #[allow(clippy::useless_conversion)]
        let (blocks, bsize) = (u64::from(fs.f_blocks), u64::try_from(fs.f_bsize).unwrap_or(0));
        blocks * bsize
    };
    assert_eq!(size("mem"), 2 << 20, "the sizeLimit");
    assert_eq!(size("s"), crate::config::MEMORY_VOLUME_SIZE);

    prepare_in(&pod_dir, volumes, medium).await?;
    let table = mountinfo::read()?;
    let below = mountinfo::below(&table, &pod_dir.canonicalize()?);
    assert_eq!(below.len(), 4, "mounted once each: {below:?}");
    assert!(table.iter().filter(|m| below.contains(&m.path)).all(|m| m.fs_type == "tmpfs"));

    remove_pod_dir(&pod_dir)?;
    assert!(!pod_dir.exists());
    let table = mountinfo::read()?;
    assert!(below.iter().all(|p| !table.iter().any(|m| &m.path == p)), "all unmounted");
    Ok(())
}
