//! Admission, as the kubelet's predicates: a new pod that is not finished or being deleted
//! is checked against `--max-pods` (`OutOfpods`), its RuntimeClass (`runtimeclass.rs`), the
//! node's resources (`ledger.rs`) and its node ports (`NodePorts`), in that order. A
//! refusal is a kubelet-style reason and message; the controller reports it.

mod ledger;
mod runtimeclass;

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::network::Network;
use crate::pods::resources::Amounts;

/// Why a pod was refused: the kubelet's reason (`OutOfpods`, ...) and its message.
pub type Refusal = (&'static str, String);

/// What admission needs of the node.
pub struct Node<'a> {
    /// None in standalone mode (a RuntimeClass is then known by its name only).
    pub client: Option<&'a Client>,
    /// The runtime handler this node runs (`wasmtime`).
    pub handler: &'a str,
    /// What the node's pods may request together.
    pub allocatable: Amounts,
    /// Who holds each node port.
    pub network: &'a Network,
}

/// The admission state: the RuntimeClasses seen and the requests of the pods admitted.
pub struct Admission {
    /// `--max-pods`.
    max_pods: u32,
    runtime_classes: runtimeclass::RuntimeClasses,
    ledger: ledger::Ledger,
}

impl Admission {
    pub fn new(max_pods: u32) -> Self {
        Admission { max_pods, runtime_classes: Default::default(), ledger: Default::default() }
    }

    /// Whether admitting `pod` needs the set of active pods exact (those whose workers
    /// ended forgotten): once `active` pods reach `--max-pods`, or when `pod` requests
    /// resources (summed over the active pods). A pod that requests nothing below the cap
    /// is admitted whatever finished pods the set still holds.
    pub fn needs_exact(&self, pod: &Pod, active: usize) -> bool {
        active >= self.max_pods as usize || crate::pods::resources::pod_requests(pod) != Amounts::default()
    }

    /// Admits `pod` beside the pods of `active` (those that count against `--max-pods`),
    /// reserving its requests and its node ports; otherwise why not.
    pub async fn admit(
        &mut self,
        pod: &Pod,
        active: &HashSet<String>,
        node: &Node<'_>,
    ) -> Result<(), Refusal> {
        if active.len() >= self.max_pods as usize {
            let (used, capacity) = (active.len(), self.max_pods);
            let message = format!(
                "Pod Node didn't have enough resource: pods, requested: 1, used: {used}, capacity: {capacity}"
            );
            return Err(("OutOfpods", message));
        }
        if let Err(message) = self.runtime_classes.admit(node.client, pod, node.handler).await {
            return Err((runtimeclass::REASON, message));
        }
        self.ledger.admit(pod, node.allocatable, active)?;
        if let Err(e) = node.network.admit(pod) {
            return Err(("NodePorts", format!("Predicate NodePorts failed: {e}")));
        }
        Ok(())
    }
}
