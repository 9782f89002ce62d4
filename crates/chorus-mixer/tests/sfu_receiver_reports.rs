//! The relay reports to each local sender on the layers it receives from it (RFC 3550
//! §6.4.2): loss per layer, the extended highest sequence number, and LSR/DLSR from
//! the sender's own SR, so the sender measures its uplink loss and its round-trip
//! time to the relay although the relay terminates RTCP.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_media::rtcp;
use chorus_mixer::control::{Codec, Layer, StreamInfo};
use chorus_mixer::sfu::{Kind, Output, Peer, Sfu, SfuConfig};
use common::{Party, endpoint_leg, link_key, link_leg, rtp_bytes, srtp};

const SENDER: u32 = 1;

fn packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let keyframe = [0x10, 0x00, 0x9d, 0x01];
    rtp_bytes(ssrc, seq, u32::from(seq) * 3000, true, &[], &keyframe)
}

/// The receiver reports in `out` addressed to the sender, which unprotects them
/// (SRTCP under its own receive key).
fn reports(out: &Output, sender: &mut Party) -> Vec<(u32, Vec<rtcp::ReportBlock>)> {
    out.iter()
        .filter(|t| t.to == Peer::Endpoint(SENDER) && t.kind == Kind::Rtcp)
        .map(|t| sender.open(t.bytes).unwrap())
        .collect::<Vec<_>>()
        .iter()
        .flat_map(|b| rtcp::decode_compound(b, &rtcp::Limits::default()).unwrap())
        .filter_map(|p| match p {
            rtcp::Packet::ReceiverReport { ssrc, reports } => Some((ssrc, reports)),
            _ => None,
        })
        .collect()
}

#[test]
fn each_sender_hears_its_uplink_loss_and_round_trip_per_layer() {
    let t0 = Instant::now();
    let config = SfuConfig::default();
    let relay_ssrc = config.rtcp_ssrc;
    let mut sfu = Sfu::new(config).unwrap();
    let mut out = Output::new();
    for e in [SENDER, 2] {
        sfu.add_endpoint(t0, e, endpoint_leg(e), &mut out).unwrap();
    }
    let mut sender = Party::new(SENDER);
    let layers = vec![
        Layer {
            ssrc: 0x100,
            bitrate_bps: 150_000,
        },
        Layer {
            ssrc: 0x101,
            bitrate_bps: 500_000,
        },
    ];
    let info = StreamInfo::video(1, SENDER, Codec::Vp8, layers);
    sfu.publish(t0, SENDER, info, &mut out).unwrap();
    out.clear();

    // 50 packets per layer over one second; layer 0 loses every tenth on the way in.
    for i in 0..50u16 {
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        for ssrc in [0x100, 0x101] {
            if ssrc == 0x100 && i % 10 == 5 {
                continue;
            }
            sfu.handle_input(
                now,
                Peer::Endpoint(SENDER),
                &sender.seal(&packet(ssrc, 1000 + i)),
                &mut out,
            )
            .unwrap();
        }
    }
    // The sender's SR for layer 1 (its NTP time 0x0001_2345_6789_0000).
    let sr_at = t0 + Duration::from_millis(990);
    let sr = rtcp::Packet::SenderReport {
        ssrc: 0x101,
        info: rtcp::SenderInfo {
            ntp: 0x0001_2345_6789_0000,
            rtp_timestamp: 7,
            packet_count: 50,
            octet_count: 800,
        },
        reports: vec![],
    };
    let mut b = BytesMut::new();
    sr.encode(&mut b).unwrap();
    sfu.handle_input(sr_at, Peer::Endpoint(SENDER), &sender.seal(&b), &mut out)
        .unwrap();
    out.clear();

    // The first report is due one interval after the first packet.
    let due = sfu.poll_timeout().unwrap();
    assert!(due <= t0 + Duration::from_secs(1));
    let at = t0 + Duration::from_millis(1_250);
    sfu.handle_timeout(at, &mut out);
    let got = reports(&out, &mut sender);
    assert_eq!(got.len(), 1, "one RR for the stream");
    let (from, blocks) = &got[0];
    assert_eq!(*from, relay_ssrc);
    let block = |ssrc| blocks.iter().find(|b| b.ssrc == ssrc).unwrap();
    // Layer 0: 5 of 50 lost = 25.6/256; the highest is the last packet, 1049.
    assert_eq!(block(0x100).fraction_lost, 25);
    assert_eq!(block(0x100).cumulative_lost, 5);
    assert_eq!(block(0x100).highest_seq, 1049);
    assert_eq!(
        (block(0x100).last_sr, block(0x100).delay_since_last_sr),
        (0, 0)
    );
    // Layer 1: no loss; LSR echoes the SR's middle bits and DLSR counts the 260 ms
    // the relay held it, so the sender's RTT to the relay comes out as the path's.
    let b1 = block(0x101);
    assert_eq!((b1.fraction_lost, b1.cumulative_lost), (0, 0));
    assert_eq!(b1.last_sr, 0x2345_6789);
    assert_eq!(b1.delay_since_last_sr, 260 * 65_536 / 1000);
    let arrival = 0x2345_6789 + b1.delay_since_last_sr + 20 * 65_536 / 1000;
    let rtt = rtcp::round_trip_time(arrival, b1).unwrap();
    assert!(rtt.abs_diff(Duration::from_millis(20)) < Duration::from_millis(1));

    // The next interval: no more packets, so the loss fraction of the new interval
    // is zero and the cumulative count stays.
    out.clear();
    let next = sfu.poll_timeout().unwrap();
    assert_eq!(next, at + Duration::from_secs(1));
    sfu.handle_timeout(next, &mut out);
    let got = reports(&out, &mut sender);
    assert_eq!(got.len(), 1);
    let b0 = got[0].1.iter().find(|b| b.ssrc == 0x100).unwrap();
    assert_eq!((b0.fraction_lost, b0.cumulative_lost), (0, 5));
}

#[test]
fn relayed_streams_are_reported_by_their_own_relay_only() {
    let t0 = Instant::now();
    let mut sfu = Sfu::new(SfuConfig::default()).unwrap();
    let mut out = Output::new();
    sfu.add_endpoint(t0, 2, endpoint_leg(2), &mut out).unwrap();
    sfu.add_link(7, link_leg(0, 1), &mut out).unwrap();
    let mut upstream = srtp(link_key(1, 0));
    let mut downstream = srtp(link_key(0, 1));
    let info = StreamInfo::video(
        1,
        SENDER,
        Codec::Vp8,
        vec![Layer {
            ssrc: 0x100,
            bitrate_bps: 150_000,
        }],
    );
    let publish = chorus_mixer::control::Message::Publish(info);
    sfu.handle_control(t0, Peer::Link(7), &publish, &mut out)
        .unwrap();
    for i in 0..50u16 {
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        let mut b = packet(0x100, i);
        upstream.protect_rtp(&mut b).unwrap();
        sfu.handle_input(now, Peer::Link(7), &b, &mut out).unwrap();
    }
    out.clear();
    sfu.handle_timeout(t0 + Duration::from_secs(3), &mut out);
    assert!(
        out.iter().all(|t| {
            if t.kind != Kind::Rtcp || t.to != Peer::Link(7) {
                return true;
            }
            let mut b = t.bytes.to_vec();
            downstream.unprotect_rtcp(&mut b).unwrap();
            !rtcp::decode_compound(&b, &rtcp::Limits::default())
                .unwrap()
                .iter()
                .any(|p| matches!(p, rtcp::Packet::ReceiverReport { .. }))
        }),
        "no RR over the link"
    );
}
