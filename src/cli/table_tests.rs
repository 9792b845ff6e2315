//! Tests of `pods`: the STATUS/READY/RESTARTS rules, AGE, the table layout, and reading
//! the data dir (empty, malformed, a status the agent itself produced).

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::state::{Status, read_pods};
use super::table::{Row, age, human_duration, render};
use super::testdata::*;
use super::{CliError, pods};

fn row(status: serde_json::Value) -> Row {
    Row::of(&serde_json::from_value::<Status>(status).unwrap())
}

fn table(data: &DataDir, now: &str) -> String {
    render(&read_pods(data.path()).unwrap(), now.parse().unwrap())
}

#[test]
fn durations_read_as_kubectl_prints_them() {
    let cases = [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 30 * 60, "5h30m"),
        (20 * 3600, "20h"),
        (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (30 * 86400, "30d"),
        (2 * 365 * 86400 + 30 * 86400, "2y30d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (seconds, text) in cases {
        assert_eq!(human_duration(seconds), text, "{seconds} s");
    }
    let t = |s: &str| s.parse::<Timestamp>().unwrap();
    assert_eq!(age(t("2024-01-01T00:00:00.9Z"), t("2024-01-01T00:00:05.5Z")), "4s");
}

#[test]
fn status_shows_the_reason_kubectl_shows() {
    let run = || container("a", 0, running(), json!({}));
    let cases = [
        (status("Running", vec![run()], vec![]), "Running", 1),
        (
            status("Pending", vec![container("a", 0, waiting("ContainerCreating"), json!({}))], vec![]),
            "ContainerCreating",
            0,
        ),
        (
            status("Pending", vec![container("a", 0, waiting("ErrImagePull"), json!({}))], vec![]),
            "ErrImagePull",
            0,
        ),
        (
            status(
                "Running",
                vec![container("a", 3, waiting("CrashLoopBackOff"), terminated(1, "Error", STARTED))],
                vec![],
            ),
            "CrashLoopBackOff",
            0,
        ),
        (
            status(
                "Succeeded",
                vec![container("a", 0, terminated(0, "Completed", STARTED), json!({}))],
                vec![],
            ),
            "Completed",
            0,
        ),
        (
            status("Failed", vec![container("a", 0, terminated(2, "Error", STARTED), json!({}))], vec![]),
            "Error",
            0,
        ),
        (
            status(
                "Failed",
                vec![container("a", 0, terminated(137, "OOMKilled", STARTED), json!({}))],
                vec![],
            ),
            "OOMKilled",
            0,
        ),
        (
            status("Failed", vec![container("a", 0, terminated(3, "", STARTED), json!({}))], vec![]),
            "ExitCode:3",
            0,
        ),
        // One done, one still running: Running while the pod is Ready, else NotReady.
        (
            status(
                "Running",
                vec![run(), container("b", 0, terminated(0, "Completed", STARTED), json!({}))],
                vec![],
            ),
            "Running",
            1,
        ),
        (
            status(
                "Pending",
                vec![run(), container("b", 0, terminated(0, "Completed", STARTED), json!({}))],
                vec![],
            ),
            "NotReady",
            1,
        ),
        // Init containers: the first that has not succeeded decides.
        (
            status(
                "Pending",
                vec![container("a", 0, waiting("PodInitializing"), json!({}))],
                vec![
                    container("i1", 0, terminated(0, "Completed", STARTED), json!({})),
                    container("i2", 0, running(), json!({})),
                ],
            ),
            "Init:1/2",
            0,
        ),
        (
            status(
                "Failed",
                vec![container("a", 0, waiting("PodInitializing"), json!({}))],
                vec![container("i", 0, terminated(1, "Error", STARTED), json!({}))],
            ),
            "Init:Error",
            0,
        ),
        (
            status(
                "Pending",
                vec![container("a", 0, waiting("PodInitializing"), json!({}))],
                vec![container("i", 2, waiting("CrashLoopBackOff"), json!({}))],
            ),
            "Init:CrashLoopBackOff",
            0,
        ),
    ];
    for (i, (status, reason, ready)) in cases.into_iter().enumerate() {
        let row = row(status);
        assert_eq!((row.reason.as_str(), row.ready), (reason, ready), "case {i}");
    }
    // The pod's own reason wins over its phase.
    let mut s = status("Failed", vec![], vec![]);
    s["reason"] = json!("UnexpectedAdmissionError");
    assert_eq!(row(s).reason, "UnexpectedAdmissionError");
}

#[test]
fn restarts_add_up_and_say_when_the_last_one_was() {
    let r = row(status(
        "Running",
        vec![
            container("a", 2, running(), terminated(1, "Error", "2024-05-01T10:05:00Z")),
            container("b", 1, running(), terminated(1, "Error", "2024-05-01T10:07:00Z")),
        ],
        vec![],
    ));
    assert_eq!(
        (r.restarts, r.last_restart.as_deref(), r.ready, r.total),
        (3, Some("2024-05-01T10:07:00Z"), 2, 2)
    );
}

#[test]
fn the_table_lines_up_as_kubectl_get_pods() {
    let data = DataDir::new();
    data.pod(
        "default",
        "hello",
        "u1",
        status("Running", vec![container("hello", 0, running(), json!({}))], vec![]),
    );
    let crashing =
        container("main", 5, waiting("CrashLoopBackOff"), terminated(1, "Error", "2024-05-01T12:58:00Z"));
    data.pod("apps", "a-rather-long-name", "u2", status("Running", vec![crashing], vec![]));
    let done = container("main", 0, terminated(0, "Completed", "2024-05-01T10:00:02Z"), json!({}));
    data.pod("default", "done", "u3", status("Succeeded", vec![done], vec![]));
    // A pod not reported yet has no status.json: not listed.
    std::fs::create_dir_all(data.path().join("pods/u4")).unwrap();
    let expected = "\
NAMESPACE   NAME                 READY   STATUS             RESTARTS     AGE
apps        a-rather-long-name   0/1     CrashLoopBackOff   5 (2m ago)   3h
default     done                 0/1     Completed          0            3h
default     hello                1/1     Running            0            3h
";
    assert_eq!(table(&data, "2024-05-01T13:00:00Z"), expected);
    let mut out = Vec::new();
    pods(data.path(), &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().starts_with("NAMESPACE   NAME"));
}

#[test]
fn no_pods_is_said_so_and_a_broken_status_file_is_named() {
    let data = DataDir::new();
    let mut out = Vec::new();
    pods(data.path(), &mut out).unwrap();
    assert_eq!(out, b"No pods found.\n");
    std::fs::create_dir_all(data.path().join("pods")).unwrap();
    let mut out = Vec::new();
    pods(data.path(), &mut out).unwrap();
    assert_eq!(out, b"No pods found.\n");
    let path = data.status_path("bad");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"namespace\": ").unwrap();
    let err = pods(data.path(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CliError::ParseStatus { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn statuses_the_agent_writes_are_read() {
    use crate::pods::status::{ContainerView, PodView, State, status_json};
    let mut crashing = ContainerView::new("main", "registry/app:v1");
    crashing.restart_count = 2;
    crashing.last = Some(State::Terminated {
        exit_code: 1,
        reason: "Error".into(),
        message: None,
        started_at: STARTED.into(),
        finished_at: "2024-05-01T10:00:30Z".into(),
    });
    crashing.state = State::waiting("CrashLoopBackOff", Some("back-off 20s".into()));
    let mut side = ContainerView::new("side", "registry/side:v1");
    side.state = State::Running { started_at: STARTED.into() };
    let view = PodView {
        init: vec![],
        main: vec![crashing, side],
        restart_policy: "Always".into(),
        init_done: true,
        failure: None,
        start_time: STARTED.into(),
        node_ip: "127.0.0.1".into(),
    };
    let data = DataDir::new();
    data.pod("default", "app", "u1", status_json(&view, "2024-05-01T10:00:40Z"));
    let lines: Vec<String> = table(&data, "2024-05-01T10:01:00Z").lines().map(String::from).collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["default", "app", "1/2", "CrashLoopBackOff", "2", "(30s", "ago)", "60s"]
    );
}
