//! Tests of `logs` without a live run: finding the pod, the container and the run, and the
//! output of the crate's reader (rotated files, partial records, `--tail`).

use std::time::Duration;

use serde_json::json;

use super::testdata::*;
use super::{CliError, LogsArgs, Result, logs};

fn args(pod: &str) -> LogsArgs {
    LogsArgs { pod: pod.into(), ..LogsArgs::default() }
}

async fn run(data: &DataDir, args: LogsArgs) -> Result<String> {
    let mut out = Vec::new();
    // Nothing here is live: even with --follow it must end at once.
    let done = tokio::time::timeout(Duration::from_secs(10), logs(data.path(), &args, &mut out)).await;
    done.expect("logs did not end")?;
    Ok(String::from_utf8(out).unwrap())
}

/// A finished single-container pod `job` (uid `u1`) whose run 0 has three files.
fn job(data: &DataDir) {
    let done = container("main", 0, terminated(0, "Completed", STARTED), json!({}));
    data.pod("default", "job", "u1", status("Succeeded", vec![done], vec![]));
    let path = data.log_path("default", "job", "u1", "main", 0);
    let rotated = |k: u64| path.with_file_name(format!("0.log.{k}"));
    append_lines(&rotated(1), &["one"]);
    append_records(&rotated(2), &[("stdout", "F", "two"), ("stderr", "P", "par"), ("stderr", "F", "tial")]);
    append_lines(&path, &["three"]);
}

#[tokio::test]
async fn prints_the_run_across_its_rotated_files_and_tails_it() {
    let data = DataDir::new();
    job(&data);
    assert_eq!(run(&data, args("job")).await.unwrap(), "one\ntwo\npartial\nthree\n");
    let tail = LogsArgs { tail: Some(2), ..args("job") };
    assert_eq!(run(&data, tail).await.unwrap(), "partial\nthree\n");
    let tail = LogsArgs { tail: Some(0), ..args("job") };
    assert_eq!(run(&data, tail).await.unwrap(), "");
    // A finished run is printed and the command ends, with or without --follow.
    let follow = LogsArgs { follow: true, ..args("job") };
    assert_eq!(run(&data, follow).await.unwrap(), "one\ntwo\npartial\nthree\n");
}

#[tokio::test]
async fn the_current_run_is_the_highest_and_previous_the_one_before() {
    let data = DataDir::new();
    let crashing = container("main", 3, waiting("CrashLoopBackOff"), terminated(1, "Error", STARTED));
    data.pod("default", "crash", "u1", status("Running", vec![crashing], vec![]));
    for run in [0, 1, 2, 10] {
        append_lines(&data.log_path("default", "crash", "u1", "main", run), &[&format!("run {run}")]);
    }
    assert_eq!(run(&data, args("crash")).await.unwrap(), "run 10\n");
    let previous = LogsArgs { previous: true, ..args("crash") };
    assert_eq!(run(&data, previous).await.unwrap(), "run 2\n");

    job(&data);
    let err = run(&data, LogsArgs { previous: true, ..args("job") }).await.unwrap_err();
    assert_eq!(err.to_string(), "previous terminated container \"main\" in pod \"job\" not found");
}

#[tokio::test]
async fn a_pod_with_several_containers_needs_one_named() {
    let data = DataDir::new();
    let done = |name: &str| container(name, 0, terminated(0, "Completed", STARTED), json!({}));
    data.pod(
        "default",
        "multi",
        "u1",
        status("Succeeded", vec![done("web"), done("side")], vec![done("setup")]),
    );
    for c in ["web", "side", "setup"] {
        append_lines(&data.log_path("default", "multi", "u1", c, 0), &[&format!("from {c}")]);
    }
    let err = run(&data, args("multi")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "a container name must be specified for pod multi, choose one of: [web side] \
         or one of the init containers: [setup]"
    );
    let named = |c: &str| LogsArgs { container: Some(c.into()), ..args("multi") };
    assert_eq!(run(&data, named("side")).await.unwrap(), "from side\n");
    assert_eq!(run(&data, named("setup")).await.unwrap(), "from setup\n");
    let err = run(&data, named("nope")).await.unwrap_err();
    assert_eq!(err.to_string(), "container nope is not valid for pod multi");
}

#[tokio::test]
async fn pods_are_found_by_name_and_namespace() {
    let data = DataDir::new();
    let err = run(&data, args("ghost")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("pod \"ghost\" not found in {}", data.path().display()));

    for (ns, uid) in [("default", "u1"), ("apps", "u2")] {
        let done = container("main", 0, terminated(0, "Completed", STARTED), json!({}));
        data.pod(ns, "twin", uid, status("Succeeded", vec![done], vec![]));
        append_lines(&data.log_path(ns, "twin", uid, "main", 0), &[&format!("in {ns}")]);
    }
    let err = run(&data, args("twin")).await.unwrap_err();
    assert!(matches!(err, CliError::AmbiguousPod { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "pod \"twin\" exists in several namespaces (apps, default): choose one with -n"
    );
    let in_ns = |ns: &str| LogsArgs { namespace: Some(ns.into()), ..args("twin") };
    assert_eq!(run(&data, in_ns("apps")).await.unwrap(), "in apps\n");
    assert_eq!(run(&data, in_ns("default")).await.unwrap(), "in default\n");
    let err = run(&data, in_ns("other")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("pod \"twin\" not found in namespace \"other\" in {}", data.path().display())
    );
}

#[tokio::test]
async fn a_container_without_a_log_says_why() {
    let data = DataDir::new();
    let pulling = container("main", 0, waiting("ErrImagePull"), json!({}));
    data.pod("default", "pull", "u1", status("Pending", vec![pulling], vec![]));
    let err = run(&data, LogsArgs { follow: true, ..args("pull") }).await.unwrap_err();
    assert_eq!(err.to_string(), "container \"main\" in pod \"pull\" is waiting to start: ErrImagePull");

    let done = container("main", 0, terminated(0, "Completed", STARTED), json!({}));
    data.pod("default", "gone", "u2", status("Succeeded", vec![done], vec![]));
    let err = run(&data, args("gone")).await.unwrap_err();
    assert!(matches!(err, CliError::NoLogs { .. }), "{err:?}");
    assert!(err.to_string().starts_with("container \"main\" in pod \"gone\" has no logs in "), "{err}");
}

#[tokio::test]
async fn a_pod_not_reported_in_detail_goes_by_its_log_directories() {
    let data = DataDir::new();
    data.pod("default", "early", "u1", json!({"phase": "Pending"}));
    append_lines(&data.log_path("default", "early", "u1", "only", 0), &["hi"]);
    assert_eq!(run(&data, args("early")).await.unwrap(), "hi\n");
}
