//! Cascaded relays: participants attached to different relays all receive each
//! other, and each stream crosses each inter-relay link at most once, however many
//! receivers are behind it: in a tree, and in a mesh where announcements arrive by
//! two paths.

mod common;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chorus_mixer::control::Message;
use chorus_mixer::sfu::SfuConfig;
use common::{Net, assert_continuous, layer_of, ssrc};

const FRAME: Duration = Duration::from_millis(33);

/// Hops from relay `from` to every relay over the links.
fn hops(net: &Net, from: usize) -> HashMap<usize, usize> {
    let mut d = HashMap::from([(from, 0)]);
    let mut q = VecDeque::from([from]);
    while let Some(r) = q.pop_front() {
        for (&(a, _), &(b, _)) in &net.links {
            if a == r && !d.contains_key(&b) {
                d.insert(b, d[&r] + 1);
                q.push_back(b);
            }
        }
    }
    d
}

/// Each `(participant, relay)` joins at that relay with room for every layer, then
/// `frames` frames flow.
fn conference(net: &mut Net, placement: &[(u32, usize)], frames: usize) {
    for &(p, r) in placement {
        net.join(p, r, 10);
        net.set_bandwidth(p, 20_000_000);
    }
    run(net, frames);
}

fn run(net: &mut Net, frames: usize) {
    for _ in 0..frames {
        net.tick(FRAME);
    }
}

/// Everyone gets the N-1 others, continuous, at the top layer.
fn assert_everyone_gets_the_others(net: &Net, people: &[u32]) {
    for &p in people {
        let mut got: Vec<u32> = net.inbox[&p].rtp.keys().copied().collect();
        got.sort_unstable();
        let want: Vec<u32> = people
            .iter()
            .filter(|&&q| q != p)
            .map(|&q| ssrc(q, 0))
            .collect();
        assert_eq!(got, want, "participant {p}");
        for &s in &want {
            assert_continuous(&net.inbox[&p], s);
            assert!(net.inbox[&p].rtp[&s].iter().all(|x| layer_of(x) == 2));
        }
    }
}

#[test]
fn tree_of_four_relays() {
    // 0 - 1 - 2, and 1 - 3; two to four participants behind each.
    let mut net = Net::new(4, &SfuConfig::default());
    net.link(0, 1);
    net.link(1, 2);
    net.link(1, 3);
    let placement = [(1, 0), (2, 0), (3, 1), (4, 2), (5, 2), (6, 2), (7, 3)];
    conference(&mut net, &placement, 30);
    let people: Vec<u32> = placement.iter().map(|(p, _)| *p).collect();
    assert_everyone_gets_the_others(&net, &people);

    // Each stream's top layer crosses each link once, away from its home relay, and
    // never back; lower layers never cross (nobody needs them).
    for (p, home) in placement {
        let d = hops(&net, home);
        let sent = net.senders[&p].sent;
        for (&(a, link), &(b, _)) in &net.links {
            for layer in 0..3u8 {
                let carried = net
                    .link_rtp
                    .get(&(a, link, ssrc(p, layer)))
                    .copied()
                    .unwrap_or(0);
                let away = d[&b] == d[&a] + 1;
                let want = if away && layer == 2 { sent[2] } else { 0 };
                assert_eq!(
                    carried, want,
                    "stream {p} layer {layer} on {a}->{b} (3 receivers behind 1->2)"
                );
            }
        }
    }
}

#[test]
fn downstream_subscribes_only_what_its_receivers_need() {
    let mut net = Net::new(3, &SfuConfig::default());
    net.link(0, 1);
    net.link(1, 2);
    net.join(1, 0, 10);
    net.join(2, 1, 10);
    net.join(3, 2, 10);
    net.set_bandwidth(1, 20_000_000);
    net.set_bandwidth(2, 20_000_000);
    // Participant 3 gets two streams at 400 kbit/s: the lowest layer of each.
    net.set_bandwidth(3, 400_000);
    run(&mut net, 30);
    assert!(
        net.inbox[&3].rtp[&ssrc(1, 0)]
            .iter()
            .all(|x| layer_of(x) == 0)
    );
    assert!(
        net.inbox[&2].rtp[&ssrc(1, 0)]
            .iter()
            .all(|x| layer_of(x) == 2)
    );
    // Relay 1 -> relay 2 carries only layer 0 of stream 1; 0 -> 1 carries layers 0
    // and 2 (relay 1's own receiver and relay 2's needs), each once.
    let (l01, l12) = (101, 102);
    let count = |net: &Net, r, l, s| net.link_rtp.get(&(r, l, s)).copied().unwrap_or(0);
    let sent = net.senders[&1].sent;
    assert_eq!(count(&net, 1, l12, ssrc(1, 0)), sent[0]);
    assert_eq!(count(&net, 1, l12, ssrc(1, 1)), 0);
    assert_eq!(count(&net, 1, l12, ssrc(1, 2)), 0);
    assert_eq!(count(&net, 0, l01, ssrc(1, 0)), sent[0]);
    assert_eq!(count(&net, 0, l01, ssrc(1, 1)), 0);
    assert_eq!(count(&net, 0, l01, ssrc(1, 2)), sent[2]);
    assert_eq!(net.relays[1].link_layers(l12, 1), 0b001);

    // Participant 3's bandwidth grows: relay 2 subscribes to the top layer, asks for
    // a keyframe upstream, and switches.
    net.set_bandwidth(3, 20_000_000);
    run(&mut net, 30);
    assert_eq!(net.relays[1].link_layers(l12, 1), 0b100);
    assert_eq!(layer_of(net.inbox[&3].rtp[&ssrc(1, 0)].last().unwrap()), 2);
    assert_continuous(&net.inbox[&3], ssrc(1, 0));
    // Participant 1 leaves: the other relays are told, and relay 0, with no receiver
    // left, unsubscribes from the others' streams.
    let now = net.now;
    let mut out = chorus_mixer::sfu::Output::new();
    net.relays[0].remove_endpoint(now, 1, &mut out).unwrap();
    let unpublish: Vec<_> = out
        .iter()
        .map(|t| (t.to, Message::decode(t.bytes).unwrap()))
        .collect();
    let link = chorus_mixer::sfu::Peer::Link(l01);
    assert_eq!(
        unpublish,
        [
            (link, Message::Unpublish { stream: 1 }),
            (
                link,
                Message::Subscribe {
                    stream: 3,
                    layers: 0
                }
            ),
            (
                link,
                Message::Subscribe {
                    stream: 2,
                    layers: 0
                }
            ),
        ]
    );
}

#[test]
fn mesh_of_three_relays() {
    // Every relay linked to every other: the stream still takes one path to each.
    let mut net = Net::new(3, &SfuConfig::default());
    net.link(0, 1);
    net.link(1, 2);
    net.link(0, 2);
    let placement = [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2)];
    conference(&mut net, &placement, 30);
    let people: Vec<u32> = placement.iter().map(|(p, _)| *p).collect();
    assert_everyone_gets_the_others(&net, &people);
    for (p, home) in placement {
        let sent = net.senders[&p].sent[2];
        let s = ssrc(p, 2);
        let mut total = 0;
        for r in 0..3 {
            // Exactly one link brings the stream to each other relay.
            let incoming: Vec<u64> = net
                .links
                .iter()
                .filter(|&(_, &(b, _))| b == r)
                .map(|(&(a, l), _)| net.link_rtp.get(&(a, l, s)).copied().unwrap_or(0))
                .collect();
            let want_links = usize::from(r != home);
            assert_eq!(incoming.iter().filter(|&&c| c == sent).count(), want_links);
            assert!(incoming.iter().all(|&c| c == 0 || c == sent));
            total += incoming.iter().sum::<u64>();
        }
        assert_eq!(total, 2 * sent, "stream {p}: two links carry it, once each");
    }
}

#[test]
fn losing_a_link_withdraws_what_came_over_it() {
    // 0 - 1 - 2: relay 1 loses its link to relay 0.
    let mut net = Net::new(3, &SfuConfig::default());
    net.link(0, 1);
    net.link(1, 2);
    conference(&mut net, &[(1, 0), (2, 1), (3, 2)], 10);
    let now = net.now;
    let mut out = chorus_mixer::sfu::Output::new();
    net.relays[1].remove_link(now, 100, &mut out).unwrap();
    // Stream 1 is withdrawn towards relay 2, and nobody at relay 1 gets it.
    let sent: Vec<_> = out
        .iter()
        .map(|t| (t.to, Message::decode(t.bytes).unwrap()))
        .collect();
    assert_eq!(
        sent,
        [(
            chorus_mixer::sfu::Peer::Link(102),
            Message::Unpublish { stream: 1 }
        )]
    );
    assert_eq!(net.relays[1].origin(1), None);
    assert!(net.relays[1].selection(2, 1).is_none());
    // Stream 2 (local to relay 1) no longer goes to the lost link.
    assert_eq!(net.relays[1].link_layers(100, 2), 0);
    assert_eq!(net.relays[1].link_layers(102, 2), 0b100);
}
