//! Fuzz entry points (private feature `_fuzz`; also run under proptest by the tests).
//! Each decoder must never panic, and whatever decodes must re-encode to bytes that
//! decode to the same value; the node must survive any datagram.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_crypto::cert::NodeId;
use chorus_framing::SeededEntropy;
use ring::digest;

use crate::error::Violation;
use crate::message::Message;
use crate::node::{Config, Node, NodeIdentity};
use crate::record::{PresenceRecord, Signer, Verifier};

/// Accepts any certificate of 1-64 bytes (the node id is its hash) and any record
/// whose signature is the first 16 bytes of SHA-256 of its signed message: cheap,
/// so the fuzzer explores the node rather than RSA.
#[derive(Debug)]
pub struct FuzzVerifier;

impl Verifier for FuzzVerifier {
    fn verify_node(&self, cert: &[u8], _: SystemTime) -> Result<NodeId, Violation> {
        if cert.is_empty() || cert.len() > 64 {
            return Err(Violation::BadNodeCertificate);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(digest::digest(&digest::SHA256, cert).as_ref());
        Ok(NodeId(id))
    }

    fn verify_possession(
        &self,
        cert: &[u8],
        message: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<(), Violation> {
        self.verify_node(cert, now)?;
        if signature == FuzzSigner::sig(cert, message) {
            Ok(())
        } else {
            Err(Violation::BadProof)
        }
    }

    fn verify_record(&self, record: &PresenceRecord, _: SystemTime) -> Result<(), Violation> {
        let d = digest::digest(&digest::SHA256, &record.signed_message());
        if record.signature.as_ref() == d.as_ref().get(..16).unwrap_or_default() {
            Ok(())
        } else {
            Err(Violation::BadSignature)
        }
    }
}

/// The key of the fuzz verifier's certificates: a signature is the first 16 bytes
/// of SHA-256 over the certificate and the message.
#[derive(Debug)]
pub struct FuzzSigner(pub &'static [u8]);

impl FuzzSigner {
    fn sig(cert: &[u8], message: &[u8]) -> Vec<u8> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(cert);
        ctx.update(message);
        ctx.finish().as_ref().get(..16).unwrap_or_default().to_vec()
    }
}

impl Signer for FuzzSigner {
    fn sign(&self, message: &[u8]) -> Result<bytes::Bytes, chorus_framing::EntropyError> {
        Ok(Self::sig(self.0, message).into())
    }
}

/// Decodes arbitrary bytes as an index message; round-trips what decodes.
pub fn index_message(data: &[u8]) {
    if let Ok(msg) = Message::decode(data) {
        let again = msg.to_bytes();
        assert_eq!(again.len(), msg.encoded_len());
        assert_eq!(Message::decode(&again), Ok(msg));
    }
}

/// Decodes arbitrary bytes as a presence record; round-trips what decodes.
pub fn index_record(data: &[u8]) {
    if let Ok(r) = PresenceRecord::decode(data) {
        let again = r.to_bytes();
        assert_eq!(again.len(), r.encoded_len());
        assert_eq!(PresenceRecord::decode(&again), Ok(r));
    }
}

fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Feeds arbitrary datagrams to a node: the input is split on the 4-byte separator
/// `b"\xffIDX"`; each piece arrives from one of four addresses, with time advancing.
/// Nothing may panic and every queue stays within its bound.
pub fn node_input(data: &[u8]) {
    static VERIFIER: OnceLock<Arc<dyn Verifier>> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| Arc::new(FuzzVerifier)).clone();
    let t0 = Instant::now();
    let identity = NodeIdentity {
        cert: bytes::Bytes::from_static(b"fuzz node"),
        key: Arc::new(FuzzSigner(b"fuzz node")),
    };
    let Ok(mut node) = Node::new(
        Config::default(),
        identity,
        verifier,
        Box::new(SeededEntropy::new(1)),
        t0,
        epoch(),
    ) else {
        return;
    };
    let from: [SocketAddr; 4] = [
        SocketAddr::from(([192, 0, 2, 1], 4000)),
        SocketAddr::from(([192, 0, 2, 2], 4000)),
        SocketAddr::from(([192, 0, 2, 3], 4000)),
        SocketAddr::from(([2001, 0xdb8, 0, 0, 0, 0, 0, 1], 4000)),
    ];
    let _ = node.find_user(t0, "alice");
    let mut now = t0;
    for (i, piece) in data.split(|&b| b == 0xff).enumerate() {
        now += Duration::from_millis(37);
        let _ = node.handle_input(now, from[i % 4], piece);
        if i % 3 == 0 {
            node.handle_timeout(now);
        }
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
        assert!(node.poll_timeout().is_some());
    }
    node.handle_timeout(now + Duration::from_secs(120));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn samples_pass_the_oracles() {
        for s in crate::message::tests::samples() {
            index_message(&s);
            node_input(&s);
        }
        index_record(&crate::record::tests::sample().to_bytes());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..1024)) {
            index_message(&data);
            index_record(&data);
            node_input(&data);
        }
    }
}

#[cfg(test)]
mod seeds {
    /// Writes the seed corpora under `fuzz/corpus/` (run by hand:
    /// `cargo test -p chorus-index write_fuzz_seeds -- --ignored`).
    #[test]
    #[ignore = "writes files; run by hand when the formats change"]
    fn write_fuzz_seeds() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");
        let names = [
            "ping",
            "find-node",
            "nodes",
            "value",
            "store",
            "store-ack",
            "leave",
            "store-word",
            "ping-nonce",
            "pong-proof",
            "cookie",
            "find-node-padded",
            "nodes-cookie",
        ];
        for dir in ["index_message", "index_node"] {
            std::fs::create_dir_all(format!("{root}/{dir}")).unwrap();
            for (name, bytes) in names.iter().zip(crate::message::tests::samples()) {
                std::fs::write(format!("{root}/{dir}/seed-{name}"), &bytes).unwrap();
            }
        }
        std::fs::create_dir_all(format!("{root}/index_record")).unwrap();
        std::fs::write(
            format!("{root}/index_record/seed-record"),
            crate::record::tests::sample().to_bytes(),
        )
        .unwrap();
    }
}
