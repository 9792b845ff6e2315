//! A second pod of the guide's program on the same node cannot have 8080 while the first
//! holds it, and is told which pod does; once that pod is deleted, 8080 serves again.

use std::time::Duration;

use serde_json::json;

use super::{GUIDE, HELLO, require_guide};
use crate::common;

#[test]
fn a_second_pod_wanting_8080_is_told_which_pod_holds_it_until_that_pod_is_deleted() {
    let g = require_guide!();
    let mut turn = g.turn();
    let first = turn.pod("guide-first", &g.docker_image, json!({}));
    turn.serving(&first);

    let second = turn.pod("guide-second", &g.wasm_to_oci_image, json!({}));
    let told = format!("bind refused: port {GUIDE}/TCP is held by pod default/{first}");
    common::wait_for_explained(
        &format!("a PortRefused Event of pod {second} naming {first}"),
        Duration::from_secs(120),
        || g.cluster.pod_events(&second).into_iter().find(|(r, m)| r == "PortRefused" && m.contains(&told)),
        || format!("{:?}\n{}", g.cluster.pod_events(&second), g.cluster.explain_pod("default", &second)),
    );
    // Its program gave up on the bind and says so itself (warp's panic, with the guest's
    // EADDRINUSE) in the log of its last run; the first one kept serving.
    let said = |args: &[&str]| {
        let out = g.cluster.kubectl(args);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned();
        (logs.contains("error binding to 0.0.0.0:8080") && logs.contains("Address in use")).then_some(())
    };
    common::wait_for_explained(
        &format!("pod {second}'s program saying that 8080 is in use"),
        Duration::from_secs(60),
        || {
            said(&["logs", "-n", "default", &second])
                .or_else(|| said(&["logs", "-p", "-n", "default", &second]))
        },
        || g.cluster.explain_pod("default", &second),
    );
    assert_eq!(g.at_node_ip("/"), Some((200, HELLO.to_string())));

    // The restarting second pod goes first, so that the port is the newcomer's to take.
    turn.delete(&second);
    turn.delete(&first);
    let third = turn.pod("guide-third", &g.wasm_to_oci_image, json!({}));
    turn.serving(&third);
    let events = g.cluster.pod_events(&third);
    assert!(!events.iter().any(|(r, _)| r == "PortRefused"), "{events:?}");
}
