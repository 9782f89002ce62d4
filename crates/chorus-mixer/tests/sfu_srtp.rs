//! Every leg of the relay is SRTP with its own keys (RFC 3711): what a participant
//! or a relay sends is unprotected with its leg's keys before the relay reads it, a
//! packet that does not authenticate goes nowhere, and everything the relay sends,
//! RTP and RTCP, is protected for the receiving leg only.

mod common;

use std::time::Duration;

use chorus_crypto::{AuthError, Error as CryptoError};
use chorus_media::rtcp;
use chorus_media::rtp;
use chorus_mixer::Error;
use chorus_mixer::control::{Codec, Layer, StreamInfo};
use chorus_mixer::sfu::{Kind, Output, Peer, SfuConfig};
use common::{
    Net, Party, downlink_key, endpoint_leg, link_key, one_layer_relay, remb, rtp_bytes, srtp, ssrc,
    uplink_key,
};

const KEYFRAME: [u8; 5] = [0x10, 0x00, 0x9d, 0x01, 0x2a];

fn packet(seq: u16) -> Vec<u8> {
    rtp_bytes(0x100, seq, u32::from(seq) * 3000, true, &[], &KEYFRAME)
}

#[test]
fn a_packet_that_fails_authentication_is_not_forwarded() {
    let (mut sfu, mut out, t0, [mut sender, ..]) = one_layer_relay();
    let good = sender.seal(&packet(1));
    // Any single flipped bit (header, payload or tag), the packet in clear, and the
    // packet under another participant's keys: each refused, nothing sent.
    let mut forged: Vec<Vec<u8>> = (0..good.len() * 8)
        .map(|bit| {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            b
        })
        .collect();
    forged.push(packet(1));
    forged.push(Party::new(2).seal(&packet(1)));
    for (i, bad) in forged.iter().enumerate() {
        let r = sfu.handle_input(t0, Peer::Endpoint(1), bad, &mut out);
        // A flip in the version bits makes it a (bad) control message instead.
        if i / 8 != 0 {
            assert!(matches!(r, Err(Error::Srtp(_))), "forgery {i}: {r:?}");
        } else {
            assert!(r.is_err(), "forgery {i}");
        }
        assert!(out.is_empty(), "forgery {i} reached someone");
    }
    let stats = sfu.stats();
    assert!(stats.unauthenticated >= forged.len() as u64 - 8);
    assert_eq!((stats.received, stats.forwarded), (0, 0));
    // The genuine packet still goes through: the forgeries changed nothing.
    sfu.handle_input(t0, Peer::Endpoint(1), &good, &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    out.clear();
    // The same packet again is a replay (RFC 3711 §3.3.2), dropped and counted.
    assert_eq!(
        sfu.handle_input(t0, Peer::Endpoint(1), &good, &mut out),
        Err(Error::Srtp(CryptoError::Auth(AuthError::Replay)))
    );
    assert!(out.is_empty());
    assert_eq!(sfu.stats().replayed, 1);
}

#[test]
fn a_forwarded_packet_is_srtp_under_the_receivers_keys_only() {
    let (mut sfu, mut out, t0, [mut sender, mut two, mut three]) = one_layer_relay();
    sfu.handle_input(t0, Peer::Endpoint(1), &sender.seal(&packet(1)), &mut out)
        .unwrap();
    let sent: Vec<_> = out.iter().map(|t| (t.to, t.bytes.to_vec())).collect();
    assert_eq!(sent.len(), 2);
    for (to, bytes) in sent {
        let (mine, other) = match to {
            Peer::Endpoint(2) => (&mut two, 3),
            Peer::Endpoint(3) => (&mut three, 2),
            p => panic!("{p:?}"),
        };
        // The payload is not on the wire in clear.
        assert!(!bytes.windows(KEYFRAME.len()).any(|w| w == KEYFRAME));
        // Not under the sender's keys, nor the other receiver's.
        for key in [uplink_key(1), downlink_key(1), downlink_key(other)] {
            let mut b = bytes.clone();
            assert!(
                srtp(key).unprotect_rtp(&mut b).is_err(),
                "opens under key {key}"
            );
        }
        let plain = mine.open(&bytes).unwrap();
        let p = rtp::Packet::decode(&plain).unwrap();
        assert_eq!((p.ssrc, p.payload), (0x100, &KEYFRAME[..]));
    }
}

#[test]
fn rtcp_both_ways_is_srtcp() {
    let (mut sfu, mut out, t0, [mut sender, mut two, _]) = one_layer_relay();
    let config = SfuConfig::default();
    // A REMB in clear from receiver 2 is refused and changes nothing.
    let before = sfu.selection(2, 1).unwrap();
    assert!(matches!(
        sfu.handle_input(t0, Peer::Endpoint(2), &remb(50_000), &mut out),
        Err(Error::Srtp(_))
    ));
    assert_eq!(sfu.selection(2, 1).unwrap(), before);
    assert!(out.is_empty());
    // Protected, it takes effect: too little for the only layer, so it pauses.
    sfu.handle_input(t0, Peer::Endpoint(2), &two.seal(&remb(50_000)), &mut out)
        .unwrap();
    assert_eq!(sfu.selection(2, 1).unwrap().target, None);
    // Back up: the relay asks the sender for a keyframe, over SRTCP under the
    // sender's receive key (RFC 3711 §3.4), readable by no one else.
    let later = t0 + config.keyframe_interval;
    sfu.handle_input(
        later,
        Peer::Endpoint(2),
        &two.seal(&remb(1_000_000)),
        &mut out,
    )
    .unwrap();
    let t: Vec<_> = out.iter().collect();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].to, t[0].kind), (Peer::Endpoint(1), Kind::Rtcp));
    let mut wrong = t[0].bytes.to_vec();
    assert!(srtp(downlink_key(2)).unprotect_rtcp(&mut wrong).is_err());
    let plain = sender.open(t[0].bytes).unwrap();
    assert_eq!(
        rtcp::decode_compound(&plain, &rtcp::Limits::default()).unwrap(),
        vec![rtcp::Packet::Pli {
            sender_ssrc: config.rtcp_ssrc,
            media_ssrc: 0x100,
        }]
    );
    // The receiver report the relay sends the sender is SRTCP too.
    out.clear();
    sfu.handle_input(later, Peer::Endpoint(1), &sender.seal(&packet(1)), &mut out)
        .unwrap();
    out.clear();
    sfu.handle_timeout(later + config.report_interval, &mut out);
    let rr: Vec<_> = out
        .iter()
        .filter(|t| t.to == Peer::Endpoint(1) && t.kind == Kind::Rtcp)
        .map(|t| sender.open(t.bytes).unwrap())
        .collect();
    assert_eq!(rr.len(), 1);
    assert!(matches!(
        rtcp::decode_compound(&rr[0], &rtcp::Limits::default()).unwrap()[..],
        [rtcp::Packet::ReceiverReport { .. }]
    ));
}

#[test]
fn cascade_links_are_protected_with_their_own_keys() {
    let mut net = Net::new(2, &SfuConfig::default());
    net.link(0, 1);
    net.join(1, 0, 10);
    net.join(2, 1, 10);
    for p in [1, 2] {
        net.set_bandwidth(p, 10_000_000);
    }
    for _ in 0..20 {
        net.tick(Duration::from_millis(33));
    }
    // Media crossed the link both ways (each participant's stream, and feedback).
    assert!(!net.inbox[&2].rtp[&ssrc(1, 0)].is_empty());
    assert!(!net.inbox[&1].rtp[&ssrc(2, 0)].is_empty());
    let mut kinds = (0, 0);
    for (r, _, kind, bytes) in &net.link_media {
        let (from, to) = (*r, 1 - *r);
        let open = |key: u32| {
            let mut b = bytes.clone();
            let mut s = srtp(key);
            match kind {
                Kind::Rtp => s.unprotect_rtp(&mut b).is_ok(),
                _ => s.unprotect_rtcp(&mut b).is_ok(),
            }
        };
        // Under the key of its direction (a fresh context: each packet checked
        // alone), and not under the other direction's or a participant's.
        assert!(open(link_key(from, to)), "{kind:?} from relay {from}");
        assert!(!open(link_key(to, from)));
        assert!(!open(downlink_key(1)) && !open(downlink_key(2)));
        match kind {
            Kind::Rtp => kinds.0 += 1,
            _ => kinds.1 += 1,
        }
    }
    assert!(
        kinds.0 > 0 && kinds.1 > 0,
        "RTP and RTCP on the link: {kinds:?}"
    );
    // A forged packet on the link is refused like one from an endpoint.
    let (r, l, _, bytes) = net
        .link_media
        .iter()
        .find(|m| m.2 == Kind::Rtp)
        .unwrap()
        .clone();
    let (other, back) = net.links[&(r, l)];
    let mut forged = bytes;
    *forged.last_mut().unwrap() ^= 1;
    let now = net.now;
    let mut out = Output::new();
    assert!(matches!(
        net.relays[other].handle_input(now, Peer::Link(back), &forged, &mut out),
        Err(Error::Srtp(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn a_packet_reordered_upstream_is_dropped_rather_than_protected_again() {
    let (mut sfu, mut out, t0, [mut sender, mut two, _]) = one_layer_relay();
    // Sent in order; the network delivers 12 before 11.
    let (p10, p11, p12) = (
        sender.seal(&packet(10)),
        sender.seal(&packet(11)),
        sender.seal(&packet(12)),
    );
    for p in [&p10, &p12] {
        sfu.handle_input(t0, Peer::Endpoint(1), p, &mut out)
            .unwrap();
    }
    out.clear();
    // 11 arrives after 12 went out: its index on each receiver's leg is behind the
    // highest sent there, so it is not protected (a sender that refuses index
    // reuse would refuse it too).
    sfu.handle_input(t0, Peer::Endpoint(1), &p11, &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(sfu.stats().late_dropped, 2);
    // What the receiver did get is intact, and the next packet flows.
    sfu.handle_input(t0, Peer::Endpoint(1), &sender.seal(&packet(13)), &mut out)
        .unwrap();
    let to_two = out.iter().find(|t| t.to == Peer::Endpoint(2)).unwrap();
    let plain = two.open(to_two.bytes).unwrap();
    assert_eq!(rtp::Packet::decode(&plain).unwrap().sequence, 13);
}

#[test]
fn a_stream_published_again_numbers_on_for_its_receivers() {
    let (mut sfu, mut out, t0, [mut sender, mut two, _]) = one_layer_relay();
    for seq in 1000..1010 {
        sfu.handle_input(t0, Peer::Endpoint(1), &sender.seal(&packet(seq)), &mut out)
            .unwrap();
    }
    let last = |out: &Output, two: &mut Party| {
        let t = out
            .iter()
            .filter(|t| t.to == Peer::Endpoint(2))
            .last()
            .unwrap();
        rtp::Packet::decode(&two.open(t.bytes).unwrap())
            .unwrap()
            .sequence
    };
    assert_eq!(last(&out, &mut two), 1009);
    // The sender leaves and comes back with the same SSRC, numbering from 10: on
    // receiver 2's leg those indices are behind what it already got, so the relay
    // numbers on after 1009 instead (never reusing an index, never stalling).
    sfu.remove_endpoint(t0, 1, &mut out).unwrap();
    sfu.add_endpoint(t0, 1, endpoint_leg(1), &mut out).unwrap();
    let layers = vec![Layer {
        ssrc: 0x100,
        bitrate_bps: 150_000,
    }];
    sfu.publish(t0, 1, StreamInfo::video(1, 1, Codec::Vp8, layers), &mut out)
        .unwrap();
    let mut again = Party::new(1);
    for seq in 10..13 {
        out.clear();
        sfu.handle_input(t0, Peer::Endpoint(1), &again.seal(&packet(seq)), &mut out)
            .unwrap();
        assert_eq!(last(&out, &mut two), 1000 + seq);
    }
    assert_eq!(sfu.stats().late_dropped, 0);
}
