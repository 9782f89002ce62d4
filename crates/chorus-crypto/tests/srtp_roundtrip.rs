//! Property tests of the SRTP session: round trips for every suite and header shape,
//! tamper and replay rejection, reordering within the window, rollover-counter
//! estimation across the 0xFFFF -> 0 wrap, and arbitrary bytes never panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_crypto::{AuthError, Error};
use proptest::collection::vec;
use proptest::prelude::*;

fn session(suite: Suite, encrypt: bool) -> SrtpSession {
    let key: Vec<u8> = (0..suite.key_len()).map(|i| i as u8 ^ 0x5a).collect();
    let salt: Vec<u8> = (0..suite.salt_len()).map(|i| i as u8 ^ 0xc3).collect();
    let mut policy = Policy::new(suite, &key, &salt).unwrap();
    policy.encrypt_rtp = encrypt;
    policy.encrypt_rtcp = encrypt;
    SrtpSession::new(policy).unwrap()
}

fn arb_suite() -> impl Strategy<Value = Suite> {
    proptest::sample::select(Suite::ALL.to_vec())
}

/// The header shape of an RTP packet: CSRC count, optional extension words, marker
/// and payload type, padding flag.
#[derive(Debug, Clone)]
struct Shape {
    csrcs: Vec<u32>,
    extension: Option<Vec<u8>>,
    padding: bool,
    marker_pt: u8,
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    (
        vec(any::<u32>(), 0..16),
        proptest::option::of(vec(any::<u8>(), 0..4).prop_map(|w| {
            // whole 32-bit words
            let mut bytes = Vec::new();
            for b in w {
                bytes.extend_from_slice(&[b, b, b, b]);
            }
            bytes
        })),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(csrcs, extension, padding, marker_pt)| Shape {
            csrcs,
            extension,
            padding,
            marker_pt,
        })
}

fn rtp(shape: &Shape, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x80 | (u8::from(shape.padding) << 5)
            | (u8::from(shape.extension.is_some()) << 4)
            | shape.csrcs.len() as u8,
        shape.marker_pt,
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in &shape.csrcs {
        p.extend_from_slice(&c.to_be_bytes());
    }
    if let Some(ext) = &shape.extension {
        p.extend_from_slice(&[0x10, 0x00]);
        p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(ext);
    }
    p.extend_from_slice(payload);
    if shape.padding {
        p.extend_from_slice(&[0, 2]);
    }
    p
}

fn rtcp(ssrc: u32, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x81, 200];
    p.extend_from_slice(&((body.len() / 4 + 1) as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(body);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rtp_round_trips_for_any_suite_header_and_payload(
        suite in arb_suite(),
        encrypt in any::<bool>(),
        shape in arb_shape(),
        seq in any::<u16>(),
        ssrc in any::<u32>(),
        payload in vec(any::<u8>(), 0..1500),
    ) {
        let (mut tx, mut rx) = (session(suite, encrypt), session(suite, encrypt));
        let plain = rtp(&shape, seq, ssrc, &payload);
        let mut packet = plain.clone();
        tx.protect_rtp(&mut packet).unwrap();
        prop_assert_eq!(packet.len(), plain.len() + suite.rtp_tag_len());
        let header_len = plain.len() - payload.len() - if shape.padding { 2 } else { 0 };
        prop_assert_eq!(&packet[..header_len], &plain[..header_len], "the header stays clear");
        if encrypt && payload.len() >= 8 {
            prop_assert_ne!(&packet[header_len..plain.len()], &plain[header_len..]);
        }
        rx.unprotect_rtp(&mut packet).unwrap();
        prop_assert_eq!(packet, plain);
    }

    #[test]
    fn rtcp_round_trips_for_any_suite_and_body(
        suite in arb_suite(),
        encrypt in any::<bool>(),
        ssrc in any::<u32>(),
        body in vec(any::<u8>(), 0..1500),
        count in 1usize..4,
    ) {
        let (mut tx, mut rx) = (session(suite, encrypt), session(suite, encrypt));
        for _ in 0..count {
            let plain = rtcp(ssrc, &body);
            let mut packet = plain.clone();
            tx.protect_rtcp(&mut packet).unwrap();
            prop_assert_eq!(packet.len(), plain.len() + suite.rtcp_overhead());
            prop_assert_eq!(&packet[..8], &plain[..8]);
            rx.unprotect_rtcp(&mut packet).unwrap();
            prop_assert_eq!(packet, plain);
        }
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        suite in arb_suite(),
        shape in arb_shape(),
        payload in vec(any::<u8>(), 0..300),
        body in vec(any::<u8>(), 0..300),
        picks in vec(any::<prop::sample::Index>(), 8),
    ) {
        let mut tx = session(suite, true);
        let mut packet = rtp(&shape, 1000, 42, &payload);
        tx.protect_rtp(&mut packet).unwrap();
        let mut control = rtcp(42, &body);
        tx.protect_rtcp(&mut control).unwrap();
        for pick in &picks {
            for (wire, is_rtcp) in [(&packet, false), (&control, true)] {
                let bit = pick.index(wire.len() * 8);
                let mut bad = wire.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let mut rx = session(suite, true);
                let result = if is_rtcp { rx.unprotect_rtcp(&mut bad) } else { rx.unprotect_rtp(&mut bad) };
                prop_assert!(result.is_err(), "{} bit {} accepted (rtcp={})", suite, bit, is_rtcp);
                prop_assert_eq!(rx.ssrc_count(), 0);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_authenticate(
        suite in arb_suite(),
        bytes in vec(any::<u8>(), 0..400),
    ) {
        let mut rx = session(suite, true);
        let mut a = bytes.clone();
        prop_assert!(rx.unprotect_rtp(&mut a).is_err());
        let mut b = bytes.clone();
        prop_assert!(rx.unprotect_rtcp(&mut b).is_err());
        let mut c = bytes.clone();
        let _ = rx.unprotect_rtp_in_place(&mut c);
        prop_assert_eq!(rx.ssrc_count(), 0);
    }

    #[test]
    fn a_replay_of_any_accepted_packet_is_rejected(
        suite in arb_suite(),
        start in any::<u16>(),
        count in 1usize..40,
        replayed in any::<prop::sample::Index>(),
    ) {
        let (mut tx, mut rx) = (session(suite, true), session(suite, true));
        let shape = Shape { csrcs: vec![], extension: None, padding: false, marker_pt: 96 };
        let mut wire = Vec::new();
        let mut wire_rtcp = Vec::new();
        for i in 0..count {
            let mut p = rtp(&shape, start.wrapping_add(i as u16), 7, &[i as u8; 20]);
            tx.protect_rtp(&mut p).unwrap();
            let mut q = p.clone();
            rx.unprotect_rtp(&mut q).unwrap();
            wire.push(p);
            let mut c = rtcp(7, &[i as u8; 8]);
            tx.protect_rtcp(&mut c).unwrap();
            let mut d = c.clone();
            rx.unprotect_rtcp(&mut d).unwrap();
            wire_rtcp.push(c);
        }
        let i = replayed.index(count);
        let mut again = wire[i].clone();
        prop_assert_eq!(rx.unprotect_rtp(&mut again), Err(Error::Auth(AuthError::Replay)));
        let mut again = wire_rtcp[i].clone();
        prop_assert_eq!(rx.unprotect_rtcp(&mut again), Err(Error::Auth(AuthError::Replay)));
    }

    #[test]
    fn out_of_order_packets_within_the_window_are_accepted_across_the_wrap(
        suite in arb_suite(),
        start in 0xff89u16..=0xffff,
        order in Just((0..120usize).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        // 120 packets starting just before the wrap, delivered in any order: every
        // one is within the default 128-packet window of the highest, so all pass
        // and the rollover counter ends at 1.
        let (mut tx, mut rx) = (session(suite, true), session(suite, true));
        let shape = Shape { csrcs: vec![1], extension: None, padding: false, marker_pt: 0 };
        let plain: Vec<Vec<u8>> = (0..120)
            .map(|i| rtp(&shape, start.wrapping_add(i as u16), 9, &[i as u8; 33]))
            .collect();
        let wire: Vec<Vec<u8>> = plain
            .iter()
            .map(|p| {
                let mut w = p.clone();
                tx.protect_rtp(&mut w).unwrap();
                w
            })
            .collect();
        // Deliver the first packet first, so the receiver's stream starts at ROC 0.
        let mut first = wire[0].clone();
        rx.unprotect_rtp(&mut first).unwrap();
        for &i in order.iter().filter(|&&i| i != 0) {
            let mut w = wire[i].clone();
            prop_assert_eq!(rx.unprotect_rtp(&mut w), Ok(()), "packet {}", i);
            prop_assert_eq!(&w, &plain[i]);
        }
        let last = u64::from(start) + 119;
        prop_assert_eq!(rx.received_index(9), Some(last));
        prop_assert_eq!(tx.sent_index(9), Some(last));
        prop_assert_eq!(last >> 16, 1, "the stream wrapped");
    }

    #[test]
    fn roc_follows_many_wraps_with_gaps(
        suite in arb_suite(),
        steps in vec(1u16..0x7000, 1..40),
    ) {
        // Sequence numbers advancing by up to 28671 at a time: the estimator must
        // carry the ROC through every wrap.
        let (mut tx, mut rx) = (session(suite, true), session(suite, true));
        let shape = Shape { csrcs: vec![], extension: None, padding: false, marker_pt: 0 };
        let mut index = 0u64;
        for step in steps {
            index += u64::from(step);
            let mut p = rtp(&shape, index as u16, 3, b"x");
            tx.protect_rtp(&mut p).unwrap();
            rx.unprotect_rtp(&mut p).unwrap();
            prop_assert_eq!(rx.received_index(3), Some(index));
        }
    }
}

#[test]
fn packets_older_than_the_window_are_rejected_and_a_larger_window_accepts_them() {
    for window in [64usize, 128, 1000] {
        let suite = Suite::AeadAes128Gcm;
        let key = [9u8; 16];
        let salt = [8u8; 12];
        let mut policy = Policy::new(suite, &key, &salt).unwrap();
        policy.replay_window = window;
        let mut tx = SrtpSession::new(policy.clone()).unwrap();
        let mut rx = SrtpSession::new(policy).unwrap();
        let shape = Shape {
            csrcs: vec![],
            extension: None,
            padding: false,
            marker_pt: 0,
        };
        let wire: Vec<Vec<u8>> = (0..1200u16)
            .map(|i| {
                let mut p = rtp(&shape, i, 1, b"late");
                tx.protect_rtp(&mut p).unwrap();
                p
            })
            .collect();
        let mut newest = wire[1100].clone();
        rx.unprotect_rtp(&mut newest).unwrap();
        let mut just_inside = wire[1100 - (window - 1)].clone();
        assert_eq!(
            rx.unprotect_rtp(&mut just_inside),
            Ok(()),
            "window {window}"
        );
        let mut just_outside = wire[1100 - window].clone();
        assert_eq!(
            rx.unprotect_rtp(&mut just_outside),
            Err(Error::Auth(AuthError::Replay)),
            "window {window}"
        );
    }
}
