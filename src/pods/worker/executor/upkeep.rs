//! What the executor does for a living pod beside its containers: its volumes rewritten,
//! its emptyDirs measured.

use tracing::warn;

use super::{Done, Executor};
use crate::base::error::chain;
use crate::pods::worker::effects::Input;
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime> Executor<R> {
    /// Rewrites the volumes from the API and the latest pod, so running guests see
    /// changes, as on the kubelet. A failure keeps the old files.
    pub(super) fn refresh(&mut self) {
        let Some(mut volumes) = self.volumes.take() else { return };
        let (objects, host, pod) =
            (self.handles.objects.clone(), self.handles.host.clone(), self.pod.clone());
        self.tasks.push(Box::pin(async move {
            if let Err(e) = volumes.refresh(&objects.refresh_source(), &host.context(&pod)).await {
                warn!(error = %chain(&e), "refreshing the pod's volumes failed; keeping the old files");
            }
            Done::Refreshed(volumes)
        }));
    }

    /// Measures the emptyDir volumes that have a `sizeLimit`, off the async threads.
    pub(super) fn check_disk(&mut self) {
        let Some(layout) = self.layout.clone() else { return };
        self.tasks.push(Box::pin(async move {
            let over = tokio::task::spawn_blocking(move || layout.over_size_limit()).await.ok().flatten();
            Done::Input(Input::DiskChecked { over })
        }));
    }
}
