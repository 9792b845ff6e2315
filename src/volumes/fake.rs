//! An in-memory [`VolumeSource`] for unit tests: ConfigMaps, Secrets, tokens, injected API
//! failures, and a count of reads and token requests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::Status;

use super::VolumeSource;
use crate::objects::ObjectSource;

/// Objects keyed by `namespace/name`.
#[derive(Default)]
pub(crate) struct FakeSource {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// `namespace/name` of objects whose read fails with 403.
    pub forbidden: Vec<String>,
    /// Lifetime of issued tokens in seconds (default 3600).
    pub token_lifetime: Option<i64>,
    /// Every read (`configmap ns/name`, `secret ns/name`) and TokenRequest (`token ns/sa`).
    pub calls: Mutex<Vec<String>>,
    /// Every TokenRequest received.
    pub token_requests: Mutex<Vec<TokenRequest>>,
    /// How long each read takes (none by default).
    pub latency: Option<std::time::Duration>,
}

impl FakeSource {
    pub(crate) fn with_config_map(mut self, ns: &str, name: &str, data: &[(&str, &str)]) -> Self {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        };
        self.config_maps.insert(format!("{ns}/{name}"), cm);
        self
    }

    pub(crate) fn with_secret(mut self, ns: &str, name: &str, data: &[(&str, &[u8])]) -> Self {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.to_vec()))).collect()),
            ..Default::default()
        };
        self.secrets.insert(format!("{ns}/{name}"), secret);
        self
    }

    /// Each read takes `latency` (on tokio's clock).
    pub(crate) fn slow(self, latency: std::time::Duration) -> Self {
        FakeSource { latency: Some(latency), ..self }
    }

    async fn wait(&self) {
        if let Some(latency) = self.latency {
            tokio::time::sleep(latency).await;
        }
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: String) -> Result<(), kube::Error> {
        let key = call.split_once(' ').map(|(_, k)| k.to_string()).unwrap_or_default();
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        if self.forbidden.contains(&key) {
            let status = Status::failure(&format!("{key} is forbidden"), "Forbidden").with_code(403);
            return Err(kube::Error::Api(status.boxed()));
        }
        Ok(())
    }
}

impl ObjectSource for FakeSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        self.record(format!("configmap {ns}/{name}"))?;
        self.wait().await;
        Ok(self.config_maps.get(&format!("{ns}/{name}")).cloned())
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        self.record(format!("secret {ns}/{name}"))?;
        self.wait().await;
        Ok(self.secrets.get(&format!("{ns}/{name}")).cloned())
    }
}

impl VolumeSource for FakeSource {
    async fn token_request(
        &self,
        ns: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, kube::Error> {
        self.record(format!("token {ns}/{service_account}"))?;
        let serial = match self.token_requests.lock() {
            Ok(mut requests) => {
                requests.push(request.clone());
                requests.len()
            }
            Err(_) => 0,
        };
        let lifetime = self.token_lifetime.unwrap_or(3600);
        let mut response = request.clone();
        response.status = Some(TokenRequestStatus {
            token: format!("token-{ns}-{service_account}-{serial}"),
            expiration_timestamp: Time(Timestamp::now() + SignedDuration::from_secs(lifetime)),
        });
        Ok(response)
    }
}
