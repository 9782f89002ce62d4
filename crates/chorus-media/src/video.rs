//! RTP payload formats for video: VP8 (RFC 7741) and H.264 (RFC 6184: single NAL
//! unit packets, STAP-A on receive, FU-A fragmentation), with frame reassembly and
//! keyframe detection. The reassembler is bounded: packets per frame, bytes per frame
//! and frames pending all have limits.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeMap;

use chorus_framing::Reader;

use crate::error::{DecodeError, Error, UsageError};
use crate::rtp::SequenceUnwrapper;

/// The video codec of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// VP8, RFC 7741.
    Vp8,
    /// H.264, RFC 6184 (packetization mode 1).
    H264,
}

/// The VP8 payload descriptor (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N: the frame is not a reference frame.
    pub non_reference: bool,
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index (0-7).
    pub partition: u8,
    /// PictureID, 7 or 15 bits (values above 127 use the 15-bit form).
    pub picture_id: Option<u16>,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
    /// TID (0-3) and the Y bit.
    pub tid: Option<(u8, bool)>,
    /// KEYIDX (0-31).
    pub key_idx: Option<u8>,
}

impl Vp8Descriptor {
    /// Decodes the descriptor; returns it and the VP8 payload after it.
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let mut r = Reader::new(bytes);
        let b0 = r.u8()?;
        let mut d = Self {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition: b0 & 0x07,
            ..Self::default()
        };
        if b0 & 0x80 != 0 {
            let x = r.u8()?;
            if x & 0x80 != 0 {
                let p0 = r.u8()?;
                d.picture_id = Some(if p0 & 0x80 != 0 {
                    u16::from(p0 & 0x7f) << 8 | u16::from(r.u8()?)
                } else {
                    u16::from(p0)
                });
            }
            if x & 0x40 != 0 {
                d.tl0_pic_idx = Some(r.u8()?);
            }
            if x & 0x30 != 0 {
                let t = r.u8()?;
                if x & 0x20 != 0 {
                    d.tid = Some((t >> 6, t & 0x20 != 0));
                }
                if x & 0x10 != 0 {
                    d.key_idx = Some(t & 0x1f);
                }
            }
        }
        let payload = r.take_rest();
        if payload.is_empty() {
            return Err(DecodeError::Truncated {
                offset: bytes.len(),
                needed: 1,
            });
        }
        Ok((d, payload))
    }

    /// Appends the descriptor to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let x = self.picture_id.is_some()
            || self.tl0_pic_idx.is_some()
            || self.tid.is_some()
            || self.key_idx.is_some();
        out.push(
            u8::from(x) << 7
                | u8::from(self.non_reference) << 5
                | u8::from(self.start_of_partition) << 4
                | (self.partition & 0x07),
        );
        if !x {
            return;
        }
        out.push(
            u8::from(self.picture_id.is_some()) << 7
                | u8::from(self.tl0_pic_idx.is_some()) << 6
                | u8::from(self.tid.is_some()) << 5
                | u8::from(self.key_idx.is_some()) << 4,
        );
        if let Some(p) = self.picture_id {
            if p > 0x7f {
                out.push(0x80 | ((p >> 8) & 0x7f) as u8);
                out.push(p as u8);
            } else {
                out.push(p as u8);
            }
        }
        if let Some(t) = self.tl0_pic_idx {
            out.push(t);
        }
        if self.tid.is_some() || self.key_idx.is_some() {
            let (tid, y) = self.tid.unwrap_or((0, false));
            out.push((tid & 3) << 6 | u8::from(y) << 5 | (self.key_idx.unwrap_or(0) & 0x1f));
        }
    }
}

/// Splits one encoded frame into RTP payloads of at most `max_payload` bytes.
/// For VP8 each payload starts with a descriptor (S set on the first); for H.264
/// `frame` is an Annex B byte stream (start codes) and each NAL unit goes as a single
/// NAL unit packet or, when too large, as FU-A fragments. Set the RTP marker on the
/// last payload.
pub fn packetize(codec: Codec, frame: &[u8], max_payload: usize) -> Result<Vec<Vec<u8>>, Error> {
    if max_payload < 3 {
        return Err(UsageError::InvalidConfig("max_payload must be at least 3").into());
    }
    let mut out = Vec::new();
    match codec {
        Codec::Vp8 => {
            for (i, chunk) in frame.chunks(max_payload - 1).enumerate() {
                let mut p = Vec::with_capacity(chunk.len() + 1);
                Vp8Descriptor {
                    start_of_partition: i == 0,
                    ..Vp8Descriptor::default()
                }
                .encode(&mut p);
                p.extend_from_slice(chunk);
                out.push(p);
            }
        }
        Codec::H264 => {
            for nal in annex_b_units(frame) {
                let Some((&header, body)) = nal.split_first() else {
                    continue;
                };
                if nal.len() <= max_payload {
                    out.push(nal.to_vec());
                    continue;
                }
                // RFC 6184 §5.8: FU indicator (F, NRI, type 28), FU header (S, E, type).
                let chunks: Vec<&[u8]> = body.chunks(max_payload - 2).collect();
                let last = chunks.len().saturating_sub(1);
                for (i, chunk) in chunks.into_iter().enumerate() {
                    let mut p = Vec::with_capacity(chunk.len() + 2);
                    p.push(header & 0xe0 | 28);
                    p.push(u8::from(i == 0) << 7 | u8::from(i == last) << 6 | header & 0x1f);
                    p.extend_from_slice(chunk);
                    out.push(p);
                }
            }
        }
    }
    Ok(out)
}

/// The NAL units of an Annex B byte stream (separated by 00 00 01 or 00 00 00 01).
fn annex_b_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream.get(i..i + 3) == Some(&[0, 0, 1]) {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(stream.len(), |&next| next - 3);
        // A 4-byte start code leaves a zero at the end of the previous unit.
        while end > s && n + 1 < starts.len() && stream.get(end - 1) == Some(&0) {
            end -= 1;
        }
        if let Some(u) = stream.get(s..end).filter(|u| !u.is_empty()) {
            units.push(u);
        }
    }
    units
}

/// A reassembled video frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP timestamp shared by its packets.
    pub timestamp: u32,
    /// VP8: the frame bytes; H.264: an Annex B stream (4-byte start codes).
    pub data: Vec<u8>,
    /// A keyframe (VP8 P bit clear; H.264 contains an IDR slice).
    pub keyframe: bool,
}

/// Reassembler bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssemblerConfig {
    /// Packets in one frame at most. Default 512.
    pub max_packets: usize,
    /// Bytes in one frame at most. Default 2 MiB.
    pub max_frame_bytes: usize,
    /// Incomplete frames kept at most; the oldest is dropped. Default 8.
    pub max_pending: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            max_packets: 512,
            max_frame_bytes: 2 << 20,
            max_pending: 8,
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    packets: BTreeMap<u64, (bool, Vec<u8>)>,
    bytes: usize,
}

/// Reassembles frames from RTP packets of one video stream. Sans-IO.
///
/// A frame is complete when its packets run without a gap from a packet that starts
/// a frame (VP8 S=1, PID 0; H.264 anything but a non-start FU-A) to the one with the
/// marker bit. A frame the reassembler gives up on is counted in
/// [`Assembler::dropped`]; the application should then send a PLI.
#[derive(Debug)]
pub struct Assembler {
    codec: Codec,
    config: AssemblerConfig,
    seqs: SequenceUnwrapper,
    pending: BTreeMap<u32, Pending>,
    /// Recent packets' timestamps by extended sequence number (at most 1,024): a
    /// frame starts right after a packet of another frame.
    seen: BTreeMap<u64, u32>,
    dropped: u64,
}

impl Assembler {
    /// A reassembler for `codec`.
    #[must_use]
    pub fn new(codec: Codec, config: AssemblerConfig) -> Self {
        Self {
            codec,
            config,
            seqs: SequenceUnwrapper::new(),
            pending: BTreeMap::new(),
            seen: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Frames given up (bounds or damaged payloads).
    #[must_use]
    pub const fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One RTP packet's fields. Returns a frame when this packet completes one.
    pub fn handle_packet(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Frame>, Error> {
        let ext = self.seqs.unwrap(seq);
        self.seen.insert(ext, timestamp);
        while self.seen.len() > 1024 {
            self.seen.pop_first();
        }
        if !self.pending.contains_key(&timestamp) && self.pending.len() >= self.config.max_pending {
            // Drop the frame with the smallest first sequence number: the oldest.
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.packets.keys().next().copied().unwrap_or(0))
                .map(|(ts, _)| *ts);
            if let Some(ts) = oldest {
                self.pending.remove(&ts);
                self.dropped += 1;
            }
        }
        let frame = self.pending.entry(timestamp).or_default();
        if frame.packets.len() >= self.config.max_packets
            || frame.bytes + payload.len() > self.config.max_frame_bytes
        {
            self.pending.remove(&timestamp);
            self.dropped += 1;
            return Err(DecodeError::TooLong {
                len: payload.len(),
                max: self.config.max_frame_bytes,
            }
            .into());
        }
        if frame
            .packets
            .insert(ext, (marker, payload.to_vec()))
            .is_none()
        {
            frame.bytes += payload.len();
        }
        self.try_complete(timestamp)
    }

    fn starts_frame(&self, first: u64, timestamp: u32, payload: &[u8]) -> bool {
        // The packet before belongs to another frame: this one starts a frame.
        if let Some(&ts) = first.checked_sub(1).and_then(|p| self.seen.get(&p)) {
            return ts != timestamp && self.payload_can_start(payload);
        }
        match self.codec {
            // VP8 marks the start exactly.
            Codec::Vp8 => self.payload_can_start(payload),
            // H.264 does not: without the previous packet, only the stream's first
            // packet so far is taken as a start.
            Codec::H264 => {
                self.seen
                    .first_key_value()
                    .is_some_and(|(&lowest, _)| lowest == first)
                    && self.payload_can_start(payload)
            }
        }
    }

    fn payload_can_start(&self, payload: &[u8]) -> bool {
        match self.codec {
            Codec::Vp8 => Vp8Descriptor::decode(payload)
                .is_ok_and(|(d, _)| d.start_of_partition && d.partition == 0),
            Codec::H264 => match payload {
                [h, fu, ..] if h & 0x1f == 28 => fu & 0x80 != 0,
                [_, ..] => true,
                [] => false,
            },
        }
    }

    fn try_complete(&mut self, timestamp: u32) -> Result<Option<Frame>, Error> {
        let Some(frame) = self.pending.get(&timestamp) else {
            return Ok(None);
        };
        let Some((&first, (_, first_payload))) = frame.packets.first_key_value() else {
            return Ok(None);
        };
        let Some((&last, &(marker, _))) = frame.packets.last_key_value() else {
            return Ok(None);
        };
        let contiguous =
            usize::try_from(last - first).is_ok_and(|span| span + 1 == frame.packets.len());
        if !marker || !contiguous || !self.starts_frame(first, timestamp, first_payload) {
            return Ok(None);
        }
        let Some(frame) = self.pending.remove(&timestamp) else {
            return Ok(None);
        };
        match self.assemble(timestamp, frame) {
            Ok(f) => Ok(Some(f)),
            Err(e) => {
                self.dropped += 1;
                Err(e.into())
            }
        }
    }

    fn assemble(&self, timestamp: u32, frame: Pending) -> Result<Frame, DecodeError> {
        let mut data = Vec::with_capacity(frame.bytes + 64);
        let mut keyframe = false;
        match self.codec {
            Codec::Vp8 => {
                for (i, (_, payload)) in frame.packets.values().enumerate() {
                    let (d, body) = Vp8Descriptor::decode(payload)?;
                    if i == 0 {
                        // RFC 7741 §4.3: the P bit of the VP8 payload header, 0 = key.
                        keyframe = d.start_of_partition
                            && d.partition == 0
                            && body.first().is_some_and(|b| b & 0x01 == 0);
                    }
                    data.extend_from_slice(body);
                }
            }
            Codec::H264 => {
                let mut in_fu = false;
                for (_, payload) in frame.packets.values() {
                    let (&h, rest) = payload.split_first().ok_or(DecodeError::Truncated {
                        offset: 0,
                        needed: 1,
                    })?;
                    let mut push_nal = |nal_header: u8, body: &[u8], data: &mut Vec<u8>| {
                        data.extend_from_slice(&[0, 0, 0, 1, nal_header]);
                        data.extend_from_slice(body);
                        if nal_header & 0x1f == 5 {
                            keyframe = true;
                        }
                    };
                    match h & 0x1f {
                        1..=23 => push_nal(h, rest, &mut data),
                        24 => {
                            // STAP-A (RFC 6184 §5.7.1): 16-bit size, NAL unit, repeated.
                            let mut r = Reader::new(rest);
                            while !r.is_empty() {
                                let n = usize::from(r.u16()?);
                                let nal = r.take(n)?;
                                let (&nh, body) =
                                    nal.split_first().ok_or(DecodeError::Truncated {
                                        offset: 0,
                                        needed: 1,
                                    })?;
                                push_nal(nh, body, &mut data);
                            }
                        }
                        28 => {
                            let (&fu, body) = rest.split_first().ok_or(DecodeError::Truncated {
                                offset: 1,
                                needed: 1,
                            })?;
                            if fu & 0x80 != 0 {
                                push_nal(h & 0xe0 | fu & 0x1f, body, &mut data);
                                in_fu = fu & 0x40 == 0;
                            } else if in_fu {
                                data.extend_from_slice(body);
                                in_fu = fu & 0x40 == 0;
                            } else {
                                return Err(DecodeError::BadExtension);
                            }
                        }
                        _ => return Err(DecodeError::BadRtcpType(h & 0x1f)),
                    }
                }
            }
        }
        Ok(Frame {
            timestamp,
            data,
            keyframe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn run(codec: Codec, frame: &[u8], mtu: usize, order: &[usize]) -> Option<Frame> {
        let payloads = packetize(codec, frame, mtu).unwrap();
        let mut a = Assembler::new(codec, AssemblerConfig::default());
        // The previous frame's last packet, as in a running stream.
        let previous = match codec {
            Codec::Vp8 => vec![0x10, 0x01],
            Codec::H264 => vec![0x61, 0x80],
        };
        assert!(
            a.handle_packet(65_529, 87_000, true, &previous)
                .unwrap()
                .is_some()
        );
        let mut out = None;
        let n = payloads.len();
        for &i in order.iter().filter(|&&i| i < n).chain(
            (0..n)
                .filter(|i| !order.contains(i))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            if let Some(f) = a
                .handle_packet(
                    65_530u16.wrapping_add(i as u16),
                    90_000,
                    i + 1 == n,
                    &payloads[i],
                )
                .unwrap()
            {
                out = Some(f);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn vp8_frames_reassemble_in_any_order(body in vec(any::<u8>(), 1..3000), mtu in 20usize..1200, order in vec(0usize..200, 0..50)) {
            let f = run(Codec::Vp8, &body, mtu, &order).unwrap();
            prop_assert_eq!(f.data, body.clone());
            prop_assert_eq!(f.keyframe, body[0] & 1 == 0);
        }

        #[test]
        fn h264_frames_reassemble_in_any_order(nals in vec((1u8..=23, vec(any::<u8>(), 1..2000)), 1..5), mtu in 20usize..1200, order in vec(0usize..200, 0..50)) {
            // Build an Annex B stream whose NAL bodies contain no start-code patterns.
            let mut stream = Vec::new();
            for (t, body) in &nals {
                stream.extend_from_slice(&[0, 0, 0, 1, 0x60 | t]);
                stream.extend(body.iter().map(|b| b | 0x80));
            }
            let f = run(Codec::H264, &stream, mtu, &order).unwrap();
            prop_assert_eq!(&f.data, &stream);
            prop_assert_eq!(f.keyframe, nals.iter().any(|(t, _)| *t == 5));
        }

        #[test]
        fn vp8_descriptor_round_trip(n in any::<bool>(), s in any::<bool>(), pid in 0u8..8, pic in proptest::option::of(0u16..0x8000), tl0 in proptest::option::of(any::<u8>()), tid in proptest::option::of((0u8..4, any::<bool>())), key in proptest::option::of(0u8..32)) {
            let d = Vp8Descriptor { non_reference: n, start_of_partition: s, partition: pid, picture_id: pic, tl0_pic_idx: tl0, tid, key_idx: key };
            let mut out = Vec::new();
            d.encode(&mut out);
            out.push(0x9d);
            prop_assert_eq!(Vp8Descriptor::decode(&out), Ok((d, &[0x9d][..])));
        }

        #[test]
        fn fuzz_entry_never_panics(b in vec(any::<u8>(), 0..600)) {
            crate::fuzz::video_packets(&b);
        }

        #[test]
        fn arbitrary_packets_never_panic(packets in vec((any::<u16>(), any::<bool>(), vec(any::<u8>(), 0..40)), 0..40)) {
            for codec in [Codec::Vp8, Codec::H264] {
                let mut a = Assembler::new(codec, AssemblerConfig { max_packets: 8, max_frame_bytes: 200, max_pending: 2 });
                for (seq, marker, p) in &packets {
                    let _ = a.handle_packet(*seq, u32::from(*seq % 3), *marker, p);
                }
                prop_assert!(a.pending.len() <= 2);
            }
        }
    }
}
