//! Where a worker reports its pod: the status file every pod has on the node (read by
//! `krustlet-wasi pods`), the pod's status in the API when connected, and for static pods
//! a mirror pod (annotation `kubernetes.io/config.mirror`) as the kubelet keeps one.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::runtime::ContainerRuntime;
use super::start::now_rfc3339;
use super::status;
use super::worker::{Phase, Worker};

/// Annotation marking a mirror pod, valued with the static pod's hash (its UID here).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Annotation naming where a pod came from (`file` for static pods), as the kubelet sets it.
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// True for pods read from `--pod-manifest-path`.
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(SOURCE_ANNOTATION)).is_some_and(|s| s == "file")
}

/// True for mirror pods in the API (the controller leaves them alone).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

impl<R: ContainerRuntime> Worker<R> {
    /// Reports the status if it changed since the last successful report.
    pub(super) async fn publish(&mut self) {
        if self.frozen || self.exit || self.phase == Phase::Terminating {
            return;
        }
        let comparable = status::status_json(&self.view, "");
        if self.published.as_ref() == Some(&comparable) {
            return;
        }
        let mut status = status::status_json(&self.view, &now_rfc3339());
        keep_transition_times(&mut status, &self.pod);
        self.write_status_file(&status);
        let result = match (self.shared.client.clone(), is_static(&self.pod)) {
            (None, _) => Ok(()),
            (Some(client), false) => self.patch_status(client, &status).await,
            (Some(client), true) => self.mirror(client, &status).await,
        };
        match result {
            Ok(()) => {
                self.published = Some(comparable);
                self.publish_retry_at = None;
            }
            Err(e) => {
                warn!(error = %e, "reporting the pod status failed; retrying in 1 s");
                self.publish_retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// `<pod-dir>/status.json`: namespace, name, uid, static, and the status.
    fn write_status_file(&self, status: &Value) {
        let doc = json!({
            "namespace": self.namespace(), "name": self.name(), "uid": self.uid(),
            "static": is_static(&self.pod), "status": status,
        });
        let path = self.pod_dir().join("status.json");
        if let Err(e) = crate::files::write_atomic(&path, doc.to_string().as_bytes(), 0o644) {
            warn!(error = %e, "writing the local pod status failed");
        }
    }

    async fn patch_status(&mut self, client: Client, status: &Value) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(client, &self.namespace());
        let patch = json!({"status": status});
        match api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(pod) => {
                self.pod = Arc::new(pod);
                Ok(())
            }
            // Deleted meanwhile: the watch will say so.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.exit = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Patches the mirror pod's status, creating (or replacing an outdated) mirror first.
    async fn mirror(&mut self, client: Client, status: &Value) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(client, &self.namespace());
        let patch = json!({"status": status});
        for _ in 0..2 {
            match api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(p) if mirror_hash(&p) == Some(self.uid()) => return Ok(()),
                Ok(_) => {
                    // A mirror of an older version of the manifest (or not a mirror): replace it.
                    let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                    api.delete(&self.name(), &dp).await?;
                    create_mirror(&api, self.mirror_of()).await?;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => create_mirror(&api, self.mirror_of()).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The static pod as its mirror: owned by the Node, as NodeRestriction requires.
    fn mirror_of(&self) -> Pod {
        let mut mirror = (*self.pod).clone();
        mirror.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.shared.node_name.clone(),
            uid: self.shared.node_uid.clone().unwrap_or_default(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        mirror
    }

    /// The pod is gone for good (deleted in the API, or its manifest removed): remove it
    /// from the API (grace 0) if it is there, and remove its files.
    pub(super) async fn delete_from_api(&mut self) {
        if let Some(client) = self.shared.client.clone() {
            let api: Api<Pod> = Api::namespaced(client, &self.namespace());
            // The pod must still be ours; for a static pod, the mirror must still reflect
            // this version of it (a new version's mirror may already have replaced it).
            let uid = match is_static(&self.pod) {
                false => Some(self.uid()),
                true => match api.get_opt(&self.name()).await {
                    Ok(Some(mirror)) if mirror_hash(&mirror) == Some(self.uid()) => mirror.metadata.uid,
                    Ok(_) => return self.forget(),
                    Err(e) => {
                        warn!(error = %e, "reading the mirror pod failed; deleting it by name");
                        None
                    }
                },
            };
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: uid.map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&self.name(), &params).await {
                Ok(_) => info!("pod deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    warn!(error = %e, "deleting the pod failed; it will be retried when it is seen again")
                }
            }
        }
        self.forget();
    }

    /// Removes the pod's files and its entry in the directory; the worker ends.
    pub(super) fn forget(&mut self) {
        let _ = std::fs::remove_dir_all(self.pod_dir());
        let _ = std::fs::remove_dir_all(self.log_dir());
        self.shared.directory.remove_pod(&self.pod);
        self.exit = true;
    }
}

/// Creates the mirror of a static pod: the same object without UID or status, marked with
/// the mirror annotation (valued with the static pod's UID, which hashes its manifest).
async fn create_mirror(api: &Api<Pod>, mut mirror: Pod) -> Result<(), kube::Error> {
    let uid = mirror.metadata.uid.take().unwrap_or_default();
    mirror.metadata.resource_version = None;
    mirror.status = None;
    mirror.metadata.annotations.get_or_insert_default().insert(MIRROR_ANNOTATION.into(), uid);
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

/// The UID of the static pod a mirror pod reflects.
pub fn mirror_hash(pod: &Pod) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(MIRROR_ANNOTATION).cloned()
}

/// Deletes this very mirror pod (grace 0, by UID: a newer mirror of the same name stays).
pub async fn delete_mirror(client: Client, pod: Pod) {
    let (ns, name) = (pod.metadata.namespace.unwrap_or_default(), pod.metadata.name.unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.metadata.uid, resource_version: None }),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(client, &ns).delete(&name, &params).await {
        Ok(_) => info!(pod = %name, "removed mirror pod"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => warn!(pod = %name, error = %e, "removing the mirror pod failed"),
    }
}

/// Keeps a condition's `lastTransitionTime` from the stored pod while its status holds.
fn keep_transition_times(status: &mut Value, pod: &Pod) {
    let old = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let Some(conds) = status["conditions"].as_array_mut() else { return };
    for c in conds {
        let same = old.into_iter().flatten().find(|o| Some(o.type_.as_str()) == c["type"].as_str());
        if let Some(o) = same
            && Some(o.status.as_str()) == c["status"].as_str()
            && let Some(t) = &o.last_transition_time
        {
            c["lastTransitionTime"] = json!(crate::node::rfc3339(&t.0));
        }
    }
}
