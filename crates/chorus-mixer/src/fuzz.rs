//! Fuzz entry points (STYLE.md §10) for the parsers and the packet input of this
//! crate. `fuzz/fuzz_targets/*.rs` call these; the unit tests run them under proptest
//! so they never rot.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use bytes::BytesMut;
use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::{PacketKind, classify};

use crate::control::{Codec, Layer, Message, StreamInfo};
use crate::sfu::{Kind, LegSecurity, Output, Peer, Sfu, SfuConfig};

/// Control messages: decode, re-encode, decode again; equal, and exactly
/// `encoded_len()` bytes.
///
/// # Panics
/// When the oracle fails, which is the bug a fuzzer reports.
pub fn control_message(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let mut out = BytesMut::new();
        m.encode(&mut out).expect("a decoded message re-encodes");
        assert_eq!(out.len(), m.encoded_len());
        assert_eq!(Message::decode(&out), Ok(m));
    }
}

/// Stream `n` (1-based) of participant `n`: three VP8 layers; stream 2 with three
/// temporal layers in each, so packets reach the per-receiver temporal thinning.
fn stream(n: u32) -> StreamInfo {
    let mut s = StreamInfo::video(
        n,
        n,
        Codec::Vp8,
        (0..3)
            .map(|i| Layer {
                ssrc: n << 8 | i,
                bitrate_bps: 150_000 << (2 * i),
            })
            .collect(),
    );
    if n == 2 {
        s.temporal = vec![40, 60];
    }
    s
}

/// The SRTP session of key `k`: fixed, known keys, so the harness can protect what
/// the peers send and unprotect what the relay sends them.
fn session(k: u8) -> SrtpSession {
    let suite = Suite::AeadAes128Gcm;
    let key: Vec<u8> = (0..suite.key_len()).map(|i| k ^ i as u8).collect();
    let salt: Vec<u8> = (0..suite.salt_len())
        .map(|i| k.wrapping_mul(3) ^ i as u8)
        .collect();
    let policy = Policy::new(suite, &key, &salt).expect("valid lengths");
    SrtpSession::new(policy).expect("default policy")
}

/// The keys of peer `p`'s leg: (what it sends the relay, what the relay sends it).
fn keys(p: Peer) -> (u8, u8) {
    let n = match p {
        Peer::Endpoint(e) | Peer::Link(e) => e as u8,
    };
    (2 * n, 2 * n + 1)
}

/// The peers' ends of their legs: (send, receive) sessions.
struct Peers(HashMap<Peer, (SrtpSession, SrtpSession)>);

impl Peers {
    fn leg(&mut self, p: Peer) -> LegSecurity {
        let (up, down) = keys(p);
        self.0.insert(p, (session(up), session(down)));
        LegSecurity::srtp(session(up), session(down))
    }

    /// `packet` protected by `from` if it is RTP or RTCP that its session accepts;
    /// as it is otherwise.
    fn seal(&mut self, from: Peer, packet: &mut Vec<u8>) {
        let Some((send, _)) = self.0.get_mut(&from) else {
            return;
        };
        let _ = match classify(packet) {
            PacketKind::Rtp => send.protect_rtp(packet),
            PacketKind::Rtcp => send.protect_rtcp(packet),
            _ => Ok(()),
        };
    }
}

/// The SFU's input: a relay with endpoints 1-3 (1 and 2 publishing) and link 9, each
/// an SRTP leg with known keys, is fed chunks of the data as packets. Each chunk is a
/// selector byte (bits 0-1: the peer, 3 = the link; bits 2-7: milliseconds to
/// advance), a length byte (bit 7: build an RTP header for a known SSRC from the
/// next 3 bytes, so that deep paths are reached; bit 6: send the bytes as they are,
/// without the peer's SRTP protection; bits 0-5: the length), then the bytes. RTP
/// and RTCP are protected with the sending peer's keys unless bit 6 says otherwise,
/// so that fuzzing reaches the forwarding logic behind the authentication.
///
/// Never panics; everything sent is SRTP or SRTCP under the receiving peer's keys
/// (or a resend of a packet it already has) and decodes as what its kind says, RTP
/// to an endpoint carries the SSRC of a stream it receives, and one input causes a
/// bounded number of transmits.
///
/// # Panics
/// When the oracle fails.
pub fn sfu_input(data: &[u8]) {
    run_sfu(data);
}

/// [`sfu_input`], returning the relay's counters at the end.
fn run_sfu(data: &[u8]) -> crate::sfu::SfuStats {
    let config = SfuConfig {
        keyframe_interval: Duration::from_millis(20),
        ..SfuConfig::default()
    };
    let mut sfu = Sfu::new(config).expect("valid config");
    let mut now = Instant::now();
    let mut out = Output::new();
    let mut peers = Peers(HashMap::new());
    for e in 1..=3 {
        let leg = peers.leg(Peer::Endpoint(e));
        sfu.add_endpoint(now, e, leg, &mut out)
            .expect("fresh endpoint");
    }
    let leg = peers.leg(Peer::Link(9));
    sfu.add_link(9, leg, &mut out).expect("fresh link");
    for e in 1..=2 {
        sfu.publish(now, e, stream(e), &mut out)
            .expect("valid stream");
    }
    check(&sfu, &out, &mut peers);
    let mut rest = data;
    let mut packet = Vec::new();
    while let [sel, len, tail @ ..] = rest {
        let n = usize::from(len & 0x3f).min(tail.len());
        let (body, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis(u64::from(sel >> 2));
        let from = match sel & 3 {
            3 => Peer::Link(9),
            e => Peer::Endpoint(u32::from(e) + 1),
        };
        packet.clear();
        if len & 0x80 != 0 {
            let [which, s0, s1, payload @ ..] = body else {
                continue;
            };
            let ssrc = u32::from(which % 2 + 1) << 8 | u32::from(which / 2 % 3);
            packet.extend_from_slice(&[0x80, 96, *s0, *s1]);
            packet.extend_from_slice(&(u32::from(*s1) * 3000).to_be_bytes());
            packet.extend_from_slice(&ssrc.to_be_bytes());
            packet.extend_from_slice(payload);
        } else {
            packet.extend_from_slice(body);
        }
        if len & 0x40 == 0 {
            peers.seal(from, &mut packet);
        }
        out.clear();
        let _ = sfu.handle_input(now, from, &packet, &mut out);
        if sel & 0x80 != 0 {
            sfu.handle_timeout(now, &mut out);
        }
        check(&sfu, &out, &mut peers);
        // A packet reaches at most the 3 endpoints and the link; a compound RTCP packet
        // or a control message re-selects layers: a few transmits per stream known.
        let bound = 64 + 8 * sfu.streams().count();
        assert!(out.len() <= bound, "one input, {} outputs", out.len());
    }
    sfu.stats()
}

fn check(sfu: &Sfu, out: &Output, peers: &mut Peers) {
    for t in out.iter() {
        let (_, receive) = peers.0.get_mut(&t.to).expect("sent to a known peer");
        let mut plain = t.bytes.to_vec();
        let opened = match t.kind {
            Kind::Rtp => receive.unprotect_rtp(&mut plain),
            Kind::Rtcp => receive.unprotect_rtcp(&mut plain),
            Kind::Control => Ok(()),
        };
        match opened {
            Ok(()) => {}
            // A NACK answered from the leg's history: the bytes it already got.
            Err(chorus_crypto::Error::Auth(chorus_crypto::AuthError::Replay))
                if t.kind == Kind::Rtp =>
            {
                continue;
            }
            Err(e) => panic!("{:?} to {:?} is not SRTP under its keys: {e}", t.kind, t.to),
        }
        match t.kind {
            Kind::Rtp => {
                let p = chorus_media::rtp::Packet::decode(&plain).expect("RTP out");
                if let Peer::Endpoint(e) = t.to {
                    // The first-layer SSRC of a stream someone else publishes.
                    assert!(sfu.streams().any(|s| s.participant != e
                        && s.layers.first().is_some_and(|l| l.ssrc == p.ssrc)));
                }
            }
            Kind::Rtcp => {
                chorus_media::rtcp::decode_compound(&plain, &chorus_media::rtcp::Limits::default())
                    .expect("RTCP out");
            }
            Kind::Control => {
                Message::decode(t.bytes).expect("control out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sfu_input_never_panics(b in vec(any::<u8>(), 0..600)) {
            super::sfu_input(&b);
        }
    }

    /// The committed seeds are valid inputs (so the fuzzer starts from them).
    #[test]
    fn committed_seeds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");
        for target in ["control_message", "sfu_input"] {
            let Ok(entries) = std::fs::read_dir(format!("{dir}/{target}")) else {
                continue; // the crate may be built outside the workspace
            };
            for e in entries {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("seed-") {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                if target == "control_message" {
                    assert!(crate::control::Message::decode(&bytes).is_ok(), "{name}");
                    super::control_message(&bytes);
                } else {
                    super::sfu_input(&bytes);
                }
            }
        }
    }

    /// Deep paths: valid packets of known SSRCs, keyframes included.
    #[test]
    fn sfu_input_with_crafted_packets() {
        let mut data = Vec::new();
        for i in 0..60u8 {
            // A VP8 keyframe start (S=1, PID 0; P bit 0) for each layer of stream 1.
            data.extend_from_slice(&[0x84 | (i % 4) << 2, 0x80 | 6, i % 6, 0, i, 0x10, 0x00, 7]);
        }
        for i in 0..60u8 {
            // Stream 2 (temporal): a keyframe, then frames with the descriptor's T bit
            // (X, T; TID and Y), temporal ids 0, 2, 1, 2 with sync points.
            let tid = [0u8, 2, 1, 2][usize::from(i % 4)];
            let y = u8::from(i % 4 != 3) << 5;
            let p = u8::from(i % 8 != 0);
            data.extend_from_slice(&[
                0x05, // from endpoint 2, 1 ms later
                0x80 | 8,
                1 + 2 * (i % 3),
                0,
                60 + i,
                0x90,
                0x20,
                tid << 6 | y,
                p,
                7,
            ]);
        }
        let stats = super::run_sfu(&data);
        // Behind the SRTP check: packets were forwarded and thinned per receiver.
        assert!(stats.forwarded >= 30, "{stats:?}");
        assert!(stats.temporal_dropped > 0, "{stats:?}");
        assert_eq!(stats.unauthenticated, 0);
    }

    /// Packets sent without protection (length bit 6) are refused before they are
    /// read.
    #[test]
    fn sfu_input_without_protection_forwards_nothing() {
        let mut data = Vec::new();
        for i in 0..20u8 {
            data.extend_from_slice(&[0x84, 0xc0 | 6, i % 6, 0, i, 0x10, 0x00, 7]);
        }
        let stats = super::run_sfu(&data);
        assert_eq!((stats.received, stats.forwarded), (0, 0));
        assert_eq!(stats.unauthenticated, 20);
    }
}
