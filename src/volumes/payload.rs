//! What a configMap, secret, downwardAPI or projected volume holds: its files, built by the
//! kubelet's rules (items, modes, optional) from the API objects and the pod.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeProjection,
};

use super::writer::{FileData, Payload, mode_bits, normalize};
use super::{VolumeError, VolumeSource};
use crate::objects::downward;
use crate::objects::{ConfigKind, Lookup, LookupError, ObjectSource, PodContext};

/// The kubelet's default mode for files of configMap, downwardAPI and projected volumes.
const DEFAULT_MODE: i32 = 0o644;
/// The mode of the files of a secret volume, and of a projected volume with a secret or
/// service account token source, when the volume sets no `defaultMode` (the API server
/// sets 0644 on every pod it admits; static pods may leave it unset): owner-only.
const SECRET_DEFAULT_MODE: i32 = 0o600;

/// A token is requested again after this share of its lifetime, as the kubelet does.
const TOKEN_REFRESH_SHARE: f64 = 0.8;
/// ... or after a day, whichever comes first.
const TOKEN_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A service account token written into a projected volume, kept until it is due.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub refresh_at: SystemTime,
}

/// Tokens by (volume name, index of the projected source).
pub(crate) type Tokens = HashMap<(String, usize), Token>;

/// The files a configMap, secret, downwardAPI or projected volume holds now (empty for
/// any other type).
pub(crate) async fn for_volume<S: VolumeSource>(
    src: &S,
    lookup: &mut Lookup<'_, S>,
    ctx: &PodContext<'_>,
    volume: &Volume,
    tokens: &mut Tokens,
) -> Result<Payload, VolumeError> {
    let name = volume.name.as_str();
    if let Some(cm) = &volume.config_map {
        let r = ObjectRef::new(ConfigKind::ConfigMap, &cm.name, cm.items.as_deref(), cm.optional);
        object(lookup, name, &r, cm.default_mode.unwrap_or(DEFAULT_MODE)).await
    } else if let Some(s) = &volume.secret {
        let secret_name = s.secret_name.as_deref().unwrap_or_default();
        let r = ObjectRef::new(ConfigKind::Secret, secret_name, s.items.as_deref(), s.optional);
        object(lookup, name, &r, s.default_mode.unwrap_or(SECRET_DEFAULT_MODE)).await
    } else if let Some(d) = &volume.downward_api {
        downward_items(
            ctx,
            name,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode.unwrap_or(DEFAULT_MODE),
        )
    } else if let Some(p) = &volume.projected {
        projected(src, lookup, ctx, name, p, tokens).await
    } else {
        Ok(Payload::new())
    }
}

/// All sources of a projected volume merged (a later source wins a path), each file with
/// its item's `mode` or the volume's `defaultMode`, by default 0644, or 0600 when the
/// volume holds a secret or a token. Its TokenRequests and its ConfigMap and Secret reads
/// go to the API server at the same time (every pod's default volume has one of each).
async fn projected<S: VolumeSource>(
    src: &S,
    lookup: &mut Lookup<'_, S>,
    ctx: &PodContext<'_>,
    volume: &str,
    p: &ProjectedVolumeSource,
    tokens: &mut Tokens,
) -> Result<Payload, VolumeError> {
    let mode = p.default_mode.unwrap_or(projected_default_mode(p));
    let sources: Vec<&VolumeProjection> = p.sources.iter().flatten().collect();
    let requested = async {
        let mut out = HashMap::new();
        for (index, t) in
            sources.iter().enumerate().filter_map(|(i, s)| Some((i, s.service_account_token.as_ref()?)))
        {
            out.insert(index, service_account_token(src, ctx, volume, index, t, tokens).await?);
        }
        Ok::<_, VolumeError>(out)
    };
    let read = async {
        let mut out: HashMap<usize, Payload> = HashMap::new();
        for (index, source) in sources.iter().enumerate() {
            if let Some(cm) = &source.config_map {
                let r = ObjectRef::new(ConfigKind::ConfigMap, &cm.name, cm.items.as_deref(), cm.optional);
                out.entry(index).or_default().extend(object(lookup, volume, &r, mode).await?);
            }
            if let Some(s) = &source.secret {
                let r = ObjectRef::new(ConfigKind::Secret, &s.name, s.items.as_deref(), s.optional);
                out.entry(index).or_default().extend(object(lookup, volume, &r, mode).await?);
            }
        }
        Ok::<_, VolumeError>(out)
    };
    let (requested, read) = futures::join!(requested, read);
    let (mut requested, mut read) = (requested?, read?);
    let mut files = Payload::new();
    for (index, source) in sources.iter().enumerate() {
        files.extend(read.remove(&index).unwrap_or_default());
        if let Some(d) = &source.downward_api {
            files.extend(downward_items(ctx, volume, d.items.as_deref().unwrap_or_default(), mode)?);
        }
        if let Some((path, token)) = requested.remove(&index) {
            files.insert(path, FileData { bytes: token.into_bytes(), mode: mode_bits(mode) });
        }
    }
    Ok(files)
}

/// The default file mode of a projected volume that sets none: owner-only when any
/// source is a Secret or a service account token.
fn projected_default_mode(p: &ProjectedVolumeSource) -> i32 {
    let secret = |s: &VolumeProjection| s.secret.is_some() || s.service_account_token.is_some();
    if p.sources.iter().flatten().any(secret) { SECRET_DEFAULT_MODE } else { DEFAULT_MODE }
}

/// A ConfigMap's or Secret's entries, the way one volume refers to it.
struct ObjectRef<'v> {
    pub kind: ConfigKind,
    pub name: &'v str,
    pub items: Option<&'v [KeyToPath]>,
    pub optional: bool,
}

impl<'v> ObjectRef<'v> {
    fn new(kind: ConfigKind, name: &'v str, items: Option<&'v [KeyToPath]>, optional: Option<bool>) -> Self {
        ObjectRef { kind, name, items, optional: optional == Some(true) }
    }
}

/// The files of a configMap/secret volume (or projected source): every key, or just
/// `items` (each at its `path`, with its `mode`), modes defaulting to `default_mode`.
async fn object<S: ObjectSource>(
    lookup: &mut Lookup<'_, S>,
    volume: &str,
    r: &ObjectRef<'_>,
    default_mode: i32,
) -> Result<Payload, VolumeError> {
    let lookup_err =
        |source: LookupError| VolumeError::Api { volume: volume.into(), source: Box::new(source) };
    let entries: Option<BTreeMap<String, Vec<u8>>> = match r.kind {
        ConfigKind::ConfigMap => lookup.config_map(r.name).await.map_err(lookup_err)?.map(|cm| {
            let text = cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes()));
            let binary = cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone()));
            binary.chain(text).collect()
        }),
        ConfigKind::Secret => lookup
            .secret(r.name)
            .await
            .map_err(lookup_err)?
            .map(|s| s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()),
    };
    let missing = |key: Option<&str>| VolumeError::MissingConfig {
        volume: volume.into(),
        kind: r.kind,
        name: r.name.into(),
        key: key.map(Into::into),
    };
    let entries = match entries {
        Some(entries) => entries,
        None if r.optional => return Ok(Payload::new()),
        None => return Err(missing(None)),
    };
    let mut payload = Payload::new();
    let Some(items) = r.items.filter(|items| !items.is_empty()) else {
        for (key, bytes) in entries {
            let path = checked_path(volume, &key)?;
            payload.insert(path, FileData { bytes, mode: mode_bits(default_mode) });
        }
        return Ok(payload);
    };
    for item in items {
        let Some(bytes) = entries.get(&item.key) else {
            if r.optional {
                continue;
            }
            return Err(missing(Some(&item.key)));
        };
        let mode = mode_bits(item.mode.unwrap_or(default_mode));
        payload.insert(checked_path(volume, &item.path)?, FileData { bytes: bytes.clone(), mode });
    }
    Ok(payload)
}

/// The files of a downwardAPI volume (or projected source): one per item.
fn downward_items(
    ctx: &PodContext<'_>,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            downward::field_value(ctx, &f.field_path)
        } else if let Some(r) = &item.resource_field_ref {
            downward::resource_value(ctx, None, r)
        } else {
            Ok(String::new())
        };
        let value = value.map_err(|source| VolumeError::Downward {
            volume: volume.into(),
            path: item.path.clone(),
            source,
        })?;
        let mode = mode_bits(item.mode.unwrap_or(default_mode));
        payload.insert(checked_path(volume, &item.path)?, FileData { bytes: value.into_bytes(), mode });
    }
    Ok(payload)
}

/// The token file of a serviceAccountToken projection: the cached token while it is fresh,
/// else a new TokenRequest for the pod's service account (its `audience` as the only
/// audience, its `expirationSeconds`, bound to the pod).
async fn service_account_token<S: VolumeSource>(
    src: &S,
    ctx: &PodContext<'_>,
    volume: &str,
    index: usize,
    projection: &ServiceAccountTokenProjection,
    tokens: &mut Tokens,
) -> Result<(String, String), VolumeError> {
    let path = checked_path(volume, &projection.path)?;
    let key = (volume.to_string(), index);
    let now = SystemTime::now();
    if let Some(token) = tokens.get(&key).filter(|t| t.refresh_at > now) {
        return Ok((path, token.value.clone()));
    }
    let pod = &ctx.pod.metadata;
    let service_account = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().filter(|a| !a.is_empty()).cloned().collect(),
            expiration_seconds: projection.expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let namespace = ctx.namespace();
    let failed = |problem: String| VolumeError::TokenRequest {
        volume: volume.into(),
        namespace: namespace.clone(),
        service_account: service_account.clone(),
        problem,
    };
    let response =
        src.token_request(&namespace, &service_account, &request).await.map_err(|e| failed(e.to_string()))?;
    let status = response
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| failed("the response holds no token".into()))?;
    let expires = SystemTime::from(status.expiration_timestamp.0);
    let lifetime = expires.duration_since(now).unwrap_or_default();
    let refresh_at = now + lifetime.mul_f64(TOKEN_REFRESH_SHARE).min(TOKEN_MAX_AGE);
    tokens.insert(key, Token { value: status.token.clone(), refresh_at });
    Ok((path, status.token))
}

/// `path` normalized, or [`VolumeError::InvalidPath`] if absolute or containing `..`.
fn checked_path(volume: &str, path: &str) -> Result<String, VolumeError> {
    normalize(path).ok_or_else(|| VolumeError::InvalidPath { volume: volume.into(), path: path.into() })
}
