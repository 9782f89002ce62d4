//! The frame codec as a `tokio_util` codec over a real (in-memory) async stream.
#![cfg(feature = "tokio")]

use bytes::Bytes;
use chorus_framing::{CodecError, DecodeError, Error, Frame, FrameCodec, FrameConfig};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, FramedWrite};

fn codec() -> FrameCodec {
    FrameCodec::new(FrameConfig::default()).unwrap()
}

#[tokio::test]
async fn frames_cross_a_tiny_pipe_intact_and_in_order() {
    // A 7-byte pipe forces every frame to arrive in many pieces.
    let (client, server) = tokio::io::duplex(7);
    let frames: Vec<Frame> = (1..=50u32)
        .map(|i| Frame::data(i, vec![i as u8; (i as usize * 37) % 700]))
        .chain([Frame::ping(*b"liveness")])
        .collect();
    let expected = frames.clone();
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(client, codec());
        for f in frames {
            sink.send(f).await.unwrap();
        }
    });
    let received: Vec<Frame> = FramedRead::new(server, codec())
        .map(|r| r.unwrap())
        .collect()
        .await;
    writer.await.unwrap();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_stream_cut_mid_frame_reports_truncation() {
    let (mut client, server) = tokio::io::duplex(64);
    let mut wire = bytes::BytesMut::new();
    Frame::data(1, &b"complete"[..]).encode(&mut wire).unwrap();
    Frame::data(2, &b"cut short"[..]).encode(&mut wire).unwrap();
    wire.truncate(wire.len() - 3);
    client.write_all(&wire).await.unwrap();
    drop(client);
    let mut reader = FramedRead::new(server, codec());
    assert_eq!(
        reader.next().await.unwrap().unwrap().payload,
        Bytes::from_static(b"complete")
    );
    match reader.next().await {
        Some(Err(CodecError::Frame(Error::Decode(DecodeError::Truncated {
            needed: 3, ..
        })))) => {}
        other => panic!("expected truncation, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_frame_from_the_peer_ends_the_stream_with_too_long() {
    let (mut client, server) = tokio::io::duplex(64);
    // Header announcing a 1 MiB payload; the body never needs to arrive.
    let mut header = bytes::BytesMut::new();
    chorus_framing::FrameHeader {
        frame_type: chorus_framing::FrameType::Data,
        flags: chorus_framing::Flags::EMPTY,
        channel: 1,
        payload_len: 1 << 20,
    }
    .encode(&mut header);
    client.write_all(&header).await.unwrap();
    let mut reader = FramedRead::new(server, codec());
    match reader.next().await {
        Some(Err(CodecError::Frame(Error::Decode(DecodeError::TooLong { len, max })))) => {
            assert_eq!((len, max), (1 << 20, 64 * 1024));
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[tokio::test]
async fn sending_an_oversized_frame_is_the_callers_error() {
    let (client, _server) = tokio::io::duplex(64);
    let mut sink = FramedWrite::new(client, codec());
    let err = sink
        .send(Frame::data(1, vec![0u8; 64 * 1024 + 1]))
        .await
        .unwrap_err();
    assert!(matches!(err, CodecError::Frame(Error::Usage(_))), "{err:?}");
    assert!(err.to_string().contains("exceeds the maximum"));
}
