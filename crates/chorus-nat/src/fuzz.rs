//! Fuzz entry points (STYLE.md §10): every parser of peer-supplied bytes in this crate,
//! with round-trip oracles. `fuzz/fuzz_targets/*.rs` call these; the tests below run
//! them under proptest so they never rot.

use bytes::BytesMut;

use crate::stun::{Key, Limits, Message};

/// Decode, re-encode, decode again: the two decoded messages are equal, and the
/// re-encoding has exactly `encoded_len()` bytes.
///
/// # Panics
/// When the oracle fails, which is the bug a fuzzer reports.
pub fn stun_message(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(msg) = Message::decode(data, &limits) {
        let key = Key::short_term("fuzz");
        let mut out = BytesMut::new();
        msg.encode(Some(&key), &mut out)
            .expect("a decoded message re-encodes");
        assert_eq!(out.len(), msg.encoded_len());
        assert_eq!(Message::decode(&out, &limits), Ok(msg));
    }
}

/// Integrity checking on arbitrary bytes: never panics, and whatever verifies under the
/// fixed key still verifies after a decode and re-encode with that key.
///
/// # Panics
/// When the oracle fails.
pub fn stun_message_integrity(data: &[u8]) {
    let key = Key::short_term("fuzz");
    let verified = Message::verify(data, &key).is_ok();
    if let Ok(msg) = Message::decode(data, &Limits::default())
        && verified
        && (msg.message_integrity || msg.message_integrity_sha256)
    {
        let mut out = BytesMut::new();
        msg.encode(Some(&key), &mut out).expect("re-encodes");
        assert_eq!(Message::verify(&out, &key), Ok(()));
    }
}

/// Server input handling: any datagram, on any of an RFC 5780 server's four
/// addresses, never panics, and what the server sends back is a well-formed STUN
/// message no larger than the request or a minimal error.
///
/// # Panics
/// When the oracle fails.
pub fn stun_server(data: &[u8]) {
    use std::time::Instant;

    use crate::client::Transport;
    use crate::server::{Server, ServerConfig};

    let config = ServerConfig {
        primary: std::net::SocketAddr::from(([192, 0, 2, 1], 3478)),
        alternate_ip: Some(std::net::IpAddr::from([192, 0, 2, 2])),
        alternate_port: Some(3479),
        ..ServerConfig::default()
    };
    let mut server = Server::new(config).expect("valid configuration");
    let local = server.addresses()[usize::from(data.first().copied().unwrap_or(0) % 4)];
    let from = std::net::SocketAddr::from(([203, 0, 113, 9], 40000));
    let transport = if data.get(1).is_some_and(|b| b & 1 == 1) {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let _ = server.handle_input(Instant::now(), local, from, transport, data);
    while let Some(t) = server.poll_transmit() {
        assert!(Message::decode(&t.payload, &Limits::default()).is_ok());
        // A success response carries at most XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN,
        // OTHER-ADDRESS, FINGERPRINT and PADDING capped to the request's size.
        assert!(
            t.payload.len() <= data.len().max(20 + 3 * 24 + 8 + 40),
            "amplification"
        );
    }
}

/// ChannelData decode over UDP and TCP: never panics, never reads past the input,
/// and re-encoding what decoded yields the same message.
///
/// # Panics
/// When the oracle fails.
pub fn channel_data(data: &[u8]) {
    use crate::client::Transport;
    use crate::turn::channel_data::ChannelData;

    for transport in [Transport::Udp, Transport::Tcp] {
        if let Ok((msg, used)) = ChannelData::decode(data, transport) {
            assert!(used <= data.len());
            let mut out = BytesMut::new();
            msg.encode(transport, &mut out)
                .expect("a decoded message re-encodes");
            let (back, _) = ChannelData::decode(&out, transport).expect("re-decodes");
            assert_eq!(back, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::stun::{Attribute, Class, Method, TransactionId};

    fn seed() -> Vec<u8> {
        let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([1; 12]));
        m.attributes.push(Attribute::Username("a:b"));
        m.message_integrity = true;
        m.fingerprint = true;
        let mut out = BytesMut::new();
        m.encode(Some(&Key::short_term("fuzz")), &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn seeds_pass_every_oracle() {
        stun_message(&seed());
        stun_message_integrity(&seed());
        stun_server(&seed());
        channel_data(b"\x40\x00\x00\x03abc\0");
    }

    proptest! {
        #[test]
        fn stun_message_oracle_holds(b in vec(any::<u8>(), 0..300)) {
            stun_message(&b);
            stun_message_integrity(&b);
            stun_server(&b);
            channel_data(&b);
        }

        #[test]
        fn oracles_hold_for_mutated_seeds(pos in 0usize..64, byte in any::<u8>()) {
            let mut b = seed();
            let i = pos % b.len();
            b[i] = byte;
            stun_message(&b);
            stun_message_integrity(&b);
            b[0] = 0; // a request to the primary address
            stun_server(&b);
        }
    }
}
