//! RTCP packets (RFC 3550 §6.4-§6.6) and feedback (RFC 4585 §6.2.1 generic NACK,
//! §6.3.1 PLI; RFC 5104 §4.3.1 FIR; draft-alvestrand-rmcat-remb REMB), single or
//! compound.
//!
//! Every RTCP packet starts with the same word (RFC 3550 §6.4.1):
//!
//! ```text
//! |V=2|P|  count  |      PT       |   length (32-bit words - 1)   |
//! ```
//!
//! Extended reports (RFC 3611) are in [`xr`]: the XR packet and its Loss RLE block.
//!
//! Types this module does not know are kept as [`Packet::Unknown`] (RFC 3550 §6.1:
//! receivers ignore them), so a compound packet with an APP part still decodes.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use bytes::{BufMut, BytesMut};
use chorus_framing::Reader;

use crate::error::{DecodeError, UsageError};

pub mod xr;
use xr::{PT_XR, XrBlock};

/// RTCP packet type: sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type: receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type: source description.
pub const PT_SDES: u8 = 202;
/// RTCP packet type: goodbye.
pub const PT_BYE: u8 = 203;
/// RTCP packet type: transport-layer feedback (RFC 4585).
pub const PT_RTPFB: u8 = 205;
/// RTCP packet type: payload-specific feedback (RFC 4585).
pub const PT_PSFB: u8 = 206;
/// PSFB format: picture loss indication (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB format: full intra request (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;
/// PSFB format: application layer feedback (RFC 4585 §6.4), which REMB uses.
pub const FMT_AFB: u8 = 15;
/// The unique identifier that starts a REMB message (draft-alvestrand-rmcat-remb §2.2).
pub const REMB_ID: [u8; 4] = *b"REMB";
/// SDES item type CNAME (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;

/// Bounds on what one compound packet may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Maximum RTCP packets in one compound packet. Default 16.
    pub max_packets: usize,
    /// Maximum SDES items per chunk. Default 16.
    pub max_sdes_items: usize,
    /// Maximum generic NACK entries in one feedback packet. Default 256.
    pub max_nack_entries: usize,
    /// Maximum FIR entries in one FIR packet and SSRCs in one REMB. Default 64.
    pub max_fci_entries: usize,
    /// Maximum report blocks in one XR packet. Default 16.
    pub max_xr_blocks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packets: 16,
            max_sdes_items: 16,
            max_nack_entries: 256,
            max_fci_entries: 64,
            max_xr_blocks: 16,
        }
    }
}

/// A reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, a signed 24-bit value (duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR), or 0.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (DLSR).
    pub delay_since_last_sr: u32,
}

/// Sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP wallclock timestamp (64-bit fixed point).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// One SDES chunk: a source and its items (type, text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: u32,
    /// Items: (type, value), types 1-255, values up to 255 bytes.
    pub items: Vec<(u8, &'a [u8])>,
}

/// One generic NACK entry (RFC 4585 §6.2.1): a lost packet id and a bitmask of the 16
/// following ones also lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackEntry {
    /// Packet id (sequence number) of a lost packet.
    pub pid: u16,
    /// Bit i set: packet `pid + i + 1` is lost too.
    pub blp: u16,
}

impl NackEntry {
    /// Packs sorted or unsorted lost sequence numbers into as few entries as possible.
    #[must_use]
    pub fn from_lost(lost: &[u16]) -> Vec<Self> {
        let mut sorted = lost.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out: Vec<Self> = Vec::new();
        for seq in sorted {
            if let Some(last) = out.last_mut() {
                let d = seq.wrapping_sub(last.pid);
                if (1..=16).contains(&d) {
                    last.blp |= 1 << (d - 1);
                    continue;
                }
            }
            out.push(Self { pid: seq, blp: 0 });
        }
        out
    }

    /// The sequence numbers this entry names as lost.
    pub fn lost(self) -> impl Iterator<Item = u16> {
        core::iter::once(self.pid).chain(
            (0..16u16)
                .filter(move |i| self.blp & (1 << i) != 0)
                .map(move |i| self.pid.wrapping_add(i + 1)),
        )
    }
}

/// One FIR entry (RFC 5104 §4.3.1.1): the media sender asked for a decoder refresh
/// point, and a sequence number that the requester increments per new request (so
/// that a repeated FIR is not acted on twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirEntry {
    /// The media sender that should send a keyframe.
    pub ssrc: u32,
    /// The command sequence number (modulo 256).
    pub seq: u8,
}

/// A REMB bitrate (draft-alvestrand-rmcat-remb §2.2): an 18-bit mantissa and a 6-bit
/// exponent, bitrate = mantissa * 2^exponent bits per second. Kept in its wire form so
/// that decoding and re-encoding are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RembBitrate {
    /// 6-bit exponent (0-63).
    pub exponent: u8,
    /// 18-bit mantissa.
    pub mantissa: u32,
}

impl RembBitrate {
    /// The nearest representable bitrate at or below `bps`.
    #[must_use]
    pub fn from_bps(bps: u64) -> Self {
        let mut exponent = 0u8;
        let mut mantissa = bps;
        while mantissa >= 1 << 18 {
            mantissa >>= 1;
            exponent += 1;
        }
        Self {
            exponent,
            // Below 2^18 after the loop.
            mantissa: mantissa as u32,
        }
    }

    /// The bitrate in bits per second, saturating at `u64::MAX`.
    #[must_use]
    pub fn bps(self) -> u64 {
        let m = u64::from(self.mantissa & 0x3_ffff);
        let e = u32::from(self.exponent & 0x3f);
        if m == 0 {
            0
        } else if m.leading_zeros() < e {
            u64::MAX
        } else {
            m << e
        }
    }
}

/// One RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packet<'a> {
    /// Sender report (PT 200).
    SenderReport {
        /// The sender.
        ssrc: u32,
        /// What it sent.
        info: SenderInfo,
        /// Reception reports, at most 31.
        reports: Vec<ReportBlock>,
    },
    /// Receiver report (PT 201).
    ReceiverReport {
        /// The reporter.
        ssrc: u32,
        /// Reception reports, at most 31.
        reports: Vec<ReportBlock>,
    },
    /// Source description (PT 202).
    Sdes(Vec<SdesChunk<'a>>),
    /// Goodbye (PT 203).
    Bye {
        /// Sources leaving, at most 31.
        sources: Vec<u32>,
        /// Optional reason text, up to 255 bytes.
        reason: Option<&'a [u8]>,
    },
    /// Generic NACK (PT 205, FMT 1).
    Nack {
        /// The sender of this feedback.
        sender_ssrc: u32,
        /// The media source the losses are on.
        media_ssrc: u32,
        /// Lost packets.
        entries: Vec<NackEntry>,
    },
    /// Picture loss indication (PT 206, FMT 1).
    Pli {
        /// The sender of this feedback.
        sender_ssrc: u32,
        /// The media source that should send a keyframe.
        media_ssrc: u32,
    },
    /// Full intra request (PT 206, FMT 4; RFC 5104 §4.3.1). The media source field of
    /// the common header is zero (§4.3.1.2); the targets are in the entries.
    Fir {
        /// The sender of this feedback.
        sender_ssrc: u32,
        /// The media senders asked for a keyframe, at least one.
        entries: Vec<FirEntry>,
    },
    /// Receiver estimated maximum bitrate (PT 206, FMT 15, "REMB";
    /// draft-alvestrand-rmcat-remb §2.2): the total bitrate the sender of this packet
    /// estimates it can receive for the listed media sources.
    Remb {
        /// The sender of this feedback.
        sender_ssrc: u32,
        /// The estimate.
        bitrate: RembBitrate,
        /// The media sources the estimate applies to, at most 255.
        ssrcs: Vec<u32>,
    },
    /// Extended report (PT 207, RFC 3611); see [`xr`].
    Xr {
        /// The reporter.
        ssrc: u32,
        /// Its report blocks.
        blocks: Vec<XrBlock<'a>>,
    },
    /// Any other type or feedback format, kept verbatim (body after the first word).
    Unknown {
        /// The packet type.
        packet_type: u8,
        /// The 5-bit count / format field.
        count: u8,
        /// The body, a multiple of 4 bytes.
        body: &'a [u8],
    },
}

fn write_block(b: &ReportBlock, out: &mut BytesMut) {
    out.put_u32(b.ssrc);
    out.put_u8(b.fraction_lost);
    // 24-bit two's complement, clamped to its range (RFC 3550 §6.4.1).
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff);
    out.put_uint(u64::from(lost.cast_unsigned() & 0x00ff_ffff), 3);
    out.put_u32(b.highest_seq);
    out.put_u32(b.jitter);
    out.put_u32(b.last_sr);
    out.put_u32(b.delay_since_last_sr);
}

fn read_block(r: &mut Reader<'_>) -> Result<ReportBlock, DecodeError> {
    let ssrc = r.u32()?;
    let word = r.u32()?;
    let lost24 = word & 0x00ff_ffff;
    // Sign-extend from 24 bits.
    let cumulative_lost = ((lost24 << 8).cast_signed()) >> 8;
    Ok(ReportBlock {
        ssrc,
        fraction_lost: (word >> 24) as u8,
        cumulative_lost,
        highest_seq: r.u32()?,
        jitter: r.u32()?,
        last_sr: r.u32()?,
        delay_since_last_sr: r.u32()?,
    })
}

fn sdes_chunk_len(c: &SdesChunk<'_>) -> usize {
    // ssrc + items + the terminating zero, padded to a word.
    let raw = 4 + c.items.iter().map(|(_, v)| 2 + v.len()).sum::<usize>() + 1;
    raw.div_ceil(4) * 4
}

impl<'a> Packet<'a> {
    fn body_len(&self) -> usize {
        match self {
            Self::SenderReport { reports, .. } => 24 + 24 * reports.len(),
            Self::ReceiverReport { reports, .. } => 4 + 24 * reports.len(),
            Self::Sdes(chunks) => chunks.iter().map(sdes_chunk_len).sum(),
            Self::Bye { sources, reason } => {
                4 * sources.len() + reason.map_or(0, |r| (1 + r.len()).div_ceil(4) * 4)
            }
            Self::Nack { entries, .. } => 8 + 4 * entries.len(),
            Self::Pli { .. } => 8,
            Self::Fir { entries, .. } => 8 + 8 * entries.len(),
            Self::Remb { ssrcs, .. } => 16 + 4 * ssrcs.len(),
            Self::Xr { blocks, .. } => xr::body_len(blocks),
            Self::Unknown { body, .. } => body.len(),
        }
    }

    /// The exact number of bytes [`Packet::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        4 + self.body_len()
    }

    fn header(&self) -> Result<(u8, u8), UsageError> {
        let count = |n: usize| {
            u8::try_from(n)
                .ok()
                .filter(|&c| c <= 31)
                .ok_or(UsageError::TooManyItems)
        };
        Ok(match self {
            Self::SenderReport { reports, .. } => (count(reports.len())?, PT_SR),
            Self::ReceiverReport { reports, .. } => (count(reports.len())?, PT_RR),
            Self::Sdes(chunks) => (count(chunks.len())?, PT_SDES),
            Self::Bye { sources, .. } => (count(sources.len())?, PT_BYE),
            Self::Nack { .. } => (1, PT_RTPFB),
            Self::Pli { .. } => (FMT_PLI, PT_PSFB),
            Self::Fir { entries, .. } => {
                if entries.is_empty() {
                    return Err(UsageError::TooManyItems);
                }
                (FMT_FIR, PT_PSFB)
            }
            Self::Remb { ssrcs, bitrate, .. } => {
                if ssrcs.len() > 255 || bitrate.exponent > 63 || bitrate.mantissa >= 1 << 18 {
                    return Err(UsageError::TooManyItems);
                }
                (FMT_AFB, PT_PSFB)
            }
            // RFC 3611 §2: the count field is reserved, zero.
            Self::Xr { .. } => (0, PT_XR),
            Self::Unknown {
                packet_type,
                count: c,
                ..
            } => (count(usize::from(*c))?, *packet_type),
        })
    }

    /// Appends the packet to `out`: exactly [`Packet::encoded_len`] bytes.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), UsageError> {
        let (count, pt) = self.header()?;
        let len = self.encoded_len();
        if !len.is_multiple_of(4) || len / 4 - 1 > usize::from(u16::MAX) {
            return Err(UsageError::BadExtensionLength);
        }
        if let Self::Sdes(chunks) = self
            && chunks
                .iter()
                .flat_map(|c| &c.items)
                .any(|(t, v)| *t == 0 || v.len() > 255)
        {
            return Err(UsageError::TextTooLong);
        }
        if let Self::Bye {
            reason: Some(r), ..
        } = self
            && r.len() > 255
        {
            return Err(UsageError::TextTooLong);
        }
        out.reserve(len);
        out.put_u8(0x80 | count);
        out.put_u8(pt);
        out.put_u16(u16::try_from(len / 4 - 1).map_err(|_| UsageError::BadExtensionLength)?);
        match self {
            Self::SenderReport {
                ssrc,
                info,
                reports,
            } => {
                out.put_u32(*ssrc);
                out.put_u64(info.ntp);
                out.put_u32(info.rtp_timestamp);
                out.put_u32(info.packet_count);
                out.put_u32(info.octet_count);
                reports.iter().for_each(|b| write_block(b, out));
            }
            Self::ReceiverReport { ssrc, reports } => {
                out.put_u32(*ssrc);
                reports.iter().for_each(|b| write_block(b, out));
            }
            Self::Sdes(chunks) => {
                for c in chunks {
                    let start = out.len();
                    out.put_u32(c.ssrc);
                    for (t, v) in &c.items {
                        out.put_u8(*t);
                        out.put_u8(v.len() as u8); // checked <= 255 above
                        out.put_slice(v);
                    }
                    let written = out.len() - start;
                    out.put_bytes(0, sdes_chunk_len(c) - written);
                }
            }
            Self::Bye { sources, reason } => {
                sources.iter().for_each(|s| out.put_u32(*s));
                if let Some(r) = reason {
                    out.put_u8(r.len() as u8); // checked <= 255 above
                    out.put_slice(r);
                    let pad = (1 + r.len()).div_ceil(4) * 4 - (1 + r.len());
                    out.put_bytes(0, pad);
                }
            }
            Self::Nack {
                sender_ssrc,
                media_ssrc,
                entries,
            } => {
                out.put_u32(*sender_ssrc);
                out.put_u32(*media_ssrc);
                for e in entries {
                    out.put_u16(e.pid);
                    out.put_u16(e.blp);
                }
            }
            Self::Pli {
                sender_ssrc,
                media_ssrc,
            } => {
                out.put_u32(*sender_ssrc);
                out.put_u32(*media_ssrc);
            }
            Self::Fir {
                sender_ssrc,
                entries,
            } => {
                out.put_u32(*sender_ssrc);
                out.put_u32(0);
                for e in entries {
                    out.put_u32(e.ssrc);
                    out.put_u8(e.seq);
                    out.put_bytes(0, 3);
                }
            }
            Self::Remb {
                sender_ssrc,
                bitrate,
                ssrcs,
            } => {
                out.put_u32(*sender_ssrc);
                out.put_u32(0);
                out.put_slice(&REMB_ID);
                out.put_u8(ssrcs.len() as u8); // checked <= 255 in header()
                out.put_u8(bitrate.exponent << 2 | (bitrate.mantissa >> 16) as u8);
                out.put_u16(bitrate.mantissa as u16);
                ssrcs.iter().for_each(|s| out.put_u32(*s));
            }
            Self::Xr { ssrc, blocks } => xr::encode_body(*ssrc, blocks, out)?,
            Self::Unknown { body, .. } => out.put_slice(body),
        }
        Ok(())
    }

    /// Decodes one RTCP packet from the start of `bytes`; returns it and the bytes
    /// after it. Padding (P bit) is checked and removed.
    pub fn decode_one(bytes: &'a [u8], limits: &Limits) -> Result<(Self, &'a [u8]), DecodeError> {
        let mut r = Reader::new(bytes);
        let b0 = r.u8()?;
        let pt = r.u8()?;
        let words = r.u16()?;
        if b0 >> 6 != 2 {
            return Err(DecodeError::BadVersion(b0 >> 6));
        }
        let count = b0 & 0x1f;
        let mut body = r.take(usize::from(words) * 4)?;
        let rest = r.take_rest();
        if b0 & 0x20 != 0 {
            let (&pad, _) = body.split_last().ok_or(DecodeError::BadPadding(0))?;
            if pad == 0 || usize::from(pad) > body.len() {
                return Err(DecodeError::BadPadding(pad));
            }
            body = body
                .get(..body.len() - usize::from(pad))
                .ok_or(DecodeError::BadPadding(pad))?;
        }
        let bad_len = DecodeError::BadRtcpLength { packet_type: pt };
        let mut r = Reader::new(body);
        let packet = match pt {
            PT_SR | PT_RR => {
                let ssrc = r.u32().map_err(|_| bad_len)?;
                let info = if pt == PT_SR {
                    Some(SenderInfo {
                        ntp: r.u64().map_err(|_| bad_len)?,
                        rtp_timestamp: r.u32().map_err(|_| bad_len)?,
                        packet_count: r.u32().map_err(|_| bad_len)?,
                        octet_count: r.u32().map_err(|_| bad_len)?,
                    })
                } else {
                    None
                };
                let mut reports = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    reports.push(read_block(&mut r).map_err(|_| bad_len)?);
                }
                // Profile-specific extensions after the blocks are ignored (§6.4.1).
                match info {
                    Some(info) => Self::SenderReport {
                        ssrc,
                        info,
                        reports,
                    },
                    None => Self::ReceiverReport { ssrc, reports },
                }
            }
            PT_SDES => {
                let mut chunks = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let start = r.consumed();
                    let ssrc = r.u32().map_err(|_| bad_len)?;
                    let mut items = Vec::new();
                    loop {
                        let t = r.u8().map_err(|_| bad_len)?;
                        if t == 0 {
                            break;
                        }
                        if items.len() >= limits.max_sdes_items {
                            return Err(DecodeError::TooMany {
                                max: limits.max_sdes_items,
                            });
                        }
                        let len = r.u8().map_err(|_| bad_len)?;
                        items.push((t, r.take(usize::from(len)).map_err(|_| bad_len)?));
                    }
                    // Chunks end on a word boundary (the null item plus padding).
                    let used = r.consumed() - start;
                    r.skip(used.div_ceil(4) * 4 - used).map_err(|_| bad_len)?;
                    chunks.push(SdesChunk { ssrc, items });
                }
                Self::Sdes(chunks)
            }
            PT_BYE => {
                let mut sources = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    sources.push(r.u32().map_err(|_| bad_len)?);
                }
                let reason = if r.is_empty() {
                    None
                } else {
                    let len = r.u8()?;
                    Some(r.take(usize::from(len)).map_err(|_| bad_len)?)
                };
                Self::Bye { sources, reason }
            }
            PT_RTPFB if count == 1 => {
                let sender_ssrc = r.u32().map_err(|_| bad_len)?;
                let media_ssrc = r.u32().map_err(|_| bad_len)?;
                let n = r.remaining() / 4;
                if n > limits.max_nack_entries {
                    return Err(DecodeError::TooMany {
                        max: limits.max_nack_entries,
                    });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(NackEntry {
                        pid: r.u16()?,
                        blp: r.u16()?,
                    });
                }
                Self::Nack {
                    sender_ssrc,
                    media_ssrc,
                    entries,
                }
            }
            PT_PSFB if count == FMT_FIR => {
                let sender_ssrc = r.u32().map_err(|_| bad_len)?;
                // RFC 5104 §4.3.1.2: the media source field is unused and zero.
                if r.u32().map_err(|_| bad_len)? != 0 {
                    return Err(DecodeError::ReservedNotZero);
                }
                if !r.remaining().is_multiple_of(8) || r.is_empty() {
                    return Err(bad_len);
                }
                let n = r.remaining() / 8;
                if n > limits.max_fci_entries {
                    return Err(DecodeError::TooMany {
                        max: limits.max_fci_entries,
                    });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let ssrc = r.u32()?;
                    let seq = r.u8()?;
                    // The 24 reserved bits: senders set them to zero, receivers ignore
                    // them (§4.3.1.1); re-encoding writes zeros.
                    r.skip(3)?;
                    entries.push(FirEntry { ssrc, seq });
                }
                Self::Fir {
                    sender_ssrc,
                    entries,
                }
            }
            PT_PSFB if count == FMT_AFB && body.get(8..12) == Some(&REMB_ID[..]) => {
                let sender_ssrc = r.u32().map_err(|_| bad_len)?;
                if r.u32().map_err(|_| bad_len)? != 0 {
                    return Err(DecodeError::ReservedNotZero);
                }
                r.skip(4).map_err(|_| bad_len)?;
                let num = usize::from(r.u8().map_err(|_| bad_len)?);
                let b = r.u8().map_err(|_| bad_len)?;
                let low = r.u16().map_err(|_| bad_len)?;
                if num > limits.max_fci_entries {
                    return Err(DecodeError::TooMany {
                        max: limits.max_fci_entries,
                    });
                }
                if r.remaining() != 4 * num {
                    return Err(bad_len);
                }
                let mut ssrcs = Vec::with_capacity(num);
                for _ in 0..num {
                    ssrcs.push(r.u32()?);
                }
                Self::Remb {
                    sender_ssrc,
                    bitrate: RembBitrate {
                        exponent: b >> 2,
                        mantissa: u32::from(b & 0x03) << 16 | u32::from(low),
                    },
                    ssrcs,
                }
            }
            PT_XR => {
                let (ssrc, blocks) = xr::decode_body(body, limits.max_xr_blocks)?;
                Self::Xr { ssrc, blocks }
            }
            PT_PSFB if count == FMT_PLI => {
                if body.len() != 8 {
                    return Err(bad_len);
                }
                Self::Pli {
                    sender_ssrc: r.u32()?,
                    media_ssrc: r.u32()?,
                }
            }
            _ => {
                // Keep the body verbatim, padded-out form: a multiple of 4 bytes.
                if !body.len().is_multiple_of(4) {
                    return Err(bad_len);
                }
                Self::Unknown {
                    packet_type: pt,
                    count,
                    body,
                }
            }
        };
        Ok((packet, rest))
    }
}

/// Decodes a compound RTCP packet (RFC 3550 §6.1): one or more packets back to back.
/// Reduced-size RTCP (RFC 5506) is accepted: the first packet need not be SR or RR.
pub fn decode_compound<'a>(
    mut bytes: &'a [u8],
    limits: &Limits,
) -> Result<Vec<Packet<'a>>, DecodeError> {
    let mut out = Vec::new();
    if bytes.is_empty() {
        return Err(DecodeError::Truncated {
            offset: 0,
            needed: 4,
        });
    }
    while !bytes.is_empty() {
        if out.len() >= limits.max_packets {
            return Err(DecodeError::TooMany {
                max: limits.max_packets,
            });
        }
        let (p, rest) = Packet::decode_one(bytes, limits)?;
        out.push(p);
        bytes = rest;
    }
    Ok(out)
}

/// Encodes `packets` back to back as one compound packet.
pub fn encode_compound(packets: &[Packet<'_>], out: &mut BytesMut) -> Result<(), UsageError> {
    packets.iter().try_for_each(|p| p.encode(out))
}

/// The middle 32 bits of a 64-bit NTP timestamp, as carried in LSR (RFC 3550 §6.4.1).
#[must_use]
pub const fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// The LSR and DLSR fields of a report block sent at `now` (RFC 3550 §6.4.1), from
/// the last SR received from its source: that SR's NTP middle bits and when it
/// arrived. DLSR counts 1/65,536 s; both are 0 before any SR.
#[must_use]
pub fn last_sr_fields(
    last_sr: Option<(u32, std::time::Instant)>,
    now: std::time::Instant,
) -> (u32, u32) {
    last_sr.map_or((0, 0), |(lsr, at)| {
        let d = now.saturating_duration_since(at);
        let dlsr = u32::try_from(d.as_nanos() * 65_536 / 1_000_000_000).unwrap_or(u32::MAX);
        (lsr, dlsr)
    })
}

/// Round-trip time from a report block (RFC 3550 §6.4.1, figure 2): `arrival` is the
/// middle 32 bits of the NTP time the report arrived. `None` when the block carries
/// no LSR or the result would be negative.
#[must_use]
pub fn round_trip_time(arrival: u32, block: &ReportBlock) -> Option<core::time::Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let rtt = arrival
        .checked_sub(block.last_sr)?
        .checked_sub(block.delay_since_last_sr)?;
    Some(core::time::Duration::from_nanos(
        u64::from(rtt) * 1_000_000_000 / 65_536,
    ))
}

/// The RTCP transmission interval of RFC 3550 §6.3.1 (algorithm of appendix A.7).
///
/// `rtcp_bps` is the RTCP share of the session bandwidth (5 % of it, RFC 3550 §6.2),
/// `avg_rtcp_size` the average compound packet size in octets (with UDP/IP headers),
/// `initial` whether no packet was sent yet (the minimum is halved), and `random` a
/// value in [0, 1) drawn by the caller (the interval is spread over [0.5, 1.5] times
/// its value to avoid synchronisation). Deterministic given its inputs.
#[must_use]
pub fn report_interval(
    members: u32,
    senders: u32,
    we_sent: bool,
    rtcp_bps: f64,
    avg_rtcp_size: f64,
    initial: bool,
    random: f64,
) -> core::time::Duration {
    const MIN_TIME: f64 = 5.0;
    // e - 3/2: compensates for the timer reconsideration algorithm (A.7).
    const COMPENSATION: f64 = core::f64::consts::E - 1.5;
    let min_time = if initial { MIN_TIME / 2.0 } else { MIN_TIME };
    let mut bytes_per_second = (rtcp_bps / 8.0).max(1.0);
    let mut n = f64::from(members.max(1));
    // Senders get a quarter of the RTCP bandwidth when they are at most a quarter of
    // the members.
    if f64::from(senders) > 0.0 && f64::from(senders) <= f64::from(members) * 0.25 {
        if we_sent {
            bytes_per_second *= 0.25;
            n = f64::from(senders);
        } else {
            bytes_per_second *= 0.75;
            n -= f64::from(senders);
        }
    }
    let t = (avg_rtcp_size.max(0.0) * n / bytes_per_second).max(min_time);
    let t = t * (random.clamp(0.0, 1.0) + 0.5) / COMPENSATION;
    core::time::Duration::from_secs_f64(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn arb_block() -> impl Strategy<Value = ReportBlock> {
        (
            any::<u32>(),
            any::<u8>(),
            -0x80_0000i32..=0x7f_ffff,
            any::<[u32; 4]>(),
        )
            .prop_map(|(ssrc, f, lost, [h, j, l, d])| ReportBlock {
                ssrc,
                fraction_lost: f,
                cumulative_lost: lost,
                highest_seq: h,
                jitter: j,
                last_sr: l,
                delay_since_last_sr: d,
            })
    }

    type Owned = (
        u8,
        u32,
        u32,
        Vec<ReportBlock>,
        Vec<(u8, Vec<u8>)>,
        Vec<u32>,
        Option<Vec<u8>>,
        Vec<(u16, u16)>,
    );

    fn arb_owned() -> impl Strategy<Value = Owned> {
        (
            0u8..10,
            any::<u32>(),
            any::<u32>(),
            vec(arb_block(), 0..4),
            vec((1u8..=255, vec(any::<u8>(), 0..20)), 0..4),
            vec(any::<u32>(), 0..4),
            proptest::option::of(vec(any::<u8>(), 0..20)),
            vec(any::<(u16, u16)>(), 0..8),
        )
    }

    fn build(o: &Owned) -> Packet<'_> {
        let (kind, a, b, reports, items, sources, reason, nacks) = o;
        match kind {
            0 => Packet::SenderReport {
                ssrc: *a,
                info: SenderInfo {
                    ntp: u64::from(*a) << 20 | u64::from(*b),
                    rtp_timestamp: *b,
                    packet_count: 3,
                    octet_count: 4,
                },
                reports: reports.clone(),
            },
            1 => Packet::ReceiverReport {
                ssrc: *a,
                reports: reports.clone(),
            },
            2 => Packet::Sdes(vec![
                SdesChunk {
                    ssrc: *a,
                    items: items.iter().map(|(t, v)| (*t, v.as_slice())).collect(),
                },
                SdesChunk {
                    ssrc: *b,
                    items: vec![],
                },
            ]),
            3 => Packet::Bye {
                sources: sources.clone(),
                reason: reason.as_deref(),
            },
            4 => Packet::Nack {
                sender_ssrc: *a,
                media_ssrc: *b,
                entries: nacks
                    .iter()
                    .map(|&(pid, blp)| NackEntry { pid, blp })
                    .collect(),
            },
            5 => Packet::Pli {
                sender_ssrc: *a,
                media_ssrc: *b,
            },
            6 => Packet::Fir {
                sender_ssrc: *a,
                entries: sources
                    .iter()
                    .chain([b])
                    .map(|&ssrc| FirEntry {
                        ssrc,
                        seq: ssrc as u8,
                    })
                    .collect(),
            },
            7 => Packet::Remb {
                sender_ssrc: *a,
                bitrate: RembBitrate::from_bps(u64::from(*b) * u64::from(*a % 4096)),
                ssrcs: sources.clone(),
            },
            8 => Packet::Xr {
                ssrc: *a,
                blocks: vec![xr::XrBlock::LossRle(
                    xr::LossRle::from_fates(
                        *b,
                        *a as u16,
                        &nacks.iter().map(|(p, _)| p % 3 != 0).collect::<Vec<_>>(),
                    )
                    .unwrap(),
                )],
            },
            _ => Packet::Unknown {
                packet_type: 204,
                count: 3,
                body: &[1, 2, 3, 4, 5, 6, 7, 8],
            },
        }
    }

    proptest! {
        #[test]
        fn compound_round_trip(parts in vec(arb_owned(), 1..5)) {
            let packets: Vec<Packet<'_>> = parts.iter().map(build).collect();
            let mut out = BytesMut::new();
            encode_compound(&packets, &mut out).unwrap();
            prop_assert_eq!(out.len(), packets.iter().map(Packet::encoded_len).sum::<usize>());
            prop_assert_eq!(decode_compound(&out, &Limits::default()), Ok(packets));
        }

        #[test]
        fn never_panics(b in vec(any::<u8>(), 0..300)) {
            crate::fuzz::rtcp_packet(&b);
        }

        #[test]
        fn nack_entries_cover_exactly_the_lost(lost in vec(any::<u16>(), 0..50)) {
            let entries = NackEntry::from_lost(&lost);
            let mut got: Vec<u16> = entries.iter().flat_map(|e| e.lost()).collect();
            let mut want = lost.clone();
            got.sort_unstable();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        #[test]
        fn remb_bitrate_is_the_nearest_below(bps in any::<u64>()) {
            let r = RembBitrate::from_bps(bps);
            prop_assert!(r.mantissa < 1 << 18 && r.exponent < 64);
            prop_assert!(r.bps() <= bps);
            // Truncation loses less than one unit of the exponent's scale.
            prop_assert!(bps - r.bps() < 1u64 << r.exponent);
        }
    }

    #[test]
    fn fir_and_remb_layouts_match_their_specifications() {
        // RFC 5104 §4.3.1: header (FMT 4, PT 206, length 4), sender, zero media
        // source, then one FCI entry: SSRC, seq nr, 3 reserved bytes.
        let fir = Packet::Fir {
            sender_ssrc: 0x0102_0304,
            entries: vec![FirEntry {
                ssrc: 0x0a0b_0c0d,
                seq: 7,
            }],
        };
        let mut out = BytesMut::new();
        fir.encode(&mut out).unwrap();
        assert_eq!(
            &out[..],
            &[
                0x84, 206, 0, 4, 1, 2, 3, 4, 0, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d, 7, 0, 0, 0
            ]
        );
        // draft-alvestrand-rmcat-remb §2.2: 1.5 Mbit/s = 187,500 * 2^3, one SSRC.
        let remb = Packet::Remb {
            sender_ssrc: 1,
            bitrate: RembBitrate::from_bps(1_500_000),
            ssrcs: vec![0x55],
        };
        out.clear();
        remb.encode(&mut out).unwrap();
        let m = 187_500u32;
        assert_eq!(
            &out[..],
            &[
                0x8f,
                206,
                0,
                5,
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                b'R',
                b'E',
                b'M',
                b'B',
                1,
                3 << 2 | (m >> 16) as u8,
                (m >> 8) as u8,
                m as u8,
                0,
                0,
                0,
                0x55
            ]
        );
        assert_eq!(RembBitrate::from_bps(1_500_000).bps(), 1_500_000);
        assert_eq!(decode_compound(&out, &Limits::default()), Ok(vec![remb]));
        // An application-layer feedback that is not REMB stays opaque.
        out[12] = b'X';
        assert!(matches!(
            decode_compound(&out, &Limits::default()).unwrap()[..],
            [Packet::Unknown {
                packet_type: PT_PSFB,
                count: FMT_AFB,
                ..
            }]
        ));
        // A REMB whose SSRC count disagrees with its length is rejected.
        out[12] = b'R';
        out[16] = 2;
        assert!(decode_compound(&out, &Limits::default()).is_err());
    }

    #[test]
    fn every_strict_prefix_is_rejected() {
        let p = Packet::ReceiverReport {
            ssrc: 9,
            reports: vec![ReportBlock::default()],
        };
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        for n in 0..out.len() {
            assert!(
                decode_compound(&out[..n], &Limits::default()).is_err(),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn report_interval_follows_rfc_3550_a7() {
        // Two members at 64 kbit/s: the 5 s minimum, spread and compensated.
        let t = report_interval(2, 1, true, 3_200.0, 100.0, false, 0.5);
        assert!(
            (t.as_secs_f64() - 5.0 / 1.218_281_828).abs() < 1e-6,
            "{t:?}"
        );
        assert!(report_interval(2, 1, true, 3_200.0, 100.0, true, 0.5) < t);
        // 1,000 receivers share the bandwidth: the interval grows.
        let big = report_interval(1_000, 1, false, 3_200.0, 100.0, false, 0.5);
        assert!(big.as_secs_f64() > 30.0, "{big:?}");
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        // RFC 3550 figure 2: A = 0xb710:8000 (46864.500), LSR = 0xb705:2000 (46853.125),
        // DLSR = 0x0005:4000 (5.250) -> RTT 6.125 s.
        let block = ReportBlock {
            last_sr: 0xb705_2000,
            delay_since_last_sr: 0x0005_4000,
            ..ReportBlock::default()
        };
        assert_eq!(
            round_trip_time(0xb710_8000, &block),
            Some(core::time::Duration::from_millis(6125))
        );
    }
}
