//! Global Index wire messages: a Chorus datagram of type `Index` whose payload is a
//! TLV attribute list (`docs/index.md`, "Messages").
//!
//! ```text
//! datagram header (16 bytes, chorus-framing): type = Index (0x06),
//!     connection id = network id, sequence = transaction id
//! payload: TLV attributes
//!   0x0001 kind          u8 (1 Ping .. 9 Leave, table below)
//!   0x0002 sender cert   the sender's super node certificate (<= 1,300 bytes)
//!   0x0003 target        32 bytes: the id or key looked up
//!   0x0004 nodes         0-20 contacts, each id(32) family(1) port(2) ip(4|16)
//!   0x0005 record        one encoded record (presence record or search entry)
//!   0x0006 stored        u8: 1 if a Store was accepted
//!   0x0007 records       search results: u16-length-prefixed records, at most 16
//!   0x0008 nonce         16 bytes (requests): "prove you hold your certified key"
//!   0x0009 proof         the responder's signature over the nonce (responses),
//!                        at most 512 bytes; see [`possession_message`]
//! ```
//!
//! | kind | message | attributes | answer |
//! |---|---|---|---|
//! | 1 | Ping | - | Pong |
//! | 2 | Pong | - | |
//! | 3 | FindNode | target | Nodes |
//! | 4 | Nodes | nodes | |
//! | 5 | FindValue | target | Value |
//! | 6 | Value | record and/or records, nodes | |
//! | 7 | Store | record | StoreAck |
//! | 8 | StoreAck | stored | |
//! | 9 | Leave | - | |
//! | 10 | StoreWord | target (word key), record | StoreAck |
//!
//! Every message carries the sender's certificate, so a receiver can derive and
//! check the sender's node id; the transaction id is echoed by the answer. A request
//! to a node not yet proven to hold its certified key carries a nonce, and the answer
//! must carry a proof: the responder's signature over [`possession_message`], made
//! with the key its certificate names (a certificate alone can be replayed).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use chorus_crypto::cert::{MAX_CERT_LEN, NodeId};
use chorus_crypto::identity::MAX_SIGNATURE_LEN;
use chorus_framing::tlv::{Attributes, TlvLimits};
use chorus_framing::{DatagramHeader, DatagramType, Reader};

use crate::error::DecodeError;
use crate::record::{MAX_RECORD_LEN, put_addr, read_addr};

/// Most contacts in one `Nodes` or `Value` message.
pub const MAX_NODES: usize = 20;
/// Most records in one `Value` message's record list.
pub const MAX_RECORDS: usize = 16;
/// Longest encoded message (fits a 1,500-byte-MTU path only for small certificates;
/// the index sends at most this in one UDP datagram).
pub const MAX_MESSAGE_LEN: usize =
    16 + 9 * 4 + 1 + MAX_CERT_LEN + MAX_SIGNATURE_LEN + 32 + MAX_NODES * 51 + 16_384;
/// Length of a possession challenge nonce.
pub const NONCE_LEN: usize = 16;
/// Domain separation for proofs of key possession.
const POSSESSION_CONTEXT: &[u8] = b"chorus index possession v1\0";

/// The bytes a responder signs to prove it holds the key its certificate names: a
/// context string, the requester's nonce and the requester's node id (so a proof made
/// for one requester is worthless to another).
#[must_use]
pub fn possession_message(nonce: &[u8; NONCE_LEN], requester: &NodeId) -> Vec<u8> {
    let mut m = Vec::with_capacity(POSSESSION_CONTEXT.len() + NONCE_LEN + 32);
    m.extend_from_slice(POSSESSION_CONTEXT);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&requester.0);
    m
}

const KIND: u16 = 0x0001;
const SENDER_CERT: u16 = 0x0002;
const TARGET: u16 = 0x0003;
const NODES: u16 = 0x0004;
const RECORD: u16 = 0x0005;
const STORED: u16 = 0x0006;
const RECORDS: u16 = 0x0007;
const NONCE: u16 = 0x0008;
const PROOF: u16 = 0x0009;
const KNOWN: [u16; 9] = [
    KIND,
    SENDER_CERT,
    TARGET,
    NODES,
    RECORD,
    STORED,
    RECORDS,
    NONCE,
    PROOF,
];

/// A node in the index: its id and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The node's id (derived from its certificate).
    pub id: NodeId,
    /// Its UDP address.
    pub addr: SocketAddr,
}

/// What a message asks or answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// Are you alive?
    Ping,
    /// Yes.
    Pong,
    /// Which nodes do you know closest to `target`?
    FindNode {
        /// The id looked up.
        target: NodeId,
    },
    /// The closest nodes the responder knows.
    Nodes {
        /// At most [`MAX_NODES`].
        nodes: Vec<Contact>,
    },
    /// Do you hold a value under `key`? If not, which nodes are closer?
    FindValue {
        /// The key looked up.
        key: NodeId,
    },
    /// The value(s) held under the key, and closer nodes.
    Value {
        /// The presence record held, encoded.
        record: Option<&'a [u8]>,
        /// Search entries held under a word key, encoded (at most [`MAX_RECORDS`]).
        records: Vec<&'a [u8]>,
        /// Closer nodes (at most [`MAX_NODES`]).
        nodes: Vec<Contact>,
    },
    /// Please store this record.
    Store {
        /// The encoded record.
        record: &'a [u8],
    },
    /// Whether the record was stored.
    StoreAck {
        /// `true` if stored (or already held).
        stored: bool,
    },
    /// The sender is leaving the index: remove it from routing tables.
    Leave,
    /// Please add this record to the search entries of a display-name word.
    StoreWord {
        /// The word's key ([`word_key`](crate::id::word_key)).
        key: NodeId,
        /// The encoded presence record whose display name has the word.
        record: &'a [u8],
    },
}

impl Body<'_> {
    const fn kind(&self) -> u8 {
        match self {
            Self::Ping => 1,
            Self::Pong => 2,
            Self::FindNode { .. } => 3,
            Self::Nodes { .. } => 4,
            Self::FindValue { .. } => 5,
            Self::Value { .. } => 6,
            Self::Store { .. } => 7,
            Self::StoreAck { .. } => 8,
            Self::Leave => 9,
            Self::StoreWord { .. } => 10,
        }
    }

    /// Whether this message is a request that expects an answer.
    #[must_use]
    pub const fn is_request(&self) -> bool {
        matches!(
            self,
            Self::Ping
                | Self::FindNode { .. }
                | Self::FindValue { .. }
                | Self::Store { .. }
                | Self::StoreWord { .. }
        )
    }

    /// Whether this message answers a request (and so must match one in flight).
    #[must_use]
    pub const fn is_response(&self) -> bool {
        matches!(
            self,
            Self::Pong | Self::Nodes { .. } | Self::Value { .. } | Self::StoreAck { .. }
        )
    }
}

/// One Global Index message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Separates independent index networks (the datagram's connection id).
    pub network: u32,
    /// Chosen by the requester at random; echoed by the answer.
    pub txid: u64,
    /// The sender's super node certificate, encoded.
    pub sender_cert: &'a [u8],
    /// A request's possession challenge (requests only).
    pub nonce: Option<[u8; NONCE_LEN]>,
    /// A response's proof of key possession: the sender's signature over
    /// [`possession_message`] of the request's nonce (responses only, at most 512
    /// bytes).
    pub proof: Option<&'a [u8]>,
    /// What the message says.
    pub body: Body<'a>,
}

fn contact_len(c: &Contact) -> usize {
    32 + match c.addr {
        SocketAddr::V4(_) => 7,
        SocketAddr::V6(_) => 19,
    }
}

fn put_attr_header(dst: &mut BytesMut, ty: u16, len: usize) {
    dst.put_u16(ty);
    // Values are bounded by the MAX_* constants, all far below 64 KiB.
    dst.put_u16(len as u16);
}

fn decode_nodes(value: &[u8]) -> Result<Vec<Contact>, DecodeError> {
    let mut r = Reader::new(value);
    let mut out = Vec::new();
    while !r.is_empty() {
        if out.len() == MAX_NODES {
            return Err(DecodeError::TooLong {
                len: out.len() + 1,
                max: MAX_NODES,
            });
        }
        let id = NodeId(r.array::<32>()?);
        let addr = read_addr(&mut r, NODES)?;
        out.push(Contact { id, addr });
    }
    Ok(out)
}

fn decode_records(value: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let mut r = Reader::new(value);
    let mut out = Vec::new();
    while !r.is_empty() {
        if out.len() == MAX_RECORDS {
            return Err(DecodeError::TooLong {
                len: out.len() + 1,
                max: MAX_RECORDS,
            });
        }
        let len = usize::from(r.u16()?);
        if len > MAX_RECORD_LEN {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_RECORD_LEN,
            });
        }
        out.push(r.take(len)?);
    }
    Ok(out)
}

impl<'a> Message<'a> {
    /// Bytes [`Message::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let body = match &self.body {
            Body::Ping | Body::Pong | Body::Leave => 0,
            Body::FindNode { .. } | Body::FindValue { .. } => 4 + 32,
            Body::Nodes { nodes } => 4 + nodes.iter().map(contact_len).sum::<usize>(),
            Body::Value {
                record,
                records,
                nodes,
            } => {
                record.map_or(0, |r| 4 + r.len())
                    + if records.is_empty() {
                        0
                    } else {
                        4 + records.iter().map(|r| 2 + r.len()).sum::<usize>()
                    }
                    + 4
                    + nodes.iter().map(contact_len).sum::<usize>()
            }
            Body::Store { record } => 4 + record.len(),
            Body::StoreWord { record, .. } => 4 + 32 + 4 + record.len(),
            Body::StoreAck { .. } => 5,
        };
        16 + 5
            + 4
            + self.sender_cert.len()
            + self.nonce.map_or(0, |n| 4 + n.len())
            + self.proof.map_or(0, |p| 4 + p.len())
            + body
    }

    /// Appends the datagram. Lists longer than their maximum, or values longer than
    /// their bound, would not decode: callers build messages within the bounds
    /// (the node always does).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        DatagramHeader::new(DatagramType::Index, self.network, self.txid).encode(dst);
        // The optional challenge and proof come first, so that no strict prefix of
        // a message is itself a valid message.
        if let Some(n) = &self.nonce {
            put_attr_header(dst, NONCE, n.len());
            dst.put_slice(n);
        }
        if let Some(p) = self.proof {
            put_attr_header(dst, PROOF, p.len());
            dst.put_slice(p);
        }
        put_attr_header(dst, KIND, 1);
        dst.put_u8(self.body.kind());
        put_attr_header(dst, SENDER_CERT, self.sender_cert.len());
        dst.put_slice(self.sender_cert);
        let put_nodes = |dst: &mut BytesMut, nodes: &[Contact]| {
            put_attr_header(dst, NODES, nodes.iter().map(contact_len).sum());
            for c in nodes {
                dst.put_slice(&c.id.0);
                put_addr(dst, &c.addr);
            }
        };
        match &self.body {
            Body::Ping | Body::Pong | Body::Leave => {}
            Body::FindNode { target } | Body::FindValue { key: target } => {
                put_attr_header(dst, TARGET, 32);
                dst.put_slice(&target.0);
            }
            Body::Nodes { nodes } => put_nodes(dst, nodes),
            Body::Value {
                record,
                records,
                nodes,
            } => {
                if let Some(r) = record {
                    put_attr_header(dst, RECORD, r.len());
                    dst.put_slice(r);
                }
                if !records.is_empty() {
                    put_attr_header(dst, RECORDS, records.iter().map(|r| 2 + r.len()).sum());
                    for r in records {
                        dst.put_u16(r.len() as u16);
                        dst.put_slice(r);
                    }
                }
                put_nodes(dst, nodes);
            }
            Body::Store { record } => {
                put_attr_header(dst, RECORD, record.len());
                dst.put_slice(record);
            }
            Body::StoreWord { key, record } => {
                put_attr_header(dst, TARGET, 32);
                dst.put_slice(&key.0);
                put_attr_header(dst, RECORD, record.len());
                dst.put_slice(record);
            }
            Body::StoreAck { stored } => {
                put_attr_header(dst, STORED, 1);
                dst.put_u8(u8::from(*stored));
            }
        }
    }

    /// The encoded datagram.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes a whole datagram. Checks structure and bounds; the node then checks
    /// the certificate and any record.
    ///
    /// # Errors
    /// The datagram header errors of chorus-framing, [`DecodeError::NotChorus`] for a
    /// datagram of another type, [`DecodeError::TooLong`] beyond
    /// [`MAX_MESSAGE_LEN`] or a list's bound, TLV errors, and
    /// [`DecodeError::BadAttributeValue`] for an unknown kind, a missing or extra
    /// attribute for that kind (a nonce on a response, a proof on a request).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let (header, payload) = DatagramHeader::decode(bytes)?;
        if header.datagram_type != DatagramType::Index || header.flags != 0 {
            return Err(DecodeError::NotChorus);
        }
        let attrs = Attributes::decode(payload, &KNOWN, &TlvLimits::default())?;
        let kind = attrs.require::<u8>(KIND)?;
        let sender_cert = attrs.require::<&[u8]>(SENDER_CERT)?;
        if sender_cert.len() > MAX_CERT_LEN {
            return Err(DecodeError::TooLong {
                len: sender_cert.len(),
                max: MAX_CERT_LEN,
            });
        }
        let target = || -> Result<NodeId, DecodeError> {
            let t = attrs.require::<&[u8]>(TARGET)?;
            <[u8; 32]>::try_from(t)
                .map(NodeId)
                .map_err(|_| DecodeError::BadAttributeLength {
                    attr: TARGET,
                    len: t.len(),
                })
        };
        let record = || -> Result<Option<&'a [u8]>, DecodeError> {
            let r = attrs.get::<&[u8]>(RECORD)?;
            match r {
                Some(r) if r.len() > MAX_RECORD_LEN => Err(DecodeError::TooLong {
                    len: r.len(),
                    max: MAX_RECORD_LEN,
                }),
                r => Ok(r),
            }
        };
        // Which attributes each kind carries besides KIND and SENDER_CERT; anything
        // else is an error so that every decoded message re-encodes to the same bytes.
        let (body, allowed): (Body<'a>, &[u16]) = match kind {
            1 => (Body::Ping, &[]),
            2 => (Body::Pong, &[]),
            3 => (Body::FindNode { target: target()? }, &[TARGET]),
            4 => (
                Body::Nodes {
                    nodes: decode_nodes(attrs.require(NODES)?)?,
                },
                &[NODES],
            ),
            5 => (Body::FindValue { key: target()? }, &[TARGET]),
            6 => (
                Body::Value {
                    record: record()?,
                    records: attrs
                        .get::<&[u8]>(RECORDS)?
                        .map(decode_records)
                        .transpose()?
                        .unwrap_or_default(),
                    nodes: decode_nodes(attrs.require(NODES)?)?,
                },
                &[RECORD, RECORDS, NODES],
            ),
            7 => (
                Body::Store {
                    record: record()?.ok_or(DecodeError::MissingAttribute(RECORD))?,
                },
                &[RECORD],
            ),
            8 => (
                Body::StoreAck {
                    stored: match attrs.require::<u8>(STORED)? {
                        0 => false,
                        1 => true,
                        _ => return Err(DecodeError::BadAttributeValue(STORED)),
                    },
                },
                &[STORED],
            ),
            9 => (Body::Leave, &[]),
            10 => (
                Body::StoreWord {
                    key: target()?,
                    record: record()?.ok_or(DecodeError::MissingAttribute(RECORD))?,
                },
                &[TARGET, RECORD],
            ),
            _ => return Err(DecodeError::BadAttributeValue(KIND)),
        };
        let nonce = attrs
            .get::<&[u8]>(NONCE)?
            .map(|n| {
                <[u8; NONCE_LEN]>::try_from(n).map_err(|_| DecodeError::BadAttributeLength {
                    attr: NONCE,
                    len: n.len(),
                })
            })
            .transpose()?;
        let proof = attrs.get::<&[u8]>(PROOF)?;
        if let Some(p) = proof
            && p.len() > MAX_SIGNATURE_LEN
        {
            return Err(DecodeError::TooLong {
                len: p.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        // Kinds 1, 3, 5, 7 and 10 are requests (may carry a nonce); 2, 4, 6 and 8
        // answers (may carry a proof); a Leave carries neither.
        let (nonce_ok, proof_ok) = (body.is_request(), body.is_response());
        if let Some((ty, _)) = attrs.iter().find(|(ty, _)| {
            *ty != KIND
                && *ty != SENDER_CERT
                && !allowed.contains(ty)
                && !(*ty == NONCE && nonce_ok)
                && !(*ty == PROOF && proof_ok)
        }) {
            return Err(DecodeError::BadAttributeValue(ty));
        }
        if let Body::Value { records, .. } = &body
            && attrs.raw(RECORDS).is_some()
            && records.is_empty()
        {
            return Err(DecodeError::BadAttributeValue(RECORDS));
        }
        Ok(Self {
            network: header.connection_id,
            txid: header.sequence,
            sender_cert,
            nonce,
            proof,
            body,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn arb_contact() -> impl Strategy<Value = Contact> {
        (
            any::<[u8; 32]>(),
            prop_oneof![
                (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
                (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            ],
        )
            .prop_map(|(id, addr)| Contact {
                id: NodeId(id),
                addr,
            })
    }

    type Owned = (
        (u32, Option<[u8; 16]>, Option<Vec<u8>>),
        u64,
        Vec<u8>,
        u8,
        [u8; 32],
        Vec<Contact>,
        Option<Vec<u8>>,
        Vec<Vec<u8>>,
        bool,
    );

    fn arb_owned() -> impl Strategy<Value = Owned> {
        (
            (
                any::<u32>(),
                proptest::option::of(any::<[u8; 16]>()),
                proptest::option::of(vec(any::<u8>(), 0..=512)),
            ),
            any::<u64>(),
            vec(any::<u8>(), 0..200),
            1u8..11,
            any::<[u8; 32]>(),
            vec(arb_contact(), 0..=MAX_NODES),
            proptest::option::of(vec(any::<u8>(), 0..300)),
            vec(vec(any::<u8>(), 0..100), 0..4),
            any::<bool>(),
        )
    }

    fn build(o: &Owned) -> Message<'_> {
        let ((network, nonce, proof), txid, cert, kind, target, nodes, record, records, stored) = o;
        let target = NodeId(*target);
        let body = match kind {
            1 => Body::Ping,
            2 => Body::Pong,
            3 => Body::FindNode { target },
            4 => Body::Nodes {
                nodes: nodes.clone(),
            },
            5 => Body::FindValue { key: target },
            6 => Body::Value {
                record: record.as_deref(),
                records: records.iter().map(Vec::as_slice).collect(),
                nodes: nodes.clone(),
            },
            7 => Body::Store {
                record: record.as_deref().unwrap_or(b"r"),
            },
            8 => Body::StoreAck { stored: *stored },
            10 => Body::StoreWord {
                key: target,
                record: record.as_deref().unwrap_or(b"w"),
            },
            _ => Body::Leave,
        };
        Message {
            network: *network,
            txid: *txid,
            sender_cert: cert,
            nonce: nonce.filter(|_| body.is_request()),
            proof: proof.as_deref().filter(|_| body.is_response()),
            body,
        }
    }

    pub(crate) fn samples() -> Vec<Bytes> {
        let contact = Contact {
            id: NodeId([9; 32]),
            addr: "192.0.2.9:33033".parse().unwrap(),
        };
        let bodies = [
            Body::Ping,
            Body::FindNode {
                target: NodeId([1; 32]),
            },
            Body::Nodes {
                nodes: vec![contact; 3],
            },
            Body::Value {
                record: Some(b"record"),
                records: vec![b"entry-a", b"entry-b"],
                nodes: vec![contact],
            },
            Body::Store { record: b"record" },
            Body::StoreAck { stored: true },
            Body::Leave,
            Body::StoreWord {
                key: NodeId([2; 32]),
                record: b"record",
            },
        ];
        bodies
            .into_iter()
            .map(|body| {
                Message {
                    network: 7,
                    txid: 42,
                    sender_cert: b"cert",
                    nonce: None,
                    proof: None,
                    body,
                }
                .to_bytes()
            })
            .chain([
                Message {
                    network: 7,
                    txid: 43,
                    sender_cert: b"cert",
                    nonce: Some([5; NONCE_LEN]),
                    proof: None,
                    body: Body::Ping,
                }
                .to_bytes(),
                Message {
                    network: 7,
                    txid: 43,
                    sender_cert: b"cert",
                    nonce: None,
                    proof: Some(&[6; 64]),
                    body: Body::Pong,
                }
                .to_bytes(),
            ])
            .collect()
    }

    #[test]
    fn every_strict_prefix_of_every_sample_is_rejected() {
        for s in samples() {
            assert!(Message::decode(&s).is_ok());
            for n in 0..s.len() {
                assert!(Message::decode(&s[..n]).is_err(), "prefix {n} of {s:?}");
            }
        }
    }

    #[test]
    fn attributes_foreign_to_the_kind_are_rejected() {
        let mut b = BytesMut::from(&samples()[0][..]);
        b.put_u16(TARGET);
        b.put_u16(32);
        b.put_slice(&[0; 32]);
        assert_eq!(
            Message::decode(&b),
            Err(DecodeError::BadAttributeValue(TARGET))
        );
    }

    #[test]
    fn nonces_only_on_requests_and_proofs_only_on_answers() {
        // samples()[8] is a Ping with a nonce, [9] a Pong with a proof; swap kinds.
        let kind_at = |extra: usize| 16 + 4 + extra + 4;
        let mut ping = BytesMut::from(&samples()[8][..]);
        let mut pong = BytesMut::from(&samples()[9][..]);
        assert!(Message::decode(&ping).unwrap().nonce.is_some());
        assert!(Message::decode(&pong).unwrap().proof.is_some());
        // The kind's value follows the header, the nonce or proof, and its TLV header.
        let (i, j) = (kind_at(16), kind_at(64));
        ping[i] = 2;
        pong[j] = 1;
        assert_eq!(
            Message::decode(&ping),
            Err(DecodeError::BadAttributeValue(NONCE))
        );
        assert_eq!(
            Message::decode(&pong),
            Err(DecodeError::BadAttributeValue(PROOF))
        );
    }

    #[test]
    fn other_datagram_types_are_not_index_messages() {
        let mut b = BytesMut::from(&samples()[0][..]);
        b[1] = DatagramType::Control as u8;
        assert_eq!(Message::decode(&b), Err(DecodeError::NotChorus));
    }

    proptest! {
        #[test]
        fn round_trip(o in arb_owned()) {
            let msg = build(&o);
            let bytes = msg.to_bytes();
            prop_assert_eq!(bytes.len(), msg.encoded_len());
            prop_assert_eq!(Message::decode(&bytes), Ok(msg));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode(&b);
        }

        #[test]
        fn mutated_samples_never_panic(i in any::<prop::sample::Index>(), s in 0usize..10, v in any::<u8>()) {
            let mut b = samples()[s].to_vec();
            let at = i.index(b.len());
            b[at] = v;
            if let Ok(m) = Message::decode(&b) {
                let again = m.to_bytes();
                prop_assert_eq!(Message::decode(&again), Ok(m));
            }
        }
    }
}
