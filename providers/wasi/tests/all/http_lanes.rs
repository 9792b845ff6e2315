//! The lanes of a served `wasi:http` component (how many of its requests start and
//! compute at once): requests beyond them wait and are served, and a request that waits
//! (for I/O, here a sleep in a host call) or computes for long does not keep the pod's
//! other requests waiting.

use crate::common;

use std::time::Duration;

use common::http::{get, hello, serve, until};
use krustlet_wasi_provider::{ExitStatus, HttpLimits, RunSpec, Runtime};

/// A runtime whose served artifacts each have one lane.
fn one_lane() -> Runtime {
    Runtime::builder().http_lanes(1).build().expect("runtime builds")
}

#[tokio::test]
async fn requests_beyond_the_lanes_wait_their_turn_and_are_all_served() {
    let runtime = one_lane();
    let (handle, addr) = serve(&runtime, &hello(&runtime), RunSpec::new());
    let requests: Vec<_> = (0..16).map(|_| tokio::spawn(async move { get(addr, "/").await })).collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "Hello, World!\n"));
    }
    let stats = handle.http_stats().unwrap().snapshot();
    assert_eq!((stats.requests, stats.instantiated, stats.over_capacity, stats.timed_out), (16, 16, 0, 0));
}

/// While a request to `path` keeps the only lane's guest busy (`busy` says how), a plain
/// request to the same server is answered.
async fn answered_beside(path: &'static str, spec: RunSpec, busy: &str) {
    let runtime = one_lane();
    let (mut handle, addr) = serve(&runtime, &hello(&runtime), spec);
    let first = tokio::spawn(async move { get(addr, path).await });
    until(&handle, &format!("the request that {busy} runs"), |stats| stats.in_flight == 1).await;
    let reply = get(addr, "/").await;
    assert_eq!(reply.status, 200);
    assert!(!first.is_finished(), "served while the request that {busy} still runs");
    handle.shutdown(Duration::ZERO);
    assert_eq!(common::wait_for(&mut handle, 20).await, ExitStatus::Stopped);
}

#[tokio::test]
async fn a_request_waiting_in_the_guest_does_not_hold_the_only_lane() {
    answered_beside("/slow?ms=20000", RunSpec::new(), "sleeps in a host call").await;
}

#[tokio::test]
async fn a_spinning_request_does_not_hold_the_only_lane() {
    let spec =
        RunSpec::new().http(HttpLimits { request_timeout: Duration::from_secs(60), max_concurrent: 10 });
    answered_beside("/spin", spec, "spins").await;
}
