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
                    tracing::debug!("proof budget spent: request left unanswered");
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

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use crate::node::tests::*;

    #[test]
    fn a_store_request_pays_for_its_record_check() {
        let mut config = Config::default();
        config.verify_rate = 1.0;
        config.verify_burst = 2.0;
        let mut net = Net::new(3, &config);
        let mut r = net.record("alice", 1);
        net.verifier.sign(&mut r);
        let rec = r.to_bytes();
        let now = net.now;
        // A certificate not in the cache and the record: the whole bucket, for a
        // source that echoes its cookie.
        let cert = net.verifier.node_cert(1);
        let cookie = Some(net.nodes[0].validation.cookie_for(addr(1)));
        let store = request(&cert, 1, None, cookie, 0, Body::Store { record: &rec });
        net.nodes[0].certs.clear();
        net.nodes[0].handle_input(now, addr(1), &store).unwrap();
        net.nodes[0].certs.clear();
        assert_eq!(
            net.nodes[0].handle_input(now, addr(1), &store),
            Err(Limit::VerifyBudget.into())
        );
        assert_eq!(net.nodes[0].stats().verifications_refused, 1);
    }

    #[test]
    fn known_peers_keep_the_reserved_half_of_the_budget_during_a_spoofed_flood() {
        let mut net = Net::new(3, &Config::default());
        let cert = net.verifier.node_cert(7);
        let now = net.now;
        for i in 0..1_000usize {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let b = request(&cert, i as u64, Some(nonce), None, 1200, Body::Ping);
            let _ = net.nodes[0].handle_input(now, spoofed(i), &b);
        }
        let signed = net.nodes[0].stats().proofs_signed;
        assert_eq!(signed, 200, "the upper half of the bucket");
        // Node 1 (in node 0's table) still gets its proof, from the reserve.
        let b = request(
            &net.verifier.node_cert(1),
            1,
            Some([9; NONCE_LEN]),
            None,
            0,
            Body::Ping,
        );
        net.nodes[0].handle_input(now, addr(1), &b).unwrap();
        assert_eq!(net.nodes[0].stats().proofs_signed, signed + 1);
    }

    #[test]
    fn nothing_larger_than_the_request_goes_to_an_unvalidated_address() {
        // Node 0 knows 24 nodes (full Nodes answers) and holds a record and search
        // entries, so that every kind of answer it can give is as large as it gets.
        let mut net = Net::new(25, &Config::default());
        let mut r = net.record("alice", 1);
        r.display_name = "Alice Liddell".into();
        net.verifier.sign(&mut r);
        let now = net.now;
        net.nodes[0].accept_store(now, &r.to_bytes(), None).unwrap();
        let word = word_key("liddell");
        net.nodes[0]
            .accept_word(now, word, &r.to_bytes(), None)
            .unwrap();
        let rec = r.to_bytes();
        let stale_cookie = [0x5a; COOKIE_LEN];
        let certs = [net.verifier.node_cert(30), net.verifier.node_cert(1)];
        let mut sent_in: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        let mut got: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        let mut kinds: BTreeMap<u8, usize> = BTreeMap::new();
        let mut i = 0;
        let bodies = [
            Body::Ping,
            Body::FindNode {
                target: NodeId([3; 32]),
            },
            Body::FindValue {
                key: user_key("alice"),
            },
            Body::FindValue { key: word },
            Body::Store { record: &rec },
            Body::StoreWord {
                key: word,
                record: &rec,
            },
            Body::Leave,
            Body::Pong,
            Body::StoreAck { stored: true },
            Body::Nodes { nodes: Vec::new() },
        ];
        for cert in &certs {
            for body in &bodies {
                for nonce in [None, Some([1; NONCE_LEN])] {
                    for cookie in [None, Some(stale_cookie)] {
                        for padding in [0, 200, 1200, 2048] {
                            let m = Message {
                                network: DEFAULT_NETWORK,
                                txid: i as u64,
                                sender_cert: cert,
                                nonce: nonce.filter(|_| body.is_request()),
                                proof: None,
                                cookie: cookie.filter(|_| *body != Body::Leave),
                                padding: if body.is_request() { padding } else { 0 },
                                body: body.clone(),
                            }
                            .to_bytes();
                            // Node 1's certificate from an address that is not node 1's.
                            let from = spoofed(i);
                            i += 1;
                            *sent_in.entry(from).or_default() += m.len();
                            let _ = net.nodes[0].handle_input(now, from, &m);
                        }
                    }
                }
            }
        }
        // Whatever the node sends later (retried challenges, maintenance) counts too.
        let mut t = now;
        for step in 0..200 {
            t += Duration::from_millis(if step < 100 { 50 } else { 1000 });
            net.nodes[0].handle_timeout(t);
            while let Some(out) = net.nodes[0].poll_transmit() {
                if sent_in.contains_key(&out.dst) {
                    *got.entry(out.dst).or_default() += out.payload.len();
                    let kind = Message::decode(&out.payload).unwrap().body.kind();
                    *kinds.entry(kind).or_default() += 1;
                }
            }
        }
        for (a, n) in &got {
            assert!(
                n <= &sent_in[a],
                "{n} bytes to {a}, which sent {}",
                sent_in[a]
            );
        }
        // Not vacuous: padded requests got full answers (Pong, Nodes, Value,
        // StoreAck) and challenges (Ping) where they fit, short ones a Cookie.
        for kind in [1, 2, 4, 6, 8, 11] {
            assert!(
                kinds.get(&kind).is_some_and(|&n| n > 0),
                "{kind}: {kinds:?}"
            );
        }
    }
}
