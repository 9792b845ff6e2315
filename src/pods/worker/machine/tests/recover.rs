//! The machine after an agent restart, step by step: a pod goes on from the status an
//! earlier agent reported, and one whose step crashed the agent again and again fails.

use super::*;

/// A pod as an earlier agent left it in the API.
fn stored(policy: &str, phase: &str, state: Value, restarts: i32) -> Pod {
    let mut p = pod_json(policy, &[], &["a"]);
    p["status"] = json!({"phase": phase, "containerStatuses": [
        {"name": "a", "image": "img", "imageID": "", "ready": false, "restartCount": restarts, "state": state}
    ]});
    serde_json::from_value(p).unwrap()
}

#[test]
fn after_an_agent_restart_a_pod_goes_on_where_it_was() {
    // A run that was going is recorded as lost (137) and restarted as a restart.
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    let (mut t, fx) = T::new(stored("Always", "Running", running.clone(), 2));
    assert_eq!(fx[0], Effect::Prepare);
    assert_eq!(starts(&t.step(prepared())), [(Slot::Main(0), 3)]);
    let last = t.m.view.main[0].last.clone();
    assert!(matches!(last, Some(State::Terminated { exit_code: 137, .. })), "{last:?}");
    // Under Never, it is not run again.
    let (t, fx) = T::new(stored("Never", "Running", running, 0));
    assert!(!fx.contains(&Effect::Prepare));
    assert_eq!(t.m.state, PodState::Done { adopted: false });
    // Finished pods are left as they are: nothing runs, nothing is reported.
    let done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    let (t, fx) = T::new(stored("Never", "Succeeded", done, 0));
    assert!(fx.is_empty());
    assert_eq!(t.m.state, PodState::Done { adopted: true });
    // A pod deleted while the agent was down is deleted at once.
    let mut p = pod("Always", &[], &["a"]);
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    assert_eq!(T::new(p).1, [Effect::Delete]);
}

#[test]
fn a_pod_whose_step_crashed_the_agent_three_times_fails_instead_of_running_it_again() {
    let settings = || Settings {
        runtime_name: "fake",
        node_ip: "10.0.0.1".into(),
        sync_frequency: Duration::from_secs(60),
        agent_oom_killed: false,
    };
    let step = |attempts| crate::pods::worker::journal::Entry { step: "prepare".into(), attempts };
    let mut m = Machine::new(Arc::new(pod("Always", &[], &["a"])), settings(), "t".into());
    let fx = m.begin(Instant::now(), Some(step(2)));
    assert_eq!(fx[0], Effect::Prepare, "twice may be chance: it is tried again");
    let mut m = Machine::new(Arc::new(pod("Always", &[], &["a"])), settings(), "t".into());
    let fx = m.begin(Instant::now(), Some(step(3)));
    assert_eq!(reasons(&fx), ["NodeAgentCrashed"]);
    assert!(!fx.contains(&Effect::Prepare));
    assert_eq!(m.state, PodState::Done { adopted: false });
    let status = published(&fx).expect("reported");
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["reason"], "NodeAgentCrashed");
    assert!(
        status["message"].as_str().unwrap().contains("stopped 3 times during this pod's step \"prepare\"")
    );
}

#[test]
fn runs_lost_when_the_kernel_oom_killed_the_agent_are_charged_to_their_pods() {
    let settings = Settings {
        runtime_name: "fake",
        node_ip: "10.0.0.1".into(),
        sync_frequency: Duration::from_secs(60),
        agent_oom_killed: true,
    };
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    let (mut t, fx) = T::with(stored("Always", "Running", running.clone(), 2), settings.clone());
    assert_eq!(reasons(&fx), ["BackOff"]);
    assert!(fx.contains(&Effect::Prepare));
    match &t.m.view.main[0].last {
        Some(State::Terminated { exit_code: 137, reason, message: Some(message), .. }) => {
            assert_eq!(reason, "OOMKilled");
            assert!(message.contains("node agent was killed for lack of memory"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(waiting_reason(t.main_state()), "CrashLoopBackOff");
    // Prepared: it waits out its back-off instead of starting at once...
    assert!(starts(&t.step(prepared())).is_empty());
    let (waited, fx) = t.timer();
    assert_eq!(waited, Duration::from_secs(10));
    // ...then starts as a restart: the count goes up.
    assert_eq!(starts(&fx), [(Slot::Main(0), 3)]);
    // A container that had already ended is not charged; one under Never is not restarted.
    let done = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
    let (t, _) = T::with(stored("Always", "Running", done, 0), settings.clone());
    assert!(matches!(t.m.view.main[0].last, Some(State::Terminated { exit_code: 1, .. })));
    let (t, _) = T::with(stored("Never", "Running", running, 0), settings);
    match t.main_state() {
        State::Terminated { reason, .. } => assert_eq!(reason, "OOMKilled"),
        other => panic!("{other:?}"),
    }
}
