//! End to end: a running pod's volumes follow their sources, as on the kubelet. A changed
//! ConfigMap, Secret or pod label reaches the files the guest reads, within
//! `--sync-frequency`, without a restart.

use crate::common;

use std::time::Duration;

use common::node::{main_status, pod};
use common::{guests, wait_for};
use serde_json::json;

/// `kubectl exec POD -- tool read FILES...`: what a new instance of the guest reads now.
fn read(cluster: &common::Cluster, pod: &str, files: &[&str]) -> String {
    let mut args = vec!["exec", "-n", "default", pod, "--", "tool", "read"];
    args.extend_from_slice(files);
    String::from_utf8_lossy(&cluster.kubectl(&args).stdout).into_owned()
}

#[test]
fn configmap_secret_and_label_changes_reach_a_running_pod() {
    let cluster = require_cluster!();
    let node = common::node::TestNode::join_with(
        cluster,
        "volumes",
        // pods_images has 10281 and 10282.
        10284,
        &cluster.registry,
        &["--sync-frequency", "2s"],
    );
    let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
    let name = format!("vols-{}", std::process::id());
    let (cm, secret) = (format!("{name}-cm"), format!("{name}-secret"));
    cluster.kubectl_ok(&["create", "configmap", &cm, "--from-literal=greeting=v1"]);
    cluster.kubectl_ok(&["create", "secret", "generic", &secret, "--from-literal=password=old"]);
    let mut p = pod(&name, &node.name, &image);
    p["metadata"]["labels"] = json!({"stage": "one"});
    p["spec"]["containers"][0]["args"] = json!(["serve"]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "config", "mountPath": "/config"},
        {"name": "secret", "mountPath": "/secret"},
        {"name": "info", "mountPath": "/info"},
    ]);
    p["spec"]["volumes"] = json!([
        {"name": "config", "configMap": {"name": cm}},
        {"name": "secret", "secret": {"secretName": secret}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    ]);
    cluster.apply(&p);
    let running = cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| {
        main_status(p)["state"]["running"].is_object()
    });
    let files = ["/config/greeting", "/secret/password", "/info/labels"];
    assert_eq!(read(cluster, &name, &files), "v1oldstage=\"one\"");

    let patch = |kind: &str, obj: &str, body: serde_json::Value| {
        cluster.kubectl_ok(&["patch", kind, obj, "-n", "default", "--type=merge", "-p", &body.to_string()]);
    };
    patch("configmap", &cm, json!({"data": {"greeting": "v2"}}));
    patch("secret", &secret, json!({"stringData": {"password": "new"}}));
    cluster.kubectl_ok(&["label", "pod", &name, "stage=two", "--overwrite"]);
    wait_for("the changes in the pod's files", Duration::from_secs(30), || {
        (read(cluster, &name, &files) == "v2newstage=\"two\"").then_some(())
    });
    // Without a restart.
    let now = cluster.get_json(&["pod", &name, "-n", "default"]).unwrap();
    assert_eq!(main_status(&now)["restartCount"], 0);
    assert_eq!(main_status(&now)["containerID"], main_status(&running)["containerID"]);
    cluster.kubectl(&["delete", "pod", &name, "--wait=false"]);
    cluster.kubectl(&["delete", "configmap", &cm]);
    cluster.kubectl(&["delete", "secret", &secret]);
}
