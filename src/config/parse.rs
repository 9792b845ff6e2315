//! Parsing and validating flag values: addresses, ports, names, labels, registries and
//! durations. Each error names the flag and says what was wrong.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, invalid};

pub(super) fn default_node_ip(addresses: &[IpAddr]) -> Option<IpAddr> {
    let usable = |ip: &&IpAddr| !ip.is_loopback() && !ip.is_unspecified();
    // Prefer IPv4, as the kubelet does when it picks an address on its own.
    (addresses.iter().filter(usable).find(|ip| ip.is_ipv4()))
        .or_else(|| addresses.iter().find(usable))
        .copied()
}

pub(super) fn parse_ip(flag: &'static str, raw: &str) -> Result<IpAddr, ConfigError> {
    raw.trim().parse().map_err(|_| invalid(flag, format!("{raw:?} is not an IP address")))
}

pub(super) fn parse_port(raw: &str) -> Result<u16, ConfigError> {
    match raw.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("port", format!("{raw:?} is not a port number (1-65535)"))),
        Ok(p) => Ok(p),
    }
}

pub(super) fn parse_max_pods(raw: &str) -> Result<u32, ConfigError> {
    match raw.trim().parse::<u32>() {
        Ok(0) | Err(_) => Err(invalid("max-pods", format!("{raw:?} is not a positive integer"))),
        Ok(n) => Ok(n),
    }
}

pub(super) fn non_empty_path(flag: &'static str, p: &Path) -> Result<PathBuf, ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(invalid(flag, "must not be empty"));
    }
    Ok(p.to_path_buf())
}

/// A DNS-1123 subdomain, as Kubernetes requires for node names.
pub(super) fn validate_dns_name(flag: &'static str, name: &str) -> Result<String, ConfigError> {
    if !crate::base::names::is_dns_subdomain(name) {
        return Err(invalid(
            flag,
            format!("{name:?} is not a valid DNS-1123 name (lowercase letters, digits, '-' and '.')"),
        ));
    }
    Ok(name.to_string())
}

/// Parses `k=v,k2=v2` into labels, checking keys and values as the API server would.
pub fn parse_labels(raw: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid("node-labels", format!("{pair:?} is not key=value")))?;
        check_label_key(key).map_err(|why| invalid("node-labels", format!("key {key:?} {why}")))?;
        if !value.is_empty() && !is_label_name(value) {
            return Err(invalid(
                "node-labels",
                format!(
                    "value {value:?} of {key:?} must be 63 characters or less of [A-Za-z0-9-_.], starting and ending alphanumeric"
                ),
            ));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

pub(super) fn is_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

pub(super) fn check_label_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && validate_dns_name("node-labels", p).is_err()
    {
        return Err("has a prefix that is not a DNS-1123 subdomain");
    }
    if !is_label_name(name) {
        return Err("must be [prefix/]name with a name of at most 63 characters of [A-Za-z0-9-_.]");
    }
    Ok(())
}

/// Parses `--insecure-registries` (shared by the node and `push`).
pub fn parse_registries(raw: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for r in raw.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if r.contains("://") || r.contains('/') || r.contains(char::is_whitespace) {
            return Err(invalid(
                "insecure-registries",
                format!("{r:?} must be host[:port] without a scheme or path"),
            ));
        }
        out.push(r.to_string());
    }
    Ok(out)
}

/// The longest duration accepted: Go's, `2562047h47m16.854775807s` (`i64::MAX`
/// nanoseconds). A value beyond it is an error, as in Go, never a wrap or a panic later
/// (`Instant + Duration` overflows long before `Duration` does).
pub(super) const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// A Go-style duration (`500ms`, `90s`, `1m30s`, `2h`) of at least `min` and at most
/// [`MAX_DURATION`].
pub(super) fn parse_duration(flag: &'static str, raw: &str, min: Duration) -> Result<Duration, ConfigError> {
    let bad = || invalid(flag, format!("{raw:?} is not a duration such as 90s or 1m30s (at least {min:?})"));
    let too_long = || invalid(flag, format!("{raw:?} is longer than the longest duration, 2562047h"));
    let mut rest = raw.trim();
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        // Digits beyond u64 are a duration too long, not a malformed one.
        let n: u128 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let nanos_per: u128 = match &rest[..unit] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        total = n.checked_mul(nanos_per).and_then(|p| total.checked_add(p)).ok_or_else(too_long)?;
        rest = &rest[unit..];
    }
    if total > MAX_DURATION.as_nanos() {
        return Err(too_long());
    }
    let total = Duration::from_nanos(total as u64);
    if total < min {
        return Err(bad());
    }
    Ok(total)
}
