//! Every receiver on a relay gets exactly the N-1 other streams, each as one
//! continuous RTP stream, and nothing of its own; joining and leaving change that
//! for everyone.

mod common;

use std::time::Duration;

use chorus_mixer::sfu::SfuConfig;
use common::{Net, assert_continuous, layer_of, ssrc};

const FRAME: Duration = Duration::from_millis(33);

fn streams_of(net: &Net, p: u32) -> Vec<u32> {
    let mut s: Vec<u32> = net.inbox[&p].rtp.keys().copied().collect();
    s.sort_unstable();
    s
}

#[test]
fn n_minus_one_streams_each() {
    let mut net = Net::new(1, &SfuConfig::default());
    for p in 1..=5 {
        net.join(p, 0, 10);
        net.set_bandwidth(p, 10_000_000);
    }
    for _ in 0..30 {
        net.tick(FRAME);
    }
    for p in 1..=5u32 {
        let want: Vec<u32> = (1..=5).filter(|&q| q != p).map(|q| ssrc(q, 0)).collect();
        assert_eq!(streams_of(&net, p), want, "participant {p}");
        for &s in &want {
            assert_continuous(&net.inbox[&p], s);
            // Enough bandwidth for every top layer: only layer 2 arrives.
            assert!(net.inbox[&p].rtp[&s].iter().all(|x| layer_of(x) == 2));
            // Every frame since the first keyframe: 2 packets a frame, 30 frames.
            assert_eq!(
                net.inbox[&p].rtp[&s].len(),
                60,
                "participant {p} stream {s:#x}"
            );
        }
    }
    let stats = net.relays[0].stats();
    assert_eq!(stats.forwarded, 5 * 4 * 60);
}

#[test]
fn joining_and_leaving() {
    let mut net = Net::new(1, &SfuConfig::default());
    for p in 1..=3 {
        net.join(p, 0, 10);
    }
    for _ in 0..5 {
        net.tick(FRAME);
    }
    net.join(4, 0, 10);
    // Its keyframe requests fall within the aggregation interval of the others':
    // the keyframes come within 500 ms.
    for _ in 0..16 {
        net.tick(FRAME);
    }
    assert_eq!(
        streams_of(&net, 4),
        vec![ssrc(1, 0), ssrc(2, 0), ssrc(3, 0)]
    );
    assert!(net.inbox[&1].rtp.contains_key(&ssrc(4, 0)));
    // Participant 2 leaves: nobody gets its stream any more.
    let now = net.now;
    let mut out = chorus_mixer::sfu::Output::new();
    net.relays[0].remove_endpoint(now, 2, &mut out).unwrap();
    net.senders.remove(&2);
    let before: Vec<usize> = [1u32, 3, 4]
        .iter()
        .map(|p| net.inbox[p].rtp[&ssrc(2, 0)].len())
        .collect();
    for _ in 0..5 {
        net.tick(FRAME);
    }
    for (i, p) in [1u32, 3, 4].iter().enumerate() {
        assert_eq!(net.inbox[p].rtp[&ssrc(2, 0)].len(), before[i]);
        assert!(net.relays[0].selection(*p, 2).is_none());
    }
    // Packets of the gone participant are refused, keys or not (a fresh context under
    // its key: its own has sent past this sequence number and refuses to reuse it).
    let mut stale = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0x10];
    common::srtp(common::uplink_key(2))
        .protect_rtp(&mut stale)
        .unwrap();
    assert!(
        net.relays[0]
            .handle_input(now, chorus_mixer::sfu::Peer::Endpoint(2), &stale, &mut out)
            .is_err()
    );
}
