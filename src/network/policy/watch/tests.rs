//! The watch against a fake API server that refuses NetworkPolicies (as a cluster without
//! the RBAC does), then allows them: pods stay open meanwhile, one Warning on the Node says
//! why, and once the lists succeed the view is enforced and a Normal Event says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;

/// An API server whose NetworkPolicy list is refused until `allowed` is set; watches hang,
/// lists are empty, and each Event posted is sent to `posted`.
fn api(allowed: Arc<AtomicBool>, posted: mpsc::UnboundedSender<Value>) -> Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (allowed, posted) = (allowed.clone(), posted.clone());
        async move {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let respond = |status: u16, body: Value| {
                http::Response::builder()
                    .status(status)
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
            };
            if req.method() == http::Method::POST && path.ends_with("/events") {
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = posted.send(event.clone());
                return Ok::<_, std::convert::Infallible>(respond(201, event).unwrap());
            }
            if query.contains("watch=true") {
                std::future::pending::<()>().await;
            }
            if path.contains("networkpolicies") && !allowed.load(Ordering::SeqCst) {
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                    "message": "networkpolicies.networking.k8s.io is forbidden: User \"system:node:n1\" cannot list resource \"networkpolicies\"",
                });
                return Ok(respond(403, status).unwrap());
            }
            Ok(respond(200, json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})).unwrap())
        }
    });
    Client::new(svc, "default")
}

#[tokio::test]
async fn policies_it_may_not_read_leave_pods_open_and_the_node_says_why() {
    let allowed = Arc::new(AtomicBool::new(false));
    let (posted, mut seen) = mpsc::unbounded_channel();
    let client = api(allowed.clone(), posted);
    let policies = Arc::new(Policies::default());
    let node = ObjectReference {
        kind: Some("Node".into()),
        name: Some("n1".into()),
        uid: Some("n1".into()),
        ..Default::default()
    };
    let watch = Watch {
        client: client.clone(),
        policies: policies.clone(),
        recorder: Recorder::new(client, "n1"),
        node,
    };
    let (stop, _) = broadcast::channel(1);
    let task = tokio::spawn(run(watch, stop.subscribe()));

    let warning = tokio::time::timeout(Duration::from_secs(20), seen.recv()).await.unwrap().unwrap();
    assert_eq!(warning["reason"], "NetworkPolicyNotEnforced", "{warning}");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["involvedObject"]["kind"], "Node");
    let message = warning["message"].as_str().unwrap_or("");
    assert!(message.contains("cannot list networkpolicies (networking.k8s.io) cluster-wide"), "{message}");
    assert!(message.contains("forbidden") && message.contains("bootstrap/bootstrap.sh"), "{message}");
    assert!(!policies.snapshot().enforced, "open until the policies can be read");
    // Retries with back-off say nothing more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(seen.try_recv().is_err(), "one Warning, not one per retry");
    assert!(!policies.snapshot().enforced);

    allowed.store(true, Ordering::SeqCst);
    let normal = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await.unwrap().unwrap();
    assert_eq!(normal["reason"], "NetworkPolicyEnforced", "{normal}");
    assert!(policies.snapshot().enforced);
    let _ = stop.send(());
    task.await.unwrap();
}
