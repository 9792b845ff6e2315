//! The pod's state machine, step by step: every transition of the kubelet's pod lifecycle
//! (pull back-off, quick retries of references not yet readable, crash-loop back-off, init
//! containers, deletion in each state, agent restarts) as inputs in and effects out. No
//! runtime, no cluster, no sleeps: time is an `Instant` the test moves.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Machine, PodState, Settings};
use crate::pods::status::{State, phase};
use crate::pods::worker::effects::{Effect, Failure, Input, Prepared, Slot};
use crate::runtime::Exit;

fn pod_json(policy: &str, init: &[&str], main: &[&str]) -> Value {
    let containers =
        |names: &[&str]| -> Vec<Value> { names.iter().map(|n| json!({"name": n, "image": "img"})).collect() };
    json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
        "spec": {"restartPolicy": policy, "initContainers": containers(init), "containers": containers(main)},
    })
}

fn pod(policy: &str, init: &[&str], main: &[&str]) -> Pod {
    serde_json::from_value(pod_json(policy, init, main)).unwrap()
}

/// A machine and the time it lives in.
struct T {
    m: Machine,
    now: Instant,
}

impl T {
    fn new(pod: Pod) -> (T, Vec<Effect>) {
        let settings = Settings {
            runtime_name: "fake",
            node_ip: "10.0.0.1".into(),
            sync_frequency: Duration::from_secs(60),
            agent_oom_killed: false,
        };
        T::with(pod, settings)
    }

    fn with(pod: Pod, settings: Settings) -> (T, Vec<Effect>) {
        let mut m = Machine::new(Arc::new(pod), settings, "2026-01-01T00:00:00Z".into());
        let now = Instant::now();
        let fx = m.begin(now, None);
        (T { m, now }, fx)
    }

    /// A new pod past its first report (made after half a second while it is prepared).
    fn reported(pod: Pod) -> T {
        let (mut t, _) = T::new(pod);
        assert!(published(&t.timer().1).is_some());
        t.step(Input::Published { ok: true });
        t
    }

    /// A pod prepared and its first runs started, past the first status report.
    fn running(pod: Pod) -> T {
        let (mut t, _) = T::new(pod);
        let fx = t.step(prepared());
        for (slot, run) in starts(&fx) {
            t.step(Input::Started { slot, run });
        }
        while published(&t.step(Input::Published { ok: true })).is_some() {}
        t
    }

    fn step(&mut self, input: Input) -> Vec<Effect> {
        self.m.step(input, self.now)
    }

    /// Moves time to the machine's next deadline and steps the timer; returns how long
    /// that was, and the effects.
    fn timer(&mut self) -> (Duration, Vec<Effect>) {
        let at = self.m.next_deadline().expect("a deadline");
        let waited = at.saturating_duration_since(self.now);
        self.now = at.max(self.now);
        (waited, self.step(Input::Timer))
    }

    fn exit(&mut self, slot: Slot, run: u32, code: i32) -> Vec<Effect> {
        self.step(Input::Exited { slot, run, exit: Exit::from_code(code, None) })
    }

    fn main_state(&self) -> &State {
        &self.m.view.main[0].state
    }
}

fn prepared() -> Input {
    Input::Prepared(Ok(Prepared {
        image_ids: [("img".into(), "img@sha256:1".into())].into_iter().collect(),
        pulls: vec![("img".into(), 0.5)],
        token_due: None,
        watch_disk: false,
        refreshes: false,
    }))
}

fn starts(fx: &[Effect]) -> Vec<(Slot, u32)> {
    fx.iter()
        .filter_map(|e| if let Effect::Start { slot, run } = e { Some((*slot, *run)) } else { None })
        .collect()
}

fn reasons(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| if let Effect::Event { reason, .. } = e { Some(*reason) } else { None })
        .collect()
}

fn published(fx: &[Effect]) -> Option<&Value> {
    fx.iter().find_map(|e| if let Effect::Publish { status } = e { Some(status) } else { None })
}

fn waiting_reason(state: &State) -> &str {
    match state {
        State::Waiting { reason, .. } => reason,
        _ => "",
    }
}

#[test]
fn a_new_pod_prepares_then_starts_its_containers_and_reports_each_change() {
    let (mut t, fx) = T::new(pod("Always", &[], &["a", "b"]));
    assert_eq!(fx, [Effect::Prepare], "not reported while it may start at once");
    let fx = t.step(prepared());
    assert_eq!(reasons(&fx), ["Pulled"]);
    assert_eq!(starts(&fx), [(Slot::Main(0), 0), (Slot::Main(1), 0)]);
    assert!(published(&fx).is_none(), "not reported while its containers start");
    let fx = t.step(Input::Started { slot: Slot::Main(0), run: 0 });
    assert_eq!(reasons(&fx), ["Created", "Started"]);
    assert!(published(&fx).is_none(), "one container is still being started");
    let fx = t.step(Input::Started { slot: Slot::Main(1), run: 0 });
    let status = published(&fx).expect("reported once, Running");
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["containerStatuses"][0]["containerID"], "fake://u-1/a/0");
    assert_eq!(status["containerStatuses"][0]["imageID"], "img@sha256:1");
    assert!(matches!(t.m.state, PodState::Running { .. }));
    let fx = t.step(Input::Exited { slot: Slot::Main(0), run: 0, exit: Exit::from_code(1, None) });
    assert!(published(&fx).is_none(), "one report in flight at a time");
    let fx = t.step(Input::Published { ok: true });
    assert!(published(&fx).is_some(), "the changes since are reported");
    assert!(published(&t.step(Input::Published { ok: true })).is_none(), "nothing changed");
}

#[test]
fn a_start_still_in_flight_when_the_first_report_is_due_is_reported_pending() {
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    t.now += Duration::from_millis(300);
    let fx = t.step(prepared());
    assert_eq!(starts(&fx), [(Slot::Main(0), 0)]);
    assert!(published(&fx).is_none());
    let (waited, fx) = t.timer();
    assert_eq!(waited, Duration::from_millis(200), "half a second after the pod was seen");
    assert_eq!(published(&fx).expect("reported while starting")["phase"], "Pending");
    t.step(Input::Published { ok: true });
    assert_eq!(
        published(&t.step(Input::Started { slot: Slot::Main(0), run: 0 })).unwrap()["phase"],
        "Running"
    );
}

#[test]
fn a_slow_preparation_is_reported_after_half_a_second() {
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    let (waited, fx) = t.timer();
    assert_eq!(waited, Duration::from_millis(500));
    assert_eq!(
        published(&fx).expect("reported")["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
}

#[test]
fn a_failed_pull_shows_err_image_pull_then_image_pull_back_off_and_backs_off_10s_doubling() {
    let mut t = T::reported(pod("Always", &[], &["a"]));
    let pull = || {
        Input::Prepared(Err(Failure::Pull {
            image: "img".into(),
            reason: "ErrImagePull",
            message: "not found".into(),
        }))
    };
    let fx = t.step(pull());
    assert_eq!(reasons(&fx), ["Failed", "Failed"]);
    assert_eq!(waiting_reason(t.main_state()), "ErrImagePull");
    let (waited, _) = t.timer();
    assert_eq!(waited, Duration::from_secs(2));
    assert_eq!(waiting_reason(t.main_state()), "ImagePullBackOff");
    assert_eq!(t.timer().1, [Effect::Prepare]);
    let mut gaps = vec![];
    for _ in 0..6 {
        let failed_at = t.now;
        t.step(pull());
        while !t.timer().1.contains(&Effect::Prepare) {}
        gaps.push((t.now - failed_at).as_secs());
    }
    assert_eq!(gaps, [20, 40, 80, 160, 300, 300]);
    let fx = t.step(prepared());
    assert_eq!(starts(&fx), [(Slot::Main(0), 0)]);
}

#[test]
fn an_image_that_does_not_link_is_a_create_container_error_not_a_failed_pull() {
    let mut t = T::reported(pod("Always", &[], &["a"]));
    let message = "link error in artifact sha256:ab: unknown import: `wasi_snapshot_preview1::epoll_oneoff`";
    let fx = t.step(Input::Prepared(Err(Failure::Pull {
        image: "img".into(),
        reason: "CreateContainerError",
        message: message.into(),
    })));
    let texts: Vec<&str> = fx
        .iter()
        .filter_map(|e| if let Effect::Event { message, .. } = e { Some(message.as_str()) } else { None })
        .collect();
    assert_eq!(texts, [format!("Error: {message}").as_str(), "Error: CreateContainerError"]);
    match t.main_state() {
        State::Waiting { reason, message: Some(shown), .. } => {
            assert_eq!(
                (reason.as_str(), shown.as_str()),
                ("CreateContainerError", format!("Error: {message}").as_str())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reference_not_yet_readable_is_retried_within_milliseconds_and_shown_only_if_it_persists() {
    let mut t = T::reported(pod("Always", &[], &["a"]));
    let config = || Input::Prepared(Err(Failure::Config { message: "configmap \"c\" not found".into() }));
    let mut waits = vec![];
    let mut first_shown = None;
    for n in 0..10 {
        let fx = t.step(config());
        if first_shown.is_none() && reasons(&fx).contains(&"Failed") {
            first_shown = Some(n);
            assert_eq!(waiting_reason(t.main_state()), "CreateContainerConfigError");
        }
        let (waited, fx) = t.timer();
        assert!(fx.contains(&Effect::Prepare));
        waits.push(waited.as_millis());
    }
    assert_eq!(waits, [20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10000]);
    // 20+40+...+640 = 1260 ms after the first failure: the 7th failure is the first shown.
    assert_eq!(first_shown, Some(6));
    let mut t = T::reported(pod("Always", &[], &["a"]));
    let fx = t.step(config());
    assert!(reasons(&fx).is_empty() && published(&fx).is_none(), "a race that clears stays quiet");
    t.timer();
    assert_eq!(starts(&t.step(prepared())), [(Slot::Main(0), 0)]);
}

#[test]
fn a_pod_that_cannot_run_here_fails() {
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    let fx =
        t.step(Input::Prepared(Err(Failure::Fatal { reason: "UnsupportedVolume", message: "nfs".into() })));
    assert_eq!(reasons(&fx), ["Failed"]);
    assert_eq!(t.m.state, PodState::Done { adopted: false });
    assert_eq!(phase(&t.m.view), "Failed");
}

#[test]
fn crash_loop_back_off_restarts_at_once_then_10s_doubling_and_counts_restarts_when_they_start() {
    let mut t = T::running(pod("OnFailure", &[], &["a"]));
    let fx = t.exit(Slot::Main(0), 0, 1);
    assert_eq!(starts(&fx), [(Slot::Main(0), 1)], "the first restart is immediate");
    t.step(Input::Started { slot: Slot::Main(0), run: 1 });
    assert_eq!(t.m.view.main[0].restart_count, 1);
    let mut gaps = vec![];
    for run in 1..6 {
        let fx = t.exit(Slot::Main(0), run, 1);
        assert_eq!(reasons(&fx), ["BackOff"]);
        assert_eq!(waiting_reason(t.main_state()), "CrashLoopBackOff");
        assert_eq!(t.m.view.main[0].restart_count, run, "not counted before the restart starts");
        let exited_at = t.now;
        let fx = loop {
            let (_, fx) = t.timer(); // volume refreshes come in between
            if !starts(&fx).is_empty() {
                break fx;
            }
        };
        assert_eq!(starts(&fx), [(Slot::Main(0), run + 1)]);
        t.step(Input::Started { slot: Slot::Main(0), run: run + 1 });
        gaps.push((t.now - exited_at).as_secs());
    }
    assert_eq!(gaps, [10, 20, 40, 80, 160]);
    assert_eq!(
        t.m.view.main[0].last.as_ref().map(|s| matches!(s, State::Terminated { exit_code: 1, .. })),
        Some(true)
    );
    // A run of ten minutes resets it.
    t.now += Duration::from_secs(600);
    assert_eq!(starts(&t.exit(Slot::Main(0), 6, 1)), [(Slot::Main(0), 7)]);
}

#[test]
fn restart_policies_decide_what_runs_again() {
    let mut t = T::running(pod("OnFailure", &[], &["a"]));
    assert!(starts(&t.exit(Slot::Main(0), 0, 0)).is_empty());
    assert_eq!(t.m.state, PodState::Done { adopted: false });
    assert_eq!(phase(&t.m.view), "Succeeded");
    let mut t = T::running(pod("Never", &[], &["a"]));
    assert!(starts(&t.exit(Slot::Main(0), 0, 3)).is_empty());
    assert_eq!(phase(&t.m.view), "Failed");
    let mut t = T::running(pod("Always", &[], &["a"]));
    assert_eq!(starts(&t.exit(Slot::Main(0), 0, 0)), [(Slot::Main(0), 1)]);
}

#[test]
fn a_stale_exit_is_ignored() {
    let mut t = T::running(pod("Always", &[], &["a"]));
    assert!(t.exit(Slot::Main(0), 7, 1).is_empty());
    assert!(matches!(t.main_state(), State::Running { .. }));
}

#[test]
fn init_containers_run_one_at_a_time_before_the_main_containers() {
    let (mut t, _) = T::new(pod("Always", &["i1", "i2"], &["a", "b"]));
    assert_eq!(starts(&t.step(prepared())), [(Slot::Init(0), 0)]);
    assert_eq!(waiting_reason(t.main_state()), "PodInitializing");
    t.step(Input::Started { slot: Slot::Init(0), run: 0 });
    assert_eq!(starts(&t.exit(Slot::Init(0), 0, 0)), [(Slot::Init(1), 0)]);
    t.step(Input::Started { slot: Slot::Init(1), run: 0 });
    // A failed init container runs again (Always); the main containers wait.
    assert_eq!(starts(&t.exit(Slot::Init(1), 0, 2)), [(Slot::Init(1), 1)]);
    t.step(Input::Started { slot: Slot::Init(1), run: 1 });
    assert_eq!(starts(&t.exit(Slot::Init(1), 1, 0)), [(Slot::Main(0), 0), (Slot::Main(1), 0)]);
    assert!(matches!(t.m.state, PodState::Running { .. }));
}

#[test]
fn a_failed_init_container_under_never_fails_the_pod() {
    let (mut t, _) = T::new(pod("Never", &["i1"], &["a"]));
    t.step(prepared());
    t.step(Input::Started { slot: Slot::Init(0), run: 0 });
    assert!(starts(&t.exit(Slot::Init(0), 0, 5)).is_empty());
    assert_eq!(t.m.state, PodState::Done { adopted: false });
    assert_eq!(phase(&t.m.view), "Failed");
}

#[test]
fn a_container_that_cannot_be_created_backs_off_small_for_config_and_as_a_crash_loop_otherwise() {
    let mut t = T::running(pod("Always", &[], &["a"]));
    t.exit(Slot::Main(0), 0, 0);
    let failed = |reason| Input::StartFailed { slot: Slot::Main(0), run: 1, reason, message: "x".into() };
    let fx = t.step(failed("CreateContainerConfigError"));
    assert!(reasons(&fx).is_empty(), "quiet while it may be a race");
    assert_eq!(t.timer().0, Duration::from_millis(20));
    let mut shown = false;
    for _ in 0..8 {
        shown |= reasons(&t.step(failed("CreateContainerConfigError"))) == ["Failed"];
        t.timer();
    }
    assert!(shown, "shown once it persists");
    assert_eq!(waiting_reason(t.main_state()), "CreateContainerConfigError");
    t.step(failed("CreateContainerError"));
    assert_eq!(waiting_reason(t.main_state()), "CreateContainerError");
    // The crash-loop back-off, whose first step (the immediate restart) is spent.
    assert_eq!(t.timer().0, Duration::from_secs(20));
}

#[test]
fn an_exit_is_acted_on_while_the_api_has_not_answered() {
    let mut t = T::running(pod("Always", &[], &["a"]));
    t.step(Input::Started { slot: Slot::Main(0), run: 0 });
    let fx = t.exit(Slot::Main(0), 0, 1);
    assert!(published(&fx).is_some(), "a report is now in flight");
    // The report never comes back; the restart and the next exit happen regardless.
    t.step(Input::Started { slot: Slot::Main(0), run: 1 });
    assert_eq!(reasons(&t.exit(Slot::Main(0), 1, 1)), ["BackOff"]);
    // And a delete: nothing runs (it is in back-off), so the pod goes at once.
    assert_eq!(t.step(Input::Pod(deleting(&t.m))), [Effect::Delete]);
}

/// The machine's pod with a deletion timestamp, as the API shows a pod being deleted.
fn deleting(m: &Machine) -> Arc<Pod> {
    let mut p = (*m.pod).clone();
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    Arc::new(p)
}

mod end;
mod recover;
mod upkeep;
