//! Stream frames: every valid frame round-trips, however the bytes are chunked, and
//! arbitrary or truncated input is an error value or "need more", never a panic.

use bytes::{Bytes, BytesMut};
use chorus_framing::frame::{FRAME_HEADER_LEN, PING_PAYLOAD_LEN};
use chorus_framing::{DecodeError, Error, Flags, Frame, FrameCodec, FrameConfig, FrameType};
use proptest::collection::vec;
use proptest::prelude::*;

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        proptest::sample::select(FrameType::ALL.to_vec()),
        1u32..,
        vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(ty, channel, payload, fin)| {
            let channel = if ty.is_connection_level() { 0 } else { channel };
            let payload = if matches!(ty, FrameType::Ping | FrameType::Pong) {
                payload
                    .into_iter()
                    .chain([0; 8])
                    .take(PING_PAYLOAD_LEN)
                    .collect()
            } else {
                payload
            };
            let flags = if fin && ty.allowed_flags().contains(Flags::FIN) {
                Flags::FIN
            } else {
                Flags::EMPTY
            };
            Frame::new(ty, channel, payload).with_flags(flags)
        })
}

fn codec() -> FrameCodec {
    FrameCodec::new(FrameConfig::default()).unwrap()
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let codec = codec();
    let mut out = BytesMut::new();
    for f in frames {
        codec.encode_frame(f, &mut out).unwrap();
    }
    out
}

proptest! {
    #[test]
    fn encoded_len_is_exact_and_decode_inverts_encode(frame in arb_frame()) {
        let mut out = BytesMut::new();
        frame.encode(&mut out).unwrap();
        prop_assert_eq!(out.len(), frame.encoded_len());
        prop_assert_eq!(codec().decode_frame(&mut out).unwrap(), Some(frame));
        prop_assert!(out.is_empty());
    }

    #[test]
    fn any_chunking_yields_the_same_frames(
        frames in vec(arb_frame(), 1..8),
        cuts in vec(1usize..64, 1..64),
    ) {
        let wire = encode_all(&frames);
        let mut codec = codec();
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at((*cut.next().unwrap()).min(rest.len()));
            rest = tail;
            rx.extend_from_slice(piece);
            while let Some(f) = codec.decode_frame(&mut rx).unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(codec.decode_frame_eof(&mut rx).unwrap(), None);
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn every_strict_prefix_is_incomplete_then_truncated_at_eof(frame in arb_frame()) {
        let wire = encode_all(std::slice::from_ref(&frame));
        for n in 0..wire.len() {
            let mut rx = BytesMut::from(&wire[..n]);
            prop_assert_eq!(codec().decode_frame(&mut rx), Ok(None), "prefix {}", n);
            let at_eof = codec().decode_frame_eof(&mut BytesMut::from(&wire[..n]));
            if n == 0 {
                prop_assert_eq!(at_eof, Ok(None));
            } else {
                prop_assert!(
                    matches!(at_eof, Err(Error::Decode(DecodeError::Truncated { .. }))),
                    "prefix {} gave {:?}", n, at_eof
                );
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_overallocate(
        bytes in vec(any::<u8>(), 0..2048),
        max in 8usize..4096,
    ) {
        let mut config = FrameConfig::default();
        config.max_payload_len = max;
        let mut codec = FrameCodec::new(config).unwrap();
        let mut rx = BytesMut::from(&bytes[..]);
        for _ in 0..bytes.len() + 1 {
            match codec.decode_frame(&mut rx) {
                Ok(Some(f)) => prop_assert!(f.payload.len() <= max),
                Ok(None) | Err(_) => break,
            }
        }
        // Waiting for a payload reserves at most the announced, bounded length.
        prop_assert!(rx.capacity() <= bytes.len().max(max) + FRAME_HEADER_LEN);
    }

    #[test]
    fn a_flipped_header_bit_is_rejected_or_changes_the_frame(
        frame in arb_frame(),
        bit in 0usize..FRAME_HEADER_LEN * 8,
    ) {
        let mut wire = encode_all(std::slice::from_ref(&frame));
        if let Some(byte) = wire.get_mut(bit / 8) {
            *byte ^= 1 << (bit % 8);
        }
        match codec().decode_frame_eof(&mut wire) {
            Ok(Some(other)) => prop_assert_ne!(other, frame),
            Ok(None) => prop_assert!(false, "a whole frame cannot vanish"),
            Err(_) => {}
        }
    }
}

#[test]
fn payloads_of_the_configured_maximum_pass_and_one_more_byte_fails() {
    let mut config = FrameConfig::default();
    config.max_payload_len = 1000;
    let codec = FrameCodec::new(config.clone()).unwrap();
    let mut wire = BytesMut::new();
    codec
        .encode_frame(&Frame::data(1, vec![1u8; 1000]), &mut wire)
        .unwrap();
    let mut decoder = FrameCodec::new(config).unwrap();
    assert_eq!(
        decoder.decode_frame(&mut wire).unwrap().unwrap().payload,
        Bytes::from(vec![1u8; 1000])
    );

    // A peer with a larger limit sends 1001 bytes: the header alone condemns it.
    let mut big = BytesMut::new();
    Frame::data(1, vec![1u8; 1001]).encode(&mut big).unwrap();
    let mut header_only = big.split_to(FRAME_HEADER_LEN);
    assert_eq!(
        decoder.decode_frame(&mut header_only),
        Err(Error::Decode(DecodeError::TooLong {
            len: 1001,
            max: 1000
        }))
    );
}
