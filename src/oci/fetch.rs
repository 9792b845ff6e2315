//! Bounded reads from a registry: a manifest read up to its cap, a blob streamed into a
//! [`BlobWriter`] (which stops at its cap and verifies size and digest), and error bodies
//! read up to a few KiB. Sizes a registry declares (a descriptor's size, Content-Length)
//! are compared with each other and with the caps, and what arrives is counted: none is
//! trusted for an allocation.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use oci_client::Reference;
use reqwest::{Response, StatusCode};

use super::blobs::BlobWriter;
use super::formats::{Descriptor, MANIFEST_TYPES};
use super::limits::{Limit, human};
use super::reference::{client_registry, insecure_hosts};
use super::{OciError, ensure_crypto_provider};

/// How long to wait for a TCP/TLS connection to a registry.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read from a registry may stall.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an error response is read (for its message).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// GETs against one repository of one registry.
pub(crate) struct Http {
    client: reqwest::Client,
    /// `http(s)://<registry>/v2/<repository>`.
    base: String,
    /// The reference as the user gave it, and the registry's name, for errors.
    image: String,
    registry: String,
}

/// `err` and its sources, joined by ": ".
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
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

impl Http {
    /// A client for `reference`'s repository; registries in `insecure` over plain HTTP.
    pub(crate) fn new(reference: &Reference, image: &str, insecure: &[String]) -> Result<Self, OciError> {
        ensure_crypto_provider();
        let registry = client_registry(reference);
        let scheme = if insecure_hosts(insecure).contains(&registry) { "http" } else { "https" };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| OciError::Registry {
                reference: image.to_string(),
                detail: format!("building the registry client: {}", chain(&e)),
            })?;
        Ok(Http {
            client,
            base: format!("{scheme}://{registry}/v2/{}", reference.repository()),
            image: image.to_string(),
            registry,
        })
    }

    /// The manifest `tag_or_digest`, read up to [`Limit::Manifest`]; its bytes and the
    /// digest the registry announced (`Docker-Content-Digest`), if any.
    pub(crate) async fn manifest(
        &self,
        tag_or_digest: &str,
        auth: Option<&HeaderValue>,
    ) -> Result<(Vec<u8>, Option<String>), OciError> {
        let accept = MANIFEST_TYPES.join(", ");
        let mut response = self.get(&format!("manifests/{tag_or_digest}"), Some(&accept), auth).await?;
        let announced =
            response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let too_large = |declared: Option<u64>| OciError::TooLarge {
            reference: self.image.clone(),
            what: match declared {
                Some(n) => format!("the manifest {tag_or_digest} (Content-Length {})", human(n)),
                None => format!("the manifest {tag_or_digest}"),
            },
            limit: Limit::Manifest,
        };
        let cap = Limit::Manifest.bytes();
        if let Some(n) = response.content_length().filter(|n| *n > cap) {
            return Err(too_large(Some(n)));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.interrupted("the manifest", &e))? {
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(too_large(None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, announced))
    }

    /// Streams the blob `desc` into `writer` (which enforces its cap, the descriptor's size
    /// and the digest); returns where it was stored and how many bytes it has.
    pub(crate) async fn blob(
        &self,
        desc: &Descriptor,
        auth: Option<&HeaderValue>,
        mut writer: BlobWriter,
    ) -> Result<(PathBuf, u64), OciError> {
        let mut response = self.get(&format!("blobs/{}", desc.digest), None, auth).await?;
        if let Some(announced) = response.content_length() {
            if let Some(size) = desc.size.filter(|s| *s != announced) {
                return Err(OciError::Registry {
                    reference: self.image.clone(),
                    detail: format!(
                        "blob {} is {size} bytes by its descriptor, but the registry announced {announced} (Content-Length)",
                        desc.digest
                    ),
                });
            }
            writer.admits(announced)?;
        }
        let what = format!("blob {}", desc.digest);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.interrupted(&what, &e))? {
            writer.write(&chunk).await?;
        }
        let written = writer.written();
        Ok((writer.finish().await?, written))
    }

    /// Sends an authenticated GET for `path` (below the repository); a response that is
    /// not a success becomes the error it means.
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        auth: Option<&HeaderValue>,
    ) -> Result<Response, OciError> {
        let url = format!("{}/{path}", self.base);
        let mut request = self.client.get(&url);
        if let Some(accept) = accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        if let Some(auth) = auth {
            request = request.header(http::header::AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| self.request_error(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.status_error(response, &url).await)
    }

    fn request_error(&self, e: &reqwest::Error) -> OciError {
        let (reference, registry, detail) = (self.image.clone(), self.registry.clone(), chain(e));
        if e.is_connect() || e.is_timeout() {
            OciError::Unreachable { reference, registry, detail }
        } else {
            OciError::Registry { reference, detail }
        }
    }

    fn interrupted(&self, what: &str, e: &reqwest::Error) -> OciError {
        OciError::Registry {
            reference: self.image.clone(),
            detail: format!("downloading {what} was interrupted: {}", chain(e)),
        }
    }

    /// Maps an unsuccessful response, reading at most [`MAX_ERROR_BODY`] of its body for
    /// the registry's own message (the OCI error envelope).
    async fn status_error(&self, mut response: Response, url: &str) -> OciError {
        let status = response.status();
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())])
                }
                _ => break,
            }
        }
        let codes_and_messages: Vec<(String, String)> = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                (field("code"), field("message"))
            })
            .collect();
        let messages: Vec<&str> = codes_and_messages
            .iter()
            .map(|(code, message)| if message.is_empty() { code.as_str() } else { message.as_str() })
            .collect();
        let detail = if messages.is_empty() {
            format!("HTTP {status} ({url})")
        } else {
            format!("{} ({url})", messages.join("; "))
        };
        let has = |names: &[&str]| codes_and_messages.iter().any(|(c, _)| names.contains(&c.as_str()));
        let (reference, registry) = (self.image.clone(), self.registry.clone());
        if status == StatusCode::NOT_FOUND
            || has(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND"])
        {
            OciError::NotFound { reference, detail }
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || has(&["UNAUTHORIZED", "DENIED"])
        {
            OciError::Unauthorized { reference, registry, detail }
        } else {
            OciError::Registry { reference, detail }
        }
    }
}

#[cfg(test)]
mod tests;
