//! What a pod refers to beyond its own spec, read the same way for env vars and volumes:
//! the pod's context (node facts for the downward API), and ConfigMaps and Secrets read
//! through an [`ObjectSource`], each fetched once per resolution ([`Lookup`]).

pub mod downward;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{Api, Client, ResourceExt};

/// The pod a container belongs to, and the node facts the downward API reports.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    /// Reported as `status.hostIP`, `status.hostIPs`, `status.podIP` and `status.podIPs`.
    pub node_ip: IpAddr,
    /// The node's allocatable `(cpu millicores, memory bytes)`: what `limits.cpu` and
    /// `limits.memory` resolve to for a container without that limit.
    pub allocatable: (u64, u64),
}

impl PodContext<'_> {
    /// The pod's namespace (`default` when unset, as for a static pod).
    pub fn namespace(&self) -> String {
        self.pod.namespace().unwrap_or_else(|| "default".into())
    }
}

/// Reads ConfigMaps and Secrets of a namespace; `Ok(None)` when the object does not exist.
/// Implemented for [`kube::Client`] (one GET per call) and by fakes in tests.
pub trait ObjectSource: Send + Sync {
    fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, kube::Error>> + Send;
    fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, kube::Error>> + Send;
}

impl ObjectSource for Client {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        Api::<ConfigMap>::namespaced(self.clone(), ns).get_opt(name).await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        Api::<Secret>::namespaced(self.clone(), ns).get_opt(name).await
    }
}

/// Which kind of object a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The lowercase name the kubelet uses in "not found" messages.
    pub fn resource(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

impl std::fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        })
    }
}

/// Why a referenced ConfigMap or Secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// A required ConfigMap/Secret (`key: None`) or key is missing; the kubelet reports this
    /// as `CreateContainerConfigError`. Displays as the kubelet's message.
    #[error("{}", missing_message(*kind, namespace, name, key.as_deref()))]
    MissingConfig { kind: ConfigKind, namespace: String, name: String, key: Option<String> },
    /// Reading a ConfigMap/Secret failed for another reason than "not found".
    #[error("getting {kind} {namespace}/{name} failed: {source}")]
    Api { kind: ConfigKind, namespace: String, name: String, source: kube::Error },
}

fn missing_message(kind: ConfigKind, namespace: &str, name: &str, key: Option<&str>) -> String {
    match key {
        None => format!("{} {name:?} not found", kind.resource()),
        Some(key) => format!("couldn't find key {key} in {kind} {namespace}/{name}"),
    }
}

/// ConfigMaps and Secrets read during one resolution, so each is fetched once.
pub struct Lookup<'s, S> {
    src: &'s S,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl<'s, S: ObjectSource> Lookup<'s, S> {
    pub fn new(src: &'s S, namespace: &str) -> Self {
        Lookup { src, namespace: namespace.into(), config_maps: HashMap::new(), secrets: HashMap::new() }
    }

    pub async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, LookupError> {
        if !self.config_maps.contains_key(name) {
            let got =
                self.src.config_map(&self.namespace, name).await.map_err(|source| LookupError::Api {
                    kind: ConfigKind::ConfigMap,
                    namespace: self.namespace.clone(),
                    name: name.into(),
                    source,
                })?;
            self.config_maps.insert(name.into(), got);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    pub async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, LookupError> {
        if !self.secrets.contains_key(name) {
            let got = self.src.secret(&self.namespace, name).await.map_err(|source| LookupError::Api {
                kind: ConfigKind::Secret,
                namespace: self.namespace.clone(),
                name: name.into(),
                source,
            })?;
            self.secrets.insert(name.into(), got);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    pub fn missing(&self, kind: ConfigKind, name: &str, key: Option<&str>) -> LookupError {
        LookupError::MissingConfig {
            kind,
            namespace: self.namespace.clone(),
            name: name.into(),
            key: key.map(Into::into),
        }
    }
}
