//! Packets to endpoints carry the relay's own abs-send-time, so that a receiver's
//! delay-based estimate (whose REMB drives layer selection) measures the relay's
//! downlink to it; links get the sender's value, and other extensions pass as sent.

mod common;

use std::time::{Duration, Instant};

use chorus_media::congestion::{abs_send_time, decode_abs_send_time};
use chorus_media::rtp;
use chorus_mixer::control::{Codec, Layer, Message, StreamInfo};
use chorus_mixer::sfu::{Kind, Output, Peer, Sfu, SfuConfig};
use common::{Party, endpoint_leg, link_key, link_leg, rtp_bytes, srtp};

const SENDERS_TIME: [u8; 3] = [0x12, 0x34, 0x56];
const LEVEL: [u8; 1] = [0x9e];

fn packet(seq: u16) -> Vec<u8> {
    let elements = [
        rtp::Element {
            id: 1,
            data: &LEVEL,
        },
        rtp::Element {
            id: 3,
            data: &SENDERS_TIME,
        },
    ];
    let keyframe = [0x10, 0x00, 0x9d, 0x01];
    rtp_bytes(
        0x100,
        seq,
        u32::from(seq) * 3000,
        true,
        &elements,
        &keyframe,
    )
}

/// What the receiver got, with the time it arrived (since the start), and what the
/// link got, each unprotected with its own keys.
struct Delivered {
    to_receiver: Vec<(Duration, Vec<u8>)>,
    to_link: Vec<Vec<u8>>,
}

/// A relay with sender 1, receiver 2 and link 7 subscribed to the stream, and 20
/// packets sent every 20 ms.
fn run(config: SfuConfig) -> Delivered {
    let t0 = Instant::now();
    let mut sfu = Sfu::new(config).unwrap();
    let mut out = Output::new();
    sfu.add_endpoint(t0, 1, endpoint_leg(1), &mut out).unwrap();
    sfu.add_endpoint(t0, 2, endpoint_leg(2), &mut out).unwrap();
    sfu.add_link(7, link_leg(0, 1), &mut out).unwrap();
    let (mut sender, mut receiver) = (Party::new(1), Party::new(2));
    let mut far_relay = srtp(link_key(0, 1));
    let layers = vec![Layer {
        ssrc: 0x100,
        bitrate_bps: 150_000,
    }];
    sfu.publish(t0, 1, StreamInfo::video(1, 1, Codec::Vp8, layers), &mut out)
        .unwrap();
    let sub = Message::Subscribe {
        stream: 1,
        layers: 1,
    };
    sfu.handle_control(t0, Peer::Link(7), &sub, &mut out)
        .unwrap();
    out.clear();
    let (mut to_receiver, mut to_link) = (Vec::new(), Vec::new());
    for i in 0..20u16 {
        // The relay's clock starts at the first packet, 5 ms after t0.
        let at = Duration::from_millis(5 + 20 * u64::from(i));
        sfu.handle_input(
            t0 + at,
            Peer::Endpoint(1),
            &sender.seal(&packet(i)),
            &mut out,
        )
        .unwrap();
        for t in out.iter().filter(|t| t.kind == Kind::Rtp) {
            match t.to {
                Peer::Endpoint(2) => to_receiver.push((at, receiver.open(t.bytes).unwrap())),
                Peer::Link(7) => {
                    let mut b = t.bytes.to_vec();
                    far_relay.unprotect_rtp(&mut b).unwrap();
                    to_link.push(b);
                }
                other => panic!("{other:?}"),
            }
        }
        out.clear();
    }
    Delivered {
        to_receiver,
        to_link,
    }
}

fn element(bytes: &[u8], id: u8) -> Vec<u8> {
    rtp::Packet::decode(bytes)
        .unwrap()
        .extension_elements()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.id == id)
        .unwrap()
        .data
        .to_vec()
}

#[test]
fn endpoints_get_the_relays_send_time_links_the_senders() {
    let Delivered {
        to_receiver,
        to_link,
    } = run(SfuConfig::default());
    assert_eq!(to_receiver.len(), 20);
    for (at, bytes) in &to_receiver {
        let since_first = *at - Duration::from_millis(5);
        assert_eq!(element(bytes, 3), abs_send_time(since_first), "at {at:?}");
        assert_eq!(element(bytes, 1), LEVEL, "other extensions as sent");
    }
    // 20 ms apart in 6.18 fixed point.
    let times: Vec<u32> = to_receiver
        .iter()
        .map(|(_, b)| decode_abs_send_time(&element(b, 3)).unwrap())
        .collect();
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] == (20 << 18) / 1000 || w[1] - w[0] == (20 << 18) / 1000 + 1)
    );
    assert_eq!(to_link.len(), 20);
    for (i, bytes) in to_link.iter().enumerate() {
        assert_eq!(bytes, &packet(i as u16), "links get the packet unchanged");
    }
}

#[test]
fn without_an_id_the_extension_passes_unchanged() {
    let mut config = SfuConfig::default();
    config.abs_send_time_id = None;
    let to_receiver = run(config).to_receiver;
    for (_, bytes) in &to_receiver {
        assert_eq!(element(bytes, 3), SENDERS_TIME);
    }
    let mut bad = SfuConfig::default();
    bad.abs_send_time_id = Some(15);
    assert!(Sfu::new(bad).is_err());
}
