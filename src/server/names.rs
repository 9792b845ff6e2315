//! Validation of names taken from request paths, so nothing a caller sends can reach
//! outside the log store or a pod's files: traversal, encoded separators and anything
//! that is not a Kubernetes name are refused with 400.

use axum::http::StatusCode;

/// A request path with `..` segments, encoded slashes or backslashes, or NUL.
pub fn check_raw_path(path: &str) -> Result<(), String> {
    let lower = path.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "%00", "%2e", "\\"] {
        if lower.contains(bad) {
            return Err(format!("invalid request path: {bad:?} is not allowed"));
        }
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("invalid request path: '.' and '..' segments are not allowed".into());
    }
    Ok(())
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn bad(what: &str, v: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("invalid {what} name {v:?}"))
}

/// Checks namespace (DNS label) and pod (DNS subdomain) names.
pub fn check_pod(namespace: &str, pod: &str) -> Result<(), (StatusCode, String)> {
    if !is_label(namespace) {
        return Err(bad("namespace", namespace));
    }
    if pod.len() > 253 || !pod.split('.').all(is_label) {
        return Err(bad("pod", pod));
    }
    Ok(())
}

/// Checks namespace (DNS label), pod (DNS subdomain) and container (DNS label) names.
pub fn check_names(namespace: &str, pod: &str, container: &str) -> Result<(), (StatusCode, String)> {
    check_pod(namespace, pod)?;
    if !is_label(container) {
        return Err(bad("container", container));
    }
    Ok(())
}

/// Checks a pod UID from a path: letters, digits and dashes (a UUID, or a static pod's hash).
pub fn check_uid(uid: &str) -> Result<(), (StatusCode, String)> {
    let ok =
        !uid.is_empty() && uid.len() <= 128 && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err((StatusCode::BAD_REQUEST, format!("invalid pod UID {uid:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_bad_names_are_refused() {
        assert!(check_raw_path("/containerLogs/default/p/c").is_ok());
        for p in
            ["/containerLogs/../../etc/passwd", "/containerLogs/a%2Fb/p/c", "/x/%2e%2e/y", "/a\\b", "/a/./b"]
        {
            assert!(check_raw_path(p).is_err(), "{p}");
        }
        assert!(check_names("default", "web-1.x", "main").is_ok());
        assert!(check_names("a/b", "p", "c").is_err());
        assert!(check_names("ns", "..", "c").is_err());
        assert!(check_names("ns", "p", "C").is_err());
        assert!(check_names("ns", "p", "").is_err());
        assert!(check_pod("ns", "web-1").is_ok() && check_pod("NS", "p").is_err());
        assert!(check_uid("0b6c1c1e-5f4a-4c1e-9c55-2f0e4d1b7a10").is_ok());
        for uid in ["", "a/b", "x y", &"u".repeat(129)] {
            assert!(check_uid(uid).is_err(), "{uid}");
        }
    }
}
