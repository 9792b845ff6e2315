//! Before any container of a pod starts: materialize its volumes and pull each image
//! once, turning every failure into the reason the kubelet would show.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::{Api, Client};

use super::runtime::{ContainerRuntime, ImageRequest, Prepared};
use crate::volumes::{PodVolumes, VolumeError};

/// What a pod needs before its containers can start.
pub struct PreparedPod {
    pub volumes: PodVolumes,
    /// By image reference.
    pub images: HashMap<String, Prepared>,
    /// (image, seconds) of each pull, for the Pulled events.
    pub pulls: Vec<(String, f64)>,
}

/// Why preparing failed, and how the worker should react.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An image could not be pulled: back off and retry (ErrImagePull / ImagePullBackOff).
    Pull { image: String, reason: &'static str, message: String },
    /// A referenced ConfigMap or Secret is missing: retry later (CreateContainerConfigError).
    Config { message: String },
    /// The pod can never run here (e.g. an unsupported volume type): fail the pod.
    Fatal { reason: &'static str, message: String },
}

/// Prepares volumes, then pulls the images of all containers (init first).
pub async fn prepare<R: ContainerRuntime>(
    shared: Arc<super::Shared<R>>,
    pod: Arc<Pod>,
    pod_dir: PathBuf,
    on_pull: impl Fn(&str) + Send,
) -> Result<PreparedPod, Failure> {
    let runtime = shared.runtime.clone();
    let ctx = shared.context(&pod);
    let volumes = match PodVolumes::prepare(&shared.source(), &ctx, &pod_dir).await {
        Ok(v) => v,
        Err(e @ VolumeError::MissingConfig { .. }) => return Err(Failure::Config { message: e.to_string() }),
        Err(e @ VolumeError::Unsupported { .. }) => {
            return Err(Failure::Fatal { reason: "UnsupportedVolume", message: e.to_string() });
        }
        Err(e) => return Err(Failure::Config { message: e.to_string() }),
    };
    let containers: Vec<Container> = match pod.spec.as_ref() {
        Some(s) => s.init_containers.iter().flatten().chain(&s.containers).cloned().collect(),
        None => Vec::new(),
    };
    let secrets = match &shared.client {
        Some(client) => pull_secrets(client, &pod).await,
        None => Vec::new(),
    };
    let mut images: HashMap<String, Prepared> = HashMap::new();
    let mut pulls = Vec::new();
    for c in containers {
        let Some(image) = c.image.clone().filter(|i| !i.trim().is_empty()) else {
            return Err(Failure::Fatal {
                reason: "InvalidImageName",
                message: format!("container {:?} has no image", c.name),
            });
        };
        if images.contains_key(&image) {
            continue;
        }
        on_pull(&image);
        let started = Instant::now();
        let request = ImageRequest {
            image: image.clone(),
            pull_policy: c.image_pull_policy.clone(),
            pull_secrets: secrets.clone(),
        };
        match runtime.prepare(request).await {
            Ok(p) => {
                pulls.push((image.clone(), started.elapsed().as_secs_f64()));
                images.insert(image, p);
            }
            Err(e) => return Err(Failure::Pull { image, reason: e.reason, message: e.message }),
        }
    }
    Ok(PreparedPod { volumes, images, pulls })
}

/// The data of each `imagePullSecrets` entry that can be read; a missing one is skipped,
/// as the kubelet does (the pull then fails with the registry's own message).
async fn pull_secrets(client: &Client, pod: &Pod) -> Vec<(String, BTreeMap<String, Vec<u8>>)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let refs = pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for r in refs {
        match api.get_opt(&r.name).await {
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                out.push((secret.type_.unwrap_or_default(), data));
            }
            Ok(None) => tracing::warn!(secret = %r.name, "imagePullSecret not found; pulling without it"),
            Err(e) => tracing::warn!(secret = %r.name, error = %e, "reading imagePullSecret failed"),
        }
    }
    out
}
