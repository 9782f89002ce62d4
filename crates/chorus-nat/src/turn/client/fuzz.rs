//! Fuzz entry point for the TURN client (STYLE.md §10): whatever a server sends, the
//! client never panics and its queues stay bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::SeededEntropy;

use super::{Client, Config, Deframer};
use crate::client::Transport;
use crate::stun::{Attribute, Class, Limits, Message};

/// An allocated client (over UDP or TCP, by the first byte) is fed `data` cut into
/// messages by 2-byte length prefixes, each also with the transaction id of the
/// client's latest request patched in (to reach the response paths), and the whole of
/// `data` through a [`Deframer`]. Time advances between messages.
///
/// # Panics
/// When the client panics or its queues exceed their bounds: the bug a fuzzer reports.
pub fn turn_client_input(data: &[u8]) {
    let server: SocketAddr = ([192, 0, 2, 1], 3478).into();
    let tcp = data.first().is_some_and(|b| b & 1 == 1);
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    let mut config = Config::new(server, transport, "user", "pass");
    config.max_queued = 8;
    let Ok(mut client) = Client::new(config, Box::new(SeededEntropy::new(7))) else {
        return;
    };
    let mut now = Instant::now();
    let _ = client.allocate(now);
    let mut last_request = client.poll_transmit().map(|t| t.payload);
    // A scripted success so that the allocated paths are reachable.
    if let Some(req) = last_request
        .as_ref()
        .and_then(|r| Message::decode(r, &Limits::default()).ok())
    {
        let mut ok = Message::new(Class::Success, req.method, req.transaction_id);
        ok.attributes.push(Attribute::XorRelayedAddress(
            ([192, 0, 2, 1], 50_000).into(),
        ));
        ok.attributes.push(Attribute::Lifetime(600));
        let mut out = BytesMut::new();
        if ok.encode(None, &mut out).is_ok() {
            let _ = client.handle_input(now, server, &out);
        }
    }
    let peer: SocketAddr = ([192, 0, 2, 7], 9).into();
    let _ = client.create_permission(now, peer.ip());
    let _ = client.bind_channel(now, peer);
    let mut rest = data.get(1..).unwrap_or(&[]);
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)) % 1024;
        let (chunk, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        if let Some(p) = feed(&mut client, now, server, peer, chunk) {
            last_request = Some(p);
        }
        if let Some(id) = last_request.as_ref().and_then(|r| r.get(8..20)) {
            let mut patched = chunk.to_vec();
            if let Some(slot) = patched.get_mut(8..20) {
                slot.copy_from_slice(id);
            }
            if let Some(p) = feed(&mut client, now, server, peer, &patched) {
                last_request = Some(p);
            }
        }
        now += Duration::from_secs(u64::from(chunk.first().copied().unwrap_or(0)));
        client.handle_timeout(now);
    }
    let mut stream = Deframer::new(&Limits::default());
    let mut input = data;
    while !input.is_empty() {
        let taken = stream.push(input);
        input = input.get(taken..).unwrap_or(&[]);
        loop {
            match stream.next_message() {
                Ok(Some(m)) => {
                    let _ = feed(&mut client, now, server, peer, &m);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(taken > 0 || input.is_empty(), "the de-framer stalled");
    }
}

/// One input, one send, then drain; returns the last datagram sent.
fn feed(
    client: &mut Client,
    now: Instant,
    server: SocketAddr,
    peer: SocketAddr,
    bytes: &[u8],
) -> Option<Bytes> {
    let _ = client.handle_input(now, server, bytes);
    let _ = client.send(peer, bytes);
    let mut last = None;
    let mut sent = 0;
    while let Some(t) = client.poll_transmit() {
        assert_eq!(t.dst, server);
        last = Some(t.payload);
        sent += 1;
        assert!(sent <= 256, "unbounded transmits");
    }
    let mut events = 0;
    while client.poll_event().is_some() {
        events += 1;
        assert!(events <= 256, "unbounded events");
    }
    last
}
