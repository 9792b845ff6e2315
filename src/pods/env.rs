//! A container's environment (`envFrom`, `env`, `valueFrom`, `$(VAR)` expansion) and its
//! argv, resolved by the kubelet's rules.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};
use kube::{Api, Client};
use tracing::warn;

use crate::volumes::downward::{self, DownwardError};

/// The pod a container belongs to, and the node facts the downward API reports.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    /// Reported as `status.hostIP`, `status.hostIPs`, `status.podIP` and `status.podIPs`.
    pub node_ip: IpAddr,
    /// The node's allocatable `(cpu millicores, memory bytes)`: what `limits.cpu` and
    /// `limits.memory` resolve to for a container without that limit.
    pub allocatable: (u64, u64),
}

impl PodContext<'_> {
    /// The pod's namespace (`default` when unset, as for a static pod).
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Reads ConfigMaps and Secrets of a namespace; `Ok(None)` when the object does not exist.
/// Implemented for [`kube::Client`] (one GET per call) and by fakes in tests.
pub trait ObjectSource: Send + Sync {
    fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, kube::Error>> + Send;
    fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, kube::Error>> + Send;
}

impl ObjectSource for Client {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        Api::<ConfigMap>::namespaced(self.clone(), ns).get_opt(name).await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        Api::<Secret>::namespaced(self.clone(), ns).get_opt(name).await
    }
}

/// Which kind of object a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The lowercase name the kubelet uses in "not found" messages.
    pub fn resource(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

impl std::fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        })
    }
}

/// Why a container's environment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A required ConfigMap/Secret (`key: None`) or key is missing; the kubelet reports this
    /// as `CreateContainerConfigError`. Displays as the kubelet's message.
    #[error("{}", missing_message(*kind, namespace, name, key.as_deref()))]
    MissingConfig { kind: ConfigKind, namespace: String, name: String, key: Option<String> },
    /// Reading a ConfigMap/Secret failed for another reason than "not found".
    #[error("getting {kind} {namespace}/{name} failed: {source}")]
    Api { kind: ConfigKind, namespace: String, name: String, source: kube::Error },
    /// A `fieldRef` or `resourceFieldRef` could not be resolved.
    #[error("env var {var}: {source}")]
    Downward { var: String, source: DownwardError },
}

fn missing_message(kind: ConfigKind, namespace: &str, name: &str, key: Option<&str>) -> String {
    match key {
        None => format!("{} {name:?} not found", kind.resource()),
        Some(key) => format!("couldn't find key {key} in {kind} {namespace}/{name}"),
    }
}

/// ConfigMaps and Secrets read during one resolution, so each is fetched once.
pub(crate) struct Lookup<'s, S> {
    src: &'s S,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl<'s, S: ObjectSource> Lookup<'s, S> {
    pub(crate) fn new(src: &'s S, namespace: &str) -> Self {
        Lookup { src, namespace: namespace.into(), config_maps: HashMap::new(), secrets: HashMap::new() }
    }

    pub(crate) async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let got = self.src.config_map(&self.namespace, name).await.map_err(|source| EnvError::Api {
                kind: ConfigKind::ConfigMap,
                namespace: self.namespace.clone(),
                name: name.into(),
                source,
            })?;
            self.config_maps.insert(name.into(), got);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    pub(crate) async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, EnvError> {
        if !self.secrets.contains_key(name) {
            let got = self.src.secret(&self.namespace, name).await.map_err(|source| EnvError::Api {
                kind: ConfigKind::Secret,
                namespace: self.namespace.clone(),
                name: name.into(),
                source,
            })?;
            self.secrets.insert(name.into(), got);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    fn missing(&self, kind: ConfigKind, name: &str, key: Option<&str>) -> EnvError {
        EnvError::MissingConfig {
            kind,
            namespace: self.namespace.clone(),
            name: name.into(),
            key: key.map(Into::into),
        }
    }
}

/// The environment in definition order; setting an existing name replaces its value in place.
#[derive(Default)]
struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

/// The container's environment, as the kubelet builds it:
///
/// 1. each `envFrom` source in order: every key of the ConfigMap's `data` / Secret's `data`
///    (sorted), with `prefix` prepended; keys that are not valid env var names are skipped;
///    a missing source marked `optional` is skipped;
/// 2. each `env` entry in order: a non-empty `value` is `$(VAR)`-expanded against the
///    variables defined so far; otherwise `valueFrom` is resolved (its result is not
///    expanded); a missing optional object or key leaves the variable undefined; neither
///    gives the empty string.
///
/// A name defined again keeps its first position and takes the new value, so names are
/// unique. Secret bytes are decoded as UTF-8, lossily.
pub async fn resolve_env(
    src: &impl ObjectSource,
    ctx: &PodContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut lookup = Lookup::new(src, ctx.namespace());
    let mut env = EnvList::default();
    for from in container.env_from.iter().flatten() {
        let pairs: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match lookup.config_map(&r.name).await? {
                Some(cm) => cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(lookup.missing(ConfigKind::ConfigMap, &r.name, None)),
            }
        } else if let Some(r) = &from.secret_ref {
            match lookup.secret(&r.name).await? {
                Some(s) => s.data.iter().flatten().map(|(k, v)| (k.clone(), lossy(&v.0))).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(lookup.missing(ConfigKind::Secret, &r.name, None)),
            }
        } else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        for (key, value) in pairs {
            let name = format!("{prefix}{key}");
            if is_env_var_name(&name) {
                env.set(name, value);
            } else {
                invalid.push(name);
            }
        }
        if !invalid.is_empty() {
            warn!(container = %container.name, keys = ?invalid, "skipped envFrom keys that are not valid env var names");
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => expand(v, |name| env.get(name)),
            (_, Some(from)) => match value_from(&mut lookup, ctx, container, &var.name, from).await? {
                Some(v) => v,
                None => continue,
            },
            _ => String::new(),
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

/// One `valueFrom`; `None` when an optional object or key is missing.
async fn value_from<S: ObjectSource>(
    lookup: &mut Lookup<'_, S>,
    ctx: &PodContext<'_>,
    container: &Container,
    var: &str,
    from: &EnvVarSource,
) -> Result<Option<String>, EnvError> {
    let downward_err = |source| EnvError::Downward { var: var.into(), source };
    if let Some(f) = &from.field_ref {
        return downward::field_value(ctx, &f.field_path).map(Some).map_err(downward_err);
    }
    if let Some(r) = &from.resource_field_ref {
        return downward::resource_value(ctx, Some(container), r).map(Some).map_err(downward_err);
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let value = match lookup.config_map(&r.name).await? {
            None if optional => return Ok(None),
            None => return Err(lookup.missing(ConfigKind::ConfigMap, &r.name, None)),
            Some(cm) => cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned(),
        };
        return match value {
            None if optional => Ok(None),
            None => Err(lookup.missing(ConfigKind::ConfigMap, &r.name, Some(&r.key))),
            some => Ok(some),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let value = match lookup.secret(&r.name).await? {
            None if optional => return Ok(None),
            None => return Err(lookup.missing(ConfigKind::Secret, &r.name, None)),
            Some(s) => s.data.as_ref().and_then(|d| d.get(&r.key)).map(|b| lossy(&b.0)),
        };
        return match value {
            None if optional => Ok(None),
            None => Err(lookup.missing(ConfigKind::Secret, &r.name, Some(&r.key))),
            some => Ok(some),
        };
    }
    Ok(Some(String::new()))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The kubelet's (1.20) rule for env var names: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
    name.bytes().next().is_some_and(|c| ok(c) && !c.is_ascii_digit()) && name.bytes().all(ok)
}

/// Kubernetes `$(VAR)` expansion: `$(NAME)` becomes the value `lookup` gives, or stays as
/// written when `lookup` has none; `$$` is a literal `$`; a `$` before anything else, or an
/// unterminated `$(`, is copied as is.
pub fn expand<'v>(input: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&input[copied..i]);
        let rest = &input[i + 1..];
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match rest.find(')') {
                Some(close) => {
                    let name = &rest[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(&input[i..i + 2 + close]),
                    }
                    i += 2 + close;
                }
                None => {
                    out.push_str("$(");
                    i += 2;
                }
            },
            _ => {
                out.push('$');
                i += 1;
            }
        }
        copied = i;
    }
    out.push_str(&input[copied..]);
    out
}

/// The guest's argv, by Kubernetes' rule: `command` replaces the image's Entrypoint and
/// `args` replace its Cmd (a `command` without `args` drops Cmd); `$(VAR)` is expanded in
/// `command` and `args`, never in the image's own lists. Wasm has one program per image,
/// so when no Entrypoint or command names it, argv[0] is `module_path` (the image's module)
/// in front of `args`, and the whole argv when there is nothing else.
pub fn argv(
    container: &Container,
    image_entrypoint: &[String],
    image_cmd: &[String],
    module_path: &str,
    env: &[(String, String)],
) -> Vec<String> {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let expanded = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter().flatten().map(|s| expand(s, lookup)).collect()
    };
    let command = expanded(&container.command);
    let args = expanded(&container.args);
    if !command.is_empty() {
        return command.into_iter().chain(args).collect();
    }
    let argv: Vec<String> = match (image_entrypoint.is_empty(), args.is_empty()) {
        (false, false) => image_entrypoint.iter().cloned().chain(args).collect(),
        (false, true) => image_entrypoint.iter().chain(image_cmd).cloned().collect(),
        (true, false) => std::iter::once(module_path.to_string()).chain(args).collect(),
        (true, true) => image_cmd.to_vec(),
    };
    if argv.is_empty() { vec![module_path.to_string()] } else { argv }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
