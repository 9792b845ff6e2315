//! Media types and manifest shapes: parsing manifests and indexes, deciding which of the
//! accepted artifact formats a manifest is, and choosing the Wasm entry of an index.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ArtifactFormat;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What we send as `Accept` when fetching a manifest.
pub(crate) const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST];

pub(crate) const WASM_TO_OCI_CONFIG: &str = "application/vnd.wasm.config.v1+json";
pub(crate) const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub(crate) const CNCF_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub(crate) const CNCF_WASM_LAYER: &str = "application/wasm";

const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const TAR_LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
];
const GZIP_TAR_LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A content descriptor (manifest layer/config or index entry).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest document.
#[derive(Debug)]
pub(crate) enum Manifest {
    Index(Vec<Descriptor>),
    Image { config: Descriptor, layers: Vec<Descriptor> },
}

/// Why a manifest could not be used: malformed, or valid but not something we run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    Malformed(String),
    Unsupported(String),
}

pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<Manifest, Rejection> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(format!("manifest JSON: {e}")))?;
    if raw.schema_version == Some(1) {
        return Err(Rejection::Unsupported("Docker schema 1 manifests are not supported".into()));
    }
    let is_index = matches!(raw.media_type.as_deref(), Some(OCI_INDEX | DOCKER_MANIFEST_LIST));
    match (raw.manifests, raw.config, raw.layers) {
        (Some(entries), _, _) => Ok(Manifest::Index(entries)),
        (None, _, _) if is_index => Err(Rejection::Malformed("image index without \"manifests\"".into())),
        (None, Some(config), layers) => Ok(Manifest::Image { config, layers: layers.unwrap_or_default() }),
        (None, None, _) => Err(Rejection::Malformed(format!(
            "no \"config\" or \"manifests\" (mediaType {})",
            raw.media_type.as_deref().unwrap_or("unset")
        ))),
    }
}

/// How a tar layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// What to fetch for a manifest.
#[derive(Debug)]
pub(crate) enum Plan {
    /// The module is this layer, byte for byte.
    WasmLayer { format: ArtifactFormat, layer: Descriptor },
    /// The module is a file inside these tar layers; the entrypoint is in the config.
    Image { config: Descriptor, layers: Vec<(Descriptor, Compression)> },
}

fn describe(config: &Descriptor, layers: &[Descriptor]) -> String {
    let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
    format!("config media type {}, layer media types [{}]", config.media_type, types.join(", "))
}

const SUPPORTED: &str = "supported: wasm-to-oci (application/vnd.wasm.content.layer.v1+wasm), \
    CNCF Wasm artifacts (application/vnd.wasm.config.v0+json + application/wasm), \
    OCI/Docker images with tar layers";

/// Decides which accepted format `config` + `layers` is.
pub(crate) fn plan(config: Descriptor, layers: Vec<Descriptor>) -> Result<Plan, Rejection> {
    let is_wasm_layer = |l: &Descriptor| matches!(l.media_type.as_str(), WASM_TO_OCI_LAYER | CNCF_WASM_LAYER);
    let wasm_config = matches!(config.media_type.as_str(), WASM_TO_OCI_CONFIG | CNCF_WASM_CONFIG);
    if wasm_config || layers.iter().any(is_wasm_layer) {
        if layers.len() != 1 || !layers.iter().all(is_wasm_layer) {
            return Err(Rejection::Unsupported(format!(
                "{}: a Wasm artifact must have exactly one {WASM_TO_OCI_LAYER} or {CNCF_WASM_LAYER} layer",
                describe(&config, &layers)
            )));
        }
        let Some(layer) = layers.into_iter().next() else {
            return Err(Rejection::Unsupported("no layers".into()));
        };
        let format = match layer.media_type.as_str() {
            WASM_TO_OCI_LAYER => ArtifactFormat::WasmToOci,
            _ => ArtifactFormat::CncfWasm,
        };
        return Ok(Plan::WasmLayer { format, layer });
    }
    let image_config = matches!(config.media_type.as_str(), OCI_IMAGE_CONFIG | DOCKER_IMAGE_CONFIG);
    let compression = |l: &Descriptor| {
        let t = l.media_type.as_str();
        if TAR_LAYERS.contains(&t) {
            Some(Compression::None)
        } else if GZIP_TAR_LAYERS.contains(&t) {
            Some(Compression::Gzip)
        } else {
            None
        }
    };
    let unsupported_layers: Vec<&str> =
        layers.iter().filter(|l| compression(l).is_none()).map(|l| l.media_type.as_str()).collect();
    if !image_config || !unsupported_layers.is_empty() || layers.is_empty() {
        let why = if image_config && !unsupported_layers.is_empty() {
            format!("unsupported layer media type(s) {}", unsupported_layers.join(", "))
        } else {
            SUPPORTED.to_string()
        };
        return Err(Rejection::Unsupported(format!("{}; {why}", describe(&config, &layers))));
    }
    let layers = layers
        .into_iter()
        .map(|l| {
            let c = compression(&l).unwrap_or(Compression::None);
            (l, c)
        })
        .collect();
    Ok(Plan::Image { config, layers })
}

fn is_wasm_platform(p: &Platform) -> bool {
    matches!(p.os.as_str(), "wasip1" | "wasip2" | "wasi" | "wasm")
        || matches!(p.architecture.as_str(), "wasm" | "wasm32")
}

/// Buildx attestations and other entries that are not runnable images.
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.contains_key("vnd.docker.reference.type")
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// The index entry to run: the first Wasm platform, else the only runnable entry; else
/// `Err` listing the platforms found.
pub(crate) fn select_entry(entries: &[Descriptor]) -> Result<&Descriptor, String> {
    if let Some(e) = entries.iter().find(|e| e.platform.as_ref().is_some_and(is_wasm_platform)) {
        return Ok(e);
    }
    let runnable: Vec<&Descriptor> = entries.iter().filter(|e| !is_attestation(e)).collect();
    if let [only] = runnable.as_slice() {
        return Ok(only);
    }
    let platforms: Vec<String> = entries
        .iter()
        .map(|e| match &e.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => format!("{} (no platform)", e.digest),
        })
        .collect();
    Err(if platforms.is_empty() { "the index is empty".into() } else { platforms.join(", ") })
}

/// The parts of an OCI/Docker image config we use.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ContainerConfig {
    #[serde(default, rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, rename = "WorkingDir")]
    pub working_dir: Option<String>,
}

#[cfg(test)]
mod tests;
