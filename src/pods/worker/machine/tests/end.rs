//! The end of a pod, step by step: deletion in each state, a pod gone from the API (and a
//! static pod's mirror), the agent's shutdown.

use super::*;

#[test]
fn deletion_in_each_state_stops_what_runs_then_deletes_then_forgets() {
    // Preparing: the pull is cancelled; nothing runs, so the delete follows at once.
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    let fx = t.step(Input::Pod(deleting(&t.m)));
    assert_eq!(fx, [Effect::CancelPrepare, Effect::Delete]);
    assert_eq!(t.step(Input::Deleted), [Effect::Forget]);
    assert!(t.m.is_finished());

    // Retrying after a failed pull.
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    t.step(Input::Prepared(Err(Failure::Pull {
        image: "img".into(),
        reason: "ErrImagePull",
        message: "x".into(),
    })));
    assert_eq!(t.step(Input::Pod(deleting(&t.m))), [Effect::Delete]);

    // Starting: the start in flight is stopped; the delete waits for its exit.
    let (mut t, _) = T::new(pod("Always", &[], &["a"]));
    t.step(prepared());
    let fx = t.step(Input::Pod(deleting(&t.m)));
    assert_eq!(fx[0], Effect::Stop { slot: Slot::Main(0) });
    assert_eq!(reasons(&fx), ["Killing"]);
    assert_eq!(
        t.step(Input::Started { slot: Slot::Main(0), run: 0 }),
        [Effect::Stop { slot: Slot::Main(0) }]
    );
    assert_eq!(t.exit(Slot::Main(0), 0, 137), [Effect::Delete]);

    // Init and Running: every run is stopped (Killing), nothing restarts, then the delete.
    let (mut t, _) = T::new(pod("Always", &["i"], &["a"]));
    t.step(prepared());
    t.step(Input::Started { slot: Slot::Init(0), run: 0 });
    let fx = t.step(Input::Pod(deleting(&t.m)));
    assert_eq!((fx[0].clone(), reasons(&fx)), (Effect::Stop { slot: Slot::Init(0) }, vec!["Killing"]));
    assert_eq!(t.exit(Slot::Init(0), 0, 0), [Effect::Delete], "the main containers never start");
    let mut t = T::running(pod("Always", &[], &["a", "b"]));
    let fx = t.step(Input::Pod(deleting(&t.m)));
    assert_eq!(reasons(&fx), ["Killing", "Killing"]);
    assert!(t.exit(Slot::Main(0), 0, 137).is_empty());
    assert_eq!(t.exit(Slot::Main(1), 0, 137), [Effect::Delete]);
    assert!(matches!(t.main_state(), State::Terminated { exit_code: 137, .. }));

    // Done: deleted at once.
    let mut t = T::running(pod("Never", &[], &["a"]));
    t.exit(Slot::Main(0), 0, 0);
    t.step(Input::Published { ok: true });
    assert_eq!(t.step(Input::Pod(deleting(&t.m))), [Effect::Delete]);
}

#[test]
fn a_pod_gone_from_the_api_is_forgotten_and_a_static_pods_mirror_deleted() {
    let mut t = T::running(pod("Always", &[], &["a"]));
    assert_eq!(t.step(Input::Gone), [Effect::Stop { slot: Slot::Main(0) }, Effect::Forget]);
    assert!(t.m.is_finished());
    let mut p = pod("Always", &[], &["a"]);
    p.metadata.annotations =
        Some([(crate::pods::status::report::SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
    let mut t = T::running(p);
    assert_eq!(t.step(Input::Gone), [Effect::Stop { slot: Slot::Main(0) }, Effect::Delete]);
    assert_eq!(t.step(Input::Deleted), [Effect::Forget]);
}

#[test]
fn shutdown_stops_the_runs_and_keeps_the_files() {
    let mut t = T::running(pod("Always", &[], &["a"]));
    assert_eq!(t.step(Input::Shutdown), [Effect::Stop { slot: Slot::Main(0) }]);
    assert!(t.m.is_finished());
}
