//! The NAT info cache: the last NAT behaviour discovery result and when it was made.
//!
//! Skype cached its NAT and firewall type in `shared.xml` so that a restart did not
//! have to rediscover it. [`NatInfo`] is that record as plain data in RFC 5780 terms
//! (mapping and filtering behaviour, §4.3 and §4.4) plus the classic RFC 3489 name;
//! chorus-nat's discovery converts its result into it. This crate does not depend on
//! chorus-nat (they are on the same layer).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use chorus_hostcache::nat::{Behaviour, ClassicNat, NatInfo};
//!
//! let found = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let info = NatInfo {
//!     discovered_at: found,
//!     mapping: Some(Behaviour::EndpointIndependent),
//!     filtering: Some(Behaviour::AddressDependent),
//!     classic: ClassicNat::RestrictedCone,
//!     mapped_address: Some("198.51.100.7:40000".parse()?),
//! };
//! assert!(!info.is_stale(found + Duration::from_secs(60), Duration::from_secs(3600)));
//! assert_eq!(ClassicNat::classify(info.mapping, info.filtering, false), ClassicNat::RestrictedCone);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// A mapping or filtering behaviour (RFC 4787 §4.1 and §5, tested as in RFC 5780 §4.3
/// and §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Depends on nothing about the remote endpoint.
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// The name used in `shared.xml`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "endpoint-independent",
            Self::AddressDependent => "address-dependent",
            Self::AddressAndPortDependent => "address-and-port-dependent",
        }
    }

    /// The behaviour named `s` in `shared.xml`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "endpoint-independent" => Self::EndpointIndependent,
            "address-dependent" => Self::AddressDependent,
            "address-and-port-dependent" => Self::AddressAndPortDependent,
            _ => return None,
        })
    }
}

/// The classic (RFC 3489 §5) name of a NAT type, as Skype reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassicNat {
    /// No NAT: the mapped address is the local address.
    OpenInternet,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Mapping that depends on the remote endpoint.
    Symmetric,
    /// UDP does not get through at all.
    UdpBlocked,
    /// Discovery did not finish.
    Unknown,
}

impl ClassicNat {
    /// The name used in `shared.xml`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenInternet => "open-internet",
            Self::FullCone => "full-cone",
            Self::RestrictedCone => "restricted-cone",
            Self::PortRestrictedCone => "port-restricted-cone",
            Self::Symmetric => "symmetric",
            Self::UdpBlocked => "udp-blocked",
            Self::Unknown => "unknown",
        }
    }

    /// The type named `s` in `shared.xml`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "open-internet" => Self::OpenInternet,
            "full-cone" => Self::FullCone,
            "restricted-cone" => Self::RestrictedCone,
            "port-restricted-cone" => Self::PortRestrictedCone,
            "symmetric" => Self::Symmetric,
            "udp-blocked" => Self::UdpBlocked,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// The classic name of a mapping/filtering pair; `not_natted` when the mapped
    /// address equals the local one.
    #[must_use]
    pub const fn classify(
        mapping: Option<Behaviour>,
        filtering: Option<Behaviour>,
        not_natted: bool,
    ) -> Self {
        use Behaviour::{AddressAndPortDependent, AddressDependent, EndpointIndependent};
        if not_natted {
            return Self::OpenInternet;
        }
        match (mapping, filtering) {
            (Some(AddressDependent | AddressAndPortDependent), _) => Self::Symmetric,
            (Some(EndpointIndependent), Some(EndpointIndependent)) => Self::FullCone,
            (Some(EndpointIndependent), Some(AddressDependent)) => Self::RestrictedCone,
            (Some(EndpointIndependent), Some(AddressAndPortDependent)) => Self::PortRestrictedCone,
            _ => Self::Unknown,
        }
    }
}

/// The last NAT behaviour discovery result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatInfo {
    /// When discovery finished.
    pub discovered_at: SystemTime,
    /// Mapping behaviour, if determined.
    pub mapping: Option<Behaviour>,
    /// Filtering behaviour, if determined.
    pub filtering: Option<Behaviour>,
    /// The classic name.
    pub classic: ClassicNat,
    /// This node's address as a STUN server saw it, if known.
    pub mapped_address: Option<SocketAddr>,
}

impl NatInfo {
    /// Whether the result is older than `max_age` at `now` and should be rediscovered
    /// (a result from the future, after a clock change, is stale too).
    #[must_use]
    pub fn is_stale(&self, now: SystemTime, max_age: Duration) -> bool {
        now.duration_since(self.discovered_at)
            .map_or(true, |age| age > max_age)
    }
}
