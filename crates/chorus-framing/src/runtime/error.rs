//! The one error type of every Chorus driver.

use core::fmt;
use std::io;

/// Why a driver stopped. Every Chorus driver returns this one type: what a
/// protocol core refuses is the core's own error, carried in [`DriverError::Core`].
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverError {
    /// A socket or listener failed (not a peer's ICMP error: those are lost
    /// datagrams, see [`is_peer_error`](crate::runtime::is_peer_error)), or a configuration
    /// value was out of bounds (`InvalidInput`).
    Io(io::Error),
    /// The application went away: its command channel or event receiver closed, or
    /// the set has no socket left.
    Closed,
    /// The core refused what the application asked or gave up (a frame of the wrong
    /// length, no super node reachable); the source says why, as the core's own error
    /// type (downcast it with `downcast_ref`).
    Core(Box<dyn std::error::Error + Send + Sync>),
}

impl DriverError {
    /// Wraps a core's error as [`DriverError::Core`].
    pub fn core(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Core(Box::new(e))
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Closed => f.write_str("the application or every socket closed"),
            Self::Core(e) => write!(f, "core error: {e}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Closed => None,
            Self::Core(e) => Some(&**e),
        }
    }
}

impl From<io::Error> for DriverError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The one ICMP rule: whether a socket error concerns one peer rather than the socket.
///
/// UDP reports a peer's ICMP error (port or host unreachable) on a later call of the
/// same socket, and the kernel refuses a send to some destinations (a multicast or
/// broadcast address without permission, a family the socket does not have, a
/// datagram too long for the path, a full device queue). Each of those is one lost
/// datagram, which the core's own timers handle; a driver drops it, counts it and goes
/// on. Linux reports ICMP errors as `ECONNREFUSED`, `EHOSTUNREACH` or `ENETUNREACH`;
/// Windows as `WSAECONNRESET` even on unconnected sockets.
#[must_use]
pub fn is_peer_error(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable
            | K::PermissionDenied
    ) {
        return true;
    }
    // EMSGSIZE, EINVAL (a destination such as port 0), ENOBUFS, EAFNOSUPPORT: the
    // same numbers on Linux on every architecture Rust supports.
    #[cfg(target_os = "linux")]
    if matches!(e.raw_os_error(), Some(90 | 22 | 105 | 97)) {
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_errors_are_told_from_socket_errors() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::HostUnreachable,
        ] {
            assert!(is_peer_error(&kind.into()), "{kind:?}");
        }
        for kind in [
            io::ErrorKind::WouldBlock,
            io::ErrorKind::InvalidData,
            io::ErrorKind::Other,
        ] {
            assert!(!is_peer_error(&kind.into()), "{kind:?}");
        }
        #[cfg(target_os = "linux")]
        {
            assert!(is_peer_error(&io::Error::from_raw_os_error(90)), "EMSGSIZE");
            assert!(!is_peer_error(&io::Error::from_raw_os_error(9)), "EBADF");
        }
    }

    #[test]
    fn a_core_error_is_kept_as_the_source() {
        let e = DriverError::core(io::Error::other("frame of 17 samples"));
        assert!(e.to_string().contains("17 samples"));
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.downcast_ref::<io::Error>().is_some());
        assert!(DriverError::Closed.to_string().contains("closed"));
    }
}
