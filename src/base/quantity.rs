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

/// A CPU quantity in millicores, rounded up as Kubernetes' `MilliValue` (`200m` -> 200,
/// `0.5` -> 500, `2` -> 2000); `None` if it is not a valid, non-negative quantity.
pub fn millis(q: &str) -> Option<u64> {
    u64::try_from(Exact::parse(q)?.ceil_scaled(1000)?).ok()
}

/// A quantity in whole units (bytes), rounded up as Kubernetes' `Value`; `None` if it is
/// not a valid, non-negative quantity. Exact where [`bytes`] goes through a float.
pub fn units(q: &str) -> Option<u64> {
    u64::try_from(Exact::parse(q)?.ceil_scaled(1)?).ok()
}

/// Millicores as Kubernetes writes them: whole cores (`2`) when exact, else `1500m`.
pub fn format_millis(m: u64) -> String {
    if m.is_multiple_of(1000) { (m / 1000).to_string() } else { format!("{m}m") }
}

/// A Kubernetes quantity as the exact fraction `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact {
    num: i128,
    den: i128,
}

impl Exact {
    pub const ONE: Exact = Exact { num: 1, den: 1 };

    /// Parses `<sign><digits>[.<digits>]<suffix>`, the suffix binary (`Ki`..`Ei`), decimal
    /// (`n`, `u`, `m`, ``, `k`, `M`..`E`) or an exponent (`e3`, `E-2`).
    pub fn parse(text: &str) -> Option<Exact> {
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_len);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return None;
        }
        let mut num: i128 = 0;
        for d in whole.bytes().chain(frac.bytes()) {
            num = num.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
        }
        let mut den = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        let (base, exp): (i128, i32) = match suffix {
            "" => (10, 0),
            "n" => (10, -9),
            "u" => (10, -6),
            "m" => (10, -3),
            "k" => (10, 3),
            "M" => (10, 6),
            "G" => (10, 9),
            "T" => (10, 12),
            "P" => (10, 15),
            "E" => (10, 18),
            "Ki" => (2, 10),
            "Mi" => (2, 20),
            "Gi" => (2, 30),
            "Ti" => (2, 40),
            "Pi" => (2, 50),
            "Ei" => (2, 60),
            _ => {
                let digits = suffix.strip_prefix(['e', 'E'])?;
                (10, digits.parse().ok()?)
            }
        };
        let factor = base.checked_pow(exp.unsigned_abs())?;
        if exp >= 0 {
            num = num.checked_mul(factor)?;
        } else {
            den = den.checked_mul(factor)?;
        }
        Some(Exact { num: if negative { -num } else { num }, den })
    }

    /// `ceil(self * scale)`: the value in units of `1/scale`, rounded up as Kubernetes does.
    pub fn ceil_scaled(self, scale: i128) -> Option<i128> {
        let (a, b) = (self.num.checked_mul(scale)?, self.den);
        let q = a.div_euclid(b);
        Some(if a.rem_euclid(b) == 0 { q } else { q + 1 })
    }
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
    fn cpu_quantities_are_millicores_rounded_up() {
        assert_eq!(super::millis("200m"), Some(200));
        assert_eq!(super::millis("0.1"), Some(100));
        assert_eq!(super::millis("2"), Some(2000));
        assert_eq!(super::millis("0.0001"), Some(1));
        assert_eq!(super::millis("-1"), None);
        assert_eq!(super::millis("lots"), None);
        assert_eq!(super::units("1Gi"), Some(1 << 30));
        assert_eq!(super::units("1.5"), Some(2));
        assert_eq!(super::format_millis(2000), "2");
        assert_eq!(super::format_millis(1500), "1500m");
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
