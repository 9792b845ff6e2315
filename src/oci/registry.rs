//! One registry conversation through oci-client: the client (plain HTTP only for
//! insecure registries), manifest and blob fetches with verification, blob and manifest
//! uploads, and the mapping of registry failures onto [`OciError`].

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::{Client, Reference, RegistryOperation};

use super::blobs::{BlobWriter, sha256_digest};
use super::formats::{Descriptor, MANIFEST_TYPES};
use super::reference::{client_registry, insecure_hosts};
use super::{OciError, RegistryAuth, ensure_crypto_provider};

/// How long to wait for a TCP/TLS connection to a registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read from a registry may stall.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A client bound to one image reference and its credentials.
pub(crate) struct Registry {
    client: Client,
    reference: Reference,
    auth: oci_client::secrets::RegistryAuth,
    /// The reference as the user gave it, for error messages.
    image: String,
}

/// `err` and its sources, joined by ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
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

    /// The manifest named by the reference, or by `digest` in the same repository:
    /// its bytes and verified digest.
    pub(crate) async fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String), OciError> {
        let target = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        let (body, got) = self
            .client
            .pull_manifest_raw(&target, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.error(e))?;
        let actual = sha256_digest(&body);
        let expected = target.digest().map(str::to_string).unwrap_or(got);
        if expected.starts_with("sha256:") && expected != actual {
            return Err(OciError::DigestMismatch {
                what: format!("manifest of {}", self.image),
                expected,
                actual,
            });
        }
        Ok((body.to_vec(), actual))
    }

    /// Streams the blob `desc` into `writer`, which verifies size and digest.
    pub(crate) async fn blob(&self, desc: &Descriptor, mut writer: BlobWriter) -> Result<PathBuf, OciError> {
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, desc.digest.as_str())
            .await
            .map_err(|e| self.error(e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.stream_error(desc, e))?;
            writer.write(&chunk).await?;
        }
        writer.finish().await
    }

    fn stream_error(&self, desc: &Descriptor, e: std::io::Error) -> OciError {
        if let Some(DigestError::VerificationError { expected, actual }) =
            e.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>())
        {
            return OciError::DigestMismatch {
                what: format!("blob {} of {}", desc.digest, self.image),
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        OciError::Registry {
            reference: self.image.clone(),
            detail: format!("downloading blob {} was interrupted: {}", desc.digest, chain(&e)),
        }
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
