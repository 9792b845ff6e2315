//! Memory: one limit for every run and instance of a group, the node's budget above all,
//! each refusal named, and everything given back when the guests go.

use std::time::Duration;

use krustlet_wasi_provider::{CgroupSpec, ExitStatus, RunSpec, Runtime};

use super::{hold_module, until_memory};
use crate::common::http::{get, hello, serve};
use crate::common::{grow_module, load, runtime, wait_for};

const MIB: u64 = 1 << 20;

fn limited(bytes: u64) -> CgroupSpec {
    CgroupSpec { memory_limit: Some(bytes), ..CgroupSpec::default() }
}

/// Two runs of one container (a main guest and an exec, say) share its limit: the
/// second cannot grow once the first holds most of it.
#[tokio::test]
async fn two_runs_in_one_group_share_its_limit() {
    let runtime = runtime();
    let pod = runtime.cgroup(CgroupSpec::default());
    let container = pod.child(limited(4 * MIB));
    // 1 + 47 pages: 3 MiB, held for a minute.
    let holder = load(&runtime, &hold_module(47, 60_000_000_000));
    let mut first = runtime.run(&holder, RunSpec::new().cgroup(container.clone())).unwrap();
    until_memory(&container, 3 * MIB).await;
    assert_eq!(pod.memory_bytes(), 3 * MIB, "a parent counts its children's memory");

    // Grows a page at a time, for ever: refused by the group past its last 1 MiB.
    let grower = load(&runtime, &grow_module(1, u32::MAX));
    let mut second = runtime.run(&grower, RunSpec::new().cgroup(container.clone())).unwrap();
    let status = wait_for(&mut second, 10).await;
    let ExitStatus::OutOfMemory { message } = &status else { panic!("{status:?}") };
    assert!(message.contains("memory limit of 4194304 bytes"), "{message}");
    assert_eq!(status.code(), 137);
    assert!(!first.is_finished(), "the first run is not the one refused");
    assert_eq!(container.memory_bytes(), 3 * MIB, "the refused run gave its memory back");

    first.stop();
    assert_eq!(wait_for(&mut first, 10).await, ExitStatus::Stopped);
    assert_eq!((container.memory_bytes(), pod.memory_bytes()), (0, 0));
}

/// The node's budget bounds every guest together, whatever their own limits; a refusal
/// says it was the node's.
#[tokio::test]
async fn the_nodes_budget_refuses_with_its_own_message() {
    let runtime = Runtime::builder().memory_budget(8 * MIB).build().unwrap();
    let holder = load(&runtime, &hold_module(79, 60_000_000_000));
    // No group of its own: a fresh one under the node's root.
    let mut first = runtime.run(&holder, RunSpec::new()).unwrap();
    let pod = runtime.cgroup(limited(64 * MIB));
    let grower = load(&runtime, &grow_module(1, u32::MAX));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = runtime.run(&grower, RunSpec::new().cgroup(pod.clone())).unwrap();
    let status = wait_for(&mut second, 10).await;
    let ExitStatus::OutOfMemory { message } = &status else { panic!("{status:?}") };
    assert!(message.contains("the node's memory budget for guests, 8388608 bytes"), "{message}");
    assert_eq!(pod.memory_bytes(), 0);

    // Once the first is gone, its 5 MiB are the node's again.
    first.stop();
    wait_for(&mut first, 10).await;
    let mut third =
        runtime.run(&load(&runtime, &grow_module(1, 110)), RunSpec::new().cgroup(pod.clone())).unwrap();
    assert_eq!(wait_for(&mut third, 10).await, ExitStatus::Exited(0));
}

/// The pod's limit covers all its request instances together: under 30 concurrent
/// requests that each allocate 20 MiB, a 64 MiB group answers some and refuses the rest
/// with a 503 saying why, keeps serving, and holds nothing once stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_pods_limit_covers_all_its_request_instances() {
    let runtime = runtime();
    let pod = runtime.cgroup(limited(64 * MIB));
    let (mut handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new().cgroup(pod.clone()));
    let requests: Vec<_> =
        (0..30).map(|_| tokio::spawn(async move { get(addr, "/grow?mb=20").await })).collect();
    let (mut ok, mut refused) = (0, 0);
    for request in requests {
        let reply = request.await.unwrap();
        match reply.status {
            200 => ok += 1,
            503 => {
                assert_eq!(reply.body, "the pod's memory limit is reached\n");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    eprintln!("30 requests of 20 MiB under a 64 MiB limit: {ok} answered, {refused} refused");
    assert!(ok >= 1 && refused >= 1, "{ok} answered, {refused} refused");
    let reply = get(addr, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "Hello, World!\n"));
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.over_memory, stats.out_of_memory, stats.trapped), (refused, 0, 0));
    // Every instance was metered: the server's usage is their sum, and the group's too.
    let usage = handle.usage();
    assert!(usage.cpu_nanos() > 0 && pod.cpu_nanos() >= usage.cpu_nanos(), "{pod:?}");
    handle.shutdown(Duration::from_secs(5));
    assert_eq!(wait_for(&mut handle, 20).await, ExitStatus::Stopped);
    assert_eq!((pod.memory_bytes(), usage.memory_bytes()), (0, 0));
}

/// A request refused by its own per-instance cap (`RunSpec::memory_limit`) is still the
/// guest running out of memory: a 500, not the pod's 503.
#[tokio::test]
async fn a_requests_own_cap_is_still_a_500() {
    let runtime = runtime();
    let pod = runtime.cgroup(limited(256 * MIB));
    let spec = RunSpec::new().cgroup(pod.clone()).memory_limit(16 * MIB);
    let (handle, addr) = serve(&runtime, &hello(&runtime), spec);
    let reply = get(addr, "/grow?mb=32").await;
    assert_eq!((reply.status, reply.body.as_str()), (500, "the guest ran out of memory\n"));
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.out_of_memory, stats.over_memory), (1, 0));
}
