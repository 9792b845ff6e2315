//! Registry credentials: anonymous, or username/password per registry host, read from the
//! data of `imagePullSecrets` (`.dockerconfigjson` and legacy `.dockercfg`).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::OciError;
use super::reference::normalize_host;

/// `kubernetes.io/dockerconfigjson`: data key `.dockerconfigjson`, `{"auths": {host: entry}}`.
pub(crate) const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// `kubernetes.io/dockercfg`: data key `.dockercfg`, `{host: entry}`.
pub(crate) const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    username: String,
    password: String,
}

/// Credentials per registry host (normalized to lowercase `host[:port]`, every Docker
/// Hub alias as `docker.io`). Hosts without an entry are accessed anonymously.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    by_host: BTreeMap<String, Credentials>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords never reach logs.
        let users: BTreeMap<&str, &str> =
            self.by_host.iter().map(|(h, c)| (h.as_str(), c.username.as_str())).collect();
        f.debug_struct("RegistryAuth").field("users", &users).finish()
    }
}

/// One entry of a docker config: either `auth` (base64 "user:pass") or the two fields.
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

impl RegistryAuth {
    /// No credentials: every registry is accessed anonymously.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Reads the data of an image pull secret of type `kind`
    /// (`kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg`). Entries without
    /// credentials are skipped. Errors name what is wrong (another secret type, a missing
    /// key, malformed JSON or base64); the kubelet skips such secrets, so callers should
    /// warn and go on.
    pub fn from_secret_data(kind: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Self, OciError> {
        let bad = |detail: String| OciError::BadPullSecret { kind: kind.to_string(), detail };
        let (key, wrapped) = match kind {
            DOCKER_CONFIG_JSON_TYPE => (".dockerconfigjson", true),
            DOCKERCFG_TYPE => (".dockercfg", false),
            _ => {
                return Err(bad(format!(
                    "not an image pull secret (want type {DOCKER_CONFIG_JSON_TYPE} or {DOCKERCFG_TYPE})"
                )));
            }
        };
        let raw = data.get(key).ok_or_else(|| bad(format!("the secret has no {key} key")))?;
        let entries = if wrapped {
            serde_json::from_slice::<DockerConfigJson>(raw).map(|c| c.auths)
        } else {
            serde_json::from_slice::<BTreeMap<String, Entry>>(raw)
        }
        .map_err(|e| {
            bad(format!(
                "{key} is not valid docker config JSON: {}",
                crate::base::error::json_without_values(&e)
            ))
        })?;

        let mut auth = RegistryAuth::anonymous();
        for (host, entry) in entries {
            let creds = entry.credentials().map_err(|why| bad(format!("entry {host:?}: {why}")))?;
            if let Some(creds) = creds {
                auth.by_host.entry(normalize_host(&host)).or_insert(creds);
            }
        }
        Ok(auth)
    }

    /// Adds `other`'s hosts; for a host both have, the credentials already here are kept
    /// (so merging pull secrets in `imagePullSecrets` order gives the first one priority).
    pub fn merge(&mut self, other: Self) {
        for (host, creds) in other.by_host {
            self.by_host.entry(host).or_insert(creds);
        }
    }

    /// The oci-client credentials for a registry host (any alias form).
    pub(crate) fn for_registry(&self, registry: &str) -> oci_client::secrets::RegistryAuth {
        match self.by_host.get(&normalize_host(registry)) {
            Some(c) => oci_client::secrets::RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }
}

impl Entry {
    fn credentials(&self) -> Result<Option<Credentials>, String> {
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auth is not base64: {e}"))?;
            let text = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
            let (username, password) =
                text.split_once(':').ok_or_else(|| "auth is not of the form user:password".to_string())?;
            return Ok(Some(Credentials { username: username.into(), password: password.into() }));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() => {
                Ok(Some(Credentials { username: u.clone(), password: p.clone() }))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::secrets::RegistryAuth as ClientAuth;

    fn data(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_string(), json.as_bytes().to_vec())])
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> ClientAuth {
        ClientAuth::Basic(u.into(), p.into())
    }

    #[test]
    fn dockerconfigjson_auth_field_and_username_password() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},
                "Registry.Example.com:5000":{{"username":"bob","password":"p:w"}},
                "empty.example.com":{{}}}}}}"#,
            b64("alice:s3cret")
        );
        let auth = RegistryAuth::from_secret_data(DOCKER_CONFIG_JSON_TYPE, &data(".dockerconfigjson", &json))
            .unwrap();
        assert_eq!(auth.for_registry("index.docker.io"), basic("alice", "s3cret"));
        assert_eq!(auth.for_registry("docker.io"), basic("alice", "s3cret"));
        assert_eq!(auth.for_registry("registry.example.com:5000"), basic("bob", "p:w"));
        assert_eq!(auth.for_registry("registry.example.com"), ClientAuth::Anonymous);
        assert_eq!(auth.for_registry("empty.example.com"), ClientAuth::Anonymous);
    }

    #[test]
    fn legacy_dockercfg() {
        let json = format!(r#"{{"http://127.0.0.1:5001/v2/":{{"auth":"{}","email":"x@y"}}}}"#, b64("u:p"));
        let auth = RegistryAuth::from_secret_data(DOCKERCFG_TYPE, &data(".dockercfg", &json)).unwrap();
        assert_eq!(auth.for_registry("127.0.0.1:5001"), basic("u", "p"));
    }

    #[test]
    fn malformed_secrets_name_the_problem() {
        let cases = [
            ("Opaque", data(".dockerconfigjson", "{}"), "not an image pull secret"),
            (DOCKER_CONFIG_JSON_TYPE, data(".dockercfg", "{}"), "no .dockerconfigjson key"),
            (DOCKER_CONFIG_JSON_TYPE, data(".dockerconfigjson", "{"), "not valid docker config JSON"),
            (
                DOCKER_CONFIG_JSON_TYPE,
                data(".dockerconfigjson", r#"{"auths":{"h":"admin:hunter2"}}"#),
                "invalid type: string, expected struct",
            ),
            (
                DOCKERCFG_TYPE,
                data(".dockercfg", r#"{"h":{"auth":"***"}}"#),
                "entry \"h\": auth is not base64",
            ),
            (
                DOCKERCFG_TYPE,
                data(".dockercfg", &format!(r#"{{"h":{{"auth":"{}"}}}}"#, b64("nocolon"))),
                "user:password",
            ),
        ];
        for (kind, data, want) in cases {
            let err = RegistryAuth::from_secret_data(kind, &data).unwrap_err().to_string();
            assert!(err.contains(want), "{kind}: {err} lacks {want:?}");
            assert!(!err.contains("hunter2"), "the secret's value is not in {err:?}");
        }
    }

    #[test]
    fn merge_keeps_the_first_secret_for_a_host() {
        let one = format!(r#"{{"auths":{{"a.example":{{"auth":"{}"}}}}}}"#, b64("first:1"));
        let two = format!(
            r#"{{"auths":{{"a.example":{{"auth":"{}"}},"b.example":{{"auth":"{}"}}}}}}"#,
            b64("second:2"),
            b64("b:3")
        );
        let mut auth = RegistryAuth::anonymous();
        auth.merge(
            RegistryAuth::from_secret_data(DOCKER_CONFIG_JSON_TYPE, &data(".dockerconfigjson", &one))
                .unwrap(),
        );
        auth.merge(
            RegistryAuth::from_secret_data(DOCKER_CONFIG_JSON_TYPE, &data(".dockerconfigjson", &two))
                .unwrap(),
        );
        assert_eq!(auth.for_registry("a.example"), basic("first", "1"));
        assert_eq!(auth.for_registry("b.example"), basic("b", "3"));
        assert!(!format!("{auth:?}").contains("first:1") && !format!("{auth:?}").contains("\"1\""));
    }
}
