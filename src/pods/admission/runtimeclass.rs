//! `runtimeClassName` at admission: a pod may name a RuntimeClass whose handler is this
//! node's runtime (`wasmtime`); one naming another handler, or a RuntimeClass that does
//! not exist, is refused with a reason saying which. Handlers are immutable in the API,
//! so each RuntimeClass is read once.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::{Api, Client};

/// The kubelet-style reason of a pod refused for its RuntimeClass.
pub const REASON: &str = "UnsupportedRuntimeHandler";

/// The handlers of the RuntimeClasses seen so far.
#[derive(Default)]
pub struct RuntimeClasses(Mutex<HashMap<String, String>>);

impl RuntimeClasses {
    /// Whether `pod` may run on a node whose runtime handler is `ours`; if not, why.
    /// Without an API server (static pods) a RuntimeClass is known by its name only, so
    /// the name must be the handler's.
    pub async fn admit(&self, client: Option<&Client>, pod: &Pod, ours: &str) -> Result<(), String> {
        let Some(name) = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone()) else { return Ok(()) };
        let cached = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&name).cloned();
        let handler = match (cached, client) {
            (Some(h), _) => h,
            (None, None) => name.clone(),
            (None, Some(client)) => match Api::<RuntimeClass>::all(client.clone()).get_opt(&name).await {
                Ok(Some(rc)) => {
                    self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), rc.handler.clone());
                    rc.handler
                }
                Ok(None) => return Err(format!("RuntimeClass {name:?} not found")),
                Err(e) => {
                    // Not the pod's fault: judge it by the name, as a static pod is.
                    tracing::warn!(runtime_class = %name, error = %e, "cannot read the RuntimeClass; judging it by its name");
                    name.clone()
                }
            },
        };
        if handler == ours {
            return Ok(());
        }
        Err(format!(
            "RuntimeClass {name:?} has handler {handler:?}, but this node runs only the {ours:?} handler \
             (WebAssembly with Wasmtime)"
        ))
    }
}
