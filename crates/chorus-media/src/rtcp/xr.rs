//! RTCP extended reports (RFC 3611): the XR packet (PT 207) and its Loss RLE report
//! block (§4.1), which tells the sender the fate of every packet in a sequence range.
//!
//! The loss fraction of a report block says how many packets were lost, not how: a
//! 10 % loss in bursts of three needs a different FEC group than 10 % spread evenly.
//! A Loss RLE block carries the per-packet record (received or lost) in run-length
//! and bit-vector chunks, about 2 bytes per 15 packets on a lossy path, so the sender
//! can estimate the burst length itself.
//!
//! ```text
//! XR:  |V=2|P|reserved |   PT=207      |             length            |
//!      |                  SSRC of packet sender                        |
//!      :                     report blocks                             :
//! block: |     BT      | type-specific |         block length          |
//! Loss RLE (BT=1): | BT=1 | rsvd. |  T  |         block length          |
//!                  |                  SSRC of source                   |
//!                  |          begin_seq            |       end_seq     |
//!                  |          chunk 1              |       chunk 2     | ...
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

use bytes::{BufMut, BytesMut};
use chorus_framing::Reader;

use crate::error::{DecodeError, UsageError};

/// RTCP packet type: extended report (RFC 3611 §2).
pub const PT_XR: u8 = 207;
/// XR block type: Loss RLE report block (RFC 3611 §4.1).
pub const BT_LOSS_RLE: u8 = 1;
/// Longest run a run-length chunk can hold (14 bits, RFC 3611 §4.1.1).
const MAX_RUN: usize = 0x3fff;
/// Packets in one bit-vector chunk (RFC 3611 §4.1.2).
const VECTOR_BITS: usize = 15;

/// One report block of an XR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XrBlock<'a> {
    /// Loss RLE report block (BT 1).
    LossRle(LossRle),
    /// Any other block type, kept verbatim (RFC 3611 §3: receivers skip blocks they
    /// do not know).
    Unknown {
        /// The block type (BT).
        block_type: u8,
        /// The type-specific byte.
        type_specific: u8,
        /// The block's contents after its header, a multiple of 4 bytes.
        body: &'a [u8],
    },
}

impl XrBlock<'_> {
    /// The block's length on the wire, header included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::LossRle(b) => 12 + 2 * b.chunks.len().next_multiple_of(2),
            Self::Unknown { body, .. } => 4 + body.len(),
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<(), UsageError> {
        let len = self.encoded_len();
        let words = u16::try_from(len / 4 - 1).map_err(|_| UsageError::BadExtensionLength)?;
        match self {
            Self::LossRle(b) => {
                out.put_u8(BT_LOSS_RLE);
                out.put_u8(b.thinning & 0x0f);
                out.put_u16(words);
                out.put_u32(b.ssrc);
                out.put_u16(b.begin_seq);
                out.put_u16(b.end_seq);
                b.chunks.iter().for_each(|c| out.put_u16(*c));
                if b.chunks.len() % 2 == 1 {
                    // A null chunk pads to the 32-bit boundary (§4.1).
                    out.put_u16(0);
                }
            }
            Self::Unknown {
                block_type,
                type_specific,
                body,
            } => {
                if !body.len().is_multiple_of(4) {
                    return Err(UsageError::BadExtensionLength);
                }
                out.put_u8(*block_type);
                out.put_u8(*type_specific);
                out.put_u16(words);
                out.put_slice(body);
            }
        }
        Ok(())
    }
}

/// A Loss RLE report block (RFC 3611 §4.1): which packets of `begin_seq..end_seq`
/// (16-bit sequence numbers, `end_seq` excluded) arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossRle {
    /// The media source reported on.
    pub ssrc: u32,
    /// Thinning `T` (§4.1): only sequence numbers that are multiples of `2^T` are
    /// reported. Chorus sends 0; [`LossRle::fates`] honours any value.
    pub thinning: u8,
    /// First sequence number covered.
    pub begin_seq: u16,
    /// One past the last sequence number covered.
    pub end_seq: u16,
    /// The chunks as on the wire: `0RLLL…` a run of `L` packets received (`R` = 1) or
    /// lost (`R` = 0), `1VVV…` a bit vector of 15 packets (1 = received, first packet
    /// in the most significant bit), `0x0000` a null chunk.
    pub chunks: Vec<u16>,
}

impl LossRle {
    /// The block for `received[i]` = whether packet `begin_seq + i` arrived:
    /// run-length chunks for runs of at least 15 equal fates, bit vectors otherwise.
    /// At most 65,535 packets.
    pub fn from_fates(ssrc: u32, begin_seq: u16, received: &[bool]) -> Result<Self, UsageError> {
        let n = u16::try_from(received.len()).map_err(|_| UsageError::TooManyItems)?;
        let mut chunks = Vec::new();
        let mut rest = received;
        while let Some(&first) = rest.first() {
            let run = rest
                .iter()
                .take(MAX_RUN)
                .take_while(|&&r| r == first)
                .count();
            if run >= VECTOR_BITS {
                // run <= MAX_RUN (14 bits).
                chunks.push(u16::from(first) << 14 | run as u16);
                rest = rest.get(run..).unwrap_or_default();
            } else {
                let take = rest.len().min(VECTOR_BITS);
                let mut v = 0x8000u16;
                for (i, &r) in rest.iter().take(take).enumerate() {
                    v |= u16::from(r) << (14 - i);
                }
                chunks.push(v);
                rest = rest.get(take..).unwrap_or_default();
            }
        }
        Ok(Self {
            ssrc,
            thinning: 0,
            begin_seq,
            end_seq: begin_seq.wrapping_add(n),
            chunks,
        })
    }

    /// The fates the chunks give, `(sequence number, received)`, in order, within
    /// `begin_seq..end_seq` (bits of a last bit vector past `end_seq` are ignored,
    /// §4.1.2), stepping by `2^thinning`. A block whose chunks cover less stops early.
    pub fn fates(&self) -> impl Iterator<Item = (u16, bool)> + '_ {
        let step = 1u16 << self.thinning.min(15);
        let count = usize::from(self.end_seq.wrapping_sub(self.begin_seq) / step);
        self.chunks
            .iter()
            .flat_map(|&c| {
                let vector = c & 0x8000 != 0;
                let n = if vector {
                    VECTOR_BITS
                } else {
                    usize::from(c & 0x3fff)
                };
                (0..n).map(move |i| {
                    if vector {
                        c & (1 << (14 - i)) != 0
                    } else {
                        c & 0x4000 != 0
                    }
                })
            })
            .take(count)
            .zip(0u16..)
            .map(move |(r, i)| (self.begin_seq.wrapping_add(i.wrapping_mul(step)), r))
    }
}

/// Writes the body of an XR packet (after its first word): `ssrc`, then `blocks`.
pub(super) fn encode_body(
    ssrc: u32,
    blocks: &[XrBlock<'_>],
    out: &mut BytesMut,
) -> Result<(), UsageError> {
    out.put_u32(ssrc);
    blocks.iter().try_for_each(|b| b.encode(out))
}

/// The length of that body.
pub(super) fn body_len(blocks: &[XrBlock<'_>]) -> usize {
    4 + blocks.iter().map(XrBlock::encoded_len).sum::<usize>()
}

/// Decodes the body of an XR packet (after its first word): the sender's SSRC and at
/// most `max_blocks` report blocks.
pub(super) fn decode_body(
    body: &[u8],
    max_blocks: usize,
) -> Result<(u32, Vec<XrBlock<'_>>), DecodeError> {
    let bad_len = DecodeError::BadRtcpLength { packet_type: PT_XR };
    let mut r = Reader::new(body);
    let ssrc = r.u32().map_err(|_| bad_len)?;
    let mut blocks = Vec::new();
    while !r.is_empty() {
        if blocks.len() >= max_blocks {
            return Err(DecodeError::TooMany { max: max_blocks });
        }
        let block_type = r.u8().map_err(|_| bad_len)?;
        let type_specific = r.u8().map_err(|_| bad_len)?;
        let words = usize::from(r.u16().map_err(|_| bad_len)?);
        let block = r.take(words * 4).map_err(|_| bad_len)?;
        blocks.push(if block_type == BT_LOSS_RLE {
            let mut b = Reader::new(block);
            let source = b.u32().map_err(|_| bad_len)?;
            let begin_seq = b.u16().map_err(|_| bad_len)?;
            let end_seq = b.u16().map_err(|_| bad_len)?;
            let mut chunks = Vec::with_capacity(b.remaining() / 2);
            while !b.is_empty() {
                chunks.push(b.u16()?);
            }
            // Trailing null chunks are padding (§4.1).
            while chunks.last() == Some(&0) {
                chunks.pop();
            }
            XrBlock::LossRle(LossRle {
                ssrc: source,
                thinning: type_specific & 0x0f,
                begin_seq,
                end_seq,
                chunks,
            })
        } else {
            XrBlock::Unknown {
                block_type,
                type_specific,
                body: block,
            }
        });
    }
    Ok((ssrc, blocks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::{Limits, Packet, decode_compound};
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn layout_matches_rfc_3611() {
        // 20 received, then lost, 2 received, 3 lost: a run chunk of 20 1s and a bit
        // vector 011000 for the last 6 packets (the rest of its bits unused).
        let mut fates = vec![true; 20];
        fates.extend([false, true, true, false, false, false]);
        let b = LossRle::from_fates(0x0a0b_0c0d, 100, &fates).unwrap();
        assert_eq!(b.end_seq, 126);
        assert_eq!(b.chunks, vec![0x4000 | 20, 0xb000]);
        let mut out = BytesMut::new();
        let xr = Packet::Xr {
            ssrc: 7,
            blocks: vec![XrBlock::LossRle(b)],
        };
        xr.encode(&mut out).unwrap();
        assert_eq!(decode_compound(&out, &Limits::default()), Ok(vec![xr]));
        assert_eq!(
            &out[..],
            &[
                0x80, 207, 0, 5, 0, 0, 0, 7, // XR header (6 words), sender 7
                1, 0, 0, 3, // BT 1, T 0, the block's 4 words
                0x0a, 0x0b, 0x0c, 0x0d, 0, 100, 0, 126, // source, begin, end
                0x40, 20, 0xb0, 0x00, // the two chunks
            ]
        );
    }

    #[test]
    fn thinning_steps_through_the_range() {
        let b = LossRle {
            ssrc: 1,
            thinning: 1,
            begin_seq: 10,
            end_seq: 18,
            chunks: vec![0x8000 | 0x5000],
        };
        let got: Vec<_> = b.fates().collect();
        assert_eq!(got, vec![(10, true), (12, false), (14, true), (16, false)]);
    }

    proptest! {
        #[test]
        fn fates_round_trip(begin in any::<u16>(), fates in vec(any::<bool>(), 0..600),
                            runs in vec((any::<bool>(), 1usize..80), 0..20)) {
            let mut all = fates;
            for (r, n) in runs {
                all.extend(std::iter::repeat_n(r, n));
            }
            let b = LossRle::from_fates(9, begin, &all).unwrap();
            let got: Vec<bool> = b.fates().map(|(_, r)| r).collect();
            prop_assert_eq!(&got, &all);
            let seqs: Vec<u16> = b.fates().map(|(s, _)| s).collect();
            let want: Vec<u16> = (0..all.len()).map(|i| begin.wrapping_add(i as u16)).collect();
            prop_assert_eq!(seqs, want);
            let xr = Packet::Xr {
                ssrc: 3,
                blocks: vec![
                    XrBlock::LossRle(b),
                    XrBlock::Unknown { block_type: 9, type_specific: 1, body: &[1, 2, 3, 4] },
                ],
            };
            let mut out = BytesMut::new();
            xr.encode(&mut out).unwrap();
            prop_assert_eq!(out.len(), xr.encoded_len());
            prop_assert_eq!(decode_compound(&out, &Limits::default()), Ok(vec![xr]));
        }

        #[test]
        fn any_body_decodes_or_errs(body in vec(any::<u8>(), 0..200)) {
            if let Ok((_, blocks)) = decode_body(&body, 4) {
                prop_assert!(blocks.len() <= 4);
                for b in &blocks {
                    if let XrBlock::LossRle(l) = b {
                        // Never more fates than the range holds.
                        prop_assert!(l.fates().count() <= 65_535);
                    }
                }
            }
        }
    }
}
