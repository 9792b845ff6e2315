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

/// Checks namespace (DNS label), pod (DNS subdomain) and container (DNS label) names.
pub fn check_names(namespace: &str, pod: &str, container: &str) -> Result<(), (StatusCode, String)> {
    let bad = |what: &str, v: &str| (StatusCode::BAD_REQUEST, format!("invalid {what} name {v:?}"));
    if !is_label(namespace) {
        return Err(bad("namespace", namespace));
    }
    if pod.len() > 253 || !pod.split('.').all(is_label) {
        return Err(bad("pod", pod));
    }
    if !is_label(container) {
        return Err(bad("container", container));
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
    }
}
