//! Cost of relaying through the sans-IO TURN server core of `chorus-nat`.
//!
//! Groups (results and machine in `docs/performance.md`; run `cargo bench --bench turn`):
//! - `turn_relay_core/{client_to_peer,peer_to_client}/{1,1000}`: one relayed datagram
//!   through the core (decode, allocation and channel lookup, permission check,
//!   encode, queue, drain), for 1 allocation and spread round-robin over 1,000
//!   allocations (each with a permission and a bound channel). 100-byte payloads, as
//!   in `benches/compare-coturn.sh`. No sockets: this is the core's share of a relayed
//!   packet; the kernel's share is measured, with coturn beside it, by that script.
//!
//! The allocations are made before timing starts by the Chorus TURN client core,
//! talking to the server core in memory (401 challenge, Allocate, CreatePermission,
//! ChannelBind).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;
use chorus_framing::SeededEntropy;
use chorus_nat::client::Transport;
use chorus_nat::turn::channel_data::ChannelData;
use chorus_nat::turn::server::{Cidr, Event, StaticUsers};
use chorus_nat::{TurnClient, TurnClientConfig};
use chorus_nat::{TurnConfig, TurnServer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LISTEN: &str = "192.0.2.1:3478";
const PEER: &str = "198.51.100.7:5000";

/// Each client's address with the ChannelData datagram it relays.
type Clients = Vec<(SocketAddr, Vec<u8>)>;

/// A server core with `n` allocations, each with a channel to `PEER`; returns the
/// server, the clients and each relayed address.
fn relay(n: usize) -> (TurnServer, Clients, Vec<SocketAddr>) {
    let listen: SocketAddr = LISTEN.parse().expect("address");
    let peer: SocketAddr = PEER.parse().expect("address");
    let mut config = TurnConfig::default();
    config.realm = "example.org".into();
    config.relay_ips = vec![listen.ip()];
    config.relay_ports = 49152..=65535;
    config.server_addresses = vec![listen];
    config.allowed_peers = vec![Cidr::new(peer.ip(), 24).expect("prefix")];
    config.max_allocations = n + 1;
    config.max_allocations_per_user = n + 1;
    config.rate_limit = None;
    let mut users = StaticUsers::new("example.org");
    users.add("alice", "secret");
    let mut server =
        TurnServer::new(config, Box::new(users), Box::new(SeededEntropy::new(1))).expect("server");
    let now = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let mut relayed = Vec::with_capacity(n);
    for i in 0..n {
        let from = SocketAddr::new(
            IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8 + 1]),
            40_000,
        );
        let cfg = TurnClientConfig::new(listen, Transport::Udp, "alice", "secret");
        let mut c =
            TurnClient::new(cfg, Box::new(SeededEntropy::new(i as u64 + 2))).expect("client");
        c.allocate(now).expect("allocate");
        let pump = |c: &mut TurnClient, server: &mut TurnServer| {
            for _ in 0..4 {
                while let Some(t) = c.poll_transmit() {
                    let _ = server.handle_input(now, listen, from, Transport::Udp, &t.payload);
                    while let Some(e) = server.poll_event() {
                        if let Event::OpenRelay(a) = e {
                            let _ = server.handle_relay_bound(now, a, true);
                        }
                    }
                }
                while let Some((_, t)) = server.poll_transmit() {
                    let _ = c.handle_input(now, listen, &t.payload);
                }
            }
            while c.poll_event().is_some() {}
        };
        pump(&mut c, &mut server);
        let channel = c.bind_channel(now, peer).expect("bind");
        pump(&mut c, &mut server);
        assert_eq!(c.channel(peer), Some((channel, true)), "channel bound");
        let payload = [0x5a_u8; 100];
        let mut wire = BytesMut::new();
        ChannelData {
            channel,
            data: &payload,
        }
        .encode(Transport::Udp, &mut wire)
        .expect("encode");
        clients.push((from, wire.to_vec()));
        relayed.push(c.relayed()[0]);
    }
    (server, clients, relayed)
}

fn relay_core(c: &mut Criterion) {
    let listen: SocketAddr = LISTEN.parse().expect("address");
    let peer: SocketAddr = PEER.parse().expect("address");
    let mut g = c.benchmark_group("turn_relay_core");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 1000] {
        let (mut server, clients, relayed) = relay(n);
        let now = Instant::now();
        // What is timed is the relaying path, not an error path.
        let (from, wire) = &clients[n - 1];
        server
            .handle_input(now, listen, *from, Transport::Udp, wire)
            .expect("relayed");
        let (_, out) = server.poll_transmit().expect("a datagram to the peer");
        assert_eq!((out.src, out.dst), (Some(relayed[n - 1]), peer));
        server
            .handle_input(now, relayed[0], peer, Transport::Udp, &[1; 100])
            .expect("relayed back");
        let (_, back) = server.poll_transmit().expect("ChannelData to the client");
        assert_eq!(back.dst, clients[0].0);
        let mut i = 0;
        g.bench_function(format!("client_to_peer/{n}"), |b| {
            b.iter(|| {
                let (from, wire) = &clients[i % n];
                i += 1;
                let _ = server.handle_input(now, listen, *from, Transport::Udp, black_box(wire));
                black_box(server.poll_transmit())
            });
        });
        let data = [0xa5_u8; 100];
        let mut j = 0;
        g.bench_function(format!("peer_to_client/{n}"), |b| {
            b.iter(|| {
                let local = relayed[j % n];
                j += 1;
                let _ = server.handle_input(now, local, peer, Transport::Udp, black_box(&data));
                black_box(server.poll_transmit())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, relay_core);
criterion_main!(benches);
