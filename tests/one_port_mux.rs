//! One port for a super node's cores, sans-IO and in memory: chorus-nat's STUN
//! server and TURN server, a chorus-index node and a chorus-media call leg behind one
//! `chorus_framing::Mux`, with a client of each kind talking to it at once. Every
//! datagram a client sends must land in the core of its kind, and every answer the
//! mux sends must be accepted by the client it is addressed to: nothing misrouted,
//! nothing unroutable.
#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::{CoreId, DatagramCore, Mux, SeededEntropy, Transmit};
use chorus_index::message::Contact;
use chorus_index::node::{Config as IndexConfig, Node, NodeIdentity};
use chorus_index::sim::SimVerifier;
use chorus_media::session::{Session, SessionConfig};
use chorus_nat::client::{Client, ClientConfig, Event as StunEvent, Transport};
use chorus_nat::server::{Server, ServerConfig};
use chorus_nat::turn::client::Event as TurnClientEvent;
use chorus_nat::turn::server::{Event as RelayEvent, StaticUsers};
use chorus_nat::{TurnClient, TurnClientConfig, TurnConfig, TurnServer};

/// What the super node's mux reports: one variant per core with events.
#[derive(Debug)]
enum NodeEvent {
    Turn(RelayEvent),
    Index(chorus_index::node::Event),
    Media(chorus_media::session::Event),
}

const fn at(a: u8, b: u8, port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, a, b)),
        port,
    )
}

/// The super node's one port.
const PORT: SocketAddr = at(2, 1, 3478);
const STUN_CLIENT: SocketAddr = at(2, 10, 40_001);
const TURN_CLIENT: SocketAddr = at(2, 11, 40_002);
const INDEX_PEER: SocketAddr = at(2, 12, 40_003);
const CALLER: SocketAddr = at(2, 13, 40_004);
/// Where the TURN client sends through its relay.
const TURN_PEER: SocketAddr = at(2, 99, 9_000);

fn srtp(key: u8) -> SrtpSession {
    let suite = Suite::AeadAes128Gcm;
    let policy = Policy::new(
        suite,
        &vec![key; suite.key_len()],
        &vec![key; suite.salt_len()],
    );
    SrtpSession::new(policy.unwrap()).unwrap()
}

fn call_leg(ssrc: u32, out: u8, inbound: u8, peer: SocketAddr, now: Instant) -> Session {
    let mut config = SessionConfig::default();
    (config.ssrc, config.fec_ssrc) = (ssrc, ssrc + 1);
    let entropy = Box::new(SeededEntropy::new(u64::from(ssrc)));
    let mut s = Session::new(config, srtp(out), srtp(inbound), entropy, now).unwrap();
    s.set_peer(peer);
    s
}

/// The clients, each at its own address, all through the trait.
struct Clients {
    stun: Client,
    turn: TurnClient,
    index: Node,
    caller: Session,
}

impl Clients {
    /// Every datagram the clients have queued, with its sender.
    fn transmits(&mut self) -> Vec<(SocketAddr, Transmit)> {
        let mut out = Vec::new();
        let mut take = |from: SocketAddr, core: &mut dyn FnMut() -> Option<Transmit>| {
            while let Some(t) = core() {
                out.push((from, t));
            }
        };
        take(STUN_CLIENT, &mut || {
            DatagramCore::poll_transmit(&mut self.stun)
        });
        take(TURN_CLIENT, &mut || {
            DatagramCore::poll_transmit(&mut self.turn)
        });
        take(INDEX_PEER, &mut || {
            DatagramCore::poll_transmit(&mut self.index)
        });
        take(CALLER, &mut || {
            DatagramCore::poll_transmit(&mut self.caller)
        });
        out
    }

    /// Gives `t` (from the mux's port) to the client it is addressed to, which must
    /// accept it; `false` for a datagram to no client (the TURN peer).
    fn deliver(&mut self, now: Instant, t: &Transmit) -> bool {
        fn give<C: DatagramCore>(c: &mut C, now: Instant, t: &Transmit)
        where
            C::Error: core::fmt::Debug,
        {
            assert!(
                c.accepts(t.dst, PORT, &t.payload),
                "misrouted answer to {}",
                t.dst
            );
            c.handle_datagram(now, t.dst, PORT, &t.payload).unwrap();
        }
        match t.dst {
            STUN_CLIENT => give(&mut self.stun, now, t),
            TURN_CLIENT => give(&mut self.turn, now, t),
            INDEX_PEER => give(&mut self.index, now, t),
            CALLER => give(&mut self.caller, now, t),
            _ => return false,
        }
        true
    }

    fn handle_timeout(&mut self, now: Instant) {
        DatagramCore::handle_timeout(&mut self.stun, now);
        DatagramCore::handle_timeout(&mut self.turn, now);
        DatagramCore::handle_timeout(&mut self.index, now);
        DatagramCore::handle_timeout(&mut self.caller, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            DatagramCore::poll_timeout(&self.stun),
            DatagramCore::poll_timeout(&self.turn),
            DatagramCore::poll_timeout(&self.index),
            DatagramCore::poll_timeout(&self.caller),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[test]
fn stun_turn_index_and_media_share_one_port_and_nothing_is_misrouted() {
    let t0 = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    // The super node: four cores behind one mux, the most specific first.
    let mut stun_config = ServerConfig::default();
    stun_config.primary = PORT;
    let mut turn_config = TurnConfig::default();
    turn_config.realm = "example.org".into();
    turn_config.relay_ports = 50_000..=50_099;
    let mut users = StaticUsers::new("example.org");
    users.add("alice", "secret");
    let verifier = Arc::new(SimVerifier::new(9));
    let node = |i: u64| {
        let identity = NodeIdentity {
            cert: verifier.node_cert(i),
            key: verifier.node_key(i),
        };
        let entropy = Box::new(SeededEntropy::new(100 + i));
        Node::new(
            IndexConfig::default(),
            identity,
            verifier.clone(),
            entropy,
            t0,
            wall,
        )
        .unwrap()
    };
    let mut mux: Mux<NodeEvent> = Mux::new();
    let stun = mux.add(Server::new(stun_config).unwrap(), |never| match never {});
    let turn = mux.add(
        TurnServer::new(
            turn_config,
            Box::new(users),
            Box::new(SeededEntropy::new(2)),
        )
        .unwrap(),
        NodeEvent::Turn,
    );
    let index = mux.add(node(0), NodeEvent::Index);
    let media = mux.add(call_leg(0xB0, 2, 1, CALLER, t0), NodeEvent::Media);
    let index_id = mux.core(index).unwrap().id();

    // A client of each kind.
    let mut clients = Clients {
        stun: Client::new(ClientConfig::default(), Box::new(SeededEntropy::new(1))).unwrap(),
        turn: TurnClient::new(
            TurnClientConfig::new(PORT, Transport::Udp, "alice", "secret"),
            Box::new(SeededEntropy::new(3)),
        )
        .unwrap(),
        index: node(1),
        caller: call_leg(0xA0, 1, 2, PORT, t0),
    };
    clients.turn.allocate(t0).unwrap();
    clients.index.add_contact(
        Contact {
            id: index_id,
            addr: PORT,
        },
        t0,
    );

    let kind_of: HashMap<SocketAddr, CoreId> = [
        (STUN_CLIENT, stun.id()),
        (TURN_CLIENT, turn.id()),
        (INDEX_PEER, index.id()),
        (CALLER, media.id()),
    ]
    .into();
    let mut sent_to = HashMap::<CoreId, u64>::new();
    let mut bindings = 0;
    let (mut allocated, mut channel_bound, mut relayed) = (false, false, 0);
    let mut pings_answered = 0;
    let mut index_events = Vec::new();
    let tone: Vec<i16> = (0..clients.caller.frame_samples())
        .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
        .collect();

    let mut now = t0;
    let end = t0 + Duration::from_secs(2);
    let mut next_frame = t0;
    let mut round = 0u32;
    while now < end {
        // Interleaved commands: a frame of audio every 20 ms, a Binding and an
        // index ping every 100 ms, TURN data once the channel is bound.
        if now >= next_frame {
            clients.caller.send_frame(now, &tone).unwrap();
            next_frame += Duration::from_millis(20);
            if round.is_multiple_of(5) {
                clients.stun.start_binding(now, PORT).unwrap();
                clients.index.ping(now, PORT);
            }
            if channel_bound {
                clients.turn.send(TURN_PEER, b"through the relay").unwrap();
            }
            round += 1;
        }

        // Clients to the port: each datagram must land in its own kind's core.
        for (from, t) in clients.transmits() {
            assert_eq!(t.dst, PORT, "clients talk to the one port");
            let want = kind_of[&from];
            assert_eq!(mux.route(PORT, from, &t.payload), Some(want), "from {from}");
            let before = mux.delivered(want);
            if let Err(e) = mux.handle_datagram(now, PORT, from, &t.payload) {
                panic!("{from}: {e}");
            }
            assert_eq!(mux.delivered(want), before + 1);
            *sent_to.entry(want).or_default() += 1;
        }
        // The super node's owner: relay sockets for the TURN server.
        while let Some(e) = mux.poll_event() {
            match e {
                NodeEvent::Turn(RelayEvent::OpenRelay(relay)) => mux
                    .core_mut(turn)
                    .unwrap()
                    .handle_relay_bound(now, relay, true)
                    .unwrap(),
                // Relay sockets close with their allocations (`RelayEvent` is non_exhaustive).
                NodeEvent::Turn(_) => {}
                NodeEvent::Index(e) => index_events.push(e),
                NodeEvent::Media(e) => panic!("the caller did not hang up: {e:?}"),
            }
        }
        // The port to the clients: each answer accepted by its addressee.
        while let Some(t) = mux.poll_transmit() {
            if !clients.deliver(now, &t) {
                assert_eq!(t.dst, TURN_PEER, "only relayed data leaves for strangers");
                assert!(t.src.is_some_and(|s| s != PORT), "from the relay socket");
                relayed += 1;
            }
        }
        // What the clients learned.
        while let Some(e) = DatagramCore::poll_event(&mut clients.stun) {
            if let StunEvent::Response(r) = e {
                assert_eq!(r.mapped, Some(STUN_CLIENT));
                bindings += 1;
            }
        }
        while let Some(e) = DatagramCore::poll_event(&mut clients.turn) {
            match e {
                TurnClientEvent::Allocated { .. } => {
                    allocated = true;
                    clients.turn.bind_channel(now, TURN_PEER).unwrap();
                }
                TurnClientEvent::ChannelBound { .. } => channel_bound = true,
                _ => {}
            }
        }
        while DatagramCore::poll_event(&mut clients.index).is_some() {}
        while clients.caller.poll_pcm().is_some() {}
        while mux.core_mut(media).unwrap().poll_pcm().is_some() {}
        pings_answered = clients.index.stats().received;

        // Time jumps to the next deadline of anyone, or the next frame.
        let next = [mux.poll_timeout(), clients.poll_timeout(), Some(next_frame)]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        now = next.max(now);
        mux.handle_timeout(now);
        clients.handle_timeout(now);
    }

    // Every kind of traffic flowed, all of it where it belonged.
    let stats = mux.stats();
    assert_eq!(stats.unroutable, 0);
    assert_eq!(stats.rejected, 0);
    for (id, n) in &sent_to {
        assert_eq!(mux.delivered(*id), *n);
    }
    assert!(bindings >= 15, "{bindings} Binding responses");
    // The STUN server answered Bindings only: a TURN request routed to it would
    // have been answered with an error.
    let stun_stats = mux.core(stun).unwrap().stats();
    assert_eq!((stun_stats.errors, stun_stats.dropped), (0, 0));
    assert_eq!(stun_stats.responses, mux.delivered(stun.id()));
    let turn_stats = mux.core(turn).unwrap().stats();
    assert_eq!(turn_stats.dropped, 0);
    assert_eq!(turn_stats.to_peers, relayed);
    assert!(allocated && channel_bound, "allocated and bound a channel");
    assert!(relayed > 0, "ChannelData reached the TURN server");
    assert!(pings_answered >= 15, "{pings_answered} index answers");
    assert!(
        clients.index.table().get(&index_id).is_some(),
        "the super node's index node is in the peer's table"
    );
    let heard = mux.core(media).unwrap().stats();
    assert!(heard.media_received >= 95, "{heard:?}");
    assert_eq!(heard.rejected, 0);
    assert!(clients.caller.stats().rtt.is_some(), "RTCP went both ways");
}
