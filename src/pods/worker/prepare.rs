//! Before any container of a pod starts: materialize its volumes and pull each image
//! once, turning every failure into the reason the kubelet would show, and reserve the
//! port of a `wasi:http` component that declares none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, debug, debug_span};

use super::effects::{Failure, Prepared};
use super::trace::{Phase, StartTrace, Timed};
use crate::base::error::chain;
use crate::base::vecmap::VecMap;
use crate::network::Network;
use crate::oci::{FileImages, PullPolicy, RegistryAuth};
use crate::pods::status::report;
use crate::pods::{Host, Objects};
use crate::runtime::{ContainerRuntime, ImageKind, ImageRequest, PulledImage};
use crate::volumes::{PodVolumes, VolumeError};

/// What a pod's containers start from: its volumes and its pulled images.
pub struct PreparedPod<I> {
    pub volumes: PodVolumes,
    /// By image reference.
    pub images: VecMap<String, PulledImage<I>>,
}

/// What preparing a pod uses.
pub struct Preparer<R> {
    pub runtime: Arc<R>,
    /// ConfigMaps, Secrets and tokens for the volumes; the client for `imagePullSecrets`.
    pub objects: Objects,
    pub host: Arc<Host>,
    pub network: Network,
}

/// Prepares the volumes, and pulls the images of all containers (init first). A pod's
/// first preparation does both at once: neither needs the other, and the start waits for
/// both. Once one failed (`at_once` false) the images wait for the volumes, as the
/// kubelet's pulls wait for its mounts: a pod whose ConfigMap is missing is retried soon
/// (`CONFIG_RETRY_INITIAL`), and those retries do not ask the registry each time. A
/// volume failure is reported before an image's. `on_pull` is told of each image as its
/// pull starts; `trace` times each step.
pub async fn prepare<R: ContainerRuntime>(
    with: Preparer<R>,
    pod: Arc<Pod>,
    pod_dir: PathBuf,
    (on_pull, at_once): (impl Fn(&str) + Send, bool),
    trace: &StartTrace,
) -> Result<(PreparedPod<R::Image>, Prepared), Failure> {
    let ctx = with.host.context(&pod);
    let source = Timed { source: with.objects.source(), trace };
    // Both boxed: the pod's preparation holds only what is still under way. A volume
    // set-up that may ask the API server is a large future (18 KB in a debug build), and
    // a pod that waits for its image would otherwise keep it after its volumes are done
    // (10,000 static pods started at once held 38 KB each for their preparation).
    let volumes = Box::pin(async {
        let began = Instant::now();
        let volumes = PodVolumes::prepare(&source, &ctx, &pod_dir, with.host.memory_medium)
            .instrument(debug_span!("volumes"));
        let volumes = trace.time(Phase::Volumes, volumes).await;
        debug!(ms = began.elapsed().as_secs_f64() * 1e3, "volumes ready");
        volumes
    });
    let pulls = Box::pin(images(&with, &pod, on_pull, trace));
    let (volumes, images) = match at_once {
        true => tokio::join!(volumes, pulls),
        false => {
            let volumes = volumes.await.map_err(volume_failure)?;
            (Ok(volumes), pulls.await)
        }
    };
    let volumes = volumes.map_err(volume_failure)?;
    let (images, mut done) = images?;
    let serves = |c: &Container| {
        c.image.as_ref().and_then(|i| images.get(i)).is_some_and(|p| p.kind == ImageKind::HttpServer)
    };
    with.network.reserve_http_default_if_served(&pod, serves);
    done.token_due = token_due(&volumes);
    done.watch_disk = volumes.layout().has_size_limits();
    done.refreshes = volumes.layout().refreshes();
    Ok((PreparedPod { volumes, images }, done))
}

/// Pulls each image of the pod's containers once (init first), with the credentials of
/// its `imagePullSecrets`.
async fn images<R: ContainerRuntime>(
    with: &Preparer<R>,
    pod: &Pod,
    on_pull: impl Fn(&str) + Send,
    trace: &StartTrace,
) -> Result<(VecMap<String, PulledImage<R::Image>>, Prepared), Failure> {
    let containers: Vec<Container> = match pod.spec.as_ref() {
        Some(s) => s.init_containers.iter().flatten().chain(&s.containers).cloned().collect(),
        None => Vec::new(),
    };
    let auth = match &with.objects.client {
        Some(client) => trace.time(Phase::Reads, Box::pin(pull_secrets(client, pod))).await,
        None => RegistryAuth::anonymous(),
    };
    let mut images = VecMap::new();
    let mut done = Prepared::default();
    for c in containers {
        let Some(image) = c.image.clone().filter(|i| !i.trim().is_empty()) else {
            let message = format!("container {:?} has no image", c.name);
            return Err(Failure::Fatal { reason: "InvalidImageName", message });
        };
        if images.contains_key(&image) {
            continue;
        }
        on_pull(&image);
        let started = Instant::now();
        let pull_policy = PullPolicy::from_k8s(c.image_pull_policy.as_deref(), &image);
        let file_images = if report::is_static(pod) { FileImages::Allowed } else { FileImages::Refused };
        let request = ImageRequest { image: image.clone(), pull_policy, auth: auth.clone(), file_images };
        let pulled = with.runtime.prepare(request).instrument(debug_span!("image", %image));
        let pulled = trace.time(Phase::Image, pulled).await;
        match pulled {
            Ok(p) => {
                debug!(%image, ms = started.elapsed().as_secs_f64() * 1e3, "image ready");
                done.pulls.push((image.clone(), started.elapsed().as_secs_f64()));
                done.image_ids.insert(image.clone(), p.image_id.clone());
                images.insert(image, p);
            }
            Err(e) => return Err(Failure::Pull { image, reason: e.reason, message: chain(&e) }),
        }
    }
    Ok((images, done))
}

/// How soon the volumes' earliest service account token is due to be requested again.
pub fn token_due(volumes: &PodVolumes) -> Option<std::time::Duration> {
    let at = volumes.token_refresh_at()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// A volume that cannot be prepared: an unsupported type fails the pod; anything else
/// (a missing object, a refused token, a failed read) may clear, so it is retried.
fn volume_failure(e: VolumeError) -> Failure {
    match e {
        e @ VolumeError::Unsupported { .. } => {
            Failure::Fatal { reason: "UnsupportedVolume", message: chain(&e) }
        }
        e => Failure::Config { message: chain(&e) },
    }
}

/// The credentials of each `imagePullSecrets` entry that can be read; a missing or
/// unusable one is skipped, as the kubelet does (the pull then fails with the registry's
/// own message).
async fn pull_secrets(client: &Client, pod: &Pod) -> RegistryAuth {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let refs = pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default();
    let mut auth = RegistryAuth::anonymous();
    for r in refs {
        match api.get_opt(&r.name).await {
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                match RegistryAuth::from_secret_data(secret.type_.as_deref().unwrap_or_default(), &data) {
                    Ok(a) => auth.merge(a),
                    Err(e) => {
                        tracing::warn!(secret = %r.name, error = %chain(&e), "ignoring an unusable imagePullSecret")
                    }
                }
            }
            Ok(None) => tracing::warn!(secret = %r.name, "imagePullSecret not found; pulling without it"),
            Err(e) => tracing::warn!(secret = %r.name, error = %e, "reading imagePullSecret failed"),
        }
    }
    auth
}
