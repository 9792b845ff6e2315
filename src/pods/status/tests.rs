//! Unit tests of the kubelet's phase rules and the status shape in `mod.rs`.

use super::*;

const T: &str = "2026-01-01T00:00:00Z";

fn term(code: i32) -> State {
    State::Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message: None,
        started_at: T.into(),
        finished_at: T.into(),
    }
}

fn view(policy: &str, states: Vec<(State, Option<State>)>) -> PodView {
    PodView {
        init: vec![],
        main: states
            .into_iter()
            .enumerate()
            .map(|(i, (state, last))| ContainerView {
                state,
                last,
                ..ContainerView::new(&format!("c{i}"), "img")
            })
            .collect(),
        restart_policy: policy.into(),
        init_done: true,
        failure: None,
        start_time: T.into(),
        node_ip: "127.0.0.1".into(),
    }
}

fn running() -> State {
    State::Running { started_at: T.into() }
}

#[test]
fn phases_follow_the_kubelet() {
    let creating = State::waiting("ContainerCreating", None);
    let backoff = State::waiting("CrashLoopBackOff", None);
    assert_eq!(phase(&view("Always", vec![(creating.clone(), None)])), "Pending");
    assert_eq!(phase(&view("Always", vec![(running(), None), (creating, None)])), "Pending");
    assert_eq!(phase(&view("Always", vec![(running(), None)])), "Running");
    assert_eq!(phase(&view("Never", vec![(term(0), None), (term(0), None)])), "Succeeded");
    assert_eq!(phase(&view("Never", vec![(term(0), None), (term(42), None)])), "Failed");
    assert_eq!(phase(&view("OnFailure", vec![(term(0), None)])), "Succeeded");
    assert_eq!(phase(&view("OnFailure", vec![(backoff.clone(), Some(term(1)))])), "Running");
    assert_eq!(phase(&view("Always", vec![(backoff, Some(term(0)))])), "Running");
    assert_eq!(phase(&view("Always", vec![(term(0), None)])), "Running");
}

#[test]
fn init_containers_gate_the_pod() {
    let mut v = view("Never", vec![(State::waiting("PodInitializing", None), None)]);
    v.init = vec![ContainerView { state: running(), ..ContainerView::new("init", "img") }];
    v.init_done = false;
    assert_eq!(phase(&v), "Pending");
    v.init[0].state = term(3);
    assert_eq!(phase(&v), "Failed");
    v.restart_policy = "OnFailure".into();
    assert_eq!(phase(&v), "Pending");
    let s = status_json(&v, T);
    assert_eq!(s["conditions"][0]["status"], "False");
    assert_eq!(s["conditions"][0]["message"], "containers with incomplete status: [init]");
}

#[test]
fn status_carries_exit_codes_ids_and_conditions() {
    let mut v = view("Never", vec![(term(42), None)]);
    v.main[0].container_id = "wasmtime://u/c0/0".into();
    v.main[0].image_id = "reg/app@sha256:ab".into();
    let s = status_json(&v, T);
    assert_eq!(s["phase"], "Failed");
    assert_eq!(s["hostIP"], "127.0.0.1");
    assert_eq!(s["podIP"], "127.0.0.1");
    let c = &s["containerStatuses"][0];
    assert_eq!(c["state"]["terminated"]["exitCode"], 42);
    assert_eq!(c["state"]["terminated"]["reason"], "Error");
    assert_eq!(c["state"]["terminated"]["containerID"], "wasmtime://u/c0/0");
    assert_eq!(c["imageID"], "reg/app@sha256:ab");
    assert_eq!(c["ready"], false);
    let ready = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["reason"], "PodCompleted");

    let r = status_json(&view("Always", vec![(running(), Some(term(1)))]), T);
    assert_eq!(r["containerStatuses"][0]["ready"], true);
    assert_eq!(r["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    assert!(r["conditions"].as_array().unwrap().iter().all(|c| c["status"] == "True"));
}

#[test]
fn a_pod_level_failure_wins() {
    let mut v = view("Always", vec![(running(), None)]);
    v.failure = Some(("UnsupportedVolume".into(), "volume \"d\" is not supported".into()));
    let s = status_json(&v, T);
    assert_eq!((s["phase"].as_str(), s["reason"].as_str()), (Some("Failed"), Some("UnsupportedVolume")));
}
