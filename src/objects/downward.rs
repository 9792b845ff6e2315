//! The downward API: a pod field (`fieldRef`) or a container resource (`resourceFieldRef`)
//! as the string the kubelet would give, shared by env vars and downwardAPI volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::base::quantity::Exact;
use crate::objects::PodContext;

/// A downward API reference the agent cannot resolve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownwardError {
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    #[error("unsupported container resource: {0}")]
    UnsupportedResource(String),
    #[error("container {0:?} named in resourceFieldRef is not in the pod")]
    NoSuchContainer(String),
    #[error("resourceFieldRef needs a containerName here")]
    NoContainer,
    #[error("invalid quantity {0:?}")]
    InvalidQuantity(String),
    #[error("{0} is not set and the node has no allocatable value for it")]
    NoLimit(String),
}

/// The value of `fieldPath` for the pod, as the kubelet computes it: the IPs are the node's,
/// a whole label/annotation map is `key="value"` lines sorted by key, and a missing
/// subscripted key is the empty string.
pub fn field_value(ctx: &PodContext<'_>, path: &str) -> Result<String, DownwardError> {
    let pod = ctx.pod;
    let spec = pod.spec.as_ref();
    let (labels, annotations) = (pod.labels(), pod.annotations());
    if let Some((base, key)) = split_subscript(path) {
        return match base {
            "metadata.labels" => Ok(labels.get(key).cloned().unwrap_or_default()),
            "metadata.annotations" => Ok(annotations.get(key).cloned().unwrap_or_default()),
            _ => Err(DownwardError::UnsupportedField(path.to_string())),
        };
    }
    let value = match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => ctx.namespace(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => format_map(labels),
        "metadata.annotations" => format_map(annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => ctx.node_ip.to_string(),
        _ => return Err(DownwardError::UnsupportedField(path.to_string())),
    };
    Ok(value)
}

/// Splits `base['key']` into `(base, key)`; `None` for a path without a subscript.
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// `key="value"` lines sorted by key, values quoted like Go's `%q`.
fn format_map(map: &BTreeMap<String, String>) -> String {
    let lines: Vec<String> = map.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect();
    lines.join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef`, as the kubelet computes it: CPU is
/// `ceil(millicores / divisor-millicores)`, memory and ephemeral storage
/// `ceil(bytes / divisor-bytes)` (default divisor `1`). A missing CPU or memory limit is the
/// node's allocatable; a missing request is `0`.
///
/// `container` is the one whose env is being resolved; a selector's `containerName` names
/// another container of the pod (and is required when `container` is `None`).
pub fn resource_value(
    ctx: &PodContext<'_>,
    container: Option<&Container>,
    sel: &ResourceFieldSelector,
) -> Result<String, DownwardError> {
    let target = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => find_container(ctx, name).ok_or_else(|| DownwardError::NoSuchContainer(name.into()))?,
        None => container.ok_or(DownwardError::NoContainer)?,
    };
    let (which, resource) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| DownwardError::UnsupportedResource(sel.resource.clone()))?;
    let resources = target.resources.as_ref();
    let set = match which {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(DownwardError::UnsupportedResource(sel.resource.clone())),
    };
    let given = set.and_then(|m| m.get(resource)).map(parse_checked).transpose()?;
    let divisor = sel.divisor.as_ref().map(parse_checked).transpose()?.unwrap_or(Exact::ONE);
    let (cpu_millis, memory_bytes) = ctx.allocatable;
    let value = match (resource, given) {
        ("cpu", q) => {
            let millis = match q {
                Some(q) => q.ceil_scaled(1000),
                None if which == "limits" => Some(i128::from(cpu_millis)),
                None => Some(0),
            };
            ratio_ceil(millis, divisor.ceil_scaled(1000))
        }
        ("memory" | "ephemeral-storage", q) => {
            let bytes = match q {
                Some(q) => q.ceil_scaled(1),
                None if which == "requests" => Some(0),
                None if resource == "memory" => Some(i128::from(memory_bytes)),
                None => return Err(DownwardError::NoLimit(sel.resource.clone())),
            };
            ratio_ceil(bytes, divisor.ceil_scaled(1))
        }
        _ => return Err(DownwardError::UnsupportedResource(sel.resource.clone())),
    };
    value.map(|v| v.to_string()).ok_or_else(|| DownwardError::InvalidQuantity(divisor_text(sel)))
}

fn divisor_text(sel: &ResourceFieldSelector) -> String {
    sel.divisor.as_ref().map(|q| q.0.clone()).unwrap_or_else(|| "1".into())
}

fn find_container<'p>(ctx: &PodContext<'p>, name: &str) -> Option<&'p Container> {
    let spec = ctx.pod.spec.as_ref()?;
    let init = spec.init_containers.iter().flatten();
    spec.containers.iter().chain(init).find(|c| c.name == name)
}

fn ratio_ceil(value: Option<i128>, divisor: Option<i128>) -> Option<i128> {
    let (value, divisor) = (value?, divisor?);
    if divisor <= 0 {
        return None;
    }
    Some(ceil_div(value, divisor))
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

fn parse_checked(q: &Quantity) -> Result<Exact, DownwardError> {
    Exact::parse(&q.0).ok_or_else(|| DownwardError::InvalidQuantity(q.0.clone()))
}

#[cfg(test)]
mod tests;
