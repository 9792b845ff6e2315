//! One registry conversation: authentication and uploads through oci-client, manifest
//! and blob downloads through the bounded GETs of `fetch.rs` (with their digests
//! verified), and the mapping of oci-client's failures onto [`OciError`].

use std::path::PathBuf;

use base64::Engine as _;
use http::HeaderValue;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::{Client, Reference, RegistryOperation};
use tokio::sync::OnceCell;

use super::blobs::{BlobWriter, sha256_digest};
use super::fetch::{CONNECT_TIMEOUT, Http, READ_TIMEOUT, chain};
use super::formats::Descriptor;
use super::reference::{client_registry, insecure_hosts};
use super::{OciError, RegistryAuth, ensure_crypto_provider};

/// A client bound to one image reference and its credentials.
pub(crate) struct Registry {
    client: Client,
    http: Http,
    reference: Reference,
    auth: oci_client::secrets::RegistryAuth,
    /// The `Authorization` header of pulls, found once per conversation.
    pull_auth: OnceCell<Option<HeaderValue>>,
    /// The reference as the user gave it, for error messages.
    image: String,
}

impl Registry {
    /// A client for `reference`; `insecure` lists the `host:port`s reached over plain HTTP.
    pub(crate) fn connect(
        reference: &Reference,
        image: &str,
        insecure: &[String],
        auth: &RegistryAuth,
    ) -> Result<Self, OciError> {
        ensure_crypto_provider();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure_hosts(insecure)),
            platform_resolver: None, // indexes are resolved by formats::select_entry
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| OciError::Registry {
            reference: image.to_string(),
            detail: format!("building the registry client: {}", chain(&e)),
        })?;
        Ok(Self {
            client,
            http: Http::new(reference, image, insecure)?,
            pull_auth: OnceCell::new(),
            auth: auth.for_registry(reference.resolve_registry()),
            reference: reference.clone(),
            image: image.to_string(),
        })
    }

    /// The reference as the user gave it.
    pub(crate) fn image(&self) -> &str {
        &self.image
    }

    /// Maps an oci-client failure to the error a user should see.
    pub(crate) fn error(&self, e: OciDistributionError) -> OciError {
        let reference = self.image.clone();
        let registry = client_registry(&self.reference);
        let detail = chain(&e);
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => {
                OciError::Unauthorized { reference, registry, detail }
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let messages: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| if e.message.is_empty() { format!("{:?}", e.code) } else { e.message.clone() })
                    .collect();
                let detail = format!("{} ({url})", messages.join("; "));
                let codes = || envelope.errors.iter().map(|e| &e.code);
                if codes().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    OciError::NotFound { reference, detail }
                } else if codes().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    OciError::Unauthorized { reference, registry, detail }
                } else {
                    OciError::Registry { reference, detail }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => OciError::NotFound { reference, detail },
            OciDistributionError::ServerError { code: 401 | 403, .. } => {
                OciError::Unauthorized { reference, registry, detail }
            }
            OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
                OciError::Unreachable { reference, registry, detail }
            }
            OciDistributionError::RequestError(r) => match r.status().map(|s| s.as_u16()) {
                Some(401 | 403) => OciError::Unauthorized { reference, registry, detail },
                Some(404) => OciError::NotFound { reference, detail },
                _ => OciError::Registry { reference, detail },
            },
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                OciError::DigestMismatch { what: format!("content of {reference}"), expected, actual }
            }
            _ => OciError::Registry { reference, detail },
        }
    }

    /// The `Authorization` header for pulls: a bearer token when the registry asks for one
    /// (oci-client runs that exchange), else the pull secret's basic credentials, else none.
    async fn pull_authorization(&self) -> Result<Option<&HeaderValue>, OciError> {
        let header = self
            .pull_auth
            .get_or_try_init(|| async {
                let token = self
                    .client
                    .auth(&self.reference, &self.auth, RegistryOperation::Pull)
                    .await
                    .map_err(|e| self.error(e))?;
                let value = match (token, &self.auth) {
                    (Some(token), _) => Some(format!("Bearer {token}")),
                    (None, oci_client::secrets::RegistryAuth::Basic(user, password)) => {
                        let pair =
                            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                        Some(format!("Basic {pair}"))
                    }
                    (None, _) => None,
                };
                Ok::<_, OciError>(value.and_then(|v| HeaderValue::from_str(&v).ok()))
            })
            .await?;
        Ok(header.as_ref())
    }

    /// The manifest named by the reference, or by `digest` in the same repository, read
    /// up to its cap: its bytes and verified digest.
    pub(crate) async fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String), OciError> {
        let named = digest.or(self.reference.digest()).or(self.reference.tag()).unwrap_or("latest");
        let auth = self.pull_authorization().await?;
        let (body, announced) = self.http.manifest(named, auth).await?;
        let actual = sha256_digest(&body);
        let pinned = digest.or(self.reference.digest()).map(str::to_string);
        for expected in pinned.into_iter().chain(announced) {
            if expected.starts_with("sha256:") && expected != actual {
                return Err(OciError::DigestMismatch {
                    what: format!("manifest of {}", self.image),
                    expected,
                    actual,
                });
            }
        }
        Ok((body, actual))
    }

    /// Streams the blob `desc` into `writer`, which verifies size and digest and stops at
    /// its cap; where it was stored, and its size.
    pub(crate) async fn blob(
        &self,
        desc: &Descriptor,
        writer: BlobWriter,
    ) -> Result<(PathBuf, u64), OciError> {
        let auth = self.pull_authorization().await?;
        self.http.blob(desc, auth, writer).await
    }

    /// Uploads `data` as a blob with `digest` (skipped if the registry has it).
    pub(crate) async fn push_blob(&self, data: Vec<u8>, digest: &str) -> Result<(), OciError> {
        self.client.store_auth_if_needed(self.reference.resolve_registry(), &self.auth).await;
        let push_err = |e: OciDistributionError| self.push_error(e);
        if self.client.blob_exists(&self.reference, digest).await.map_err(push_err)? {
            return Ok(());
        }
        self.client.push_blob(&self.reference, data, digest).await.map_err(push_err)?;
        Ok(())
    }

    /// Uploads a manifest under the reference's tag (or digest).
    pub(crate) async fn push_manifest(&self, body: Vec<u8>, media_type: &str) -> Result<(), OciError> {
        self.client.store_auth_if_needed(self.reference.resolve_registry(), &self.auth).await;
        let content_type = http::HeaderValue::from_str(media_type).map_err(|e| OciError::Push {
            reference: self.image.clone(),
            detail: format!("media type {media_type:?} is not a valid header: {e}"),
        })?;
        self.client
            .push_manifest_raw(&self.reference, body, content_type)
            .await
            .map_err(|e| self.push_error(e))?;
        Ok(())
    }

    /// Push failures: auth and reachability keep their own variants, the rest is `Push`.
    fn push_error(&self, e: OciDistributionError) -> OciError {
        match self.error(e) {
            err @ (OciError::Unauthorized { .. } | OciError::Unreachable { .. }) => err,
            other => OciError::Push { reference: self.image.clone(), detail: other.to_string() },
        }
    }

    /// Makes the first push request authenticate for pushing (Bearer registries).
    pub(crate) async fn authenticate_push(&self) -> Result<(), OciError> {
        self.client
            .auth(&self.reference, &self.auth, RegistryOperation::Push)
            .await
            .map(|_| ())
            .map_err(|e| self.push_error(e))
    }
}
