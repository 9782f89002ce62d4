//! The routing oracle of [`Mux`]: four cores of different kinds behind one mux, fed
//! arbitrary datagrams; each must land in exactly the core that an independent
//! reading of RFC 7983's first-byte ranges and the cores' state names, or be counted
//! as unroutable. `fuzz/fuzz_targets/mux_routing.rs` and the crate's proptests run it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{CoreHandle, Mux, MuxError};
use crate::{DatagramCore, PacketKind, Transmit, classify};

/// Where the test cores answer, and the media peer.
pub(crate) const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)),
    5004,
);
/// Another sender: only the media core cares.
pub(crate) const STRANGER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)),
    5004,
);
/// The shared socket.
pub(crate) const LOCAL: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    3478,
);

/// The Chorus datagram type the index core takes (`DatagramType::Index`).
pub(crate) const INDEX_TYPE: u8 = 0x06;

/// Which test core a datagram belongs to, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Transactions,
    Channels,
    Index,
    Media,
}

/// One of four cores, each claiming its RFC 7983 range and narrowing it by state:
/// STUN transactions it waits for (each answered once), TURN channels it bound,
/// Chorus datagrams of the index type, RTP/RTCP from its peer.
#[derive(Debug)]
pub(crate) struct TestCore {
    kind: Kind,
    /// Transaction ids still awaited (`Transactions`).
    pending: HashSet<[u8; 12]>,
    /// Datagrams handled, accepted or rejected.
    pub(crate) seen: u64,
    /// Datagrams rejected.
    pub(crate) rejected: u64,
    out: Vec<Transmit>,
    events: Vec<Kind>,
    deadline: Option<Instant>,
    pub(crate) timeouts: u64,
}

/// Why a test core refused a datagram: a Chorus datagram shorter than its header.
#[derive(Debug)]
pub(crate) struct Short;

impl core::fmt::Display for Short {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("shorter than a Chorus datagram header")
    }
}

impl std::error::Error for Short {}

/// The transaction ids the `Transactions` core waits for at the start.
pub(crate) fn awaited() -> impl Iterator<Item = [u8; 12]> {
    (0..4u8).map(|i| [i; 12])
}

/// Channel numbers the `Channels` core bound (RFC 8656 §12: 0x4000..=0x4FFF).
pub(crate) const BOUND: [u16; 2] = [0x4000, 0x4ffe];

impl TestCore {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            pending: if kind == Kind::Transactions {
                awaited().collect()
            } else {
                HashSet::new()
            },
            seen: 0,
            rejected: 0,
            out: Vec::new(),
            events: Vec::new(),
            deadline: None,
            timeouts: 0,
        }
    }

    fn transaction(bytes: &[u8]) -> Option<[u8; 12]> {
        bytes.get(8..20)?.try_into().ok()
    }
}

impl DatagramCore for TestCore {
    type Event = Kind;
    type Error = Short;

    fn accepts(&self, _: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        match (self.kind, classify(bytes)) {
            (Kind::Transactions, PacketKind::Stun) => {
                Self::transaction(bytes).is_some_and(|t| self.pending.contains(&t))
            }
            (Kind::Channels, PacketKind::ChannelData) => bytes
                .first_chunk::<2>()
                .is_some_and(|c| BOUND.contains(&u16::from_be_bytes(*c))),
            (Kind::Index, PacketKind::Chorus) => bytes.get(1) == Some(&INDEX_TYPE),
            (Kind::Media, PacketKind::Rtp | PacketKind::Rtcp) => from == PEER,
            _ => false,
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        _: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Short> {
        self.seen += 1;
        if self.kind == Kind::Index && bytes.len() < crate::datagram::DATAGRAM_HEADER_LEN {
            self.rejected += 1;
            return Err(Short);
        }
        if let Some(t) = Self::transaction(bytes) {
            self.pending.remove(&t);
        }
        self.out.push(Transmit::new(from, vec![self.kind as u8; 1]));
        self.events.push(self.kind);
        self.deadline = Some(now + Duration::from_millis(20));
        Ok(())
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }

    fn poll_event(&mut self) -> Option<Kind> {
        self.events.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|t| t <= now) {
            self.deadline = None;
            self.timeouts += 1;
        }
    }
}

/// The four test cores behind one mux, in the order Transactions, Channels, Index,
/// Media; events are tagged with the core's position.
pub(crate) fn four_cores() -> (Mux<(usize, Kind)>, [CoreHandle<TestCore>; 4]) {
    let mut mux = Mux::new();
    let kinds = [Kind::Transactions, Kind::Channels, Kind::Index, Kind::Media];
    let handles = kinds.map(|k| {
        let at = k as usize;
        mux.add(TestCore::new(k), move |e| (at, e))
    });
    (mux, handles)
}

/// Where a datagram should land, read straight from RFC 7983's byte ranges (not
/// through `classify`) and the cores' state: the oracle the mux is checked against.
pub(crate) fn expected(
    pending: &HashSet<[u8; 12]>,
    from: SocketAddr,
    bytes: &[u8],
) -> Option<Kind> {
    let (&first, rest) = bytes.split_first()?;
    match first {
        0..=3 => {
            let id: [u8; 12] = bytes.get(8..20)?.try_into().ok()?;
            pending.contains(&id).then_some(Kind::Transactions)
        }
        8..=15 => (rest.first() == Some(&INDEX_TYPE)).then_some(Kind::Index),
        64..=79 => {
            let channel = u16::from_be_bytes([first, *rest.first()?]);
            BOUND.contains(&channel).then_some(Kind::Channels)
        }
        // RTP and RTCP alike (RFC 5761 §4 tells them apart by the second byte).
        128..=191 => (from == PEER && !rest.is_empty()).then_some(Kind::Media),
        _ => None,
    }
}

/// Splits `data` into datagrams (a header byte: bit 0 picks the sender, the rest a
/// length up to 127; then that many bytes), routes each through `four_cores` and
/// checks it against `expected`: the core it landed in, every core's count, the
/// unroutable count, the rejected count, and that outputs and timers come back out of
/// the mux. Panics only when the mux misroutes.
pub fn mux_routing(data: &[u8]) {
    let (mut mux, handles) = four_cores();
    let mut pending: HashSet<[u8; 12]> = awaited().collect();
    let mut want = [0u64; 4];
    let (mut unroutable, mut total) = (0u64, 0u64);
    let mut now = Instant::now();
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let from = if head & 1 == 0 { PEER } else { STRANGER };
        let (bytes, tail) = tail.split_at(usize::from(head >> 1).min(tail.len()));
        rest = tail;
        total += 1;
        let target = expected(&pending, from, bytes);
        assert_eq!(
            mux.route(LOCAL, from, bytes).map(super::CoreId::index),
            target.map(|k| k as usize),
            "route of {bytes:02x?} from {from}"
        );
        match (target, mux.handle_datagram(now, LOCAL, from, bytes)) {
            (None, Err(MuxError::Unroutable)) => unroutable += 1,
            (Some(k), Ok(())) => {
                want[k as usize] += 1;
                if let Some(id) = bytes.get(8..20).and_then(|t| <[u8; 12]>::try_from(t).ok())
                    && k == Kind::Transactions
                {
                    pending.remove(&id);
                }
                assert_eq!(mux.poll_event(), Some((k as usize, k)));
                assert_eq!(
                    mux.poll_transmit(),
                    Some(Transmit::new(from, vec![k as u8]))
                );
            }
            (Some(Kind::Index), Err(MuxError::Rejected { core, .. })) => {
                assert_eq!(core, handles[Kind::Index as usize].id());
                want[Kind::Index as usize] += 1;
            }
            (t, r) => panic!("{bytes:02x?} from {from}: expected {t:?}, got {r:?}"),
        }
        assert_eq!(mux.poll_event(), None);
        assert_eq!(mux.poll_transmit(), None);
        // Every second datagram, time moves on past the deadlines it set.
        if total % 2 == 0
            && let Some(t) = mux.poll_timeout()
        {
            now = t;
            mux.handle_timeout(now);
        }
    }
    for (h, n) in handles.iter().zip(want) {
        let core = mux.core(*h).expect("each handle reaches its core");
        assert_eq!(core.seen, n);
        assert_eq!(mux.delivered(h.id()), n);
    }
    let stats = mux.stats();
    assert_eq!(stats.unroutable, unroutable);
    assert_eq!(stats.routed + stats.unroutable, total);
    let index = mux
        .core(handles[Kind::Index as usize])
        .map_or(0, |c| c.rejected);
    assert_eq!(stats.rejected, index);
}
