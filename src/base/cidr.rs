//! IP ranges in CIDR notation (`10.0.0.0/8`, `fe80::/10`, a bare address for one host):
//! parsing as Kubernetes and the kubelet write them, and membership. Addresses are taken
//! as what they reach: an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is its IPv4
//! address, both as a range and as a member, so a rule about IPv4 cannot be walked around.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The first address of the range (host bits cleared), canonical.
    base: IpAddr,
    /// Leading bits that must match (0..=32 for IPv4, 0..=128 for IPv6).
    prefix: u8,
}

/// Why a range cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8, fe80::/10)")]
    Address(String),
    #[error("{0:?}: the prefix length is not a number from 0 to {1}")]
    Prefix(String, u8),
}

impl Cidr {
    /// The range of the one address `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = ip.to_canonical();
        Cidr { base: ip, prefix: bits(ip) }
    }

    /// Whether `ip` (taken as what it maps to) is in the range. An IPv4 range never
    /// holds an IPv6 address and the other way round.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                masked(u32::from(ip).into(), 32, self.prefix) == u32::from(base).into()
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, self.prefix) == u128::from(base)
            }
            _ => false,
        }
    }

    /// The number of leading bits of the range.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

/// The address bits of `ip`'s family.
fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `value` (of `width` bits) with all but its first `prefix` bits cleared.
fn masked(value: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix);
    (value >> keep) << keep
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/PREFIX`, or a bare address (one host). Host bits below the prefix are
    /// ignored (`10.1.2.3/8` is `10.0.0.0/8`), as the Kubernetes API accepts them for
    /// `ipBlock`. An IPv4-mapped IPv6 range (`::ffff:127.0.0.0/104`) is its IPv4 range.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| CidrError::Address(raw.to_string()))?;
        let width = bits(ip);
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width && !p.starts_with('+') => n,
                _ => return Err(CidrError::Prefix(raw.to_string(), width)),
            },
        };
        // A mapped IPv6 range whose prefix covers the mapping is the IPv4 range it maps.
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            let prefix = prefix - 96;
            let base = masked(u32::from(v4).into(), 32, prefix) as u32;
            return Ok(Cidr { base: IpAddr::V4(base.into()), prefix });
        }
        let base = match ip {
            IpAddr::V4(v4) => IpAddr::V4((masked(u32::from(v4).into(), 32, prefix) as u32).into()),
            IpAddr::V6(v6) => IpAddr::V6(masked(u128::from(v6), 128, prefix).into()),
        };
        Ok(Cidr { base, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Parses a comma-separated list of ranges (empty items are skipped).
pub fn parse_list(raw: &str) -> Result<Vec<Cidr>, CidrError> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_hold_their_addresses_and_no_others() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.255.254", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("10.1.2.3/8", "10.200.0.1", true),
            ("169.254.0.0/16", "169.254.169.254", true),
            ("169.254.0.0/16", "169.255.0.1", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", false),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::/128", "::", true),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("ff00::/8", "ff02::1", true),
            ("224.0.0.0/4", "239.255.255.255", true),
            ("224.0.0.0/4", "240.0.0.1", false),
            ("10.0.0.5", "10.0.0.5", true),
            ("10.0.0.5", "10.0.0.6", false),
            ("::ffff:127.0.0.0/104", "127.9.9.9", true),
            ("::ffff:127.0.0.0/104", "::ffff:127.9.9.9", true),
            ("::ffff:127.0.0.0/104", "128.0.0.1", false),
        ];
        for (range, addr, want) in cases {
            assert_eq!(cidr(range).contains(ip(addr)), *want, "{range} holds {addr}");
        }
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/-1", "10.0.0.0/+8", "any", "10.0.0.0/"]
        {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "10.0.0.0/40".parse::<Cidr>().unwrap_err().to_string(),
            "\"10.0.0.0/40\": the prefix length is not a number from 0 to 32"
        );
        assert_eq!(cidr("10.9.8.7/16").to_string(), "10.9.0.0/16");
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::host(ip("::ffff:1.2.3.4")).to_string(), "1.2.3.4/32");
        let list = parse_list(" 127.0.0.0/8, ::1/128 ,,").unwrap();
        assert_eq!(list, [cidr("127.0.0.0/8"), cidr("::1/128")]);
        assert!(parse_list("10.0.0.0/8,nope").is_err());
    }
}
