//! Fuzz entry point for the TURN server core (STYLE.md §10); the lead wires it to a
//! cargo-fuzz target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_framing::SeededEntropy;

use super::{Config, Server, StaticUsers};
use crate::client::Transport;
use crate::stun::Message;

/// Feeds `data`, cut into inputs, to a TURN server with an allocation-friendly
/// configuration: each chunk starts with a selector byte (transport, source, local
/// address, time step, relay bind outcome). The server never panics, its queues stay
/// within their bounds, and every STUN message it emits to a client decodes.
///
/// # Panics
/// When an oracle fails, which is the bug a fuzzer reports.
pub fn turn_server_input(data: &[u8]) {
    let config = Config {
        realm: "fuzz".into(),
        relay_ips: vec![
            "192.0.2.1".parse().expect("literal"),
            "2001:db8::1".parse().expect("literal"),
        ],
        relay_ports: 50000..=50015,
        max_queued: 64,
        allow_loopback_peers: true,
        ..Config::default()
    };
    let mut users = StaticUsers::new("fuzz");
    users.add("u", "p");
    let mut server = Server::new(config, Box::new(users), Box::new(SeededEntropy::new(9)))
        .expect("valid configuration");
    let listen: SocketAddr = "192.0.2.1:3478".parse().expect("literal");
    let clients: [SocketAddr; 2] = [
        "203.0.113.1:4000".parse().expect("literal"),
        "[2001:db8::9]:4000".parse().expect("literal"),
    ];
    let peer: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let mut now = Instant::now();
    let mut rest = data;
    while let Some((&sel, tail)) = rest.split_first() {
        let len = usize::from(tail.first().copied().unwrap_or(0)) * 4;
        let (chunk, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        now += Duration::from_millis(u64::from(sel >> 4) * 997);
        let transport = if sel & 1 == 1 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let from = clients[usize::from(sel >> 1 & 1)];
        if sel & 4 != 0 {
            // From a peer to whatever relay exists.
            let relays = server.relayed_addresses(from, listen, transport);
            if let Some(r) = relays.first() {
                let _ = server.handle_input(now, *r, peer, Transport::Udp, chunk);
            }
        } else {
            let _ = server.handle_input(now, listen, from, transport, chunk);
        }
        while let Some(e) = server.poll_event() {
            if let super::Event::OpenRelay(a) = e {
                let _ = server.handle_relay_bound(now, a, sel & 8 == 0);
            }
        }
        server.handle_timeout(now);
        let mut n = 0;
        while let Some((_, t)) = server.poll_transmit() {
            n += 1;
            assert!(n <= 64, "queue bound");
            if t.dst != peer && t.payload.first().is_some_and(|b| b & 0xc0 == 0) {
                assert!(Message::decode(&t.payload, &Config::default().limits).is_ok());
            }
        }
    }
}
