//! Where pods' ConfigMaps, Secrets and service-account tokens come from: the API server
//! when the node is connected; nowhere in standalone mode (static pods cannot reference
//! API objects, as with the kubelet), where lookups find nothing and tokens are refused.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;

use crate::objects::ObjectSource;
use crate::volumes::VolumeSource;

/// The API server, if the node has one.
#[derive(Clone)]
pub struct ApiSource(pub Option<Client>);

impl ObjectSource for ApiSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        match &self.0 {
            Some(c) => c.config_map(ns, name).await,
            None => Ok(None),
        }
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        match &self.0 {
            Some(c) => c.secret(ns, name).await,
            None => Ok(None),
        }
    }
}

impl VolumeSource for ApiSource {
    async fn token_request(
        &self,
        ns: &str,
        sa: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, kube::Error> {
        match &self.0 {
            Some(c) => c.token_request(ns, sa, request).await,
            None => Err(kube::Error::Service(
                "this node runs standalone (no API server): service account tokens are not available".into(),
            )),
        }
    }
}
