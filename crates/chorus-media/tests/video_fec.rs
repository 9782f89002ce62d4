//! Video frames get the same Reed-Solomon FEC as speech: a frame's RTP packets are
//! coded in groups of k, the last group of a frame is flushed with the frame (so a
//! frame never waits for the next one's packets), and any m losses per group leave
//! every frame reassembled bit-exact, keyframe flag included. One loss more in a
//! group loses the frame, so it is the FEC that saves them.

#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use bytes::BytesMut;
use chorus_framing::{Entropy, SeededEntropy};
use chorus_media::fec::{self, DecoderConfig, EncoderConfig};
use chorus_media::rtp;
use chorus_media::video::{Assembler, AssemblerConfig, Codec, Frame, packetize};
use proptest::prelude::*;

const K: u8 = 6;
const M: u8 = 2;
const MAX_PAYLOAD: usize = 1100;

/// One datagram on the wire, with the FEC group it belongs to.
struct Sent {
    group: usize,
    repair: bool,
    bytes: Vec<u8>,
}

fn random(e: &mut SeededEntropy, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    e.fill(&mut v).unwrap();
    v
}

/// A keyframe then delta frames: VP8 payloads (the P bit, bit 0 of the first byte,
/// is clear on a keyframe) or H.264 Annex B streams (an IDR slice, type 5, with SPS
/// and PPS on the keyframe; non-IDR slices, type 1, after).
fn frames(codec: Codec, seed: u64) -> Vec<(Vec<u8>, bool)> {
    let mut e = SeededEntropy::new(seed);
    (0..8)
        .map(|i| {
            let keyframe = i == 0;
            let len = if keyframe { 14_000 } else { 1_500 + 400 * i };
            let mut body = random(&mut e, len);
            // No start-code emulation inside an H.264 NAL unit (an encoder inserts
            // emulation-prevention bytes; synthetic bytes just avoid zeros).
            body.iter_mut().for_each(|b| *b |= 1);
            let data = match codec {
                Codec::Vp8 => {
                    body[0] = (body[0] & !1) | u8::from(!keyframe);
                    body
                }
                Codec::H264 => {
                    let mut s = Vec::new();
                    if keyframe {
                        s.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0x00, 0x1f]);
                        s.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
                    }
                    s.extend_from_slice(&[0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }]);
                    s.extend_from_slice(&body);
                    s
                }
            };
            (data, keyframe)
        })
        .collect()
}

/// Packetizes, RTP-wraps and FEC-codes `frames`; the datagrams in send order.
fn send(codec: Codec, frames: &[(Vec<u8>, bool)]) -> Vec<Sent> {
    let mut config = EncoderConfig::default();
    (config.k, config.m) = (K, M);
    let mut fec = fec::Encoder::new(config).unwrap();
    let mut wire = Vec::new();
    let mut seq = 65_500u16;
    let mut group = 0;
    let mut in_group = 0;
    for (n, (frame, _)) in frames.iter().enumerate() {
        let payloads = packetize(codec, frame, MAX_PAYLOAD).unwrap();
        let last = payloads.len() - 1;
        for (i, payload) in payloads.iter().enumerate() {
            let mut bytes = BytesMut::new();
            rtp::Packet {
                marker: i == last,
                payload_type: 96,
                sequence: seq,
                timestamp: 3000 * n as u32,
                ssrc: 0x51de,
                csrcs: vec![],
                extension: None,
                payload,
                padding: 0,
            }
            .encode(&mut bytes)
            .unwrap();
            fec.push(seq, &bytes).unwrap();
            seq = seq.wrapping_add(1);
            wire.push(Sent {
                group,
                repair: false,
                bytes: bytes.to_vec(),
            });
            in_group += 1;
            if i == last {
                // The frame's last group goes out with the frame.
                fec.flush();
            }
            let mut repairs = 0;
            while let Some(r) = fec.poll_repair() {
                wire.push(Sent {
                    group,
                    repair: true,
                    bytes: r,
                });
                repairs += 1;
            }
            if repairs > 0 {
                assert_eq!(repairs, usize::from(M));
                assert!(in_group <= usize::from(K));
                group += 1;
                in_group = 0;
            }
        }
    }
    assert_eq!(in_group, 0, "every group closed with its frame");
    wire
}

/// Delivers `wire` minus the datagrams whose index is in `lost`; the frames
/// reassembled, in completion order, and the reassembler's dropped count.
fn receive(codec: Codec, wire: &[Sent], lost: &[bool]) -> (Vec<Frame>, u64) {
    let mut fec = fec::Decoder::new(DecoderConfig::default()).unwrap();
    let mut assembler = Assembler::new(codec, AssemblerConfig::default());
    let mut frames = Vec::new();
    let mut deliver = |bytes: &[u8], frames: &mut Vec<Frame>| {
        let p = rtp::Packet::decode(bytes).unwrap();
        if let Some(f) = assembler
            .handle_packet(p.sequence, p.timestamp, p.marker, p.payload)
            .unwrap()
        {
            frames.push(f);
        }
        p.sequence
    };
    for (sent, &lost) in wire.iter().zip(lost) {
        if lost {
            continue;
        }
        if sent.repair {
            fec.handle_repair(&sent.bytes).unwrap();
        } else {
            let seq = deliver(&sent.bytes, &mut frames);
            fec.handle_source(seq, &sent.bytes);
        }
        while let Some(r) = fec.poll_recovered() {
            deliver(&r.packet, &mut frames);
        }
    }
    (frames, assembler.dropped())
}

/// `losses` drawn per group: up to `per_group` of its datagrams (sources or repairs).
fn loss_pattern(wire: &[Sent], seed: u64, per_group: usize) -> Vec<bool> {
    let mut e = SeededEntropy::new(seed);
    let mut lost = vec![false; wire.len()];
    let groups = wire.last().map_or(0, |s| s.group + 1);
    for g in 0..groups {
        let members: Vec<usize> = (0..wire.len()).filter(|&i| wire[i].group == g).collect();
        let mut b = [0u8; 2];
        e.fill(&mut b).unwrap();
        let count = usize::from(b[0]) % (per_group + 1);
        for j in 0..count {
            e.fill(&mut b).unwrap();
            // Distinct members: walk from a random start.
            let start = usize::from(u16::from_be_bytes(b)) % members.len();
            let mut idx = (start + j) % members.len();
            while lost[members[idx]] {
                idx = (idx + 1) % members.len();
            }
            lost[members[idx]] = true;
        }
    }
    lost
}

fn check_recovers_every_frame(codec: Codec, seed: u64) {
    let sent_frames = frames(codec, seed);
    let wire = send(codec, &sent_frames);
    let lost = loss_pattern(&wire, seed, usize::from(M));
    let (got, dropped) = receive(codec, &wire, &lost);
    assert_eq!(dropped, 0);
    assert_eq!(got.len(), sent_frames.len(), "every frame reassembled");
    for (n, ((data, keyframe), f)) in sent_frames.iter().zip(&got).enumerate() {
        assert_eq!(f.timestamp, 3000 * n as u32);
        assert_eq!(&f.data, data, "frame {n} bit-exact");
        assert_eq!(f.keyframe, *keyframe, "frame {n} keyframe flag");
    }
}

#[test]
fn vp8_frames_survive_m_losses_per_group() {
    check_recovers_every_frame(Codec::Vp8, 1);
}

#[test]
fn h264_frames_survive_m_losses_per_group() {
    check_recovers_every_frame(Codec::H264, 2);
}

#[test]
fn one_loss_more_than_m_in_a_group_loses_that_frame() {
    let sent_frames = frames(Codec::Vp8, 3);
    let wire = send(Codec::Vp8, &sent_frames);
    // The keyframe's first group (its first k sources) loses m + 1 sources.
    let mut lost = vec![false; wire.len()];
    for l in lost.iter_mut().take(usize::from(M) + 1) {
        *l = true;
    }
    let (got, _) = receive(Codec::Vp8, &wire, &lost);
    assert!(got.iter().all(|f| f.timestamp != 0), "the keyframe is lost");
    assert_eq!(got.len(), sent_frames.len() - 1, "the other frames arrive");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_m_losses_per_group_leave_every_frame_intact(seed in any::<u64>(), h264 in any::<bool>()) {
        check_recovers_every_frame(if h264 { Codec::H264 } else { Codec::Vp8 }, seed);
    }
}
