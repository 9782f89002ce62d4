//! Each receiver gets the layers its bandwidth estimate allows; layer switches
//! happen at keyframes and keep the receiver's sequence numbers continuous.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use chorus_media::rtcp;
use chorus_mixer::control::Message;
use chorus_mixer::sfu::{Kind, Output, Peer, Selection, SfuConfig};
use common::{Net, assert_continuous, is_keyframe_start, layer_of, remb, ssrc};

const FRAME: Duration = Duration::from_millis(33);

fn targets(net: &Net, p: u32) -> Vec<Option<u8>> {
    [1u32, 2]
        .iter()
        .map(|&s| net.relays[0].selection(p, s).unwrap().target)
        .collect()
}

#[test]
fn layers_fit_the_estimate() {
    let mut net = Net::new(1, &SfuConfig::default());
    for p in 1..=3 {
        net.join(p, 0, 10);
    }
    // Receiver 3 gets streams 1 and 2 (150k / 500k / 1.5M each).
    for (bps, want) in [
        (10_000_000, [Some(2), Some(2)]),
        // 2 x 150k, then stream 1 to 1.5M (+1.35M), stream 2 to 500k (+350k).
        (2_000_000, [Some(2), Some(1)]),
        (1_200_000, [Some(1), Some(1)]),
        (400_000, [Some(0), Some(0)]),
        (200_000, [Some(0), None]),
        (100_000, [None, None]),
    ] {
        net.send_from(3, &remb(bps));
        assert_eq!(targets(&net, 3), want, "at {bps} bit/s");
    }
    // The active speaker is served first.
    net.send_from(3, &remb(2_000_000));
    let now = net.now;
    let mut out = Output::new();
    net.relays[0].set_speaker(now, Some(2), &mut out);
    assert_eq!(targets(&net, 3), [Some(1), Some(2)]);
    // A receiver that accepts only the lowest layer of stream 2 (a thumbnail).
    let mut sub = BytesMut::new();
    Message::Subscribe {
        stream: 2,
        layers: 0b001,
    }
    .encode(&mut sub)
    .unwrap();
    net.send_from(3, &sub);
    assert_eq!(targets(&net, 3), [Some(2), Some(0)]);
}

#[test]
fn switches_keep_the_stream_continuous() {
    let config = SfuConfig::default();
    let mut net = Net::new(1, &config);
    net.join(1, 0, 1000); // keyframes only when asked
    net.join(2, 0, 1000);
    net.send_from(2, &remb(10_000_000));
    let run = |net: &mut Net, frames| {
        for _ in 0..frames {
            net.tick(FRAME);
        }
    };
    run(&mut net, 20);
    // Down to the lowest layer, then back up, with keyframe requests in between.
    net.send_from(2, &remb(300_000));
    assert_eq!(
        net.relays[0].selection(2, 1),
        Some(Selection {
            current: Some(2),
            target: Some(0),
            temporal: 0,
            temporal_target: 0
        })
    );
    run(&mut net, 20);
    net.send_from(2, &remb(900_000));
    run(&mut net, 20);
    net.send_from(2, &remb(10_000_000));
    run(&mut net, 20);

    let got = &net.inbox[&2].rtp[&ssrc(1, 0)];
    assert_continuous(&net.inbox[&2], ssrc(1, 0));
    let layers: Vec<u8> = got.iter().map(layer_of).collect();
    let mut runs: Vec<u8> = layers.clone();
    runs.dedup();
    assert_eq!(runs, [2, 0, 1, 2], "the layers received, in order");
    // Every change of layer happens at a keyframe.
    for (i, w) in layers.windows(2).enumerate() {
        if w[0] != w[1] {
            assert!(is_keyframe_start(&got[i + 1]), "switch at packet {}", i + 1);
        }
    }
    // All 80 frames arrived, 2 packets each. Switching up happens at the new
    // layer's keyframe of a frame whose lower-layer version was just forwarded, so
    // that frame comes twice (its copies are numbered on, never repeated): 2 packets
    // for each of the 2 up-switches.
    assert_eq!(got.len(), 160 + 2 * 2);
    assert_eq!(
        net.relays[0].selection(2, 1),
        Some(Selection {
            current: Some(2),
            target: Some(2),
            temporal: 0,
            temporal_target: 0
        })
    );
    // Receiver 2: its first layer and three changes; receiver 1: its first layer.
    assert_eq!(net.relays[0].stats().switches, 4 + 1);
}

#[test]
fn keyframe_requests_are_aggregated() {
    let config = SfuConfig::default();
    let mut net = Net::new(1, &config);
    net.join(1, 0, 1000);
    for p in 2..=9 {
        net.join(p, 0, 1000);
        net.send_from(p, &remb(10_000_000));
    }
    for _ in 0..3 {
        net.tick(FRAME);
    }
    let top = ssrc(1, 2);
    let first = net.keyframe_requests[&top];
    assert_eq!(
        first, 1,
        "one request for eight receivers switching together"
    );
    // Eight receivers lose a picture within one interval: one PLI now...
    let mut pli = BytesMut::new();
    rtcp::Packet::Pli {
        sender_ssrc: 5,
        media_ssrc: ssrc(1, 0),
    }
    .encode(&mut pli)
    .unwrap();
    net.now += config.keyframe_interval;
    for p in 2..=9 {
        net.send_from(p, &pli);
    }
    assert_eq!(net.keyframe_requests[&top], first + 1);
    // ... and one more when the interval ends, for those that asked during it.
    let due = net.relays[0].poll_timeout().unwrap();
    assert!(due <= net.now + config.keyframe_interval);
    for _ in 0..20 {
        net.tick(FRAME);
    }
    assert_eq!(net.keyframe_requests[&top], first + 2);
    assert!(net.relays[0].stats().keyframe_requests_aggregated >= 7 + 7);
    // FIR asks the same way.
    let mut fir = BytesMut::new();
    rtcp::Packet::Fir {
        sender_ssrc: 5,
        entries: vec![rtcp::FirEntry {
            ssrc: ssrc(1, 0),
            seq: 1,
        }],
    }
    .encode(&mut fir)
    .unwrap();
    net.now += config.keyframe_interval;
    net.send_from(2, &fir);
    assert_eq!(net.keyframe_requests[&top], first + 3);
}

fn nack(media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
    let mut b = BytesMut::new();
    rtcp::Packet::Nack {
        sender_ssrc: 5,
        media_ssrc,
        entries: rtcp::NackEntry::from_lost(lost),
    }
    .encode(&mut b)
    .unwrap();
    b.to_vec()
}

#[test]
fn nacks_are_answered_with_the_bytes_sent_before() {
    let mut net = Net::new(1, &SfuConfig::default());
    net.join(1, 0, 1000);
    net.join(2, 0, 1000);
    net.send_from(2, &remb(10_000_000));
    for _ in 0..5 {
        net.tick(FRAME);
    }
    let (out_seq, _, _) = net.inbox[&2].rtp[&ssrc(1, 0)][3].clone();
    let first = net.inbox[&2].wire[&ssrc(1, 0)][3].clone();
    let now = net.now;
    let mut out = Output::new();
    let sealed = net.seal(2, &nack(ssrc(1, 0), &[out_seq]));
    net.relays[0]
        .handle_input(now, Peer::Endpoint(2), &sealed, &mut out)
        .unwrap();
    let t: Vec<_> = out.iter().collect();
    assert_eq!(t.len(), 1, "answered here, not asked of the sender");
    assert_eq!((t[0].to, t[0].kind), (Peer::Endpoint(2), Kind::Rtp));
    // The same SRTP packet: the same index with the same bytes, so no keystream is
    // used twice. (The receiver, having it, sees a replay.)
    assert_eq!(t[0].bytes, &first[..]);
    assert_eq!(
        net.parties.get_mut(&2).unwrap().open(t[0].bytes),
        Err(chorus_crypto::Error::Auth(chorus_crypto::AuthError::Replay))
    );
    assert_eq!(net.relays[0].stats().retransmitted, 1);
}

#[test]
fn nacks_beyond_the_history_are_translated_to_the_layer() {
    let mut config = SfuConfig::default();
    config.retransmit_history = 0;
    let mut net = Net::new(1, &config);
    net.join(1, 0, 1000);
    net.join(2, 0, 1000);
    net.send_from(2, &remb(10_000_000));
    for _ in 0..5 {
        net.tick(FRAME);
    }
    let (out_seq, _, _) = net.inbox[&2].rtp[&ssrc(1, 0)][3].clone();
    let now = net.now;
    let mut out = Output::new();
    let sealed = net.seal(2, &nack(ssrc(1, 0), &[out_seq]));
    net.relays[0]
        .handle_input(now, Peer::Endpoint(2), &sealed, &mut out)
        .unwrap();
    let t: Vec<_> = out.iter().collect();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, Peer::Endpoint(1));
    // SRTCP under the sender's own key.
    let plain = net.open(1, t[0].bytes);
    let fb = rtcp::decode_compound(&plain, &rtcp::Limits::default()).unwrap();
    // Layer 2's fourth packet: the sender's layer-2 numbering starts at 40,000, and
    // the receiver started at the first keyframe (the first packet).
    assert_eq!(
        fb,
        vec![rtcp::Packet::Nack {
            sender_ssrc: SfuConfig::default().rtcp_ssrc,
            media_ssrc: ssrc(1, 2),
            entries: rtcp::NackEntry::from_lost(&[40_003]),
        }]
    );
    assert_eq!(net.relays[0].stats().retransmitted, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Whatever the estimates do, every receiver's streams stay continuous and change
    /// layer only at keyframes.
    #[test]
    fn continuous_under_any_estimates(
        schedule in proptest::collection::vec((0u32..3, 0u64..4_000_000), 1..40),
        key_every in 5u64..50,
    ) {
        let mut net = Net::new(1, &SfuConfig::default());
        for p in 1..=3 {
            net.join(p, 0, key_every);
        }
        for (p, bps) in schedule {
            net.send_from(p + 1, &remb(bps));
            net.tick(FRAME);
            net.tick(FRAME);
        }
        for p in 1..=3u32 {
            for (&s, got) in &net.inbox[&p].rtp {
                assert_continuous(&net.inbox[&p], s);
                for (i, w) in got.windows(2).enumerate() {
                    if w[0].1 != w[1].1 && layer_of(&w[0]) != layer_of(&w[1]) {
                        proptest::prop_assert!(is_keyframe_start(&got[i + 1]));
                    }
                }
                proptest::prop_assert!(is_keyframe_start(&got[0]));
            }
        }
    }
}

#[test]
fn a_layer_the_sender_stops_is_given_up_and_taken_back() {
    let config = SfuConfig::default();
    let mut net = Net::new(1, &config);
    net.join(1, 0, 1000);
    net.join(2, 0, 1000);
    net.send_from(2, &remb(10_000_000));
    let run = |net: &mut Net, d: Duration| {
        let end = net.now + d;
        while net.now < end {
            net.tick(FRAME);
        }
    };
    run(&mut net, Duration::from_secs(1));
    assert_eq!(net.relays[0].selection(2, 1).unwrap().current, Some(2));
    // The top layer stops: after the layer timeout the receiver moves to layer 1.
    net.senders.get_mut(&1).unwrap().stopped[2] = true;
    run(&mut net, config.layer_timeout + Duration::from_secs(1));
    assert_eq!(
        net.relays[0].selection(2, 1),
        Some(Selection {
            current: Some(1),
            target: Some(1),
            temporal: 0,
            temporal_target: 0
        })
    );
    // It comes back: the receiver returns to it.
    net.senders.get_mut(&1).unwrap().stopped[2] = false;
    run(&mut net, Duration::from_secs(1));
    assert_eq!(net.relays[0].selection(2, 1).unwrap().current, Some(2));
    assert_continuous(&net.inbox[&2], ssrc(1, 0));
    let mut runs: Vec<u8> = net.inbox[&2].rtp[&ssrc(1, 0)]
        .iter()
        .map(layer_of)
        .collect();
    runs.dedup();
    assert_eq!(runs, [2, 1, 2]);
}

#[test]
fn a_relayed_layer_that_stops_is_given_up_and_retried() {
    let config = SfuConfig::default();
    let mut net = Net::new(2, &config);
    net.link(0, 1);
    net.join(1, 0, 1000);
    net.join(2, 1, 1000);
    net.set_bandwidth(2, 10_000_000);
    let run = |net: &mut Net, d: Duration| {
        let end = net.now + d;
        while net.now < end {
            net.tick(FRAME);
        }
    };
    run(&mut net, Duration::from_secs(1));
    net.senders.get_mut(&1).unwrap().stopped[2] = true;
    run(&mut net, config.layer_timeout + Duration::from_secs(1));
    // Relay 1 noticed the silence, moved its receiver down and unsubscribed.
    assert_eq!(net.relays[1].selection(2, 1).unwrap().current, Some(1));
    assert_eq!(net.relays[0].link_layers(101, 1), 0b010);
    net.senders.get_mut(&1).unwrap().stopped[2] = false;
    // It tries the layer again after four layer timeouts, finds it, and switches.
    run(&mut net, 4 * config.layer_timeout + Duration::from_secs(1));
    assert_eq!(net.relays[1].selection(2, 1).unwrap().current, Some(2));
    assert_eq!(net.relays[0].link_layers(101, 1), 0b100);
    assert_continuous(&net.inbox[&2], ssrc(1, 0));
}

#[test]
fn sender_reports_follow_the_receivers_timeline() {
    let mut net = Net::new(1, &SfuConfig::default());
    net.join(1, 0, 1000);
    net.join(2, 0, 1000);
    net.send_from(2, &remb(10_000_000));
    for _ in 0..3 {
        net.tick(FRAME);
    }
    net.send_from(2, &remb(300_000));
    for _ in 0..3 {
        net.tick(FRAME);
    }
    // Now on layer 0, whose timestamps the relay shifted at the switch. The sender
    // reports layer 0: its RTP time of "now" is the next frame's timestamp.
    let (_, last_ts, _) = net.inbox[&2].rtp[&ssrc(1, 0)].last().unwrap().clone();
    let layer0_next_ts = 4_000_000_000u32.wrapping_add(3000 * 6);
    let mut sr = BytesMut::new();
    rtcp::Packet::SenderReport {
        ssrc: ssrc(1, 0),
        info: rtcp::SenderInfo {
            ntp: 0x1234_5678_0000_0000,
            rtp_timestamp: layer0_next_ts,
            packet_count: 12,
            octet_count: 120,
        },
        reports: vec![],
    }
    .encode(&mut sr)
    .unwrap();
    let now = net.now;
    let mut out = Output::new();
    let sealed = net.seal(1, &sr);
    net.relays[0]
        .handle_input(now, Peer::Endpoint(1), &sealed, &mut out)
        .unwrap();
    let t: Vec<_> = out.iter().collect();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, Peer::Endpoint(2));
    let plain = net.open(2, t[0].bytes);
    let got = rtcp::decode_compound(&plain, &rtcp::Limits::default()).unwrap();
    let rtcp::Packet::SenderReport { ssrc: s, info, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(*s, ssrc(1, 0), "the receiver's SSRC for the stream");
    assert_eq!(info.ntp, 0x1234_5678_0000_0000);
    // One frame after the last packet the receiver got, in its own timeline.
    assert_eq!(info.rtp_timestamp, last_ts.wrapping_add(3000));
    // A report for a layer nobody receives goes nowhere.
    out.clear();
    let mut sr2 = sr.clone();
    sr2[4..8].copy_from_slice(&ssrc(1, 2).to_be_bytes());
    let sealed = net.seal(1, &sr2);
    net.relays[0]
        .handle_input(now, Peer::Endpoint(1), &sealed, &mut out)
        .unwrap();
    assert!(out.is_empty());
}
