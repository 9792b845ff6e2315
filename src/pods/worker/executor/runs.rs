//! What the executor keeps beside a running container: its resource group (a child of the
//! pod's), its probes on the node's prober, the grace period its stop gets, and the labels
//! of its server metrics.

use std::sync::Arc;

use super::Executor;
use crate::events::Kind;
use crate::metrics::ServerKey;
use crate::pods::probes::{self, Registration, Target};
use crate::pods::worker::effects::{Input, Slot};
use crate::runtime::{ContainerRuntime, Group};

impl<R: ContainerRuntime> Executor<R> {
    /// The resource group of `slot`'s container, made at its first start inside the pod's
    /// (made then too): every run of the container, each restart and each exec instance,
    /// charges it, under `limits.memory` (or `--default-memory-limit`), `limits.cpu` and
    /// `requests.cpu`. `None` when the runtime makes no groups.
    pub(super) fn container_group(&mut self, slot: Slot) -> Option<Group> {
        if let Some(group) = self.groups.get(&slot) {
            return group.clone();
        }
        let default_memory = self.handles.host.limits.default_memory_limit;
        let (limits, _) = crate::pods::resources::group_limits(self.container(slot)?, default_memory);
        if self.pod_group.is_none() {
            self.pod_group = self.handles.runtime.group(None, Default::default());
            if let Some(group) = &self.pod_group {
                self.handles.directory.set_group(&self.pod, group.clone());
            }
        }
        let group = self.handles.runtime.group(Some(self.pod_group.as_ref()?), limits);
        self.groups.insert(slot, group.clone());
        group
    }

    /// Starts probing a run, if its container has probes; a probe this node cannot run
    /// is said so once, as a Warning.
    pub(super) fn probe(&mut self, slot: Slot, run: u32, entry: &crate::pods::directory::ContainerEntry) {
        let Some(container) = self.container(slot) else { return };
        let specs = probes::probes_of(container);
        if specs.is_empty() {
            self.probes.remove(&slot);
            return;
        }
        for spec in &specs {
            if let (0, probes::Handler::Unsupported(why)) = (run, &spec.handler) {
                let message =
                    format!("{} probe of container {} cannot run: {why}", spec.kind, container.name);
                self.event(Some(slot), Kind::Warning, "ProbeNotSupported", message);
            }
        }
        let tx = self.probe_sender();
        let (recorder, object) = (self.handles.api.recorder.clone(), self.object_ref(Some(slot)));
        let registration = Registration {
            probes: specs,
            target: Target { pod_ip: self.handles.host.node_ip, container: Some(entry.clone()) },
            report: Arc::new(move |event| {
                let _ = tx.send(Input::Probe { slot, run, event });
            }),
            unhealthy: Arc::new(move |message| {
                let (recorder, object) = (recorder.clone(), object.clone());
                tokio::spawn(
                    async move { recorder.publish(&object, Kind::Warning, "Unhealthy", &message).await },
                );
            }),
        };
        self.probes.insert(slot, self.handles.prober.register(registration));
    }

    /// How long a stopping server may finish its requests: none once the pod is evicted;
    /// else the grace period of the pod's deletion, else its
    /// `terminationGracePeriodSeconds` (default 30 s).
    pub(super) fn grace(&self) -> std::time::Duration {
        if self.killing {
            return std::time::Duration::ZERO;
        }
        let spec = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
        let secs = self.pod.metadata.deletion_grace_period_seconds.or(spec).unwrap_or(30);
        std::time::Duration::from_secs(secs.max(0) as u64)
    }

    /// The labels of a container's server metrics.
    pub(super) fn server_key(&self, slot: Slot) -> Option<ServerKey> {
        let m = &self.pod.metadata;
        Some(ServerKey {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            pod: m.name.clone().unwrap_or_default(),
            container: self.container(slot)?.name.clone(),
        })
    }
}
