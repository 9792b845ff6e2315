//! Preopened directories: readable, read-only enforced inside the guest, read-write works.

use crate::common;

use common::{Capture, fixture, load, runtime, wait_for};
use krustlet_wasi_provider::{Error, ExitStatus, Preopen, RunSpec};

/// Runs `fs.wat` against a fresh directory holding `in.txt`; returns the status,
/// stdout, stderr and the directory.
async fn probe(read_only: bool) -> (ExitStatus, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "input data\n").unwrap();
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("fs.wat"));
    let preopen = if read_only {
        Preopen::read_only(dir.path(), "/data")
    } else {
        Preopen::read_write(dir.path(), "/data")
    };
    let (out, err) = (Capture::default(), Capture::default());
    let spec = RunSpec::new().preopen(preopen).stdout(out.clone()).stderr(err.clone());
    let mut handle = runtime.run(&artifact, spec).unwrap();
    let status = wait_for(&mut handle, 10).await;
    (status, out.text(), err.text(), dir)
}

#[tokio::test]
async fn read_only_preopen_is_readable_but_not_writable() {
    let (status, out, err, dir) = probe(true).await;
    assert_eq!(out, "input data\n", "the guest reads the file");
    // Both write steps failed inside the guest, each reporting an errno.
    assert_eq!(status, ExitStatus::Exited(2), "stderr: {err}");
    assert!(err.contains("create errno "), "stderr: {err}");
    assert!(err.contains("truncate errno "), "stderr: {err}");
    assert!(!err.contains("errno 00"), "stderr: {err}");
    assert!(!dir.path().join("out.txt").exists());
    let kept = std::fs::read_to_string(dir.path().join("in.txt")).unwrap();
    assert_eq!(kept, "input data\n");
    eprintln!("read-only write attempts: {}", err.trim().replace('\n', "; "));
}

#[tokio::test]
async fn read_write_preopen_allows_create_and_truncate() {
    let (status, out, err, dir) = probe(false).await;
    assert_eq!(out, "input data\n");
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {err}");
    let written = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(written, "written\n");
    let truncated = std::fs::read_to_string(dir.path().join("in.txt")).unwrap();
    assert_eq!(truncated, "");
}

#[tokio::test]
async fn missing_host_directory_is_a_preopen_error() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("fs.wat"));
    let spec = RunSpec::new().preopen(Preopen::read_only("/no/such/dir/anywhere", "/data"));
    let err = runtime.run(&artifact, spec).unwrap_err();
    assert!(matches!(err, Error::Preopen { ref guest, .. } if guest == "/data"), "{err:?}");
}

#[tokio::test]
async fn without_a_preopen_the_guest_sees_no_files() {
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("fs.wat"));
    let mut handle = runtime.run(&artifact, RunSpec::new()).unwrap();
    // Step 1 (open in.txt on fd 3) fails: there is no fd 3.
    assert_eq!(wait_for(&mut handle, 10).await, ExitStatus::Exited(120));
}

#[tokio::test]
async fn an_opened_directory_is_preopened_whatever_its_path_names_later() {
    use std::os::fd::OwnedFd;
    let t = tempfile::tempdir().unwrap();
    let (dir, moved, decoy) = (t.path().join("dir"), t.path().join("moved"), t.path().join("decoy"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("in.txt"), "the opened one\n").unwrap();
    std::fs::create_dir(&decoy).unwrap();
    std::fs::write(decoy.join("in.txt"), "the decoy\n").unwrap();
    let handle: OwnedFd = std::fs::File::open(&dir).unwrap().into();
    // The path now names another directory, through a symlink.
    std::fs::rename(&dir, &moved).unwrap();
    std::os::unix::fs::symlink(&decoy, &dir).unwrap();
    let runtime = runtime();
    let artifact = load(&runtime, &fixture("fs.wat"));
    let out = Capture::default();
    let spec = RunSpec::new().preopen(Preopen::opened(handle, "/data", false)).stdout(out.clone());
    let mut run = runtime.run(&artifact, spec).unwrap();
    assert_eq!(wait_for(&mut run, 10).await, ExitStatus::Exited(0));
    assert_eq!(out.text(), "the opened one\n");
    assert_eq!(std::fs::read_to_string(moved.join("out.txt")).unwrap(), "written\n");
    assert!(!decoy.join("out.txt").exists(), "nothing reached the directory the path names now");
}
