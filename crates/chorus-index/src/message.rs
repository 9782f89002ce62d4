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
//!   0x000A cookie        16 bytes: an address-validation cookie (a Cookie message,
//!                        any answer; echoed by requests)
//!   0x000B padding       1-2,048 zero bytes (requests): lets a first request earn a
//!                        full answer without amplification
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
//! | 11 | Cookie | cookie, and no sender cert | (any request, retried) |
//!
//! Every message carries the sender's certificate, so a receiver can derive and
//! check the sender's node id; the transaction id is echoed by the answer. A request
//! to a node not yet proven to hold its certified key carries a nonce, and the answer
//! must carry a proof: the responder's signature over [`possession_message`], made
//! with the key its certificate names (a certificate alone can be replayed).
//!
//! Return routability (RFC 9000 §8.1, RFC 6347 §4.2.1, RFC 8489 §9.2): a node sends a
//! source address that has not proven it receives there nothing larger than what it
//! received from it. Such a request is answered in full only if the answer fits in
//! the request (requesters pad first requests, as QUIC pads Initial packets), else
//! with a 41-byte `Cookie` carrying a keyed hash of the address; a request echoing
//! the cookie is answered in full. Answers carry a cookie too, for the next request.
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
    16 + 11 * 4 + 1 + MAX_CERT_LEN + MAX_SIGNATURE_LEN + COOKIE_LEN + 32 + MAX_NODES * 51 + 16_384;
/// Length of a possession challenge nonce.
pub const NONCE_LEN: usize = 16;
/// Length of an address-validation cookie.
pub const COOKIE_LEN: usize = 16;
/// Most padding bytes one request may carry.
pub const MAX_PADDING: usize = 2_048;
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
const COOKIE: u16 = 0x000A;
const PADDING: u16 = 0x000B;
const KNOWN: [u16; 11] = [
    KIND,
    SENDER_CERT,
    TARGET,
    NODES,
    RECORD,
    STORED,
    RECORDS,
    NONCE,
    PROOF,
    COOKIE,
    PADDING,
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
    /// "Echo this cookie to prove you receive at your address": the only answer a
    /// source address that has not proven it can receive gets when a full answer
    /// would be larger than its request (RFC 9000 §8.1). Carries no certificate (it
    /// must stay smaller than any request); the cookie is in [`Message::cookie`].
    Cookie,
}

impl Body<'_> {
    pub(crate) const fn kind(&self) -> u8 {
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
            Self::Cookie => 11,
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
            Self::Pong
                | Self::Nodes { .. }
                | Self::Value { .. }
                | Self::StoreAck { .. }
                | Self::Cookie
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
    /// The sender's super node certificate, encoded (empty in a `Cookie`, which
    /// carries none).
    pub sender_cert: &'a [u8],
    /// A request's possession challenge (requests only).
    pub nonce: Option<[u8; NONCE_LEN]>,
    /// A response's proof of key possession: the sender's signature over
    /// [`possession_message`] of the request's nonce (responses only, at most 512
    /// bytes).
    pub proof: Option<&'a [u8]>,
    /// An address-validation cookie: in a request, the one the responder gave us
    /// for our address; in an answer, one for the requester's next requests; always
    /// in a `Cookie` (never in a `Leave`).
    pub cookie: Option<[u8; COOKIE_LEN]>,
    /// Zero bytes a request carries so that a full answer is no larger than it
    /// (requests only; at most [`MAX_PADDING`]; 0 means no padding attribute).
    pub padding: u16,
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

/// An optional attribute that must be exactly `N` bytes long.
fn fixed<const N: usize>(attrs: &Attributes<'_>, ty: u16) -> Result<Option<[u8; N]>, DecodeError> {
    attrs
        .get::<&[u8]>(ty)?
        .map(|v| {
            <[u8; N]>::try_from(v).map_err(|_| DecodeError::BadAttributeLength {
                attr: ty,
                len: v.len(),
            })
        })
        .transpose()
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
            Body::Ping | Body::Pong | Body::Leave | Body::Cookie => 0,
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
        let cert = if self.body == Body::Cookie {
            0
        } else {
            4 + self.sender_cert.len()
        };
        16 + 5
            + cert
            + self.cookie.map_or(0, |c| 4 + c.len())
            + if self.padding > 0 {
                4 + usize::from(self.padding)
            } else {
                0
            }
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
        // The optional cookie, padding, challenge and proof come first, so that no
        // strict prefix of a message is itself a valid message.
        if let Some(c) = &self.cookie {
            put_attr_header(dst, COOKIE, c.len());
            dst.put_slice(c);
        }
        if self.padding > 0 {
            put_attr_header(dst, PADDING, usize::from(self.padding));
            dst.put_bytes(0, usize::from(self.padding));
        }
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
        if self.body != Body::Cookie {
            put_attr_header(dst, SENDER_CERT, self.sender_cert.len());
            dst.put_slice(self.sender_cert);
        }
        let put_nodes = |dst: &mut BytesMut, nodes: &[Contact]| {
            put_attr_header(dst, NODES, nodes.iter().map(contact_len).sum());
            for c in nodes {
                dst.put_slice(&c.id.0);
                put_addr(dst, &c.addr);
            }
        };
        match &self.body {
            Body::Ping | Body::Pong | Body::Leave | Body::Cookie => {}
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
        // A Cookie carries no certificate (it must stay smaller than any request).
        let sender_cert = if kind == 11 {
            &[]
        } else {
            attrs.require::<&[u8]>(SENDER_CERT)?
        };
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
            11 => (Body::Cookie, &[]),
            _ => return Err(DecodeError::BadAttributeValue(KIND)),
        };
        let cookie = fixed::<COOKIE_LEN>(&attrs, COOKIE)?;
        let padding = match attrs.get::<&[u8]>(PADDING)? {
            None => 0,
            // RFC 9000 §19.1: padding is zeros; an empty attribute would not
            // re-encode to the same bytes.
            Some(p) if p.is_empty() || p.len() > MAX_PADDING => {
                return Err(DecodeError::BadAttributeLength {
                    attr: PADDING,
                    len: p.len(),
                });
            }
            Some(p) if p.iter().any(|&b| b != 0) => {
                return Err(DecodeError::BadAttributeValue(PADDING));
            }
            // At most MAX_PADDING (2,048), so it fits a u16.
            Some(p) => u16::try_from(p.len()).unwrap_or(u16::MAX),
        };
        if body == Body::Cookie && cookie.is_none() {
            return Err(DecodeError::MissingAttribute(COOKIE));
        }
        let nonce = fixed::<NONCE_LEN>(&attrs, NONCE)?;
        let proof = attrs.get::<&[u8]>(PROOF)?;
        if let Some(p) = proof
            && p.len() > MAX_SIGNATURE_LEN
        {
            return Err(DecodeError::TooLong {
                len: p.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        // Kinds 1, 3, 5, 7 and 10 are requests (may carry a nonce, a cookie and
        // padding); 2, 4, 6 and 8 answers (may carry a proof and a cookie); a Cookie
        // carries its cookie only; a Leave none of them.
        let is_cookie = body == Body::Cookie;
        let (nonce_ok, proof_ok) = (body.is_request(), body.is_response() && !is_cookie);
        let cookie_ok = body.is_request() || body.is_response();
        let permitted = |ty: u16| match ty {
            KIND => true,
            SENDER_CERT => !is_cookie,
            NONCE | PADDING => nonce_ok,
            PROOF => proof_ok,
            COOKIE => cookie_ok,
            _ => allowed.contains(&ty),
        };
        if let Some((ty, _)) = attrs.iter().find(|(ty, _)| !permitted(*ty)) {
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
            cookie,
            padding,
            body,
        })
    }
}

/// Header length of an attribute: what adding one costs besides its value.
pub(crate) const ATTR_HEADER_LEN: usize = 4;

/// `request` (an encoded message without cookie or padding) with `cookie` added: the
/// cookie attribute is the first after the datagram header, so it is inserted there.
pub(crate) fn with_cookie(request: &[u8], cookie: &[u8; COOKIE_LEN]) -> Bytes {
    let (header, rest) = request.split_at(request.len().min(16));
    let mut out = BytesMut::with_capacity(request.len() + ATTR_HEADER_LEN + COOKIE_LEN);
    out.put_slice(header);
    put_attr_header(&mut out, COOKIE, COOKIE_LEN);
    out.put_slice(cookie);
    out.put_slice(rest);
    out.freeze()
}

/// `request` (an encoded request without cookie or padding) padded to at least `len`
/// bytes (at most [`MAX_PADDING`] of padding), or unchanged if it is that long.
pub(crate) fn with_padding(request: &[u8], len: usize) -> Bytes {
    let pad = len
        .saturating_sub(request.len() + ATTR_HEADER_LEN)
        .min(MAX_PADDING);
    if pad == 0 {
        return Bytes::copy_from_slice(request);
    }
    let (header, rest) = request.split_at(request.len().min(16));
    let mut out = BytesMut::with_capacity(request.len() + ATTR_HEADER_LEN + pad);
    out.put_slice(header);
    put_attr_header(&mut out, PADDING, pad);
    out.put_bytes(0, pad);
    out.put_slice(rest);
    out.freeze()
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
        (
            u32,
            Option<[u8; 16]>,
            Option<Vec<u8>>,
            Option<[u8; COOKIE_LEN]>,
            u16,
        ),
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
                proptest::option::of(any::<[u8; COOKIE_LEN]>()),
                prop_oneof![Just(0u16), 1..=MAX_PADDING as u16],
            ),
            any::<u64>(),
            vec(any::<u8>(), 0..200),
            1u8..12,
            any::<[u8; 32]>(),
            vec(arb_contact(), 0..=MAX_NODES),
            proptest::option::of(vec(any::<u8>(), 0..300)),
            vec(vec(any::<u8>(), 0..100), 0..4),
            any::<bool>(),
        )
    }

    fn build(o: &Owned) -> Message<'_> {
        let (
            (network, nonce, proof, cookie, padding),
            txid,
            cert,
            kind,
            target,
            nodes,
            record,
            records,
            stored,
        ) = o;
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
            11 => Body::Cookie,
            _ => Body::Leave,
        };
        let is_cookie = body == Body::Cookie;
        Message {
            network: *network,
            txid: *txid,
            sender_cert: if is_cookie { &[] } else { cert },
            nonce: nonce.filter(|_| body.is_request()),
            proof: proof
                .as_deref()
                .filter(|_| body.is_response() && !is_cookie),
            cookie: if is_cookie {
                Some(cookie.unwrap_or_default())
            } else {
                cookie.filter(|_| body.is_request() || body.is_response())
            },
            padding: if body.is_request() { *padding } else { 0 },
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
                    cookie: None,
                    padding: 0,
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
                    cookie: None,
                    padding: 0,
                    body: Body::Ping,
                }
                .to_bytes(),
                Message {
                    network: 7,
                    txid: 43,
                    sender_cert: b"cert",
                    nonce: None,
                    proof: Some(&[6; 64]),
                    cookie: None,
                    padding: 0,
                    body: Body::Pong,
                }
                .to_bytes(),
                // Appended after the first ten so that the indices above stay put.
                Message {
                    network: 7,
                    txid: 44,
                    sender_cert: &[],
                    nonce: None,
                    proof: None,
                    cookie: Some([7; COOKIE_LEN]),
                    padding: 0,
                    body: Body::Cookie,
                }
                .to_bytes(),
                Message {
                    network: 7,
                    txid: 45,
                    sender_cert: b"cert",
                    nonce: Some([5; NONCE_LEN]),
                    proof: None,
                    cookie: None,
                    padding: 300,
                    body: Body::FindNode {
                        target: NodeId([1; 32]),
                    },
                }
                .to_bytes(),
                Message {
                    network: 7,
                    txid: 46,
                    sender_cert: b"cert",
                    nonce: None,
                    proof: Some(&[6; 64]),
                    cookie: Some([8; COOKIE_LEN]),
                    padding: 0,
                    body: Body::Nodes {
                        nodes: vec![contact; 2],
                    },
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
    fn a_cookie_is_small_carries_no_certificate_and_requires_its_cookie() {
        let cookie = &samples()[10];
        assert_eq!(cookie.len(), 41, "header, kind and cookie only");
        let m = Message::decode(cookie).unwrap();
        assert_eq!((m.body, m.sender_cert), (Body::Cookie, &[][..]));
        // With a certificate, or without its cookie, it is not a valid Cookie.
        let mut with_cert = BytesMut::from(&cookie[..]);
        with_cert.put_u16(SENDER_CERT);
        with_cert.put_u16(4);
        with_cert.put_slice(b"cert");
        assert_eq!(
            Message::decode(&with_cert),
            Err(DecodeError::BadAttributeValue(SENDER_CERT))
        );
        let mut bare = BytesMut::from(&cookie[..16]);
        bare.put_slice(&cookie[16 + 4 + COOKIE_LEN..]);
        assert_eq!(
            Message::decode(&bare),
            Err(DecodeError::MissingAttribute(COOKIE))
        );
    }

    #[test]
    fn padding_is_zeros_on_requests_only() {
        let padded = &samples()[11];
        assert_eq!(Message::decode(padded).unwrap().padding, 300);
        // The padding value starts after the header and its TLV header.
        let mut dirty = BytesMut::from(&padded[..]);
        dirty[16 + 4 + 7] = 1;
        assert_eq!(
            Message::decode(&dirty),
            Err(DecodeError::BadAttributeValue(PADDING))
        );
        // Padding on an answer (a Pong) is refused.
        let mut pong = BytesMut::from(&samples()[9][..16]);
        pong.put_u16(PADDING);
        pong.put_u16(2);
        pong.put_u16(0);
        pong.put_slice(&samples()[9][16..]);
        assert_eq!(
            Message::decode(&pong),
            Err(DecodeError::BadAttributeValue(PADDING))
        );
    }

    #[test]
    fn a_cookie_or_padding_spliced_into_a_request_encodes_as_the_encoder_would() {
        let base = Message {
            network: 7,
            txid: 45,
            sender_cert: b"cert",
            nonce: Some([5; NONCE_LEN]),
            proof: None,
            cookie: None,
            padding: 0,
            body: Body::FindNode {
                target: NodeId([1; 32]),
            },
        };
        let bytes = base.to_bytes();
        let cookie = with_cookie(&bytes, &[3; COOKIE_LEN]);
        let expect = Message {
            cookie: Some([3; COOKIE_LEN]),
            ..base.clone()
        };
        assert_eq!(cookie, expect.to_bytes());
        let padded = with_padding(&bytes, 1200);
        assert_eq!(padded.len(), 1200);
        let expect = Message {
            padding: (1200 - bytes.len() - 4) as u16,
            ..base
        };
        assert_eq!(padded, expect.to_bytes());
        // Long enough already: unchanged.
        assert_eq!(with_padding(&bytes, bytes.len() + 4), bytes);
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
        fn mutated_samples_never_panic(i in any::<prop::sample::Index>(), s in 0usize..13, v in any::<u8>()) {
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
