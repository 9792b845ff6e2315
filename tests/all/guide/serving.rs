//! The guide's server as its readers reach it: `kubectl port-forward` with both kubectls
//! (`Hello, World!` at `/`, warp's 404 elsewhere), and as the cluster reaches it: the node
//! IP, a Service's Endpoints, and 2,000 requests 16 at a time all answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use super::{GUIDE, HELLO, http_get, require_guide};
use crate::common;
use crate::common::forward::Forward;

/// kubectl's local ports for the forwards, one per kubectl.
const LOCAL: u16 = 18560;

#[test]
fn the_guides_image_answers_through_kubectl_port_forward_1_32_and_1_20() {
    let g = require_guide!();
    let mut turn = g.turn();
    let name = turn.pod("guide-docker", &g.docker_image, json!({}));
    turn.serving(&name);
    // The guide's pod declares no port: the agent tells it that 8080 is now its own, and
    // does not warn that a module without sockets cannot listen.
    let claimed = format!("port {GUIDE}/TCP claimed for this pod");
    common::wait_for_explained(
        &format!("a PortClaimed Event of pod {name}"),
        Duration::from_secs(30),
        || g.cluster.pod_events(&name).into_iter().find(|(r, m)| r == "PortClaimed" && m.contains(&claimed)),
        || format!("{:?}", g.cluster.pod_events(&name)),
    );
    let events = g.cluster.pod_events(&name);
    assert!(!events.iter().any(|(r, _)| r == "ModuleCannotListen"), "{events:?}");

    for (i, kubectl) in common::kubectls().iter().enumerate() {
        let local = LOCAL + i as u16;
        let _forward = Forward::start(kubectl, &g.cluster.kubeconfig, &name, local, GUIDE);
        let which = kubectl.display();
        assert_eq!(http_get("127.0.0.1", local, "/"), Some((200, HELLO.to_string())), "{which}");
        let (status, _) = http_get("127.0.0.1", local, "/no/such/page").expect("an answer");
        assert_eq!(status, 404, "{which}: warp's answer to a path no filter takes");
    }
}

#[test]
fn the_wasm_to_oci_image_serves_the_node_ip_a_service_and_2000_requests() {
    let g = require_guide!();
    let mut turn = g.turn();
    let app = format!("guide-svc-{}", std::process::id());
    let name = turn.pod("guide-oci", &g.wasm_to_oci_image, json!({"app": &app}));
    let running = turn.serving(&name);
    assert_eq!(running["status"]["podIP"], g.netns.node_ip.as_str());
    assert_eq!(g.at_node_ip("/"), Some((200, HELLO.to_string())));

    g.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": &app, "namespace": "default"},
        "spec": {"selector": {"app": &app}, "ports": [{"port": 80, "targetPort": GUIDE}]},
    }));
    common::wait_for("the pod's IP and 8080 in the Service's Endpoints", Duration::from_secs(60), || {
        let ep = g.cluster.get_json(&["endpoints", "-n", "default", &app])?;
        let subsets = ep["subsets"].as_array()?;
        subsets
            .iter()
            .any(|s| {
                let ips = s["addresses"].as_array().into_iter().flatten();
                let ports = s["ports"].as_array().into_iter().flatten();
                ips.into_iter().any(|a| a["ip"] == g.netns.node_ip.as_str())
                    && ports.into_iter().any(|p| p["port"] == GUIDE)
            })
            .then_some(())
    });
    g.cluster.kubectl(&["delete", "service", "-n", "default", &app, "--wait=false"]);

    // 2,000 requests from 16 clients at once, each on its own connection.
    const CLIENTS: usize = 16;
    const EACH: usize = 125;
    let answered = AtomicUsize::new(0);
    let wrong = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for _ in 0..EACH {
                    match g.at_node_ip("/") {
                        Some((200, body)) if body == HELLO => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => wrong.lock().unwrap().push(other),
                    }
                }
            });
        }
    });
    let wrong = wrong.into_inner().unwrap();
    assert_eq!(
        answered.load(Ordering::Relaxed),
        CLIENTS * EACH,
        "{} wrong answers, the first: {:?}",
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
}
