//! Datagrams: headers round-trip byte for byte, classification agrees with decoding,
//! and arbitrary bytes never panic.

use bytes::Bytes;
use chorus_framing::datagram::DATAGRAM_HEADER_LEN;
use chorus_framing::{Datagram, DatagramHeader, DatagramType, DecodeError, PacketKind, classify};
use proptest::collection::vec;
use proptest::prelude::*;

fn arb_datagram() -> impl Strategy<Value = Datagram> {
    (
        proptest::sample::select(DatagramType::ALL.to_vec()),
        any::<bool>(),
        any::<u32>(),
        any::<u64>(),
        vec(any::<u8>(), 0..1500),
    )
        .prop_map(|(ty, ack, conn, seq, payload)| {
            let mut header = DatagramHeader::new(ty, conn, seq);
            if ack {
                header.flags = ty.allowed_flags() & DatagramHeader::FLAG_ACK_REQUESTED;
            }
            Datagram::new(header, payload)
        })
}

proptest! {
    #[test]
    fn round_trip_is_exact(d in arb_datagram()) {
        let bytes = d.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), d.encoded_len());
        prop_assert_eq!(classify(&bytes), PacketKind::Chorus);
        let back = Datagram::decode(&bytes).unwrap();
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
        prop_assert_eq!(back, d);
    }

    #[test]
    fn every_strict_prefix_of_the_header_is_rejected(d in arb_datagram()) {
        let bytes = d.to_bytes().unwrap();
        for n in 0..DATAGRAM_HEADER_LEN {
            let r = Datagram::decode(&bytes.slice(..n));
            let ok = matches!(r, Err(DecodeError::Truncated { .. } | DecodeError::NotChorus));
            prop_assert!(ok, "prefix {} gave {:?}", n, r);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_implies_chorus(bytes in vec(any::<u8>(), 0..256)) {
        let kind = classify(&bytes);
        if Datagram::decode(&Bytes::from(bytes)).is_ok() {
            prop_assert_eq!(kind, PacketKind::Chorus);
        }
    }

    #[test]
    fn a_flipped_header_bit_is_rejected_or_changes_the_datagram(
        d in arb_datagram(),
        bit in 0usize..DATAGRAM_HEADER_LEN * 8,
    ) {
        let mut bytes = d.to_bytes().unwrap().to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(other) = Datagram::decode(&Bytes::from(bytes)) {
            prop_assert_ne!(other, d);
        }
    }
}

#[test]
fn standard_protocol_samples_are_routed_to_their_handlers() {
    // RFC 5769 §2.1 sample request header: Binding request, magic cookie.
    let stun = [0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42];
    assert_eq!(classify(&stun), PacketKind::Stun);
    // Binding success response.
    assert_eq!(classify(&[0x01, 0x01, 0x00, 0x3c]), PacketKind::Stun);
    // TURN ChannelData on channel 0x4001 (RFC 8656 §12.4).
    assert_eq!(
        classify(&[0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4]),
        PacketKind::ChannelData
    );
    // RTP version 2, Opus dynamic payload type 111, marker set.
    assert_eq!(classify(&[0x80, 0x80 | 111, 0x12, 0x34]), PacketKind::Rtp);
    // RTCP receiver report (201) with one report block (RC = 1).
    assert_eq!(classify(&[0x81, 201, 0x00, 0x07]), PacketKind::Rtcp);
    // DTLS 1.2 handshake record.
    assert_eq!(classify(&[22, 0xfe, 0xfd]), PacketKind::Dtls);
    for kind_byte in [0x00u8, 0x40, 0x80, 22] {
        assert_eq!(
            DatagramHeader::decode(&[kind_byte; 32]).unwrap_err(),
            DecodeError::NotChorus
        );
    }
}
