//! Fuzz entry points with round-trip oracles (STYLE.md §10).
//!
//! `fuzz/fuzz_targets/*.rs` call these; the crate's tests run the same functions under
//! proptest, so they never rot. Each panics only when an oracle finds a real bug.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::datagram::{Datagram, PacketKind, classify};
use crate::frame::{Frame, FrameCodec, FrameConfig};
use crate::tlv::{Attributes, TlvLimits};

pub use crate::mux::fuzz::mux_routing;

/// Decodes every frame from `data`, delivered in chunks whose sizes the first byte
/// chooses, and checks that chunking changes nothing and that frames round-trip.
pub fn stream_frames(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let config = FrameConfig {
        max_payload_len: 4096,
    };
    let one_shot = decode_all(stream, stream.len().max(1), &config);
    let chunk = usize::from(seed % 17) + 1;
    let chunked = decode_all(stream, chunk, &config);
    assert_eq!(one_shot, chunked, "chunking by {chunk} changed the result");

    let (frames, _) = one_shot;
    let codec = FrameCodec::new(config.clone()).expect("valid config");
    let mut wire = BytesMut::new();
    for f in &frames {
        codec
            .encode_frame(f, &mut wire)
            .expect("decoded frames re-encode");
    }
    // The decoded frames are exactly the bytes they came from.
    assert_eq!(stream.get(..wire.len()), Some(&wire[..]));
}

/// All frames of `stream` fed `chunk` bytes at a time, and the error that stopped
/// decoding, if any.
fn decode_all(
    stream: &[u8],
    chunk: usize,
    config: &FrameConfig,
) -> (Vec<Frame>, Option<crate::Error>) {
    let mut codec = FrameCodec::new(config.clone()).expect("valid config");
    let mut rx = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        rx.extend_from_slice(piece);
        loop {
            match codec.decode_frame(&mut rx) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    match codec.decode_frame_eof(&mut rx) {
        Ok(Some(f)) => frames.push(f),
        Ok(None) => {}
        Err(e) => return (frames, Some(e)),
    }
    (frames, None)
}

/// Classifies `data` as a datagram on the shared port; a valid Chorus datagram must
/// re-encode to exactly the same bytes.
pub fn datagram(data: &[u8]) {
    let kind = classify(data);
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(d) = Datagram::decode(&bytes) {
        assert_eq!(kind, PacketKind::Chorus);
        assert_eq!(d.to_bytes().expect("decoded datagrams re-encode"), bytes);
    }
}

/// Decodes `data` as an attribute list; a valid list re-encodes to one that decodes to
/// the same attributes, and typed reads never panic.
pub fn tlv(data: &[u8]) {
    const KNOWN: [u16; 6] = [0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x8001];
    let limits = TlvLimits::default();
    let Ok(attrs) = Attributes::decode(data, &KNOWN, &limits) else {
        return;
    };
    for ty in KNOWN {
        let _ = attrs.get::<u8>(ty);
        let _ = attrs.get::<u16>(ty);
        let _ = attrs.get::<u32>(ty);
        let _ = attrs.get::<u64>(ty);
        let _ = attrs.get::<&str>(ty);
        let _ = attrs.get::<SocketAddr>(ty);
    }
    let mut out = BytesMut::new();
    attrs.encode(&mut out);
    assert_eq!(out.len(), attrs.encoded_len());
    let again = Attributes::decode(&out, &KNOWN, &limits).expect("re-encoded list decodes");
    assert_eq!(
        again.iter().collect::<Vec<_>>(),
        attrs.iter().collect::<Vec<_>>()
    );
    assert_eq!(again.skipped(), 0);
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::frame::FrameType;

    /// Mostly-valid frame streams, so the oracles see real frames, not only garbage.
    fn frame_stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<u8>(),
            vec((0usize..8, vec(any::<u8>(), 0..64)), 0..6),
            vec(any::<u8>(), 0..8),
        )
            .prop_map(|(seed, frames, tail)| {
                let mut out = BytesMut::new();
                out.extend_from_slice(&[seed]);
                for (i, payload) in frames {
                    let ty = FrameType::ALL[i];
                    let channel = u32::from(!ty.is_connection_level());
                    let payload = if matches!(ty, FrameType::Ping | FrameType::Pong) {
                        vec![0u8; 8]
                    } else {
                        payload
                    };
                    Frame::new(ty, channel, payload).encode(&mut out).unwrap();
                }
                out.extend_from_slice(&tail);
                out.to_vec()
            })
    }

    proptest! {
        #[test]
        fn stream_oracle_holds_on_frame_streams(data in frame_stream_bytes()) {
            stream_frames(&data);
        }

        #[test]
        fn stream_oracle_holds_on_arbitrary_bytes(data in vec(any::<u8>(), 0..512)) {
            stream_frames(&data);
        }

        #[test]
        fn datagram_oracle_holds(mut data in vec(any::<u8>(), 0..256), chorus in any::<bool>()) {
            if chorus && data.len() >= 4 {
                // Steer toward valid headers: marker, known type, no flags, reserved 0.
                data[0] = 0x09;
                data[1] = data[1] % 7 + 1;
                data[2] = 0;
                data[3] = 0;
            }
            datagram(&data);
        }

        #[test]
        fn tlv_oracle_holds(data in vec(any::<u8>(), 0..512)) {
            tlv(&data);
        }
    }
}
