//! Kubernetes object names, checked as the API server checks them (DNS-1123).

/// A DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, not starting or ending
/// with `-` (namespaces, container and volume names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: up to 253 characters of labels joined by `.` (pod and node names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "web-1", "x0"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("web.example-1"));
        assert!(
            !is_dns_subdomain("web..x")
                && !is_dns_subdomain("../../etc")
                && !is_dns_subdomain(&"a.".repeat(127))
        );
    }
}
