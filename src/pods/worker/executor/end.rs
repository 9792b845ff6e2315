//! The end of a pod: deleted from the API, then its files and its place on the node
//! forgotten.

use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::{Done, Executor};
use crate::base::error::chain;
use crate::pods::status::report;
use crate::pods::worker::effects::Input;
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime> Executor<R> {
    pub(super) fn delete(&mut self) {
        let Some(client) = self.handles.api.client.clone() else {
            return self.tasks.push(Box::pin(std::future::ready(Done::Input(Input::Deleted))));
        };
        let pod = self.pod.clone();
        self.tasks.push(Box::pin(async move {
            match report::delete_pod(client, &pod).await {
                Ok(()) => info!("pod deleted"),
                Err(e) => {
                    warn!(error = %chain(&e), "deleting the pod failed; it is deleted again when seen again")
                }
            }
            Done::Input(Input::Deleted)
        }));
    }

    /// Removes the pod's files and its entry in the directory.
    pub(super) fn forget(&mut self) {
        // Its volumes' tmpfs mounts go first: nothing is removed across a mount.
        if let Err(e) = crate::volumes::remove_pod_dir(&self.pod_dir()) {
            warn!(error = %chain(&e), "the pod's directory could not be removed");
        }
        let _ = std::fs::remove_dir_all(self.log_dir());
        self.handles.directory.remove_pod(&self.pod);
        self.handles.network.pod_stopped(&self.pod.uid().unwrap_or_default());
        self.handles.wakes.image_gc.notify_one();
        self.handles.api.recorder.forget(&self.pod.uid().unwrap_or_default());
        self.handles.wakes.memory_trim.notify_one();
        debug!("pod forgotten");
    }
}
