//! The sealed channel as a `tokio_util` codec: plaintext frames in, sealed frames on
//! the wire, across an in-memory stream.
#![cfg(feature = "tokio")]

use chorus_crypto::sealed::{SealedChannel, SealedCodec, SealedCodecError};
use chorus_crypto::{AuthError, Error, Secret};
use chorus_framing::{Frame, FrameCodec, FrameConfig, FrameType};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, FramedWrite};

fn channels() -> (SealedChannel, SealedChannel) {
    let (k1, iv1, k2, iv2) = (
        Secret::new([7; 32]),
        Secret::new([8; 12]),
        Secret::new([9; 32]),
        Secret::new([10; 12]),
    );
    (
        SealedChannel::new(&k1, &iv1, &k2, &iv2),
        SealedChannel::new(&k2, &iv2, &k1, &iv1),
    )
}

#[tokio::test]
async fn frames_cross_sealed_and_arrive_in_order() {
    let (a, b) = channels();
    let (client, server) = tokio::io::duplex(13);
    let frames: Vec<Frame> = (1..=40u32)
        .map(|i| Frame::data(i, vec![i as u8; (i as usize * 97) % 3000]))
        .collect();
    let expected = frames.clone();
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(client, SealedCodec::new(a, 64 * 1024).unwrap());
        for f in frames {
            sink.send(f).await.unwrap();
        }
    });
    let got: Vec<Frame> = FramedRead::new(server, SealedCodec::new(b, 64 * 1024).unwrap())
        .map(|r| r.unwrap())
        .collect()
        .await;
    writer.await.unwrap();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn the_wire_carries_only_sealed_frames_with_no_plaintext() {
    let (a, _) = channels();
    let (client, server) = tokio::io::duplex(4096);
    let mut sink = FramedWrite::new(client, SealedCodec::new(a, 1024).unwrap());
    sink.send(Frame::data(1, &b"secret message"[..]))
        .await
        .unwrap();
    drop(sink);
    // Read the raw frames with a plain codec: one Sealed frame, no plaintext inside.
    let raw: Vec<Frame> = FramedRead::new(server, FrameCodec::new(FrameConfig::default()).unwrap())
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].frame_type, FrameType::Sealed);
    assert!(!raw[0].payload.windows(6).any(|w| w == b"secret"));
}

#[tokio::test]
async fn an_injected_plaintext_frame_ends_the_stream_with_not_sealed() {
    let (_, b) = channels();
    let (mut client, server) = tokio::io::duplex(4096);
    let mut wire = bytes::BytesMut::new();
    Frame::data(1, &b"forged"[..]).encode(&mut wire).unwrap();
    client.write_all(&wire).await.unwrap();
    let mut reader = FramedRead::new(server, SealedCodec::new(b, 1024).unwrap());
    match reader.next().await {
        Some(Err(SealedCodecError::Crypto(Error::Auth(AuthError::NotSealed)))) => {}
        other => panic!("expected NotSealed, got {other:?}"),
    }
}

#[tokio::test]
async fn payloads_over_the_limit_are_refused_before_sealing() {
    let (a, _) = channels();
    let (client, _server) = tokio::io::duplex(64);
    let mut sink = FramedWrite::new(client, SealedCodec::new(a, 100).unwrap());
    let err = sink.send(Frame::data(1, vec![0u8; 101])).await.unwrap_err();
    assert!(
        matches!(err, SealedCodecError::Crypto(Error::Usage(_))),
        "{err:?}"
    );
    assert!(SealedCodec::new(channels().0, 16 * 1024 * 1024).is_err());
}
