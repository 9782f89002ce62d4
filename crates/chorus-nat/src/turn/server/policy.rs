//! Which peers a relay may talk to (RFC 8656 §21.1.2 "Forwarding to Private
//! Addresses"): special-purpose addresses are denied unless allow-listed.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::UsageError;

/// An IP prefix such as `10.0.0.0/8` or `fc00::/7`.
///
/// ```
/// use chorus_nat::turn::server::Cidr;
///
/// let net: Cidr = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.1.2.3".parse()?));
/// assert!(!net.contains("11.0.0.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The prefix `addr/prefix`; `None` if `prefix` exceeds the address length.
    #[must_use]
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// A single address (`/32` or `/128`).
    #[must_use]
    pub const fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }

    /// Whether `ip` lies inside this prefix (families must match).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = UsageError;

    fn from_str(s: &str) -> Result<Self, UsageError> {
        let bad = UsageError::InvalidConfig("a CIDR prefix is ADDRESS/LENGTH");
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad)?;
                let prefix: u8 = p.parse().map_err(|_| bad)?;
                Self::new(addr, prefix).ok_or(bad)
            }
            None => s.parse().map(Self::host).map_err(|_| bad),
        }
    }
}

/// Whether `ip` is a special-purpose address a public relay must not forward to by
/// default: loopback, RFC 1918 private, shared (RFC 6598), link-local, multicast,
/// broadcast, unspecified or "this network", reserved, unique-local (fc00::/7), and
/// IPv4-mapped or NAT64 forms of any of these.
#[must_use]
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_special(v4),
        IpAddr::V6(v6) => v6_special(v6),
    }
}

fn v4_special(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0 // 0.0.0.0/8 "this network", includes unspecified
        || a >= 240 // 240.0.0.0/4 reserved
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared (CGN)
}

fn v6_special(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let first = seg.first().copied().unwrap_or(0);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_special(v4);
    }
    // 64:ff9b::/96 (RFC 6052 NAT64) reaches the embedded IPv4 address.
    if seg.get(..6) == Some(&[0x64, 0xff9b, 0, 0, 0, 0]) {
        let o = ip.octets();
        return v4_special(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || first & 0xfe00 == 0xfc00 // fc00::/7 unique local
        || first & 0xffc0 == 0xfe80 // fe80::/10 link local
        || first & 0xffc0 == 0xfec0 // fec0::/10 deprecated site local
        || (seg.get(..5) == Some(&[0, 0, 0, 0, 0]) && seg.get(5) == Some(&0)) // ::/96 IPv4-compatible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_special_purpose_addresses_of_both_families() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "100.64.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_special_purpose(s.parse().unwrap()), "{s}");
        }
        for s in [
            "8.8.8.8",
            "203.0.113.9",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(!is_special_purpose(s.parse().unwrap()), "{s}");
        }
    }

    #[test]
    fn parses_and_matches_prefixes() {
        let v6: Cidr = "fc00::/7".parse().unwrap();
        assert!(v6.contains("fd00::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("x/3".parse::<Cidr>().is_err());
        assert!(Cidr::new("::".parse().unwrap(), 129).is_none());
    }
}
