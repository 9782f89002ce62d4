//! The relay driven through `chorus_framing::DatagramCore` only, once its peers are
//! added: SRTP in from peers' addresses, addressed transmits out, receiver reports on
//! its own timer, strangers and control messages refused.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use chorus_framing::{DatagramCore, Transmit};
use chorus_media::rtcp;
use chorus_mixer::Error;
use chorus_mixer::control::Message;
use chorus_mixer::sfu::{Event, Output, Peer, Sfu, SfuConfig, SfuError};
use common::{Party, endpoint_leg, link_leg, one_layer_relay, remb, rtp_bytes, stream_info};

const KEYFRAME: [u8; 5] = [0x10, 0x00, 0x9d, 0x01, 0x2a];
const RELAY: SocketAddr = addr(1, 3478);
const STRANGER: SocketAddr = addr(99, 4000);

const fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, host)),
        port,
    )
}

/// [`one_layer_relay`] (sender 1, receivers 2 and 3), with addresses for 1 and 2;
/// 3 has none.
fn relay() -> (Sfu, Instant, [Party; 3]) {
    let (mut sfu, _, t0, parties) = one_layer_relay();
    for p in 1..=2 {
        sfu.set_address(Peer::Endpoint(p), addr(p as u8 + 10, 5000))
            .unwrap();
    }
    (sfu, t0, parties)
}

/// Gives `core` one datagram through the trait and returns what it sends.
fn drive<C: DatagramCore>(
    core: &mut C,
    now: Instant,
    from: SocketAddr,
    bytes: &[u8],
) -> Result<Vec<Transmit>, C::Error> {
    assert!(core.accepts(RELAY, from, bytes), "refused by accepts");
    core.handle_datagram(now, RELAY, from, bytes)?;
    Ok(std::iter::from_fn(|| core.poll_transmit()).collect())
}

#[test]
fn media_from_a_peer_address_reaches_the_addressed_receivers() {
    let (mut sfu, t0, [mut sender, mut two, _]) = relay();
    let packet = rtp_bytes(0x100, 1, 3000, true, &[], &KEYFRAME);
    let sent = drive(&mut sfu, t0, addr(11, 5000), &sender.seal(&packet)).unwrap();
    // Receiver 2 at its address; receiver 3 has none, so its copy is counted.
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dst, addr(12, 5000));
    let got = two.open(&sent[0].payload).unwrap();
    assert_eq!(&got[12..], &packet[12..]);
    assert_eq!(sfu.stats().unaddressed, 1);
    assert_eq!(sfu.stats().forwarded, 2);
}

#[test]
fn strangers_and_control_messages_are_not_the_relays_datagrams() {
    let (mut sfu, t0, [mut sender, ..]) = relay();
    let packet = sender.seal(&rtp_bytes(0x100, 1, 3000, true, &[], &KEYFRAME));
    assert!(!sfu.accepts(RELAY, STRANGER, &packet));
    assert_eq!(
        sfu.handle_datagram(t0, RELAY, STRANGER, &packet),
        Err(Error::Sfu(SfuError::NotRoutable))
    );
    // A control message needs the authenticated control channel, not the socket.
    let mut control = bytes::BytesMut::new();
    Message::Speaker {
        participant: Some(1),
    }
    .encode(&mut control)
    .unwrap();
    assert!(!sfu.accepts(RELAY, addr(11, 5000), &control));
    assert_eq!(
        sfu.handle_datagram(t0, RELAY, addr(11, 5000), &control),
        Err(Error::Sfu(SfuError::NotRoutable))
    );
    assert_eq!(sfu.poll_transmit(), None);
    assert_eq!(sfu.stats().received, 0);
}

#[test]
fn addresses_belong_to_one_known_peer_at_a_time() {
    let (mut sfu, _, _) = relay();
    assert_eq!(
        sfu.set_address(Peer::Endpoint(3), addr(11, 5000)),
        Err(Error::Sfu(SfuError::DuplicateAddress(Peer::Endpoint(1))))
    );
    assert_eq!(
        sfu.set_address(Peer::Link(7), addr(20, 5000)),
        Err(Error::Sfu(SfuError::UnknownPeer(Peer::Link(7))))
    );
    // Moving a peer frees its old address; removing it frees the new one.
    sfu.set_address(Peer::Endpoint(1), addr(21, 5000)).unwrap();
    assert_eq!(sfu.address(Peer::Endpoint(1)), Some(addr(21, 5000)));
    sfu.set_address(Peer::Endpoint(3), addr(11, 5000)).unwrap();
    let mut out = Output::new();
    sfu.remove_endpoint(Instant::now(), 1, &mut out).unwrap();
    assert_eq!(sfu.address(Peer::Endpoint(1)), None);
    sfu.set_address(Peer::Endpoint(2), addr(21, 5000)).unwrap();
}

#[test]
fn receiver_reports_leave_on_the_relays_own_timer_through_the_trait() {
    let (mut sfu, t0, [mut sender, ..]) = relay();
    let packet = sender.seal(&rtp_bytes(0x100, 1, 3000, true, &[], &KEYFRAME));
    drive(&mut sfu, t0, addr(11, 5000), &packet).unwrap();
    let first = DatagramCore::poll_timeout(&sfu).expect("timers are running");
    DatagramCore::handle_timeout(&mut sfu, t0);
    assert_eq!(sfu.poll_transmit(), None, "early: a no-op");
    // Deadline after deadline (keyframe aggregation, reports) until the sender's
    // receiver report leaves, addressed to it.
    let mut now = first;
    let mut report = None;
    for _ in 0..50 {
        DatagramCore::handle_timeout(&mut sfu, now);
        for t in std::iter::from_fn(|| sfu.poll_transmit()) {
            assert!([addr(11, 5000), addr(12, 5000)].contains(&t.dst));
            if t.dst != addr(11, 5000) {
                continue;
            }
            let plain = sender.open(&t.payload).unwrap();
            let packets = rtcp::decode_compound(&plain, &rtcp::Limits::default()).unwrap();
            report = report.or_else(|| {
                packets.into_iter().find_map(|p| match p {
                    rtcp::Packet::ReceiverReport { reports, .. } => Some(reports),
                    _ => None,
                })
            });
        }
        if report.is_some() {
            break;
        }
        now = DatagramCore::poll_timeout(&sfu).expect("a report is still due");
    }
    let report = report.expect("a receiver report reached the sender");
    assert_eq!(report[0].ssrc, 0x100);
    assert_eq!(sfu.poll_event(), None);
}

#[test]
fn a_subscription_upstream_leaves_as_a_control_event() {
    let t0 = Instant::now();
    let mut sfu = Sfu::new(SfuConfig::default()).unwrap();
    let mut out = Output::new();
    sfu.add_endpoint(t0, 2, endpoint_leg(2), &mut out).unwrap();
    sfu.add_link(7, link_leg(0, 1), &mut out).unwrap();
    // Participant 1's three layers, learned from the link; endpoint 2 (1 Mbit/s at
    // first) is subscribed upstream to the layer that fits.
    sfu.handle_control(
        t0,
        Peer::Link(7),
        &Message::Publish(stream_info(1)),
        &mut out,
    )
    .unwrap();
    sfu.set_address(Peer::Endpoint(2), addr(12, 5000)).unwrap();
    // Endpoint 2 now takes 200 kbit/s: only the lowest layer fits, and the relay
    // changes its subscription on the link, a control message for the owner.
    let mut two = Party::new(2);
    drive(&mut sfu, t0, addr(12, 5000), &two.seal(&remb(200_000))).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| sfu.poll_event()).collect();
    let subscriptions: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Control { to, message } if *to == Peer::Link(7) => {
                match Message::decode(message) {
                    Ok(Message::Subscribe { stream: 1, layers }) => Some(layers),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(subscriptions.last(), Some(&0b001), "{events:?}");
    // The link has no address: what the relay would send it there (a keyframe
    // request) is counted, not sent.
    assert_eq!(sfu.poll_transmit(), None);
    assert!(sfu.stats().unaddressed >= 1);
}
