//! A call leg driven through `chorus_framing::DatagramCore` only (PCM in through
//! `send_frame`, PCM out through `poll_pcm`, everything on the wire through the
//! trait): addressed transmits, the peer as the only accepted source, timers.
#![cfg(feature = "opus")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::{DatagramCore, SeededEntropy};
use chorus_media::session::{Event, Session, SessionConfig};
use chorus_media::{Error, UsageError};

const ALICE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    40_000,
);
const BOB: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 2)),
    50_000,
);
const MALLORY: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 3)),
    50_000,
);

fn srtp(key: u8) -> SrtpSession {
    let suite = Suite::AeadAes128Gcm;
    let policy = Policy::new(
        suite,
        &vec![key; suite.key_len()],
        &vec![key; suite.salt_len()],
    );
    SrtpSession::new(policy.unwrap()).unwrap()
}

fn leg(ssrc: u32, out_key: u8, in_key: u8, now: Instant) -> Session {
    let mut config = SessionConfig::default();
    (config.ssrc, config.fec_ssrc) = (ssrc, ssrc + 1);
    let entropy = Box::new(SeededEntropy::new(u64::from(ssrc)));
    Session::new(config, srtp(out_key), srtp(in_key), entropy, now).unwrap()
}

/// Moves every datagram `a` (at `a_at`) has queued to `b` (at `b_at`), through the
/// trait: each must be addressed to `b`, accepted by `b` from `a` and taken.
fn deliver<A: DatagramCore, B: DatagramCore>(
    now: Instant,
    (a, a_at): (&mut A, SocketAddr),
    (b, b_at): (&mut B, SocketAddr),
) -> usize {
    let mut n = 0;
    while let Some(t) = a.poll_transmit() {
        assert_eq!(t.dst, b_at);
        assert!(b.accepts(b_at, a_at, &t.payload));
        b.handle_datagram(now, b_at, a_at, &t.payload)
            .unwrap_or_else(|e| panic!("datagram {n} refused: {e}"));
        n += 1;
    }
    n
}

/// Runs a core's timers if they are due (an early call would be a no-op anyway).
fn run_due<C: DatagramCore>(core: &mut C, now: Instant) {
    if core.poll_timeout().is_some_and(|t| t <= now) {
        core.handle_timeout(now);
    }
}

#[test]
fn a_session_sends_to_its_peer_and_takes_media_only_from_it() {
    let t0 = Instant::now();
    let (mut alice, mut bob) = (leg(10, 1, 2, t0), leg(20, 2, 1, t0));
    let tone: Vec<i16> = (0..alice.frame_samples())
        .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
        .collect();

    // No peer yet: nothing leaves through the trait and nothing is accepted.
    alice.send_frame(t0, &tone).unwrap();
    assert_eq!(DatagramCore::poll_transmit(&mut alice), None);
    assert!(!bob.accepts(BOB, ALICE, &[0x80, 111, 0, 0]));
    alice.set_peer(BOB);
    bob.set_peer(ALICE);
    assert_eq!(alice.peer(), Some(BOB));

    let mut heard = 0;
    let mut sent = 0;
    for i in 1..100u32 {
        let now = t0 + Duration::from_millis(20) * i;
        alice.send_frame(now, &tone).unwrap();
        sent += deliver(now, (&mut alice, ALICE), (&mut bob, BOB));
        deliver(now, (&mut bob, BOB), (&mut alice, ALICE));
        run_due(&mut alice, now);
        run_due(&mut bob, now);
        while bob.poll_pcm().is_some() {
            heard += 1;
        }
        while alice.poll_pcm().is_some() {}
    }
    assert!(
        sent >= 100,
        "the datagram queued before the peer was set went too"
    );
    assert!(heard > 80, "bob heard {heard} frames");
    assert_eq!(bob.stats().rejected, 0);
    assert!(
        alice.stats().rtt.is_some(),
        "RTCP went both ways through the trait"
    );

    // Mallory's copy of a real packet: refused by `accepts` and by the session.
    alice
        .send_frame(t0 + Duration::from_secs(3), &tone)
        .unwrap();
    let t = DatagramCore::poll_transmit(&mut alice).unwrap();
    assert!(!bob.accepts(BOB, MALLORY, &t.payload));
    let media = bob.stats().media_received;
    let r = bob.handle_datagram(t0 + Duration::from_secs(3), BOB, MALLORY, &t.payload);
    assert_eq!(r, Err(Error::Usage(UsageError::NotFromPeer)));
    assert_eq!(bob.stats().media_received, media);
    assert_eq!(bob.stats().rejected, 1);
    // Not RTP or RTCP: not the session's, even from the peer.
    assert!(!bob.accepts(BOB, ALICE, &[0x00, 0x01, 0x00, 0x00]));
    assert!(!bob.accepts(BOB, ALICE, &[0x09, 0x06]));
}

#[test]
fn a_bye_through_the_trait_is_an_event_of_the_trait() {
    let t0 = Instant::now();
    let (mut alice, mut bob) = (leg(10, 1, 2, t0), leg(20, 2, 1, t0));
    alice.set_peer(BOB);
    bob.set_peer(ALICE);
    alice.close();
    assert!(deliver(t0, (&mut alice, ALICE), (&mut bob, BOB)) >= 1);
    assert_eq!(DatagramCore::poll_event(&mut bob), Some(Event::RemoteBye));
}
