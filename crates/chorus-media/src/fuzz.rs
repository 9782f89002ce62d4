//! Fuzz entry points (STYLE.md §10): every parser of peer-supplied bytes in this crate,
//! with round-trip oracles. `fuzz/fuzz_targets/*.rs` call these; the unit tests run
//! them under proptest so they never rot.

use bytes::BytesMut;

/// RTP: decode, re-encode, decode again; equal, and exactly `encoded_len()` bytes.
/// The RFC 8285 elements are walked too.
///
/// # Panics
/// When the oracle fails, which is the bug a fuzzer reports.
pub fn rtp_packet(data: &[u8]) {
    if let Ok(p) = crate::rtp::Packet::decode(data) {
        let mut out = BytesMut::new();
        p.encode(&mut out).expect("a decoded packet re-encodes");
        assert_eq!(out.len(), p.encoded_len());
        assert_eq!(crate::rtp::Packet::decode(&out), Ok(p.clone()));
        if let Some(elements) = p.extension_elements() {
            for e in elements.flatten() {
                let _ = crate::rtp::AudioLevel::decode(e.data);
            }
        }
    }
}

/// RFC 2198 redundant-audio payloads: decode, re-encode, decode again; equal, and
/// exactly `encoded_len()` bytes.
///
/// # Panics
/// When the oracle fails.
pub fn red_payload(data: &[u8]) {
    if let Ok(p) = crate::red::Payload::decode(data, 8) {
        let mut out = Vec::new();
        p.encode(&mut out).expect("a decoded payload re-encodes");
        assert_eq!(out.len(), p.encoded_len());
        assert_eq!(crate::red::Payload::decode(&out, 8), Ok(p));
    }
}

/// RTCP compound packets: decode, re-encode, decode again; equal.
///
/// # Panics
/// When the oracle fails.
pub fn rtcp_packet(data: &[u8]) {
    let limits = crate::rtcp::Limits::default();
    if let Ok(packets) = crate::rtcp::decode_compound(data, &limits) {
        let mut out = BytesMut::new();
        crate::rtcp::encode_compound(&packets, &mut out).expect("decoded packets re-encode");
        assert_eq!(
            out.len(),
            packets
                .iter()
                .map(crate::rtcp::Packet::encoded_len)
                .sum::<usize>()
        );
        assert_eq!(crate::rtcp::decode_compound(&out, &limits), Ok(packets));
    }
}

/// FEC repair packets: header round trip, then the bytes fed to a decoder as a
/// sequence of source and repair packets (first byte of each chunk says which):
/// never panics, and every recovered packet fits its bounds.
///
/// # Panics
/// When the oracle fails.
pub fn fec_packet(data: &[u8]) {
    use crate::fec::{Decoder, DecoderConfig, RepairPacket};
    if let Ok(p) = RepairPacket::decode(data) {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(out.len(), p.encoded_len());
        assert_eq!(RepairPacket::decode(&out), Ok(p));
    }
    let config = DecoderConfig {
        history: 64,
        max_groups: 8,
        max_shard_len: 256,
        max_m: 8,
    };
    let mut dec = Decoder::new(config).expect("valid config");
    let mut rest = data;
    while let Some((&tag, tail)) = rest.split_first() {
        let len = usize::from(tag & 0x3f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        if tag & 0x80 != 0 {
            let _ = dec.handle_repair(chunk);
        } else {
            let seq = u16::from(tag & 0x40 != 0) * 7 + u16::try_from(len).unwrap_or(0);
            dec.handle_source(seq, chunk);
        }
        while let Some(r) = dec.poll_recovered() {
            assert!(r.packet.len() + 2 <= config.max_shard_len);
        }
    }
}

/// Jitter buffer input sequences: each 4-byte chunk is (time step in ms, sequence
/// number, action). Frames never come out of order or twice, and the buffer never
/// holds more than its bound.
///
/// # Panics
/// When the oracle fails.
pub fn jitter_sequence(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::jitter::{JitterBuffer, JitterConfig, Playout};

    let config = JitterConfig {
        max_packets: 32,
        window: 16,
        ..JitterConfig::default()
    };
    let mut jb = JitterBuffer::new(config).expect("valid config");
    let mut now = Instant::now();
    // Mirrors the buffer's own unwrapping (it unwraps every input, in order), so the
    // payload is the extended sequence number the buffer uses.
    let mut unwrap = crate::rtp::SequenceUnwrapper::new();
    let mut last: Option<u64> = None;
    for chunk in data.chunks_exact(4) {
        let &[step, s0, s1, action] = chunk else {
            continue;
        };
        now += Duration::from_millis(u64::from(step));
        let seq = u16::from_be_bytes([s0, s1]);
        if action & 1 == 0 {
            let ts = u32::from(seq)
                .wrapping_mul(960)
                .wrapping_add(u32::from(action));
            let _ = jb.handle_packet(now, seq, ts, unwrap.unwrap(seq));
        }
        while let Some(f) = jb.poll_frame(now) {
            let ext = match f {
                Playout::Packet { seq, payload, .. } => {
                    assert_eq!(seq, payload as u16);
                    payload
                }
                Playout::Missing { seq } => {
                    let ext = jb.next_sequence().expect("started") - 1;
                    assert_eq!(seq, ext as u16);
                    ext
                }
                Playout::Empty => break,
            };
            assert!(last.is_none_or(|l| ext > l), "out of order or twice: {ext}");
            assert_eq!(jb.next_sequence(), Some(ext + 1));
            last = Some(ext);
        }
        assert!(jb.len() <= config.max_packets);
    }
}

/// Video reassembly: the bytes as a sequence of RTP-ish packets (2-byte sequence
/// number, flags byte, length byte, payload) for a VP8 and an H.264 reassembler with
/// small bounds; never panics, never holds more than its bounds, and the VP8
/// descriptor round-trips.
///
/// # Panics
/// When the oracle fails.
pub fn video_packets(data: &[u8]) {
    use crate::video::{Assembler, AssemblerConfig, Codec, Vp8Descriptor};
    if let Ok((d, rest)) = Vp8Descriptor::decode(data) {
        let mut out = Vec::new();
        d.encode(&mut out);
        out.extend_from_slice(rest);
        assert_eq!(Vp8Descriptor::decode(&out), Ok((d, rest)));
    }
    let config = AssemblerConfig {
        max_packets: 16,
        max_frame_bytes: 512,
        max_pending: 4,
    };
    for codec in [Codec::Vp8, Codec::H264] {
        let mut a = Assembler::new(codec, config);
        let mut rest = data;
        while let [s0, s1, flags, len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            let (payload, tail) = tail.split_at(n);
            rest = tail;
            let seq = u16::from_be_bytes([*s0, *s1]);
            if let Ok(Some(frame)) =
                a.handle_packet(seq, u32::from(flags & 0x7f), flags & 0x80 != 0, payload)
            {
                assert!(frame.data.len() <= config.max_frame_bytes * 2);
            }
        }
    }
}

/// A call-leg session fed hostile input: the bytes are split into chunks whose first
/// byte says what to do with the rest: deliver it raw, deliver it as the payload of
/// an RTP packet (Opus or FEC payload type) or as an RTCP body that the peer's keys
/// authenticate (so the parsers behind SRTP see it), or let time pass. Nothing may
/// panic and every queue stays within its bound.
///
/// # Panics
/// When the oracle fails.
#[cfg(feature = "opus")]
pub fn session_input(data: &[u8]) {
    use crate::session::{Session, SessionConfig};
    use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
    use std::time::{Duration, Instant};
    let suite = Suite::AeadAes128Gcm;
    let srtp = |k: u8| {
        let policy = Policy::new(suite, &vec![k; suite.key_len()], &vec![k; suite.salt_len()]);
        SrtpSession::new(policy.expect("valid policy")).expect("valid session")
    };
    let config = SessionConfig::default();
    let max = config.max_queued;
    let mut now = Instant::now();
    let entropy = Box::new(chorus_framing::SeededEntropy::new(1));
    let mut session = Session::new(config, srtp(1), srtp(2), entropy, now).expect("valid config");
    let mut peer = srtp(2);
    let mut seq = 0u16;
    for chunk in data.split(|&b| b == 0xFE) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        match op % 4 {
            0 => {
                let _ = session.handle_input(now, rest);
            }
            1 => {
                let packet = crate::rtp::Packet {
                    marker: false,
                    payload_type: if op & 4 == 0 { 111 } else { 112 },
                    sequence: seq,
                    timestamp: u32::from(seq) * 960,
                    ssrc: 7,
                    csrcs: Vec::new(),
                    extension: None,
                    payload: rest,
                    padding: 0,
                };
                seq = seq.wrapping_add(u16::from(op >> 3) + 1);
                let mut wire = BytesMut::new();
                if packet.encode(&mut wire).is_ok() {
                    let mut p = wire.to_vec();
                    if peer.protect_rtp(&mut p).is_ok() {
                        let _ = session.handle_input(now, &p);
                    }
                }
            }
            2 => {
                let mut p = vec![0x80, 201, 0, 0];
                p.extend_from_slice(rest);
                p.truncate(4 + (p.len() - 4) / 4 * 4);
                let words = u16::try_from((p.len() - 4) / 4).unwrap_or(0);
                p[2..4].copy_from_slice(&words.to_be_bytes());
                if peer.protect_rtcp(&mut p).is_ok() {
                    let _ = session.handle_input(now, &p);
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(op) * 4);
                session.handle_timeout(now);
                let _ = session.send_frame(now, &vec![0i16; session.frame_samples()]);
            }
        }
        let mut out = 0;
        while session.poll_transmit().is_some() {
            out += 1;
        }
        assert!(out <= max);
        while let Some(pcm) = session.poll_pcm() {
            assert_eq!(pcm.len(), session.frame_samples());
        }
        while session.poll_event().is_some() {}
    }
}

#[cfg(all(test, feature = "opus"))]
mod session_tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn session_input_never_panics(data in vec(any::<u8>(), 0..1500)) {
            super::session_input(&data);
        }
    }
}

/// Opus packet framing: the first frame is a subslice of the input, and the LBRR
/// flag is read without panicking, `None` only when there is no first frame to
/// read it from.
///
/// # Panics
/// When the oracle fails.
pub fn opus_packet(data: &[u8]) {
    let first = crate::opus_packet::first_frame(data);
    if let Some(f) = first {
        let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
        let at = f.as_ptr() as usize;
        assert!(at >= start && at + f.len() <= end, "inside the packet");
    }
    if crate::opus_packet::has_inband_fec(data).is_none() {
        assert!(first.is_none_or(<[u8]>::is_empty));
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds decode (so the fuzzer starts from valid packets).
    #[test]
    fn committed_seeds_decode() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");
        for (target, check) in [
            (
                "rtp_packet",
                (|b: &[u8]| crate::rtp::Packet::decode(b).is_ok()) as fn(&[u8]) -> bool,
            ),
            ("rtcp_packet", |b: &[u8]| {
                crate::rtcp::decode_compound(b, &crate::rtcp::Limits::default()).is_ok()
            }),
        ] {
            let Ok(entries) = std::fs::read_dir(format!("{dir}/{target}")) else {
                continue; // the crate may be built outside the workspace
            };
            for e in entries {
                let path = e.unwrap().path();
                // Only the committed seeds; a local fuzz run adds other inputs here.
                if !path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                assert!(check(&bytes), "{}", path.display());
                super::rtp_packet(&bytes);
                super::rtcp_packet(&bytes);
            }
        }
    }
}
