//! CPU: a quota holds a spinning guest to its share, a request buys a larger share of a
//! contended guest thread.

use std::time::{Duration, Instant};

use krustlet_wasi_provider::{Cgroup, CgroupSpec, RunSpec, Runtime};

use crate::common::{load, loop_module};

/// The CPU tests measure shares of the machine's cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one spinning guest per group at once for `secs`; returns each group's share of
/// one core over that time.
async fn spin(runtime: &Runtime, groups: &[&Cgroup], secs: u64) -> Vec<f64> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let artifact = load(runtime, &loop_module());
    let handles: Vec<_> =
        groups.iter().map(|g| runtime.run(&artifact, RunSpec::new().cgroup((*g).clone())).unwrap()).collect();
    // Let the first burst (one period's quota) pass before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = groups.iter().map(|g| g.cpu_nanos()).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = started.elapsed().as_nanos() as f64;
    let shares = groups.iter().zip(before).map(|(g, b)| (g.cpu_nanos() - b) as f64 / wall).collect();
    drop(handles);
    shares
}

/// A behaviour check with a wide bound, not a speed goal (bench/cpu.sh prints the number).
/// The guest threads run at nice +10: on a machine saturated by other processes even an
/// unlimited guest may get little more than the limit (measured: 23% vs 18% at a load
/// average of 8 on 2 cores), so the limit is shown to bind by the guest having slept off
/// debt, and compared with an unlimited guest only when the machine had room for one.
#[tokio::test]
async fn a_cpu_limit_holds_a_spinning_guest_near_its_quota() {
    let runtime = Runtime::builder().guest_threads(2).build().unwrap();
    let limited = runtime.cgroup(CgroupSpec { cpu_limit_millis: Some(200), ..CgroupSpec::default() });
    let free = runtime.cgroup(CgroupSpec::default());
    let shares = spin(&runtime, &[&limited, &free], 3).await;
    let (share, free_share) = (shares[0], shares[1]);
    let throttled = Duration::from_nanos(limited.cpu_throttled_nanos());
    eprintln!(
        "spinning for 3 s: limited to 200m {:.1}% of a core (asleep {throttled:?}), unlimited {:.1}%",
        share * 100.0,
        free_share * 100.0
    );
    assert!(share > 0.05 && share < 0.35, "200m used {:.1}% of a core", share * 100.0);
    assert!(throttled > Duration::ZERO, "the limit never bound");
    assert_eq!(free.cpu_throttled_nanos(), 0);
    if free_share > 0.5 {
        assert!(
            free_share > 1.5 * share,
            "unlimited {:.1}% vs limited {:.1}%",
            free_share * 100.0,
            share * 100.0
        );
    }
}

/// A quota on the pod holds all its containers together.
#[tokio::test]
async fn a_parents_quota_holds_its_children_together() {
    let runtime = Runtime::builder().guest_threads(2).build().unwrap();
    let pod = runtime.cgroup(CgroupSpec { cpu_limit_millis: Some(200), ..CgroupSpec::default() });
    let (a, b) = (pod.child(CgroupSpec::default()), pod.child(CgroupSpec::default()));
    spin(&runtime, &[&a, &b], 2).await;
    let share = pod.cpu_nanos() as f64 / Duration::from_millis(2300).as_nanos() as f64;
    assert!(share < 0.35, "two containers of a 200m pod used {:.1}% of a core", share * 100.0);
}

/// On one contended guest thread, a guest requesting 1000m runs 10 ticks between yields
/// and one requesting 100m runs 1: the larger request gets the larger share.
#[tokio::test]
async fn a_larger_request_gets_more_of_a_contended_guest_thread() {
    let runtime = Runtime::builder().guest_threads(1).build().unwrap();
    let request = |millis| CgroupSpec { cpu_request_millis: Some(millis), ..CgroupSpec::default() };
    let (big, small) = (runtime.cgroup(request(1000)), runtime.cgroup(request(100)));
    let shares = spin(&runtime, &[&big, &small], 2).await;
    eprintln!("one guest thread: 1000m got {:.1}%, 100m {:.1}%", shares[0] * 100.0, shares[1] * 100.0);
    assert!(shares[0] > 2.0 * shares[1], "1000m {:.1}% vs 100m {:.1}%", shares[0] * 100.0, shares[1] * 100.0);
}
