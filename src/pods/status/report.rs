//! Where a pod's status goes in the API: a status patch for a pod from the API, a mirror
//! pod (annotation `kubernetes.io/config.mirror`) for a static pod, as the kubelet keeps
//! one; and removing either with grace 0 once the pod is gone.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

/// Annotation marking a mirror pod, valued with the static pod's hash (its UID here).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Annotation naming where a pod came from (`file` for static pods), as the kubelet sets it.
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// True for pods read from `--pod-manifest-path`.
pub fn is_static(pod: &Pod) -> bool {
    pod.annotations().get(SOURCE_ANNOTATION).is_some_and(|s| s == "file")
}

/// Marks a pod read from the API server as such, as the kubelet does: a pod author may
/// write any annotation, and `config.source: file` must not make an API pod static.
pub fn mark_from_api(pod: &mut Pod) {
    pod.annotations_mut().insert(SOURCE_ANNOTATION.into(), "api".into());
}

/// True for mirror pods in the API (the controller leaves them alone).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.annotations().contains_key(MIRROR_ANNOTATION)
}

/// The UID of the static pod a mirror pod reflects.
pub fn mirror_hash(pod: &Pod) -> Option<String> {
    pod.annotations().get(MIRROR_ANNOTATION).cloned()
}

/// What became of a status report.
#[derive(Debug, PartialEq, Eq)]
pub enum Reported {
    Done,
    /// The pod is no longer in the API (deleted, or replaced by another of its name).
    Gone,
}

fn api_of(client: Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(client, &pod.namespace().unwrap_or_else(|| "default".into()))
}

/// Merge-patches the pod's status. The patch carries the pod's UID, which the API server
/// checks: a new pod of the same name is never patched with this one's status.
pub async fn patch_status(client: Client, pod: &Pod, status: &Value) -> Result<Reported, kube::Error> {
    let patch = json!({"metadata": {"uid": pod.metadata.uid}, "status": status});
    let api = api_of(client, pod);
    match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Reported::Done),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Reported::Gone),
        Err(e) => Err(e),
    }
}

/// Patches the mirror pod's status, creating (or replacing an outdated) mirror first. The
/// mirror is owned by the Node (`node`: name, UID), as NodeRestriction requires.
pub async fn report_mirror(
    client: Client,
    pod: &Pod,
    node: (&str, &str),
    status: &Value,
) -> Result<(), kube::Error> {
    let api = api_of(client, pod);
    let (name, uid) = (pod.name_any(), pod.uid().unwrap_or_default());
    let patch = json!({"status": status});
    for _ in 0..2 {
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(p) if mirror_hash(&p) == Some(uid.clone()) => return Ok(()),
            Ok(_) => {
                // A mirror of an older version of the manifest (or not a mirror): replace it.
                delete_now(&api, &name, None).await?;
                create_mirror(&api, mirror_of(pod, node)).await?;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => create_mirror(&api, mirror_of(pod, node)).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The static pod as its mirror: owned by the Node.
fn mirror_of(pod: &Pod, (node_name, node_uid): (&str, &str)) -> Pod {
    let mut mirror = pod.clone();
    mirror.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.into(),
        uid: node_uid.into(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    mirror
}

/// Creates the mirror of a static pod: the same object without UID or status, marked with
/// the mirror annotation (valued with the static pod's UID, which hashes its manifest).
async fn create_mirror(api: &Api<Pod>, mut mirror: Pod) -> Result<(), kube::Error> {
    let uid = mirror.metadata.uid.take().unwrap_or_default();
    mirror.metadata.resource_version = None;
    mirror.status = None;
    mirror.annotations_mut().insert(MIRROR_ANNOTATION.into(), uid);
    for _ in 0..20 {
        match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => {
                info!("created mirror pod");
                return Ok(());
            }
            // The replaced mirror is still going away.
            Err(kube::Error::Api(s)) if s.code == 409 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Service("the old mirror pod did not go away".into()))
}

/// Removes a pod that is gone for good from the API, with grace 0: a pod from the API if it
/// is still this one (by UID); a static pod's mirror if it still reflects this version of
/// the static pod (a new version's mirror may already have replaced it).
pub async fn delete_pod(client: Client, pod: &Pod) -> Result<(), kube::Error> {
    let api = api_of(client, pod);
    let uid = match is_static(pod) {
        false => pod.uid(),
        true => match api.get_opt(&pod.name_any()).await {
            Ok(Some(mirror)) if mirror_hash(&mirror) == pod.uid() => mirror.uid(),
            Ok(_) => return Ok(()),
            Err(e) => {
                warn!(error = %e, "reading the mirror pod failed; deleting it by name");
                None
            }
        },
    };
    delete_now(&api, &pod.name_any(), uid).await
}

/// Deletes this very mirror pod (grace 0, by UID: a newer mirror of the same name stays).
pub async fn delete_mirror(client: Client, pod: Pod) {
    let api = api_of(client, &pod);
    let name = pod.name_any();
    match delete_now(&api, &name, pod.uid()).await {
        Ok(()) => info!(pod = name, "removed mirror pod"),
        Err(e) => warn!(pod = name, error = %e, "removing the mirror pod failed"),
    }
}

/// Deletes `name` with grace 0, only if its UID is still `uid` (when given). A pod already
/// gone (404) or replaced (409) is not an error.
async fn delete_now(api: &Api<Pod>, name: &str, uid: Option<String>) -> Result<(), kube::Error> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// What [`keep_transition_times`] needs of a status once reported, as JSON text: each
/// condition's type, status and `lastTransitionTime`. Every pod holds it while it lives:
/// as text it is a few hundred bytes in one allocation, where the conditions as a
/// `serde_json::Value` tree took 3.5 KB in about forty (10,000 static pods, heaptrack).
pub fn transition_times(status: &Value) -> Box<str> {
    let conditions: Vec<Value> = (status["conditions"].as_array().into_iter().flatten())
        .map(|c| {
            let (kind, status, since) = (&c["type"], &c["status"], &c["lastTransitionTime"]);
            serde_json::json!({"type": kind, "status": status, "lastTransitionTime": since})
        })
        .collect();
    serde_json::json!({ "conditions": conditions }).to_string().into_boxed_str()
}

/// Keeps a condition's `lastTransitionTime` from the `previous` status while its status holds.
pub fn keep_transition_times(status: &mut Value, previous: &Value) {
    let old = previous["conditions"].as_array();
    let Some(conds) = status["conditions"].as_array_mut() else { return };
    for c in conds {
        let same = old.into_iter().flatten().find(|o| o["type"] == c["type"]);
        if let Some(o) = same
            && o["status"] == c["status"]
            && o["lastTransitionTime"].is_string()
        {
            c["lastTransitionTime"] = o["lastTransitionTime"].clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let previous = json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Initialized", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]});
        let mut status = json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-02-02T00:00:00Z"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-02-02T00:00:00Z"},
        ]});
        keep_transition_times(&mut status, &previous);
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(status["conditions"][1]["lastTransitionTime"], "2026-02-02T00:00:00Z");
    }

    #[test]
    fn the_kept_text_serves_as_the_previous_status() {
        let reported = json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z",
             "lastProbeTime": null, "message": "m"},
        ]});
        let kept: Value = serde_json::from_str(&transition_times(&reported)).unwrap();
        assert_eq!(
            kept,
            json!({"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ]})
        );
        let mut status = json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-02-02T00:00:00Z"},
        ]});
        keep_transition_times(&mut status, &kept);
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
    }
}
