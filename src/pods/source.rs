//! Where pods' ConfigMaps, Secrets and service-account tokens come from: the API server
//! when the node is connected; nowhere in standalone mode (static pods cannot reference
//! API objects, as with the kubelet), where lookups find nothing and tokens are refused.
//! A request the Node authorizer refuses because it has not yet seen the pod bound to
//! this node is asked again for a few milliseconds (see [`crate::config::AUTHORIZER_LAG_POLL`]).

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use tokio::time::Instant;

use crate::objects::ObjectSource;
use crate::volumes::VolumeSource;

/// The API server, if the node has one.
#[derive(Clone)]
pub struct ApiSource(pub Option<Client>);

impl ObjectSource for ApiSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        match &self.0 {
            Some(c) => until_bound(|| c.config_map(ns, name)).await,
            None => Ok(None),
        }
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        match &self.0 {
            Some(c) => until_bound(|| c.secret(ns, name)).await,
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
            Some(c) => until_bound(|| c.token_request(ns, sa, request)).await,
            None => Err(kube::Error::Service(
                "this node runs standalone (no API server): service account tokens are not available".into(),
            )),
        }
    }
}

/// Whether the Node authorizer refused the request for want of a path from this node to
/// the object: the pod's binding has not reached its graph yet (or the pod does not use
/// the object, which asking again for a few milliseconds does not change).
fn not_yet_related(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("no relationship found"))
}

/// The answer of `call`, asked again while the Node authorizer lags behind the pod's
/// binding, for at most [`crate::config::AUTHORIZER_LAG_WAIT`]; then its refusal.
async fn until_bound<T, F>(mut call: impl FnMut() -> F) -> Result<T, kube::Error>
where
    F: Future<Output = Result<T, kube::Error>>,
{
    let give_up = Instant::now() + crate::config::AUTHORIZER_LAG_WAIT;
    loop {
        match call().await {
            Err(e) if not_yet_related(&e) && Instant::now() < give_up => {
                tracing::debug!(error = %e, "the Node authorizer has not seen the pod's binding yet; asking again");
                tokio::time::sleep(crate::config::AUTHORIZER_LAG_POLL).await;
            }
            answer => return answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use kube::core::Status;

    use super::*;

    fn refused(message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "Forbidden").with_code(403).boxed())
    }

    const LAG: &str = "serviceaccounts \"default\" is forbidden: User \"system:node:n\" cannot create \
        resource \"serviceaccounts/token\": no relationship found between node 'n' and this object";

    #[tokio::test(start_paused = true)]
    async fn a_refusal_for_want_of_the_binding_is_asked_again_until_granted() {
        let calls = AtomicU32::new(0);
        let answer = until_bound(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(refused(LAG)),
                _ => Ok("token"),
            }
        })
        .await;
        assert_eq!(answer.ok(), Some("token"));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_refusal_is_returned_after_the_bounded_wait() {
        let calls = AtomicU32::new(0);
        let began = Instant::now();
        let answer: Result<(), _> = until_bound(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(refused(LAG))
        })
        .await;
        assert!(not_yet_related(&answer.unwrap_err()));
        let waited = began.elapsed();
        assert!(waited >= crate::config::AUTHORIZER_LAG_WAIT, "gave up after {waited:?}");
        assert!(waited < crate::config::AUTHORIZER_LAG_WAIT + Duration::from_millis(10));
        let most =
            crate::config::AUTHORIZER_LAG_WAIT.as_millis() / crate::config::AUTHORIZER_LAG_POLL.as_millis();
        assert!(u128::from(calls.load(Ordering::SeqCst)) <= most + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn other_refusals_and_errors_are_returned_at_once() {
        for error in
            [refused("secrets \"s\" is forbidden: RBAC says no"), kube::Error::Service("down".into())]
        {
            let calls = AtomicU32::new(0);
            let mut error = Some(error);
            let answer: Result<(), _> = until_bound(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = error.take();
                async move { Err(e.unwrap_or_else(|| refused(LAG))) }
            })
            .await;
            assert!(answer.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }
}
