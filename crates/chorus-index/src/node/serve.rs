//! Answers to requests: the answer is built first, without side effects or a
//! signature, so that its size can be checked against the request's; a source
//! that has not shown it receives at its address gets nothing larger than what it
//! sent (RFC 9000 §8.1).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use chorus_crypto::cert::NodeId;
use chorus_framing::Transmit;

use super::Node;
use super::requests::Purpose;
use crate::error::{Error, Limit, Violation};
use crate::message::{Body, COOKIE_LEN, Contact, MAX_NODES, Message, NONCE_LEN};

/// An answer being prepared (owned, so its size can be checked before it is sent).
enum Reply {
    Pong,
    Nodes(Vec<Contact>),
    Value {
        record: Option<Bytes>,
        records: Vec<Bytes>,
        nodes: Vec<Contact>,
    },
    StoreAck(bool),
}

impl Reply {
    /// Drops the farthest contact; `false` if there was none.
    fn pop_contact(&mut self) -> bool {
        match self {
            Self::Nodes(nodes) | Self::Value { nodes, .. } => nodes.pop().is_some(),
            Self::Pong | Self::StoreAck(_) => false,
        }
    }
}

impl Node {
    /// A request from `from` that was `limit` bytes long.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: Message<'_>,
        limit: usize,
    ) -> Result<(), Error> {
        let cost = match &msg.body {
            Body::FindValue { key } if self.words.contains_key(key) => self.config.search_cost,
            _ => 1.0,
        } + if msg.nonce.is_some() {
            self.config.proof_cost
        } else {
            0.0
        };
        if !self.rate.allow(from.ip(), now, cost) {
            return Err(Limit::RateLimited.into());
        }
        self.rotate_cookie_keys(now);
        // Return routability (RFC 9000 §8.1, RFC 6347 §4.2.1): a source that has not
        // shown it receives at its address (a cookie of ours, an answer to one of
        // our requests, a proven contact there) may be spoofed, so it gets nothing
        // larger than what it sent.
        let mut validated = msg
            .cookie
            .is_some_and(|c| self.validation.cookie_valid(from, &c))
            || self.validation.is_validated(from, now);
        if !validated && !matches!(msg.body, Body::Leave) && limit < self.min_answer_len() {
            // No answer fits: ask for the cookie before spending a certificate check
            // on an address that may be spoofed.
            self.send_cookie(from, msg.txid, limit);
            return Ok(());
        }
        // Records a store request carries are checked too: one token each.
        let checks = match msg.body {
            Body::Store { .. } | Body::StoreWord { .. } => 1,
            _ => 0,
        };
        let sender = match self.verify_sender(msg.sender_cert, now, Some(!validated))? {
            Some(id) if (0..checks).all(|_| self.take_verify_token(now, !validated)) => id,
            _ if validated => return Err(Limit::VerifyBudget.into()),
            _ => {
                // It may come back with the cookie and use the reserved half.
                self.send_cookie(from, msg.txid, limit);
                return Ok(());
            }
        };
        if sender == self.id {
            return Err(Violation::FromSelf.into());
        }
        let contact = Contact {
            id: sender,
            addr: from,
        };
        if let Body::Leave = msg.body {
            // Only the contact at that address leaves: a node replaying the
            // certificate from elsewhere cannot evict its owner.
            if self
                .table
                .get(&sender)
                .is_some_and(|e| e.contact.addr == from)
            {
                self.table.remove(&sender, now);
            }
            return Ok(());
        }
        validated = validated || self.is_proven(&sender, from, now);
        // The answer first, without side effects or a signature, so that its size
        // can be checked against the request's.
        let mut reply = match msg.body {
            Body::Ping => Reply::Pong,
            Body::FindNode { target } => Reply::Nodes(self.closest_for(&target, &sender)),
            Body::FindValue { key } => Reply::Value {
                record: self.store.get(&key).map(|s| s.bytes.clone()),
                records: self.words.newest(&key),
                nodes: self.closest_for(&key, &sender),
            },
            Body::Store { .. } | Body::StoreWord { .. } => Reply::StoreAck(false),
            // Responses were routed above; Leave returned.
            _ => return Ok(()),
        };
        let cookie = self.validation.cookie_for(from);
        if !validated {
            let proof_len = msg
                .nonce
                .map_or(0, |nonce| 4 + self.proofs.len_for(sender, nonce));
            let len = |r: &Reply| proof_len + self.reply(msg.txid, None, cookie, r).encoded_len();
            if len(&reply) > limit {
                // Cut the contact list (closest first) to fit; else only a cookie.
                while len(&reply) > limit && reply.pop_contact() {}
                if len(&reply) > limit {
                    self.send_cookie(from, msg.txid, limit);
                    return Ok(());
                }
                self.stats.truncated += 1;
            }
        }
        match msg.body {
            Body::Store { record } => {
                let stored = self
                    .accept_store(now, record, Some(sender))
                    .inspect_err(|e| self.penalize_forgery(e, from, &sender, now))?;
                reply = Reply::StoreAck(stored);
            }
            Body::StoreWord { key, record } => {
                let stored = self
                    .accept_word(now, key, record, Some(sender))
                    .inspect_err(|e| self.penalize_forgery(e, from, &sender, now))?;
                reply = Reply::StoreAck(stored);
            }
            _ => {}
        }
        let proof = match msg.nonce {
            None => None,
            Some(nonce) => {
                let proof = self
                    .proofs
                    .prove(now, sender, nonce, !validated, &mut self.stats)?;
                if let Some(p) = proof {
                    Some(p)
                } else {
                    self.stats.proofs_refused += 1;
                    if validated {
                        // Dropped as if lost: the requester retries or moves on.
                        return Err(Limit::ProofBudget.into());
                    }
                    // It may come back with the cookie and use the reserved half.
                    self.send_cookie(from, msg.txid, limit);
                    return Ok(());
                }
            }
        };
        let payload = self
            .reply(msg.txid, proof.as_deref(), cookie, &reply)
            .to_bytes();
        if !validated && payload.len() > limit {
            // Unreachable by the check above unless a signature came out longer
            // than ours usually are; the bound holds regardless.
            self.send_cookie(from, msg.txid, limit);
            return Ok(());
        }
        let spare = (!validated).then(|| limit.saturating_sub(payload.len()));
        self.queue(Transmit::new(from, payload));
        // An unvalidated source is challenged only if the challenge fits in what
        // is left of its request; else when it comes back with the cookie.
        self.heard_from(contact, now, spare);
        Ok(())
    }

    /// The answer message for `reply`.
    fn reply<'a>(
        &'a self,
        txid: u64,
        proof: Option<&'a [u8]>,
        cookie: [u8; COOKIE_LEN],
        reply: &'a Reply,
    ) -> Message<'a> {
        Message {
            network: self.config.network,
            txid,
            sender_cert: &self.cert,
            nonce: None,
            proof,
            cookie: Some(cookie),
            padding: 0,
            body: match reply {
                Reply::Pong => Body::Pong,
                Reply::Nodes(nodes) => Body::Nodes {
                    nodes: nodes.clone(),
                },
                Reply::Value {
                    record,
                    records,
                    nodes,
                } => Body::Value {
                    record: record.as_deref(),
                    records: records.iter().map(|b| &b[..]).collect(),
                    nodes: nodes.clone(),
                },
                Reply::StoreAck(stored) => Body::StoreAck { stored: *stored },
            },
        }
    }

    /// The smallest answer we can give (a Pong without a proof, with a cookie).
    fn min_answer_len(&self) -> usize {
        16 + (4 + 1) + (4 + self.cert.len()) + (4 + COOKIE_LEN)
    }

    /// A verified certificate sent us a request from `contact.addr`: refresh the
    /// contact if it is proven, else, if its bucket has room, challenge it (a Ping
    /// with a nonce) once; it enters the routing table when it answers with a valid
    /// proof. `spare`: for an address not validated, the bytes its request left
    /// after our answer; the challenge (unpadded, with its retries) must fit in it.
    fn heard_from(&mut self, contact: Contact, now: Instant, spare: Option<usize>) {
        if self.is_proven(&contact.id, contact.addr, now) {
            self.seen(contact, now);
            return;
        }
        if !self.table.has_room(&contact.id) {
            // It could only wait as a replacement: not worth a challenge (and maybe
            // a signature). Replacements also come from answers to our requests.
            return;
        }
        let mut fixed_len = None;
        if let Some(spare) = spare {
            let ping = 16 + (4 + 1) + (4 + self.cert.len()) + (4 + NONCE_LEN);
            let per_try = spare / (1 + usize::from(self.config.retries));
            if ping > per_try {
                // It is challenged when it comes back with our cookie.
                return;
            }
            // Padded so that its Pong (with a proof and a cookie, about as long as
            // ours, plus slack for a longer certificate) fits even if the challenge
            // overtakes our answer and finds us not yet validated there.
            let pong = 16 + (4 + 1) + (4 + self.cert.len()) + (4 + self.proofs.sig_len());
            fixed_len = Some(per_try.min(pong + 4 + COOKIE_LEN + 64));
        }
        if !self.requests.pinging(contact.addr) {
            let _ = self.send_request_as(
                now,
                contact.addr,
                Some(contact.id),
                Body::Ping,
                Purpose::Ping,
                fixed_len,
            );
        }
    }

    fn closest_for(&self, target: &NodeId, requester: &NodeId) -> Vec<Contact> {
        let mut nodes = self.table.closest(target, self.config.replication + 1);
        nodes.retain(|c| c.id != *requester);
        nodes.truncate(self.config.replication.min(MAX_NODES));
        nodes
    }
}
