//! The machine's upkeep of a living pod, step by step: status reports and their retries,
//! a mirror made anew, volume refreshes (and none without volumes to rewrite), emptyDir
//! eviction, probes.

use super::*;

#[test]
fn a_failed_report_is_retried_after_a_second() {
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    t.timer();
    assert!(published(&t.step(Input::Published { ok: false })).is_none());
    let (waited, fx) = t.timer();
    assert_eq!(waited, Duration::from_secs(1));
    assert!(published(&fx).is_some());
}

#[test]
fn a_static_pod_reports_anew_a_second_after_its_mirror_went() {
    let mut t = T::running(pod("Always", &[], &["a"]));
    assert!(published(&t.step(Input::MirrorGone)).is_none());
    let (waited, fx) = t.timer();
    assert_eq!(waited, Duration::from_secs(1));
    assert!(published(&fx).is_some());
}

#[test]
fn volumes_are_refreshed_every_sync_period_or_when_a_token_falls_due() {
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    let token_due = Some(Duration::from_secs(5));
    let fx = t.step(Input::Prepared(Ok(Prepared { token_due, refreshes: true, ..Prepared::default() })));
    t.step(Input::Started { slot: starts(&fx)[0].0, run: 0 });
    let (waited, fx) = t.timer();
    assert_eq!((waited, fx.contains(&Effect::RefreshVolumes)), (Duration::from_secs(5), true));
    t.step(Input::Refreshed { token_due: None });
    let (waited, fx) = t.timer();
    assert!(fx.contains(&Effect::RefreshVolumes));
    assert!(waited >= Duration::from_secs(60) && waited <= Duration::from_secs(66), "{waited:?}");
}

#[test]
fn a_running_pod_without_volumes_to_rewrite_has_no_wake_up_of_its_own() {
    let t = T::running(pod("Always", &[], &["a"]));
    assert_eq!(t.m.next_deadline(), None, "idle: nothing due until something happens to it");
}

#[test]
fn an_empty_dir_over_its_size_limit_evicts_the_pod_and_nothing_restarts() {
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    let fx = t.step(Input::Prepared(Ok(Prepared { watch_disk: true, ..Prepared::default() })));
    t.step(Input::Started { slot: starts(&fx)[0].0, run: 0 });
    let (waited, fx) = t.timer();
    assert_eq!((waited, fx.contains(&Effect::CheckDisk)), (Duration::from_secs(10), true));
    t.step(Input::DiskChecked { over: None });
    while published(&t.step(Input::Published { ok: true })).is_some() {}
    assert_eq!(t.timer().0, Duration::from_secs(10), "measured again a period later");
    let over = crate::volumes::OverLimit { volume: "cache".into(), used: 3 << 20, limit: 1 << 20 };
    let fx = t.step(Input::DiskChecked { over: Some(over) });
    assert_eq!(reasons(&fx), ["Evicted", "Killing"]);
    assert!(fx.contains(&Effect::Kill { slot: Slot::Main(0) }), "no grace period");
    assert!(published(&fx).is_none(), "Failed is reported once the container has stopped");
    let fx = t.exit(Slot::Main(0), 0, 137);
    assert!(starts(&fx).is_empty(), "an evicted pod does not restart");
    let status = published(&fx).expect("reported");
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["reason"], "Evicted");
    assert_eq!(status["message"], "Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\". ");
    assert!(status["containerStatuses"][0]["state"]["terminated"].is_object(), "{status:#}");
}

#[test]
fn probes_set_readiness_and_a_failed_liveness_probe_restarts_the_container() {
    use crate::pods::probes::{ProbeEvent, ProbeKind};
    let mut json = pod_json("Always", &[], &["web"]);
    json["spec"]["containers"][0]["startupProbe"] = json!({"tcpSocket": {"port": 80}});
    json["spec"]["containers"][0]["readinessProbe"] = json!({"tcpSocket": {"port": 80}});
    json["spec"]["containers"][0]["livenessProbe"] = json!({"tcpSocket": {"port": 80}});
    let mut t = T::running(serde_json::from_value(json).unwrap());
    let ready = |t: &T| {
        let s = crate::pods::status::status_json(&t.m.view, "");
        (
            s["containerStatuses"][0]["started"].clone(),
            s["containerStatuses"][0]["ready"].clone(),
            s["conditions"][1]["status"].clone(),
        )
    };
    assert_eq!(ready(&t), (json!(false), json!(false), json!("False")), "running, not started");
    let probe = |event| Input::Probe { slot: Slot::Main(0), run: 0, event };
    t.step(probe(ProbeEvent::Ready(true)));
    assert_eq!(ready(&t).1, json!(false), "readiness waits for startup");
    t.step(probe(ProbeEvent::Started));
    assert_eq!(ready(&t), (json!(true), json!(false), json!("False")));
    t.step(probe(ProbeEvent::Ready(true)));
    assert_eq!(ready(&t), (json!(true), json!(true), json!("True")));
    t.step(probe(ProbeEvent::Ready(false)));
    assert_eq!(ready(&t).1, json!(false), "readiness never restarts");

    let fx = t.step(probe(ProbeEvent::Failed { kind: ProbeKind::Liveness, message: "refused".into() }));
    assert!(fx.contains(&Effect::Stop { slot: Slot::Main(0) }));
    assert!(fx.iter().any(|e| matches!(e, Effect::Event { reason: "Killing", message, .. }
        if message == "Container web failed liveness probe, will be restarted")));
    let fx = t.exit(Slot::Main(0), 0, 137);
    assert_eq!(starts(&fx), [(Slot::Main(0), 1)], "restarted under restartPolicy Always");
    // A verdict about the old run changes nothing.
    assert!(t.step(Input::Probe { slot: Slot::Main(0), run: 0, event: ProbeEvent::Started }).is_empty());
}
