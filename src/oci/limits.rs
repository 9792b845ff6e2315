//! The size caps on what a pull reads: which cap a read is under, how much of it is left,
//! and how a cap is named in the error a user sees (value and flag).

use std::fmt;

/// Manifests, image indexes and image configs may not exceed this (containerd's cap).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// A tar long-name, long-link or pax header entry may not exceed this: the tar reader
/// holds it in memory whole, and real ones are a few hundred bytes.
pub const MAX_TAR_HEADER_SIZE: u64 = 1024 * 1024;
/// A path inside a layer may not be longer than this (Linux's `PATH_MAX`).
pub const MAX_LAYER_PATH: usize = 4096;

/// A cap, with what it applies to; displays as its value and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A manifest, an index or an image config ([`MAX_MANIFEST_SIZE`], fixed).
    Manifest,
    /// The layers of one image together (`--image-max-size`).
    Image(u64),
    /// What one layer unpacks to, each of its files included (`--image-max-size`).
    Unpacked(u64),
    /// A `file://` module (`--image-max-size`).
    LocalFile(u64),
    /// One tar long-name or pax header ([`MAX_TAR_HEADER_SIZE`], fixed).
    TarHeader,
}

impl Limit {
    /// The cap in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Limit::Manifest => MAX_MANIFEST_SIZE,
            Limit::TarHeader => MAX_TAR_HEADER_SIZE,
            Limit::Image(n) | Limit::Unpacked(n) | Limit::LocalFile(n) => n,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = human(self.bytes());
        match self {
            Limit::Manifest => write!(f, "{size}, the cap on manifests and image configs (containerd's)"),
            Limit::Image(_) => write!(f, "--image-max-size={size}, the cap on one image's layers together"),
            Limit::Unpacked(_) => write!(f, "--image-max-size={size}, the cap on what one layer unpacks to"),
            Limit::LocalFile(_) => write!(f, "--image-max-size={size}, the cap on a file:// module"),
            Limit::TarHeader => write!(f, "{size}, the cap on a tar long-name or pax header"),
        }
    }
}

/// `n` bytes in binary units: exact when it is a whole number of them (`256Mi`), else with
/// one decimal (`1.5Gi`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if n < 1024 {
        return n.to_string();
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < UNITS.len() && n / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    if n.is_multiple_of(scale) {
        format!("{}{}", n / scale, UNITS[unit])
    } else {
        format!("{:.1}{}", n as f64 / scale as f64, UNITS[unit])
    }
}

/// What is left of one cap while a pull reads under it.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub limit: Limit,
    used: u64,
}

impl Budget {
    pub fn new(limit: Limit) -> Self {
        Budget { limit, used: 0 }
    }

    /// Bytes that may still be read.
    pub fn remaining(&self) -> u64 {
        self.limit.bytes().saturating_sub(self.used)
    }

    /// Counts `n` bytes as read; false if that goes past the cap.
    pub fn spend(&mut self, n: u64) -> bool {
        self.used = self.used.saturating_add(n);
        self.used <= self.limit.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_quantities() {
        assert_eq!(human(512), "512");
        assert_eq!(human(4 << 20), "4Mi");
        assert_eq!(human(256 << 20), "256Mi");
        assert_eq!(human(1 << 30), "1Gi");
        assert_eq!(human(3 << 29), "1.5Gi");
        assert_eq!(human(300_000_000), "286.1Mi");
    }

    #[test]
    fn limits_name_their_value_and_flag() {
        assert_eq!(
            Limit::Image(256 << 20).to_string(),
            "--image-max-size=256Mi, the cap on one image's layers together"
        );
        assert!(Limit::Manifest.to_string().starts_with("4Mi, "));
        assert!(Limit::Unpacked(1 << 30).to_string().contains("--image-max-size=1Gi"));
    }

    #[test]
    fn a_budget_runs_out() {
        let mut b = Budget::new(Limit::Image(10));
        assert!(b.spend(6));
        assert_eq!(b.remaining(), 4);
        assert!(b.spend(4));
        assert!(!b.spend(1));
        assert_eq!(b.remaining(), 0);
    }
}
