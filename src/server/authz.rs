//! Authorization of kubelet API requests, as the kubelet does it: the request maps to a
//! verb on a `nodes` subresource, asked of the API server with a SubjectAccessReview;
//! answers are cached briefly (allowed 5 min, denied 30 s, the kubelet's webhook defaults).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use super::tls::Identity;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

/// What a request asks to do, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The kubelet's mapping: HTTP method -> verb; path -> `nodes/<subresource>`.
pub fn attributes(method: &Method, path: &str) -> Attributes {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let subresource = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        _ => "proxy",
    };
    Attributes { verb, subresource }
}

/// Asks the API server whether an identity may do something on this node.
pub struct Authorizer {
    /// None in standalone mode: nobody with a certificate is allowed (there is no RBAC).
    client: Option<Client>,
    node_name: String,
    cache: Mutex<HashMap<(Identity, Attributes), (bool, Instant)>>,
}

impl Authorizer {
    pub fn new(client: Option<Client>, node_name: &str) -> Self {
        Authorizer { client, node_name: node_name.into(), cache: Mutex::new(HashMap::new()) }
    }

    /// `Ok(true)` if allowed; an API failure is an error (the caller answers 500).
    pub async fn allowed(&self, who: &Identity, what: &Attributes) -> Result<bool, kube::Error> {
        let key = (who.clone(), what.clone());
        if let Some((allowed, until)) = self.lock().get(&key).copied()
            && Instant::now() < until
        {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(what.verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(what.subresource.into()),
                    name: Some(self.node_name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let Some(client) = self.client.clone() else { return Ok(false) };
        let api: Api<SubjectAccessReview> = Api::all(client);
        let answer = api.create(&PostParams::default(), &review).await?;
        let allowed = answer.status.map(|s| s.allowed).unwrap_or(false);
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        let mut cache = self.lock();
        cache.retain(|_, (_, until)| *until > Instant::now());
        cache.insert(key, (allowed, Instant::now() + ttl));
        Ok(allowed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Identity, Attributes), (bool, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_like_the_kubelets() {
        let a = |m: Method, p: &str| {
            let x = attributes(&m, p);
            (x.verb, x.subresource)
        };
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/exec/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/pods"), ("get", "proxy"));
        assert_eq!(a(Method::POST, "/run/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::POST, "/portForward/ns/p"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/portForward/ns/p/0b6c1c1e"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/metrics"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/logs/"), ("get", "log"));
    }
}
