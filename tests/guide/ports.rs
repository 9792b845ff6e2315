//! A second pod of the guide's program on the same node cannot have 8080 while the first
//! holds it, and is told which pod does; once that pod is deleted, 8080 serves again.

use std::time::Duration;

use serde_json::json;

use crate::{GUIDE, HELLO, common, require_guide};

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
    // Its program gave up on the bind and exited; the first one kept serving.
    g.cluster.wait_pod(&second, "its container to have exited", Duration::from_secs(60), |p| {
        let status = &p["status"]["containerStatuses"][0];
        status["restartCount"].as_u64().unwrap_or(0) > 0 || !status["state"]["terminated"].is_null()
    });
    assert_eq!(g.at_node_ip("/"), Some((200, HELLO.to_string())));

    // The restarting second pod goes first, so that the port is the newcomer's to take.
    turn.delete(&second);
    turn.delete(&first);
    let third = turn.pod("guide-third", &g.wasm_to_oci_image, json!({}));
    turn.serving(&third);
    let events = g.cluster.pod_events(&third);
    assert!(!events.iter().any(|(r, _)| r == "PortRefused"), "{events:?}");
}
