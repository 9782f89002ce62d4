//! The contract every sans-IO datagram core keeps, so that one driver can run any of
//! them and one socket can serve several.
//!
//! A core (a STUN server, a TURN allocation table, an ICE agent, a Global Index node,
//! a media session, a mixer) never opens a socket, reads a clock or sleeps: its inputs
//! are [`DatagramCore::handle_datagram`] and [`DatagramCore::handle_timeout`], its
//! outputs are polled. The run loop that drives it, in any runtime:
//!
//! 1. After every input (a datagram, a timeout, a command of the core's own API),
//!    drain [`DatagramCore::poll_transmit`] and [`DatagramCore::poll_event`] until
//!    each returns `None`: a core's queues are bounded, and what is left in them is
//!    dropped or delayed.
//! 2. Then read [`DatagramCore::poll_timeout`] and wait until that instant or the next
//!    datagram, whichever comes first.
//! 3. `now` never goes backwards from one call to the next; a
//!    [`DatagramCore::handle_timeout`] before the deadline is a harmless no-op (a
//!    driver may wake early), and one after it handles everything that fell due.
//!
//! [`DatagramCore::accepts`] lets one socket serve several cores: a demultiplexer
//! offers each datagram to the cores in turn, and the first that accepts it gets it.
//! A core answers from the datagram's first bytes and its own state (a STUN
//! transaction it waits for, a channel number it assigned), without changing state.
//!
//! ```
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//!
//! use chorus_framing::{DatagramCore, Transmit};
//!
//! /// Echoes every datagram that starts with `b'e'`, once a second at most per run.
//! #[derive(Default)]
//! struct Echo {
//!     out: Vec<Transmit>,
//!     quiet_until: Option<Instant>,
//! }
//!
//! impl DatagramCore for Echo {
//!     type Event = Infallible;
//!     type Error = std::io::Error;
//!
//!     fn accepts(&self, _: SocketAddr, _: SocketAddr, bytes: &[u8]) -> bool {
//!         bytes.first() == Some(&b'e')
//!     }
//!
//!     fn handle_datagram(
//!         &mut self,
//!         now: Instant,
//!         _local: SocketAddr,
//!         from: SocketAddr,
//!         bytes: &[u8],
//!     ) -> Result<(), Self::Error> {
//!         if self.quiet_until.is_some_and(|t| now < t) {
//!             return Err(std::io::ErrorKind::WouldBlock.into());
//!         }
//!         self.out.push(Transmit::new(from, bytes.to_vec()));
//!         self.quiet_until = Some(now + Duration::from_secs(1));
//!         Ok(())
//!     }
//!
//!     fn poll_transmit(&mut self) -> Option<Transmit> {
//!         self.out.pop()
//!     }
//!
//!     fn poll_event(&mut self) -> Option<Infallible> {
//!         None
//!     }
//!
//!     fn poll_timeout(&self) -> Option<Instant> {
//!         self.quiet_until
//!     }
//!
//!     fn handle_timeout(&mut self, now: Instant) {
//!         if self.quiet_until.is_some_and(|t| now >= t) {
//!             self.quiet_until = None;
//!         }
//!     }
//! }
//!
//! let (local, peer): (SocketAddr, SocketAddr) =
//!     ("192.0.2.1:7000".parse()?, "198.51.100.2:5000".parse()?);
//! let mut core = Echo::default();
//! let start = Instant::now();
//! assert!(!core.accepts(local, peer, b"x"));
//! core.handle_datagram(start, local, peer, b"echo")?;
//! assert_eq!(core.poll_transmit(), Some(Transmit::new(peer, &b"echo"[..])));
//! assert!(core.handle_datagram(start, local, peer, b"again").is_err());
//! // An early timeout changes nothing; the deadline itself does.
//! core.handle_timeout(start);
//! assert!(core.poll_timeout().is_some());
//! core.handle_timeout(core.poll_timeout().unwrap());
//! assert_eq!(core.poll_timeout(), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::time::Instant;

use crate::Transmit;

/// A sans-IO core that exchanges datagrams: the floor every Chorus protocol core
/// implements (each may have richer inherent methods). See the [module
/// docs](self) for the run loop a driver keeps.
pub trait DatagramCore {
    /// What the core reports to its owner. A core with nothing to report uses
    /// [`std::convert::Infallible`].
    type Event;
    /// Why a datagram was rejected; the core's state is then unchanged (counters
    /// aside).
    type Error: std::error::Error;

    /// Whether a datagram that arrived on `local` from `from` is for this core,
    /// judged from its bytes and the core's state without changing either: how one
    /// socket routes between cores. (`local` matters to a core with several sockets:
    /// an ICE agent takes data only on its selected pair's local address.)
    fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool;

    /// One received datagram: `local` is the address of the socket it arrived on.
    ///
    /// # Errors
    /// The datagram was rejected (malformed, unexpected, over a limit); a driver logs
    /// or counts it and goes on.
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Self::Error>;

    /// The next datagram to send; its `src` picks the local socket (`None`: the
    /// driver's default).
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// The next event for the core's owner.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// When [`DatagramCore::handle_timeout`] should run next; `None`: no timer.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Handles the timers due at `now` (none, if called early).
    fn handle_timeout(&mut self, now: Instant);
}

/// Implements [`DatagramCore`] for a core whose inherent `poll_transmit`,
/// `poll_event`, `poll_timeout` and `handle_timeout` already have the contract's
/// shape: only the two methods that differ between cores are written out.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Instant;
///
/// use chorus_framing::{DatagramCore, Transmit};
///
/// struct Sink(u32);
/// impl Sink {
///     fn poll_transmit(&mut self) -> Option<Transmit> { None }
///     fn poll_event(&mut self) -> Option<u32> { None }
///     fn poll_timeout(&self) -> Option<Instant> { None }
///     fn handle_timeout(&mut self, _: Instant) {}
/// }
///
/// chorus_framing::datagram_core! {
///     impl for Sink {
///         type Event = u32;
///         type Error = Infallible;
///         fn accepts(&self, _local, _from, bytes) { !bytes.is_empty() }
///         fn handle_datagram(&mut self, _now, _local, _from, _bytes) {
///             self.0 += 1;
///             Ok(())
///         }
///     }
/// }
///
/// let mut sink = Sink(0);
/// let at = "192.0.2.1:1".parse()?;
/// assert!(!sink.accepts(at, at, b""));
/// sink.handle_datagram(Instant::now(), at, at, b"x")?;
/// assert_eq!(sink.0, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[macro_export]
macro_rules! datagram_core {
    (impl for $core:ty {
        type Event = $event:ty;
        type Error = $error:ty;
        fn accepts(&$s1:ident, $local:pat, $from:pat, $bytes:pat) $accepts:block
        fn handle_datagram(&mut $s2:ident, $hnow:pat, $hlocal:pat, $hfrom:pat, $hbytes:pat)
            $handle:block
    }) => {
        impl $crate::DatagramCore for $core {
            type Event = $event;
            type Error = $error;

            fn accepts(
                &$s1,
                $local: ::std::net::SocketAddr,
                $from: ::std::net::SocketAddr,
                $bytes: &[u8],
            ) -> bool $accepts

            fn handle_datagram(
                &mut $s2,
                $hnow: ::std::time::Instant,
                $hlocal: ::std::net::SocketAddr,
                $hfrom: ::std::net::SocketAddr,
                $hbytes: &[u8],
            ) -> ::core::result::Result<(), $error> $handle

            fn poll_transmit(&mut self) -> ::core::option::Option<$crate::Transmit> {
                Self::poll_transmit(self)
            }

            fn poll_event(&mut self) -> ::core::option::Option<$event> {
                Self::poll_event(self)
            }

            fn poll_timeout(&self) -> ::core::option::Option<::std::time::Instant> {
                Self::poll_timeout(self)
            }

            fn handle_timeout(&mut self, now: ::std::time::Instant) {
                Self::handle_timeout(self, now);
            }
        }
    };
}

/// A core behind a mutable reference is a core: a driver can run one the caller keeps
/// (to read its statistics afterwards).
impl<C: DatagramCore + ?Sized> DatagramCore for &mut C {
    type Event = C::Event;
    type Error = C::Error;

    fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        (**self).accepts(local, from, bytes)
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Self::Error> {
        (**self).handle_datagram(now, local, from, bytes)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        (**self).poll_transmit()
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        (**self).poll_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now);
    }
}
