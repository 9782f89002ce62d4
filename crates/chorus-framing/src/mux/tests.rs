use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;

use super::fuzz::{
    BOUND, INDEX_TYPE, Kind, LOCAL, PEER, STRANGER, TestCore, four_cores, mux_routing,
};
use super::*;

/// A datagram steered into one of the RFC 7983 ranges the test cores claim (or
/// left arbitrary), with the state-dependent bytes sometimes right: an awaited
/// transaction id, a bound channel, the index type.
fn steered() -> impl Strategy<Value = (bool, Vec<u8>)> {
    (any::<bool>(), 0u8..6, any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(
        |(stranger, range, pick, mut bytes)| {
            let right = pick % 2 == 0;
            match (range, bytes.len()) {
                (0, n) if n >= 20 => {
                    bytes[0] = pick % 4;
                    if right {
                        bytes[8..20].fill(pick % 5);
                    }
                }
                (1, n) if n >= 2 => {
                    let channel = if right {
                        BOUND[usize::from(pick % 2)]
                    } else {
                        0x4000 | u16::from(pick)
                    };
                    bytes[..2].copy_from_slice(&channel.to_be_bytes());
                }
                (2, n) if n >= 2 => {
                    bytes[0] = 8 + pick % 8;
                    if right {
                        bytes[1] = INDEX_TYPE;
                    }
                }
                (3, n) if n >= 1 => bytes[0] = 128 + pick % 64,
                _ => {}
            }
            (stranger, bytes)
        },
    )
}

/// The wire form `mux_routing` reads: a header byte (sender bit, length) per datagram.
fn records(datagrams: &[(bool, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (stranger, bytes) in datagrams {
        let bytes = &bytes[..bytes.len().min(127)];
        out.push(((bytes.len() as u8) << 1) | u8::from(*stranger));
        out.extend_from_slice(bytes);
    }
    out
}

proptest! {
    #[test]
    fn every_arbitrary_datagram_lands_in_exactly_one_core_or_is_unroutable(
        data in vec(any::<u8>(), 0..2048)
    ) {
        mux_routing(&data);
    }

    #[test]
    fn every_steered_datagram_lands_in_the_core_its_range_and_state_name(
        datagrams in vec(steered(), 0..64)
    ) {
        mux_routing(&records(&datagrams));
    }
}

fn at(ms: u64, t0: Instant) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn the_first_core_in_registration_order_wins_a_datagram_two_accept() {
    let mut mux = Mux::new();
    let first = mux.add(TestCore::new(Kind::Media), |k| (0, k));
    let second = mux.add(TestCore::new(Kind::Media), |k| (1, k));
    let rtp = [0x80, 111, 0, 1];
    mux.handle_datagram(Instant::now(), LOCAL, PEER, &rtp)
        .unwrap();
    assert_eq!(mux.core(first).unwrap().seen, 1);
    assert_eq!(mux.core(second).unwrap().seen, 0);
    assert_eq!(mux.poll_event(), Some((0, Kind::Media)));
    assert_eq!(mux.route(LOCAL, PEER, &rtp), Some(first.id()));
}

#[test]
fn an_unroutable_datagram_is_counted_and_reaches_no_core() {
    let (mut mux, handles) = four_cores();
    let now = Instant::now();
    // RTP from a stranger, QUIC, DTLS, an unbound channel, an empty datagram.
    let unroutable: [(SocketAddr, &[u8]); 5] = [
        (STRANGER, &[0x80, 111, 0, 1]),
        (PEER, &[0xc3, 0, 0, 0]),
        (PEER, &[22, 0xfe, 0xfd]),
        (PEER, &[0x40, 0x01, 0, 0]),
        (PEER, &[]),
    ];
    for (from, bytes) in unroutable {
        assert!(!mux.accepts(LOCAL, from, bytes));
        let r = mux.handle_datagram(now, LOCAL, from, bytes);
        assert!(matches!(r, Err(MuxError::Unroutable)), "{bytes:02x?}");
    }
    assert_eq!(mux.stats().unroutable, 5);
    assert_eq!(mux.stats().routed, 0);
    for h in handles {
        assert_eq!(mux.core(h).unwrap().seen, 0);
    }
    assert_eq!(mux.poll_transmit(), None);
    assert_eq!(mux.poll_timeout(), None);
}

#[test]
fn a_core_rejection_names_the_core_and_keeps_its_error_as_source() {
    let (mut mux, handles) = four_cores();
    let short = [0x09, INDEX_TYPE, 0, 0];
    let err = mux
        .handle_datagram(Instant::now(), LOCAL, PEER, &short)
        .unwrap_err();
    let MuxError::Rejected { core, .. } = &err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert_eq!(*core, handles[Kind::Index as usize].id());
    assert_eq!(
        err.to_string(),
        "core 2 rejected the datagram: shorter than a Chorus datagram header"
    );
    let source = std::error::Error::source(&err).unwrap();
    assert!(source.downcast_ref::<super::fuzz::Short>().is_some());
    assert_eq!(mux.stats().rejected, 1);
    assert_eq!(mux.delivered(core.to_owned()), 1);
}

#[test]
fn handle_timeout_runs_only_the_cores_that_are_due() {
    let (mut mux, handles) = four_cores();
    let t0 = Instant::now();
    let stun = {
        let mut b = vec![0u8; 20];
        b[8..20].fill(1);
        b
    };
    mux.handle_datagram(t0, LOCAL, PEER, &stun).unwrap();
    mux.handle_datagram(at(5, t0), LOCAL, PEER, &[0x80, 111, 0, 1])
        .unwrap();
    while mux.poll_transmit().is_some() || mux.poll_event().is_some() {}
    // Earliest first: the STUN core's deadline at 20 ms, the media core's at 25 ms.
    assert_eq!(mux.poll_timeout(), Some(at(20, t0)));
    mux.handle_timeout(at(10, t0));
    assert_eq!(mux.poll_timeout(), Some(at(20, t0)), "early: a no-op");
    mux.handle_timeout(at(20, t0));
    let timeouts = |mux: &Mux<_>| handles.map(|h| mux.core(h).unwrap().timeouts);
    assert_eq!(timeouts(&mux), [1, 0, 0, 0]);
    assert_eq!(mux.poll_timeout(), Some(at(25, t0)));
    mux.handle_timeout(at(30, t0));
    assert_eq!(timeouts(&mux), [1, 0, 0, 1]);
    assert_eq!(mux.poll_timeout(), None);
}

#[test]
fn a_handle_reaches_its_core_by_type_and_nothing_else() {
    let (mut mux, handles) = four_cores();
    assert_eq!(mux.len(), 4);
    assert!(!mux.is_empty());
    mux.core_mut(handles[3]).unwrap().seen = 7;
    assert_eq!(mux.core(handles[3]).unwrap().seen, 7);
    // A handle from a mux with more cores points past the end of this one.
    let mut other: Mux<()> = Mux::new();
    for _ in 0..5 {
        other.add(TestCore::new(Kind::Media), |_| ());
    }
    let far = other.add(TestCore::new(Kind::Media), |_| ());
    assert!(mux.core(far).is_none());
    // The same position with another type (here a mux) is refused by the downcast.
    let mut typed: Mux<(usize, Kind)> = Mux::new();
    let wrong = typed.add(Mux::<(usize, Kind)>::new(), |e| e);
    assert!(mux.core(wrong).is_none());
    assert_eq!(mux.delivered(far.id()), 0);
}

#[test]
fn a_mux_inside_a_mux_routes_through_both() {
    let (inner, handles) = four_cores();
    let mut outer: Mux<(usize, Kind)> = Mux::new();
    let inner = outer.add(inner, |e| e);
    outer
        .handle_datagram(Instant::now(), LOCAL, PEER, &[0x40, 0x00, 0, 0])
        .unwrap();
    let inner = outer.core(inner).unwrap();
    assert_eq!(
        inner.core(handles[Kind::Channels as usize]).unwrap().seen,
        1
    );
    assert_eq!(
        outer.poll_event(),
        Some((Kind::Channels as usize, Kind::Channels))
    );
}
