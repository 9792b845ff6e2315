//! Pushing a Wasm module to a registry as a CNCF Wasm artifact or in wasm-to-oci format.

use std::path::Path;

use serde_json::json;

use super::blobs::sha256_digest;
use super::formats::{
    CNCF_WASM_CONFIG, CNCF_WASM_LAYER, OCI_MANIFEST, WASM_TO_OCI_CONFIG, WASM_TO_OCI_LAYER,
};
use super::reference::{self, ImageRef};
use super::registry::Registry;
use super::{OciError, RegistryAuth};

/// The artifact layout to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// CNCF Wasm OCI artifact: config `application/vnd.wasm.config.v0+json` (os `wasip1`,
    /// architecture `wasm`), one `application/wasm` layer.
    Cncf,
    /// wasm-to-oci: config `application/vnd.wasm.config.v1+json` (`{}`), one
    /// `application/vnd.wasm.content.layer.v1+wasm` layer.
    WasmToOci,
}

/// Pushes the module at `wasm` to `reference` and returns the manifest digest
/// (`sha256:...`). Registries in `insecure_registries` are reached over plain HTTP.
pub async fn push(
    wasm: &Path,
    reference: &str,
    format: PushFormat,
    insecure_registries: &[String],
    auth: &RegistryAuth,
) -> Result<String, OciError> {
    let target = match reference::parse(reference)? {
        ImageRef::Registry(r) => r,
        ImageRef::LocalFile(_) => {
            return Err(OciError::BadReference {
                reference: reference.to_string(),
                why: "cannot push to a file:// reference".into(),
            });
        }
    };
    let module =
        tokio::fs::read(wasm).await.map_err(|source| OciError::LocalFile { path: wasm.into(), source })?;
    if !module.starts_with(b"\0asm") {
        return Err(OciError::Push {
            reference: reference.to_string(),
            detail: format!("{} is not a WebAssembly binary (no \\0asm header)", wasm.display()),
        });
    }
    let layer_digest = sha256_digest(&module);
    let layer_size = module.len();
    let title =
        wasm.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "module.wasm".into());
    let (config_type, config, layer_type) = match format {
        PushFormat::Cncf => (
            CNCF_WASM_CONFIG,
            json!({ "architecture": "wasm", "os": "wasip1", "layerDigests": [layer_digest] }),
            CNCF_WASM_LAYER,
        ),
        PushFormat::WasmToOci => (WASM_TO_OCI_CONFIG, json!({}), WASM_TO_OCI_LAYER),
    };
    let config = serde_json::to_vec(&config).map_err(|e| OciError::Push {
        reference: reference.to_string(),
        detail: format!("encoding the config: {e}"),
    })?;
    let config_digest = sha256_digest(&config);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": config_type, "digest": config_digest, "size": config.len() },
        "layers": [{
            "mediaType": layer_type,
            "digest": layer_digest,
            "size": layer_size,
            "annotations": { "org.opencontainers.image.title": title },
        }],
    });
    if format == PushFormat::Cncf {
        manifest["artifactType"] = json!(CNCF_WASM_CONFIG);
    }
    let manifest = serde_json::to_vec(&manifest).map_err(|e| OciError::Push {
        reference: reference.to_string(),
        detail: format!("encoding the manifest: {e}"),
    })?;
    let manifest_digest = sha256_digest(&manifest);

    let reg = Registry::connect(&target, reference, insecure_registries, auth)?;
    reg.authenticate_push().await?;
    reg.push_blob(module, &layer_digest).await?;
    reg.push_blob(config, &config_digest).await?;
    reg.push_manifest(manifest, OCI_MANIFEST).await?;
    tracing::info!(reference, digest = %manifest_digest, format = ?format, "pushed Wasm module");
    Ok(manifest_digest)
}
