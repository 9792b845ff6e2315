//! A container's environment (`envFrom`, `env`, `valueFrom`, `$(VAR)` expansion) and its
//! argv, resolved by the kubelet's rules.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, EnvVarSource};
use tracing::warn;

use crate::config::{MAX_ENV_TOTAL, MAX_ENV_VALUE};
pub use crate::objects::LookupError;
use crate::objects::downward::{self, DownwardError};
use crate::objects::{ConfigKind, Lookup, ObjectSource, PodContext};

/// Why a container's environment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A referenced ConfigMap or Secret (or one of its keys) cannot be used.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A `fieldRef` or `resourceFieldRef` could not be resolved.
    #[error("env var {var}: {source}")]
    Downward { var: String, source: DownwardError },
    /// A value (after `$(VAR)` expansion) is longer than one may be.
    #[error("{what} is longer than {limit} bytes after $(VAR) expansion")]
    ValueTooLong { what: String, limit: usize },
    /// The environment (names and values), or argv, together is larger than it may be.
    #[error("the container's {what} is larger than {limit} bytes in all (at {at})")]
    TooLarge { what: &'static str, limit: usize, at: String },
}

/// Keeps a running total against [`MAX_ENV_TOTAL`].
struct Budget {
    what: &'static str,
    used: usize,
}

impl Budget {
    fn spend(&mut self, bytes: usize, at: &str) -> Result<(), EnvError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > MAX_ENV_TOTAL {
            return Err(EnvError::TooLarge { what: self.what, limit: MAX_ENV_TOTAL, at: at.into() });
        }
        Ok(())
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
    let mut lookup = Lookup::new(src, &ctx.namespace());
    let mut env = EnvList::default();
    let mut budget = Budget { what: "environment", used: 0 };
    for from in container.env_from.iter().flatten() {
        let pairs: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match lookup.config_map(&r.name).await? {
                Some(cm) => cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(lookup.missing(ConfigKind::ConfigMap, &r.name, None).into()),
            }
        } else if let Some(r) = &from.secret_ref {
            match lookup.secret(&r.name).await? {
                Some(s) => s.data.iter().flatten().map(|(k, v)| (k.clone(), lossy(&v.0))).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(lookup.missing(ConfigKind::Secret, &r.name, None).into()),
            }
        } else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        for (key, value) in pairs {
            let name = format!("{prefix}{key}");
            if is_env_var_name(&name) {
                budget.spend(name.len() + value.len(), &name)?;
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
            (Some(v), _) if !v.is_empty() => expand(v, |name| env.get(name), MAX_ENV_VALUE)
                .map_err(|limit| EnvError::ValueTooLong { what: format!("env var {}", var.name), limit })?,
            (_, Some(from)) => match value_from(&mut lookup, ctx, container, &var.name, from).await? {
                Some(v) => v,
                None => continue,
            },
            _ => String::new(),
        };
        budget.spend(var.name.len() + value.len(), &var.name)?;
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
            None => return Err(lookup.missing(ConfigKind::ConfigMap, &r.name, None).into()),
            Some(cm) => cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned(),
        };
        return match value {
            None if optional => Ok(None),
            None => Err(lookup.missing(ConfigKind::ConfigMap, &r.name, Some(&r.key)).into()),
            some => Ok(some),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let value = match lookup.secret(&r.name).await? {
            None if optional => return Ok(None),
            None => return Err(lookup.missing(ConfigKind::Secret, &r.name, None).into()),
            Some(s) => s.data.as_ref().and_then(|d| d.get(&r.key)).map(|b| lossy(&b.0)),
        };
        return match value {
            None if optional => Ok(None),
            None => Err(lookup.missing(ConfigKind::Secret, &r.name, Some(&r.key)).into()),
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
/// unterminated `$(`, is copied as is. A result longer than `max` bytes is `Err(max)`,
/// found before it is built (values that expand to others can double at each step).
pub fn expand<'v>(
    input: &str,
    lookup: impl Fn(&str) -> Option<&'v str>,
    max: usize,
) -> Result<String, usize> {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len().min(max));
    let mut copied = 0;
    let mut i = 0;
    let push = |out: &mut String, text: &str| {
        if out.len().saturating_add(text.len()) > max {
            return Err(max);
        }
        out.push_str(text);
        Ok(())
    };
    while i + 1 < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        push(&mut out, &input[copied..i])?;
        let rest = &input[i + 1..];
        match bytes[i + 1] {
            b'$' => {
                push(&mut out, "$")?;
                i += 2;
            }
            b'(' => match rest.find(')') {
                Some(close) => {
                    let name = &rest[1..close];
                    match lookup(name) {
                        Some(value) => push(&mut out, value)?,
                        None => push(&mut out, &input[i..i + 2 + close])?,
                    }
                    i += 2 + close;
                }
                None => {
                    push(&mut out, "$(")?;
                    i += 2;
                }
            },
            _ => {
                push(&mut out, "$")?;
                i += 1;
            }
        }
        copied = i;
    }
    push(&mut out, &input[copied..])?;
    Ok(out)
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
) -> Result<Vec<String>, EnvError> {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut budget = Budget { what: "command and arguments", used: 0 };
    let mut expanded = |field: &str, list: &Option<Vec<String>>| -> Result<Vec<String>, EnvError> {
        let mut out = Vec::new();
        for (i, s) in list.iter().flatten().enumerate() {
            let what = format!("{field}[{i}]");
            let value = expand(s, lookup, MAX_ENV_VALUE)
                .map_err(|limit| EnvError::ValueTooLong { what: what.clone(), limit })?;
            budget.spend(value.len(), &what)?;
            out.push(value);
        }
        Ok(out)
    };
    let command = expanded("command", &container.command)?;
    let args = expanded("args", &container.args)?;
    if !command.is_empty() {
        return Ok(command.into_iter().chain(args).collect());
    }
    let argv: Vec<String> = match (image_entrypoint.is_empty(), args.is_empty()) {
        (false, false) => image_entrypoint.iter().cloned().chain(args).collect(),
        (false, true) => image_entrypoint.iter().chain(image_cmd).cloned().collect(),
        (true, false) => std::iter::once(module_path.to_string()).chain(args).collect(),
        (true, true) => image_cmd.to_vec(),
    };
    Ok(if argv.is_empty() { vec![module_path.to_string()] } else { argv })
}

#[cfg(test)]
mod tests;
