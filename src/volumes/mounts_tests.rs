//! Tests of emptyDir/hostPath preparation and of container mounts (subPath, readOnly).

use serde_json::{Value, json};

use super::tests::{ctx, pod, source};
use super::*;

struct Setup {
    dir: tempfile::TempDir,
    host: tempfile::TempDir,
    pod: k8s_openapi::api::core::v1::Pod,
}

impl Setup {
    fn new(volumes: impl FnOnce(&Path) -> Value, mounts: Value) -> Setup {
        let host = tempfile::tempdir().expect("temp dir");
        let pod = pod(volumes(host.path()), mounts);
        Setup { dir: tempfile::tempdir().expect("temp dir"), host, pod }
    }

    async fn prepare(&self) -> Result<PodVolumes, VolumeError> {
        PodVolumes::prepare(&source(), &ctx(&self.pod), self.dir.path(), MemoryMedium::Disk).await
    }

    /// Prepares the volumes, then opens the first container's mounts as a start does.
    async fn mounts(&self) -> Result<Vec<Seen>, VolumeError> {
        let vols = self.prepare().await?;
        let mounts = vols.mounts(&self.pod.spec.as_ref().expect("spec").containers[0])?;
        Ok(open_all(&mounts)?.into_iter().map(Seen::from).collect())
    }

    fn vol(&self, name: &str) -> PathBuf {
        self.dir.path().join("volumes").join(name).canonicalize().expect("volume dir exists")
    }
}

/// An opened mount as the guest gets it: which directory (by inode), where, how.
#[derive(Debug, PartialEq)]
struct Seen {
    ino: u64,
    guest: String,
    read_only: bool,
}

impl From<OpenMount> for Seen {
    fn from(m: OpenMount) -> Seen {
        Seen { ino: rustix::fs::fstat(&m.dir).expect("fstat").st_ino, guest: m.guest, read_only: m.read_only }
    }
}

fn mount(host: PathBuf, guest: &str, read_only: bool) -> Seen {
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&host).expect("mounted dir exists"));
    Seen { ino, guest: guest.into(), read_only }
}

/// The first container's mounts, opened: `Err` is the first that failed.
fn open_first(vols: &PodVolumes, pod: &k8s_openapi::api::core::v1::Pod) -> Result<(), VolumeError> {
    open_all(&vols.mounts(&pod.spec.as_ref().expect("spec").containers[0])?).map(drop)
}

#[tokio::test]
async fn mounts_honour_read_only_and_force_it_for_config_volumes() -> anyhow::Result<()> {
    let s = Setup::new(
        |h| {
            json!([{"name": "scratch", "emptyDir": {"medium": "Memory"}}, {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "host", "hostPath": {"path": h}}, {"name": "plain"}])
        },
        json!([
            {"name": "scratch", "mountPath": "/tmp"},
            {"name": "scratch", "mountPath": "/ro", "readOnly": true},
            {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": false},
            {"name": "host", "mountPath": "/host"},
            {"name": "plain", "mountPath": "/plain"},
        ]),
    );
    let got = s.mounts().await?;
    assert_eq!(
        got,
        [
            mount(s.vol("scratch"), "/tmp", false),
            mount(s.vol("scratch"), "/ro", true),
            mount(s.vol("cfg"), "/etc/cfg", true),
            mount(s.host.path().canonicalize()?, "/host", false),
            mount(s.vol("plain"), "/plain", false),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn sub_paths_are_created_in_writable_volumes() -> anyhow::Result<()> {
    let s = Setup::new(
        |h| json!([{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": h, "type": "Directory"}}]),
        json!([{"name": "e", "mountPath": "/data", "subPath": "a/b"}, {"name": "h", "mountPath": "/h", "subPath": "./x"}]),
    );
    let got = s.mounts().await?;
    assert_eq!(got[0], mount(s.vol("e").join("a/b"), "/data", false));
    assert_eq!(got[1], mount(s.host.path().canonicalize()?.join("x"), "/h", false));
    assert!(s.host.path().join("x").is_dir());
    Ok(())
}

#[tokio::test]
async fn sub_path_errors() -> anyhow::Result<()> {
    type Check = fn(&VolumeError) -> bool;
    let cases: [(&str, &str, Check); 7] = [
        ("e", "../escape", |e| matches!(e, VolumeError::InvalidSubPath { .. })),
        ("e", "/abs", |e| matches!(e, VolumeError::InvalidSubPath { .. })),
        ("e", "link", |e| matches!(e, VolumeError::InvalidSubPath { .. })),
        ("e", "file", |e| matches!(e, VolumeError::SubPathNotDirectory { .. })),
        ("cfg", "a.txt", |e| matches!(e, VolumeError::SubPathNotDirectory { .. })),
        ("cfg", "missing", |e| matches!(e, VolumeError::SubPathMissing { .. })),
        ("nope", "", |e| matches!(e, VolumeError::NoSuchVolume { .. })),
    ];
    for (volume, sub_path, check) in cases {
        let s = Setup::new(
            |_| json!([{"name": "e", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]),
            json!([{"name": volume, "mountPath": "/m", "subPath": sub_path}]),
        );
        let vols = s.prepare().await?;
        let e = s.vol("e");
        std::fs::write(e.join("file"), "x")?;
        std::os::unix::fs::symlink(s.host.path(), e.join("link"))?;
        let err = open_first(&vols, &s.pod).expect_err(sub_path);
        assert!(check(&err), "{volume}/{sub_path}: {err:?}");
    }
    Ok(())
}

#[tokio::test]
async fn sub_path_error_messages() -> anyhow::Result<()> {
    let s = Setup::new(
        |_| json!([{"name": "cfg", "configMap": {"name": "cfg"}}]),
        json!([{"name": "cfg", "mountPath": "/m", "subPath": "a.txt"}]),
    );
    let err = s.mounts().await.expect_err("file subPath");
    assert_eq!(
        err.to_string(),
        "container \"c\": subPath \"a.txt\" of volume \"cfg\" is not a directory; \
         wasm32-wasi can only mount directories"
    );
    let s = Setup::new(|_| json!([]), json!([{"name": "data", "mountPath": "/m"}]));
    let err = s.mounts().await.expect_err("no volume");
    assert_eq!(err.to_string(), "container \"c\": volumeMount \"data\" names no volume of the pod");
    let s = Setup::new(
        |_| json!([{"name": "e", "emptyDir": {}}]),
        json!([{"name": "e", "mountPath": "/m", "subPathExpr": "$(POD)"}]),
    );
    assert!(matches!(s.mounts().await, Err(VolumeError::SubPathExpr { .. })));
    Ok(())
}

#[tokio::test]
async fn host_path_types_are_checked_like_the_kubelet() -> anyhow::Result<()> {
    let host = tempfile::tempdir()?;
    let file = host.path().join("file");
    std::fs::write(&file, "x")?;
    let missing = host.path().join("missing");
    let cases = [
        (&missing, "Directory", Some("is not a directory")),
        (&file, "Directory", Some("is not a directory")),
        (&missing, "File", Some("is not a file")),
        (&host.path().to_path_buf(), "File", Some("is not a file")),
        (&file, "Socket", Some("is not a socket file")),
        (&file, "CharDevice", Some("is not a character device")),
        (&file, "BlockDevice", Some("is not a block device")),
        (&file, "Weird", Some("unknown hostPath type \"Weird\"")),
        (&file, "File", None),
        (&missing, "", None),
    ];
    for (path, type_, want) in cases {
        let dir = tempfile::tempdir()?;
        let p = pod(json!([{"name": "h", "hostPath": {"path": path, "type": type_}}]), json!([]));
        let result = PodVolumes::prepare(&source(), &ctx(&p), dir.path(), MemoryMedium::Disk).await;
        match (result, want) {
            (Ok(_), None) => {}
            (Err(e @ VolumeError::HostPath { .. }), Some(want)) => {
                assert!(e.to_string().starts_with("MountVolume.SetUp failed for volume \"h\" : "), "{e}");
                assert!(e.to_string().ends_with(want), "{type_} {}: {e}", path.display());
            }
            (other, _) => panic!("{type_} {}: {other:?}", path.display()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn host_path_or_create_types_create_the_path() -> anyhow::Result<()> {
    let host = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let new_dir = host.path().join("new/dir");
    let new_file = host.path().join("new.txt");
    let p = pod(
        json!([{"name": "d", "hostPath": {"path": new_dir, "type": "DirectoryOrCreate"}},
               {"name": "f", "hostPath": {"path": new_file, "type": "FileOrCreate"}}]),
        json!([{"name": "d", "mountPath": "/d"}, {"name": "f", "mountPath": "/f"}]),
    );
    let vols = PodVolumes::prepare(&source(), &ctx(&p), dir.path(), MemoryMedium::Disk).await?;
    assert!(new_dir.is_dir());
    assert_eq!(std::fs::read(&new_file)?, b"");
    let err = open_first(&vols, &p).expect_err("a file cannot be a preopen");
    assert!(matches!(err, VolumeError::NotDirectory { .. }), "{err:?}");
    assert!(!dir.path().join("volumes/d").exists(), "hostPath data is not copied under the pod");
    Ok(())
}

#[tokio::test]
async fn empty_dir_keeps_contents_across_prepares() -> anyhow::Result<()> {
    let s = Setup::new(|_| json!([{"name": "e", "emptyDir": {}}]), json!([]));
    s.prepare().await?;
    std::fs::write(s.vol("e").join("state"), "1")?;
    s.prepare().await?;
    assert_eq!(std::fs::read_to_string(s.vol("e").join("state"))?, "1");
    Ok(())
}

/// The host escape of issue 12: a guest that mounts the whole volume replaces the subPath
/// another mount uses with a symlink that climbs out. The next start (or exec) must refuse
/// it, not preopen the host directory, and must not create anything through it.
#[tokio::test]
async fn a_sub_path_replaced_by_a_symlink_out_is_refused_at_the_next_open() -> anyhow::Result<()> {
    let s = Setup::new(
        |_| json!([{"name": "e", "emptyDir": {}}]),
        json!([{"name": "e", "mountPath": "/all"}, {"name": "e", "mountPath": "/sub", "subPath": "work/dir"}]),
    );
    let vols = s.prepare().await?;
    let mounts = vols.mounts(&s.pod.spec.as_ref().expect("spec").containers[0])?;
    let first = open_all(&mounts)?;
    assert_eq!(Seen::from(open_all(&mounts)?.remove(1)), mount(s.vol("e").join("work/dir"), "/sub", false));
    drop(first);
    // What the guest does through /all: `work` becomes a symlink out of the volume.
    let outside = s.host.path();
    std::fs::remove_dir_all(s.vol("e").join("work"))?;
    let climb = "../".repeat(40);
    std::os::unix::fs::symlink(format!("{climb}{}", outside.display()), s.vol("e").join("work"))?;
    let err = open_all(&mounts).expect_err("the symlink leads out");
    assert!(matches!(err, VolumeError::InvalidSubPath { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(outside)?.count(), 0, "no subPath was created outside the volume");
    // An absolute symlink too.
    std::fs::remove_file(s.vol("e").join("work"))?;
    std::os::unix::fs::symlink(outside, s.vol("e").join("work"))?;
    assert!(matches!(open_all(&mounts), Err(VolumeError::InvalidSubPath { .. })));
    assert_eq!(std::fs::read_dir(outside)?.count(), 0);
    Ok(())
}
