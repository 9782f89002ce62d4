//! One UDP port for several cores: [`Mux`] owns a STUN server, a TURN server, a
//! Global Index node, a media session (any [`DatagramCore`]s) and is itself a
//! [`DatagramCore`], so one socket and one driver serve them all.
//!
//! # Routing
//! Each received datagram is offered to the cores **in registration order**, and the
//! first whose [`DatagramCore::accepts`] says yes gets it; the others never see it.
//! Register the most specific core first when two could claim the same bytes (a
//! STUN server that takes only Binding requests before a TURN server that takes all
//! STUN). The cores judge by the first byte, as RFC 7983 §7 (updated by RFC 9443
//! §3) divides it through [`classify`](crate::classify):
//!
//! | first byte | [`PacketKind`](crate::PacketKind) | typical core |
//! |---|---|---|
//! | 0..=3 | `Stun` | STUN server, TURN server, ICE agent (by transaction or method) |
//! | 8..=15 | `Chorus` | Global Index node, bootstrap (by datagram type) |
//! | 64..=79 | `ChannelData` | TURN server (by channel number) |
//! | 128..=191 | `Rtp`/`Rtcp` | media session, mixer, SFU (by peer address) |
//!
//! and, within a range, by their own state (a transaction they wait for, a channel
//! they bound, a peer address). A datagram no core accepts is **unroutable**: it is
//! counted in [`MuxStats::unroutable`] and [`DatagramCore::handle_datagram`] returns
//! [`MuxError::Unroutable`]; hostile bytes never panic and never reach a core that
//! did not ask for them.
//!
//! # Outputs
//! [`DatagramCore::poll_transmit`] and [`DatagramCore::poll_event`] drain the cores
//! in registration order; [`DatagramCore::poll_timeout`] is the earliest of theirs,
//! and [`DatagramCore::handle_timeout`] runs every core whose deadline has come
//! (an early call is a no-op for each, as the contract says). Each core's events go
//! through the function given to [`Mux::add`], which turns them into the mux's one
//! event type `E` (typically an enum with a variant per core). A core's own API
//! (commands, statistics) stays reachable through the [`CoreHandle`] that
//! [`Mux::add`] returns: [`Mux::core`] and [`Mux::core_mut`].
//!
//! ```
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//! use std::time::Instant;
//!
//! use chorus_framing::{classify, DatagramCore, Mux, MuxError, PacketKind, Transmit};
//!
//! /// Answers every datagram of one kind with its length, and reports that length.
//! struct Counter {
//!     kind: PacketKind,
//!     seen: usize,
//!     out: Vec<Transmit>,
//!     lengths: Vec<usize>,
//! }
//!
//! impl DatagramCore for Counter {
//!     type Event = usize;
//!     type Error = Infallible;
//!     fn accepts(&self, _: SocketAddr, _: SocketAddr, bytes: &[u8]) -> bool {
//!         classify(bytes) == self.kind
//!     }
//!     fn handle_datagram(
//!         &mut self,
//!         _: Instant,
//!         _: SocketAddr,
//!         from: SocketAddr,
//!         bytes: &[u8],
//!     ) -> Result<(), Infallible> {
//!         self.seen += 1;
//!         self.out.push(Transmit::new(from, vec![bytes.len() as u8]));
//!         self.lengths.push(bytes.len());
//!         Ok(())
//!     }
//!     fn poll_transmit(&mut self) -> Option<Transmit> { self.out.pop() }
//!     fn poll_event(&mut self) -> Option<usize> { self.lengths.pop() }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn handle_timeout(&mut self, _: Instant) {}
//! }
//!
//! /// What the mux reports: one variant per core.
//! #[derive(Debug)]
//! enum Event {
//!     Stun(usize),
//!     Media(usize),
//! }
//!
//! let counter = |kind| Counter { kind, seen: 0, out: Vec::new(), lengths: Vec::new() };
//! let mut mux = Mux::new();
//! let stun = mux.add(counter(PacketKind::Stun), Event::Stun);
//! let media = mux.add(counter(PacketKind::Rtp), Event::Media);
//!
//! let (local, peer): (SocketAddr, SocketAddr) =
//!     ("192.0.2.1:3478".parse()?, "198.51.100.7:5000".parse()?);
//! let now = Instant::now();
//! mux.handle_datagram(now, local, peer, &[0x00, 0x01, 0x00, 0x00])?; // STUN
//! mux.handle_datagram(now, local, peer, &[0x80, 111, 0, 1, 0])?; // RTP
//! // QUIC: no core takes it. Counted, not delivered.
//! assert!(matches!(
//!     mux.handle_datagram(now, local, peer, &[0xc0, 0]),
//!     Err(MuxError::Unroutable)
//! ));
//!
//! assert_eq!(mux.core(stun).map(|c| c.seen), Some(1));
//! assert_eq!(mux.core(media).map(|c| c.seen), Some(1));
//! assert_eq!(mux.stats().unroutable, 1);
//! assert_eq!(mux.delivered(stun.id()), 1);
//! // Both answers come out of the one mux, in registration order.
//! assert_eq!(mux.poll_transmit(), Some(Transmit::new(peer, vec![4])));
//! assert_eq!(mux.poll_transmit(), Some(Transmit::new(peer, vec![5])));
//! assert_eq!(mux.poll_transmit(), None);
//! // Each core's events, mapped into the mux's.
//! assert!(matches!(mux.poll_event(), Some(Event::Stun(4))));
//! assert!(matches!(mux.poll_event(), Some(Event::Media(5))));
//! assert!(mux.poll_event().is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::any::Any;
use core::fmt;
use core::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Instant;

use crate::{DatagramCore, Transmit};

/// A core's error, boxed so cores with different error types share one mux.
pub type CoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The position of a core in its [`Mux`]: its registration order, starting at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(usize);

impl CoreId {
    /// The core's registration index (0 for the first [`Mux::add`]).
    #[must_use]
    pub const fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "core {}", self.0)
    }
}

/// A typed handle to a core of a [`Mux`]: [`Mux::core`] and [`Mux::core_mut`] give
/// back the core as its own type, for its richer API.
pub struct CoreHandle<C> {
    id: CoreId,
    // `fn() -> C`: the handle neither owns a `C` nor stops being `Send`/`Sync`.
    core: PhantomData<fn() -> C>,
}

impl<C> CoreHandle<C> {
    /// The core's position in the mux.
    #[must_use]
    pub const fn id(self) -> CoreId {
        self.id
    }
}

// Derives would require `C: Clone` and friends; a handle is an index whatever `C` is.
impl<C> Clone for CoreHandle<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for CoreHandle<C> {}

impl<C> PartialEq for CoreHandle<C> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<C> Eq for CoreHandle<C> {}

impl<C> fmt::Debug for CoreHandle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CoreHandle").field(&self.id.0).finish()
    }
}

/// Why the [`Mux`] did not take a datagram.
#[derive(Debug)]
#[non_exhaustive]
pub enum MuxError {
    /// No core accepts the datagram (counted in [`MuxStats::unroutable`]).
    Unroutable,
    /// The core the datagram was routed to rejected it (counted in
    /// [`MuxStats::rejected`]); its state is unchanged, as the contract says.
    Rejected {
        /// The core that accepted the datagram and then refused it.
        core: CoreId,
        /// The core's own error.
        source: CoreError,
    },
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unroutable => f.write_str("no core accepts the datagram"),
            Self::Rejected { core, source } => write!(f, "{core} rejected the datagram: {source}"),
        }
    }
}

impl std::error::Error for MuxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unroutable => None,
            Self::Rejected { source, .. } => Some(&**source),
        }
    }
}

/// Datagram counters of a [`Mux`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MuxStats {
    /// Datagrams given to a core (accepted or then rejected by it).
    pub routed: u64,
    /// Datagrams a core accepted and then rejected.
    pub rejected: u64,
    /// Datagrams no core accepts.
    pub unroutable: u64,
}

/// A core's error as the boxed core sees it: the [`CoreError`] behind a type that is
/// itself a [`std::error::Error`], as [`DatagramCore::Error`] must be.
#[derive(Debug)]
struct Boxed(CoreError);

impl fmt::Display for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Boxed {}

/// A core of any type behind one object type: the [`DatagramCore`] with events
/// mapped and errors boxed, and a way back to the concrete core.
trait AnyCore<E>: DatagramCore<Event = E, Error = Boxed> + Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// `core` with its events turned into the mux's by `map`.
struct MapEvent<C, F> {
    core: C,
    map: F,
}

impl<C, F, E> DatagramCore for MapEvent<C, F>
where
    C: DatagramCore,
    C::Error: Send + Sync + 'static,
    F: FnMut(C::Event) -> E,
{
    type Event = E;
    type Error = Boxed;

    fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        self.core.accepts(local, from, bytes)
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Boxed> {
        self.core
            .handle_datagram(now, local, from, bytes)
            .map_err(|e| Boxed(Box::new(e)))
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<E> {
        self.core.poll_event().map(&mut self.map)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }
}

impl<C, F, E> AnyCore<E> for MapEvent<C, F>
where
    C: DatagramCore + Send + 'static,
    C::Error: Send + Sync + 'static,
    F: FnMut(C::Event) -> E + Send,
{
    fn as_any(&self) -> &dyn Any {
        &self.core
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.core
    }
}

struct Slot<E> {
    core: Box<dyn AnyCore<E>>,
    delivered: u64,
}

/// Several [`DatagramCore`]s behind one socket, itself a [`DatagramCore`] whose
/// events are `E`. Routing is first-accepting-core in registration order; see the
/// [module docs](self).
pub struct Mux<E> {
    slots: Vec<Slot<E>>,
    stats: MuxStats,
}

impl<E> Default for Mux<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> fmt::Debug for Mux<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux")
            .field("cores", &self.slots.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<E> Mux<E> {
    /// A mux with no cores: every datagram is unroutable until one is added.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: Vec::new(),
            stats: MuxStats {
                routed: 0,
                rejected: 0,
                unroutable: 0,
            },
        }
    }

    /// Adds `core` after the cores already added (so it is offered a datagram only
    /// when none of them accepts it); `map_event` turns each of its events into the
    /// mux's. The handle reaches the core again.
    pub fn add<C, F>(&mut self, core: C, map_event: F) -> CoreHandle<C>
    where
        C: DatagramCore + Send + 'static,
        C::Error: Send + Sync + 'static,
        F: FnMut(C::Event) -> E + Send + 'static,
        E: 'static,
    {
        let id = CoreId(self.slots.len());
        self.slots.push(Slot {
            core: Box::new(MapEvent {
                core,
                map: map_event,
            }),
            delivered: 0,
        });
        CoreHandle {
            id,
            core: PhantomData,
        }
    }

    /// The core behind `handle`. A handle is a typed position: one from another mux
    /// gives `None` where this mux has a core of another type there or none, and
    /// this mux's core where the type matches (keep handles with their mux).
    #[must_use]
    pub fn core<C: 'static>(&self, handle: CoreHandle<C>) -> Option<&C> {
        self.slots
            .get(handle.id.0)
            .and_then(|s| s.core.as_any().downcast_ref())
    }

    /// The core behind `handle`, for its own commands. After a command, drain the
    /// mux as after any input.
    #[must_use]
    pub fn core_mut<C: 'static>(&mut self, handle: CoreHandle<C>) -> Option<&mut C> {
        self.slots
            .get_mut(handle.id.0)
            .and_then(|s| s.core.as_any_mut().downcast_mut())
    }

    /// Number of cores.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no core was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The core a datagram would go to, without delivering it: the first in
    /// registration order that accepts it.
    #[must_use]
    pub fn route(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> Option<CoreId> {
        self.slots
            .iter()
            .position(|s| s.core.accepts(local, from, bytes))
            .map(CoreId)
    }

    /// Datagrams routed to core `id` so far (0 for an unknown id).
    #[must_use]
    pub fn delivered(&self, id: CoreId) -> u64 {
        self.slots.get(id.0).map_or(0, |s| s.delivered)
    }

    /// Counters since the mux was created.
    #[must_use]
    pub const fn stats(&self) -> MuxStats {
        self.stats
    }
}

impl<E> DatagramCore for Mux<E> {
    type Event = E;
    type Error = MuxError;

    /// Whether some core accepts the datagram.
    fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        self.route(local, from, bytes).is_some()
    }

    /// Gives the datagram to the first core (in registration order) that accepts it.
    ///
    /// # Errors
    /// [`MuxError::Unroutable`] when no core accepts it, [`MuxError::Rejected`] with
    /// the core's error when that core refuses it.
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), MuxError> {
        let Some((index, slot)) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.core.accepts(local, from, bytes))
        else {
            self.stats.unroutable += 1;
            return Err(MuxError::Unroutable);
        };
        slot.delivered += 1;
        self.stats.routed += 1;
        slot.core
            .handle_datagram(now, local, from, bytes)
            .map_err(|Boxed(source)| {
                self.stats.rejected += 1;
                MuxError::Rejected {
                    core: CoreId(index),
                    source,
                }
            })
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.slots.iter_mut().find_map(|s| s.core.poll_transmit())
    }

    fn poll_event(&mut self) -> Option<E> {
        self.slots.iter_mut().find_map(|s| s.core.poll_event())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.core.poll_timeout())
            .min()
    }

    /// Runs [`DatagramCore::handle_timeout`] of every core whose deadline is at or
    /// before `now`; the others are not called.
    fn handle_timeout(&mut self, now: Instant) {
        for s in &mut self.slots {
            if s.core.poll_timeout().is_some_and(|t| t <= now) {
                s.core.handle_timeout(now);
            }
        }
    }
}

#[cfg(any(test, feature = "_fuzz"))]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
