//! Packet-level forward error correction: Reed-Solomon erasure coding over groups of
//! media packets (the wire format is in `docs/media.md`).
//!
//! A *group* is `k` media packets (the *sources*, identified by their RTP sequence
//! numbers `base, base + stride, ..., base + (k - 1) * stride`) plus `m` *repair*
//! packets. Any `k` of the `k + m` packets rebuild all the sources, bit-exact, lengths
//! included: each source is coded as a 2-byte length and its bytes, zero-padded to the
//! longest source of the group. With `stride` d > 1, d groups are interleaved over
//! d·k consecutive packets, so a burst of up to d·m consecutive losses is recovered.
//!
//! The sources travel unchanged; only the repair packets are new. Their payload:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! | V=1 |   0 (5 bits)    |       k       |       m       |   index       |
//! |         base sequence number          |    stride     |   0 (8 bits)  |
//! | repair shard: 2 + L bytes (L = longest source in the group) ...        |
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, BytesMut};
use chorus_framing::Reader;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::{DecodeError, Error, Limit, UsageError};
use crate::rtp::SequenceUnwrapper;

/// The FEC header version this module writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the repair header before the shard.
pub const HEADER_LEN: usize = 8;
/// GF(2^8) Reed-Solomon codes at most 256 shards; one group uses `k + m` of them.
pub const MAX_SHARDS: usize = 255;

/// The parameters of one repair packet and its shard, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairPacket<'a> {
    /// Sources in the group (1-254).
    pub k: u8,
    /// Repair packets in the group (1-254, k + m <= 255).
    pub m: u8,
    /// This repair packet's index, 0..m.
    pub index: u8,
    /// Sequence number of the group's first source.
    pub base_seq: u16,
    /// Distance between the group's sources' sequence numbers (1 = consecutive).
    pub stride: u8,
    /// The repair shard: 2 + L bytes.
    pub shard: &'a [u8],
}

impl<'a> RepairPacket<'a> {
    /// Decodes a repair packet payload, checking every field.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let b0 = r.u8()?;
        if b0 >> 5 != VERSION {
            return Err(DecodeError::BadVersion(b0 >> 5));
        }
        if b0 & 0x1f != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        let k = r.u8()?;
        let m = r.u8()?;
        let index = r.u8()?;
        let base_seq = r.u16()?;
        let stride = r.u8()?;
        if r.u8()? != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        let shard = r.take_rest();
        if k == 0
            || m == 0
            || usize::from(k) + usize::from(m) > MAX_SHARDS
            || index >= m
            || stride == 0
            || shard.len() < 2
        {
            return Err(DecodeError::BadFecHeader);
        }
        Ok(Self {
            k,
            m,
            index,
            base_seq,
            stride,
            shard,
        })
    }

    /// The exact number of bytes [`RepairPacket::encode`] writes.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN + self.shard.len()
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_u8(VERSION << 5);
        out.put_u8(self.k);
        out.put_u8(self.m);
        out.put_u8(self.index);
        out.put_u16(self.base_seq);
        out.put_u8(self.stride);
        out.put_u8(0);
        out.put_slice(self.shard);
    }

    /// The sequence number of the group's source `i`.
    #[must_use]
    pub fn source_seq(&self, i: u8) -> u16 {
        self.base_seq
            .wrapping_add(u16::from(i) * u16::from(self.stride))
    }
}

/// Encoder parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncoderConfig {
    /// Sources per group. Default 4.
    pub k: u8,
    /// Repair packets per group. Default 1.
    pub m: u8,
    /// Interleaving depth: groups spread over `stride * k` consecutive packets.
    /// Default 1 (no interleaving); at most 16.
    pub stride: u8,
    /// Longest source packet accepted, in bytes. Default 1,500.
    pub max_packet_len: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            k: 4,
            m: 1,
            stride: 1,
            max_packet_len: 1500,
        }
    }
}

impl EncoderConfig {
    fn validate(&self) -> Result<(), UsageError> {
        if self.k == 0 || self.m == 0 {
            return Err(UsageError::InvalidConfig("k and m must be at least 1"));
        }
        if usize::from(self.k) + usize::from(self.m) > MAX_SHARDS {
            return Err(UsageError::InvalidConfig("k + m must be at most 255"));
        }
        if !(1..=16).contains(&self.stride) {
            return Err(UsageError::InvalidConfig("stride must be 1 to 16"));
        }
        if self.max_packet_len == 0 || self.max_packet_len > usize::from(u16::MAX) {
            return Err(UsageError::InvalidConfig(
                "max_packet_len must be 1 to 65,535",
            ));
        }
        Ok(())
    }
}

/// Builds repair packets over consecutive source packets. Sans-IO.
///
/// Feed every source packet with [`Encoder::push`] in sequence order; after each
/// push, drain [`Encoder::poll_repair`]. A gap in the sequence numbers ends the
/// current block early (as [`Encoder::flush`] does) and starts a new one.
pub struct Encoder {
    config: EncoderConfig,
    /// The block in progress: up to stride * k packets with consecutive numbers.
    block: Vec<Vec<u8>>,
    block_base: u16,
    repairs: VecDeque<Vec<u8>>,
    codecs: BTreeMap<(u8, u8), ReedSolomon>,
}

impl core::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .field("block_len", &self.block.len())
            .field("block_base", &self.block_base)
            .finish_non_exhaustive()
    }
}

fn codec(cache: &mut BTreeMap<(u8, u8), ReedSolomon>, k: u8, m: u8) -> Option<&ReedSolomon> {
    if !cache.contains_key(&(k, m)) {
        // Bounded: at most 16 distinct codes are kept.
        if cache.len() >= 16 {
            cache.clear();
        }
        let rs = ReedSolomon::new(usize::from(k), usize::from(m)).ok()?;
        cache.insert((k, m), rs);
    }
    cache.get(&(k, m))
}

impl Encoder {
    /// A new encoder; fails on an invalid configuration.
    pub fn new(config: EncoderConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            block: Vec::new(),
            block_base: 0,
            repairs: VecDeque::new(),
            codecs: BTreeMap::new(),
        })
    }

    /// The configuration in force.
    #[must_use]
    pub const fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Changes (k, m, stride) from the next block on; the block in progress is flushed.
    pub fn set_config(&mut self, config: EncoderConfig) -> Result<(), Error> {
        config.validate()?;
        self.flush();
        self.config = config;
        Ok(())
    }

    /// One source packet, with its RTP sequence number.
    pub fn push(&mut self, seq: u16, packet: &[u8]) -> Result<(), Error> {
        if packet.len() > self.config.max_packet_len {
            return Err(Limit::PacketTooLong {
                len: packet.len(),
                max: self.config.max_packet_len,
            }
            .into());
        }
        let expected = self
            .block_base
            .wrapping_add(u16::try_from(self.block.len()).unwrap_or(u16::MAX));
        if !self.block.is_empty() && seq != expected {
            self.flush();
        }
        if self.block.is_empty() {
            self.block_base = seq;
        }
        self.block.push(packet.to_vec());
        if self.block.len() == usize::from(self.config.k) * usize::from(self.config.stride) {
            self.flush();
        }
        Ok(())
    }

    /// Ends the block in progress: its groups get their repair packets now, with a
    /// smaller `k` when the block is short.
    pub fn flush(&mut self) {
        let block = core::mem::take(&mut self.block);
        let n = block.len();
        let d = usize::from(self.config.stride);
        let m = self.config.m;
        for g in 0..d.min(n) {
            let members: Vec<&Vec<u8>> = block.iter().skip(g).step_by(d).collect();
            let Ok(k) = u8::try_from(members.len()) else {
                continue;
            };
            let l = members.iter().map(|p| p.len()).max().unwrap_or(0);
            let mut shards: Vec<Vec<u8>> = members
                .iter()
                .map(|p| {
                    let mut s = Vec::with_capacity(2 + l);
                    s.extend_from_slice(&u16::try_from(p.len()).unwrap_or(0).to_be_bytes());
                    s.extend_from_slice(p);
                    s.resize(2 + l, 0);
                    s
                })
                .collect();
            shards.extend((0..m).map(|_| vec![0; 2 + l]));
            let Some(rs) = codec(&mut self.codecs, k, m) else {
                continue;
            };
            if rs.encode(&mut shards).is_err() {
                continue;
            }
            let base_seq = self.block_base.wrapping_add(u16::try_from(g).unwrap_or(0));
            for (index, shard) in (0..m).zip(shards.iter().skip(usize::from(k))) {
                let p = RepairPacket {
                    k,
                    m,
                    index,
                    base_seq,
                    stride: self.config.stride,
                    shard,
                };
                let mut out = BytesMut::new();
                p.encode(&mut out);
                self.repairs.push_back(out.to_vec());
            }
        }
    }

    /// The next repair packet payload to send.
    #[must_use]
    pub fn poll_repair(&mut self) -> Option<Vec<u8>> {
        self.repairs.pop_front()
    }
}

/// Decoder bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecoderConfig {
    /// Source packets remembered for recovery. Default 1,024; older ones are forgotten.
    pub history: usize,
    /// Groups with repair packets waiting for sources. Default 64; the oldest is
    /// dropped when full.
    pub max_groups: usize,
    /// Longest repair shard accepted (2 + longest source). Default 1,502.
    pub max_shard_len: usize,
    /// Largest `m` accepted; with `max_groups` and `max_shard_len` it bounds the
    /// memory held for repair packets (default: 64 * 16 * 1,502 bytes = 1.5 MiB).
    /// Default 16.
    pub max_m: u8,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            history: 1024,
            max_groups: 64,
            max_shard_len: 1502,
            max_m: 16,
        }
    }
}

/// A source packet rebuilt from repair packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Its RTP sequence number.
    pub seq: u16,
    /// Its bytes, exactly as sent.
    pub packet: Vec<u8>,
}

#[derive(Debug)]
struct Group {
    k: u8,
    m: u8,
    stride: u8,
    shard_len: usize,
    repairs: Vec<Option<Vec<u8>>>,
    done: bool,
}

/// Counters of a [`Decoder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Sources rebuilt.
    pub recovered: u64,
    /// Repair packets rejected (malformed, inconsistent with their group, too old).
    pub rejected: u64,
    /// Groups dropped before they could be used (bounds).
    pub evicted: u64,
}

/// Rebuilds lost source packets from repair packets. Sans-IO.
///
/// Feed every received source with [`Decoder::handle_source`] and every repair
/// payload with [`Decoder::handle_repair`]; after each, drain
/// [`Decoder::poll_recovered`]. A source is rebuilt as soon as any `k` of its group's
/// `k + m` packets are in.
pub struct Decoder {
    config: DecoderConfig,
    unwrap: SequenceUnwrapper,
    sources: BTreeMap<u64, Vec<u8>>,
    groups: BTreeMap<(u64, u8, u8, u8), Group>,
    recovered: VecDeque<Recovered>,
    codecs: BTreeMap<(u8, u8), ReedSolomon>,
    stats: DecoderStats,
}

impl core::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .field("sources", &self.sources.len())
            .field("groups", &self.groups.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A new decoder; fails on an invalid configuration.
    pub fn new(config: DecoderConfig) -> Result<Self, Error> {
        if config.history == 0
            || config.max_groups == 0
            || config.max_shard_len < 2
            || config.max_m == 0
        {
            return Err(UsageError::InvalidConfig(
                "history, max_groups must be >= 1, max_shard_len >= 2",
            )
            .into());
        }
        Ok(Self {
            config,
            unwrap: SequenceUnwrapper::new(),
            sources: BTreeMap::new(),
            groups: BTreeMap::new(),
            recovered: VecDeque::new(),
            codecs: BTreeMap::new(),
            stats: DecoderStats::default(),
        })
    }

    /// The counters so far.
    #[must_use]
    pub const fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// A source packet that arrived (or was recovered by other means).
    pub fn handle_source(&mut self, seq: u16, packet: &[u8]) {
        let ext = self.unwrap.unwrap(seq);
        if self.sources.contains_key(&ext) || packet.len() + 2 > self.config.max_shard_len {
            return;
        }
        self.remember(ext, packet.to_vec());
        // Only groups that may contain this sequence number are retried.
        let keys: Vec<_> = self
            .groups
            .iter()
            .filter(|&(&(base, k, _, stride), g)| {
                !g.done
                    && ext >= base
                    && (ext - base).is_multiple_of(u64::from(stride))
                    && (ext - base) / u64::from(stride) < u64::from(k)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.try_recover(key);
        }
    }

    fn remember(&mut self, ext: u64, packet: Vec<u8>) {
        self.sources.insert(ext, packet);
        while self.sources.len() > self.config.history {
            self.sources.pop_first();
        }
    }

    /// One repair packet payload. `Err` means it was rejected; state is unchanged.
    pub fn handle_repair(&mut self, payload: &[u8]) -> Result<(), Error> {
        let p = match RepairPacket::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.stats.rejected += 1;
                return Err(e.into());
            }
        };
        if p.m > self.config.max_m {
            self.stats.rejected += 1;
            return Err(DecodeError::TooMany {
                max: usize::from(self.config.max_m),
            }
            .into());
        }
        if p.shard.len() > self.config.max_shard_len {
            self.stats.rejected += 1;
            return Err(DecodeError::TooLong {
                len: p.shard.len(),
                max: self.config.max_shard_len,
            }
            .into());
        }
        let base = self.unwrap.peek(p.base_seq);
        let key = (base, p.k, p.m, p.stride);
        if !self.groups.contains_key(&key) {
            if self.groups.len() >= self.config.max_groups {
                self.groups.pop_first();
                self.stats.evicted += 1;
            }
            self.groups.insert(
                key,
                Group {
                    k: p.k,
                    m: p.m,
                    stride: p.stride,
                    shard_len: p.shard.len(),
                    repairs: vec![None; usize::from(p.m)],
                    done: false,
                },
            );
        }
        let Some(group) = self.groups.get_mut(&key) else {
            return Ok(());
        };
        if group.shard_len != p.shard.len() {
            self.stats.rejected += 1;
            return Err(DecodeError::BadFecHeader.into());
        }
        if let Some(slot) = group.repairs.get_mut(usize::from(p.index))
            && slot.is_none()
        {
            *slot = Some(p.shard.to_vec());
        }
        self.try_recover(key);
        Ok(())
    }

    fn try_recover(&mut self, key: (u64, u8, u8, u8)) {
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        if group.done {
            return;
        }
        let (base, k, m, stride) = (
            key.0,
            usize::from(group.k),
            usize::from(group.m),
            u64::from(group.stride),
        );
        let seqs: Vec<u64> = (0..k as u64).map(|i| base + i * stride).collect();
        let present_sources = seqs.iter().filter(|s| self.sources.contains_key(s)).count();
        if present_sources == k {
            group.done = true;
            return;
        }
        let present_repairs = group.repairs.iter().filter(|r| r.is_some()).count();
        if present_sources + present_repairs < k {
            return;
        }
        let len = group.shard_len;
        let mut shards: Vec<(Vec<u8>, bool)> = Vec::with_capacity(k + m);
        for s in &seqs {
            match self.sources.get(s) {
                Some(p) if p.len() + 2 <= len => {
                    let mut shard = Vec::with_capacity(len);
                    shard.extend_from_slice(&u16::try_from(p.len()).unwrap_or(0).to_be_bytes());
                    shard.extend_from_slice(p);
                    shard.resize(len, 0);
                    shards.push((shard, true));
                }
                // Absent, or longer than this group's shards (then it is not the
                // packet the sender protected): treat as missing.
                _ => shards.push((vec![0; len], false)),
            }
        }
        for r in &group.repairs {
            match r {
                Some(r) => shards.push((r.clone(), true)),
                None => shards.push((vec![0; len], false)),
            }
        }
        group.done = true;
        let (gk, gm) = (group.k, group.m);
        let Some(rs) = codec(&mut self.codecs, gk, gm) else {
            return;
        };
        if rs.reconstruct_data(&mut shards).is_err() {
            self.stats.rejected += 1;
            return;
        }
        for (s, (shard, _)) in seqs.iter().zip(shards) {
            if self.sources.contains_key(s) {
                continue;
            }
            let Some((len_bytes, rest)) = shard.split_first_chunk::<2>() else {
                continue;
            };
            let plen = usize::from(u16::from_be_bytes(*len_bytes));
            let Some(packet) = rest.get(..plen) else {
                // The repair data was not built from these sources: garbage in.
                self.stats.rejected += 1;
                continue;
            };
            let packet = packet.to_vec();
            self.stats.recovered += 1;
            self.recovered.push_back(Recovered {
                seq: *s as u16,
                packet: packet.clone(),
            });
            self.remember(*s, packet);
        }
    }

    /// The next rebuilt source packet.
    #[must_use]
    pub fn poll_recovered(&mut self) -> Option<Recovered> {
        self.recovered.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const BASE: u16 = 65_530;

    /// Encodes `packets` (sequence numbers from `BASE`, wrapping) and returns the
    /// datagrams in send order: (is_repair, id), ids counting sources and repairs
    /// separately in emission order (block, group, index for repairs).
    fn encode_all(config: EncoderConfig, packets: &[Vec<u8>]) -> Vec<(bool, usize, Vec<u8>)> {
        let mut enc = Encoder::new(config).unwrap();
        let mut sent = Vec::new();
        let mut repairs = 0;
        for (i, p) in packets.iter().enumerate() {
            enc.push(BASE.wrapping_add(i as u16), p).unwrap();
            sent.push((false, i, p.clone()));
            while let Some(rep) = enc.poll_repair() {
                sent.push((true, repairs, rep));
                repairs += 1;
            }
        }
        enc.flush();
        while let Some(rep) = enc.poll_repair() {
            sent.push((true, repairs, rep));
            repairs += 1;
        }
        sent
    }

    fn decode_all(
        sent: &[(bool, usize, Vec<u8>)],
        lost_sources: &BTreeSet<usize>,
        lost_repairs: &BTreeSet<usize>,
    ) -> BTreeMap<usize, Vec<u8>> {
        let mut dec = Decoder::new(DecoderConfig::default()).unwrap();
        let mut got = BTreeMap::new();
        for (is_repair, id, bytes) in sent {
            if *is_repair {
                if !lost_repairs.contains(id) {
                    dec.handle_repair(bytes).unwrap();
                }
            } else if !lost_sources.contains(id) {
                dec.handle_source(BASE.wrapping_add(*id as u16), bytes);
                assert!(got.insert(*id, bytes.clone()).is_none());
            }
            while let Some(r) = dec.poll_recovered() {
                let id = usize::from(r.seq.wrapping_sub(BASE));
                assert!(got.insert(id, r.packet).is_none(), "recovered twice: {id}");
            }
        }
        got
    }

    proptest! {
        #[test]
        fn any_m_losses_per_group_are_recovered_bit_exact(
            k in 1u8..8, m in 1u8..4, stride in 1u8..4, blocks in 1usize..4,
            lens in vec(0usize..100, 1..50), seed in any::<u64>(),
        ) {
            let (kk, mm, d) = (usize::from(k), usize::from(m), usize::from(stride));
            let n = kk * d * blocks;
            let packets: Vec<Vec<u8>> = (0..n)
                .map(|i| (0..lens[i % lens.len()]).map(|j| (i * 31 + j * 7) as u8).collect())
                .collect();
            let sent = encode_all(EncoderConfig { k, m, stride, ..EncoderConfig::default() }, &packets);
            let mut rng = seed | 1;
            let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let (mut lost_sources, mut lost_repairs) = (BTreeSet::new(), BTreeSet::new());
            for b in 0..blocks {
                for g in 0..d {
                    let mut members: Vec<(bool, usize)> = (0..kk).map(|i| (false, b * kk * d + g + i * d)).collect();
                    members.extend((0..mm).map(|j| (true, (b * d + g) * mm + j)));
                    for _ in 0..(next() % (u64::from(m) + 1)) {
                        let (is_rep, id) = members.swap_remove((next() % members.len() as u64) as usize);
                        if is_rep { lost_repairs.insert(id); } else { lost_sources.insert(id); }
                    }
                }
            }
            let got = decode_all(&sent, &lost_sources, &lost_repairs);
            prop_assert_eq!(got.len(), n);
            for (i, p) in packets.iter().enumerate() {
                prop_assert_eq!(got.get(&i), Some(p));
            }
        }

        #[test]
        fn repair_packet_round_trip(k in 1u8..100, m in 1u8..100, index in any::<u8>(), base in any::<u16>(), stride in 1u8..=255, shard in vec(any::<u8>(), 2..64)) {
            let p = RepairPacket { k, m, index: index % m, base_seq: base, stride, shard: &shard };
            let mut out = BytesMut::new();
            p.encode(&mut out);
            prop_assert_eq!(out.len(), p.encoded_len());
            prop_assert_eq!(RepairPacket::decode(&out), Ok(p));
        }

        #[test]
        fn never_panics(b in vec(any::<u8>(), 0..400)) {
            crate::fuzz::fec_packet(&b);
        }
    }

    #[test]
    fn interleaving_recovers_a_burst_of_stride_times_m() {
        let packets: Vec<Vec<u8>> = (0..24).map(|i| vec![i as u8; 10 + i]).collect();
        let sent = encode_all(
            EncoderConfig {
                k: 6,
                m: 1,
                stride: 4,
                ..EncoderConfig::default()
            },
            &packets,
        );
        // Four consecutive sources lost: one per interleaved group.
        let lost: BTreeSet<usize> = (9..13).collect();
        let got = decode_all(&sent, &lost, &BTreeSet::new());
        assert_eq!(got.len(), 24);
    }

    #[test]
    fn more_than_m_losses_recover_nothing_and_do_not_panic() {
        let packets: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 5]).collect();
        let sent = encode_all(EncoderConfig::default(), &packets);
        let got = decode_all(&sent, &[0, 1].into_iter().collect(), &BTreeSet::new());
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn rejects_invalid_headers() {
        assert_eq!(
            RepairPacket::decode(&[0x20, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::BadFecHeader)
        );
        assert_eq!(
            RepairPacket::decode(&[0x20, 1, 1, 1, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::BadFecHeader)
        );
        assert_eq!(
            RepairPacket::decode(&[0x40, 1, 1, 0, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::BadVersion(2))
        );
        assert_eq!(
            RepairPacket::decode(&[0x20, 200, 100, 0, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::BadFecHeader)
        );
        assert!(
            Encoder::new(EncoderConfig {
                k: 200,
                m: 100,
                ..EncoderConfig::default()
            })
            .is_err()
        );
    }
}
