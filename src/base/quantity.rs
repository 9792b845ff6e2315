//! Kubernetes resource quantities (`64Mi`, `1G`, `500m`, `1e3`) as numbers.

/// A memory quantity in bytes; `None` if it is not a valid quantity.
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * multiplier).ceil() as u64)
}

/// Bytes as the shortest exact binary quantity (`512Mi`, `1536Ki`, `100`).
pub fn format_bytes(n: u64) -> String {
    for (shift, suffix) in [(60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn memory_quantities() {
        assert_eq!(bytes("64Mi"), Some(64 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(bytes("12Qi"), None);
        assert_eq!(bytes("-1"), None);
    }

    #[test]
    fn bytes_format_as_exact_binary_quantities() {
        assert_eq!(super::format_bytes(512 << 20), "512Mi");
        assert_eq!(super::format_bytes(1536 << 10), "1536Ki");
        assert_eq!(super::format_bytes(100), "100");
        assert_eq!(super::format_bytes(0), "0");
        assert_eq!(super::bytes(&super::format_bytes(3 << 30)), Some(3 << 30));
    }
}
