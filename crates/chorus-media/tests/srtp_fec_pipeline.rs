//! RTP protected with SRTP (chorus-crypto), then Reed-Solomon FEC over the protected
//! packets, through a lossy seeded network: every packet the receiver gets back,
//! directly or rebuilt, authenticates and decrypts to the packet that was sent.

#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_media::fec::{self, DecoderConfig, EncoderConfig};
use chorus_media::netsim::{LossModel, NetConfig, Network};
use chorus_media::rtp;

#[test]
fn fec_rebuilt_srtp_packets_authenticate_and_decrypt() {
    let suite = Suite::AeadAes128Gcm;
    let key = vec![7u8; suite.key_len()];
    let salt = vec![9u8; suite.salt_len()];
    let mut tx = SrtpSession::new(Policy::new(suite, &key, &salt).unwrap()).unwrap();
    let mut rx = SrtpSession::new(Policy::new(suite, &key, &salt).unwrap()).unwrap();
    let mut fec_config = EncoderConfig::default();
    (fec_config.k, fec_config.m) = (4, 2);
    let mut fec_tx = fec::Encoder::new(fec_config).unwrap();
    let mut fec_rx = fec::Decoder::new(DecoderConfig::default()).unwrap();
    let mut net_config = NetConfig::default();
    net_config.loss = LossModel::Random { p: 0.1 };
    // Repair packets are tagged with a leading 0xFF byte on this test's "wire" (an
    // RTP packet starts with 0x80..0xBF).
    let mut net: Network<Vec<u8>> = Network::new(net_config, 99).unwrap();

    let t0 = Instant::now();
    let mut sent = BTreeMap::new();
    for i in 0..400u16 {
        let seq = i.wrapping_add(65_400);
        let payload = vec![i as u8; 40 + usize::from(i % 50)];
        let packet = rtp::Packet {
            marker: false,
            payload_type: 111,
            sequence: seq,
            timestamp: 960 * u32::from(i),
            ssrc: 0xABCD,
            csrcs: vec![],
            extension: None,
            payload: &payload,
            padding: 0,
        };
        let mut wire = BytesMut::new();
        packet.encode(&mut wire).unwrap();
        let mut protected = wire.to_vec();
        tx.protect_rtp(&mut protected).unwrap();
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        net.handle_send(now, protected.clone(), protected.len());
        fec_tx.push(seq, &protected).unwrap();
        while let Some(repair) = fec_tx.poll_repair() {
            let mut tagged = vec![0xFF];
            tagged.extend_from_slice(&repair);
            net.handle_send(now, tagged.clone(), tagged.len());
        }
        sent.insert(seq, payload);
    }
    let mut got = BTreeMap::new();
    let accept = |rx: &mut SrtpSession, mut bytes: Vec<u8>, got: &mut BTreeMap<u16, Vec<u8>>| {
        rx.unprotect_rtp(&mut bytes).expect("authentic");
        let p = rtp::Packet::decode(&bytes).unwrap();
        got.insert(p.sequence, p.payload.to_vec());
    };
    while let Some(at) = net.poll_timeout() {
        while let Some(bytes) = net.poll_deliver(at) {
            if let Some((0xFF, repair)) = bytes.split_first().map(|(t, r)| (*t, r)) {
                fec_rx.handle_repair(repair).unwrap();
            } else {
                let seq = u16::from_be_bytes([bytes[2], bytes[3]]);
                fec_rx.handle_source(seq, &bytes);
                accept(&mut rx, bytes, &mut got);
            }
            while let Some(r) = fec_rx.poll_recovered() {
                accept(&mut rx, r.packet, &mut got);
            }
        }
    }
    let stats = net.stats();
    assert!(stats.lost > 40, "{stats:?}");
    assert!(fec_rx.stats().recovered > 30);
    // At 10 % loss a (4, 2) code leaves well under 1 % of the packets missing.
    assert!(got.len() >= 396, "{} of 400", got.len());
    for (seq, payload) in &got {
        assert_eq!(sent.get(seq), Some(payload));
    }
}
