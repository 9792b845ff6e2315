//! When to renew a certificate: at a random point between 70% and 90% of its lifetime, as
//! the kubelet does, so that nodes that joined together do not all ask at once.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::CERT_ROTATION_WINDOW;

/// The moment to start renewing a certificate valid from `not_before` to `not_after`:
/// `not_before + lifetime × fraction`, the fraction `jitter` (clamped to [0, 1]) of the way
/// through [`CERT_ROTATION_WINDOW`]. A certificate with no lifetime is due at once.
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let (start, end) = CERT_ROTATION_WINDOW;
    let fraction = start + (end - start) * jitter.clamp(0.0, 1.0);
    not_before + lifetime.mul_f64(fraction)
}

/// A random number in [0, 1): the standard library's randomly keyed hasher (new keys for
/// every call) over the current time. Spreading renewals needs no more than that.
pub fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_deadline_falls_between_70_and_90_percent_of_the_lifetime() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for lifetime in [Duration::from_secs(8 * 60), Duration::from_secs(365 * 86_400)] {
            let end = start + lifetime;
            let at = |j: f64| rotation_deadline(start, end, j).duration_since(start).unwrap();
            assert_eq!(at(0.0), lifetime.mul_f64(0.7));
            assert_eq!(at(0.5), lifetime.mul_f64(0.8));
            assert_eq!(at(1.0), lifetime.mul_f64(0.9));
            // Out-of-range jitter is clamped, never outside the window.
            assert_eq!(at(-3.0), lifetime.mul_f64(0.7));
            assert_eq!(at(7.0), lifetime.mul_f64(0.9));
            for _ in 0..200 {
                let d = at(jitter());
                assert!(d >= lifetime.mul_f64(0.7) && d <= lifetime.mul_f64(0.9), "{d:?} of {lifetime:?}");
            }
        }
    }

    #[test]
    fn a_certificate_without_lifetime_is_due_at_once() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rotation_deadline(t, t, 0.5), t);
        assert_eq!(rotation_deadline(t, t - Duration::from_secs(5), 0.5), t);
    }

    #[test]
    fn jitter_spreads_over_the_unit_interval() {
        let samples: Vec<f64> = (0..2000).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        // Each tenth of the interval gets some (a constant or a narrow source fails this).
        for tenth in 0..10 {
            let (lo, hi) = (tenth as f64 / 10.0, (tenth + 1) as f64 / 10.0);
            let n = samples.iter().filter(|j| (lo..hi).contains(*j)).count();
            assert!(n > 50, "only {n} of 2000 in [{lo}, {hi})");
        }
    }
}
