//! Time as the Kubernetes API writes it.

use k8s_openapi::jiff::Timestamp;

/// Seconds-precision RFC 3339, the format of `metav1.Time`.
pub fn rfc3339(ts: &Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 (seconds) of a system time (the epoch if it cannot be represented).
pub fn rfc3339_of(time: std::time::SystemTime) -> String {
    rfc3339(&Timestamp::try_from(time).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// RFC 3339 (seconds) of now.
pub fn now_rfc3339() -> String {
    rfc3339(&Timestamp::now())
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_precision_utc() {
        let ts: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(super::rfc3339(&ts), "2026-01-02T03:04:05Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_767_323_045_678);
        assert_eq!(super::rfc3339_of(t), "2026-01-02T03:04:05Z");
    }
}
