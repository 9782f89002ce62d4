//! The RTP payload for redundant audio data (RFC 2198): one RTP packet carrying a
//! primary encoding and redundant blocks, each with its own payload type.
//!
//! Chorus carries Reed-Solomon repair payloads ([`crate::fec`]) as redundant blocks
//! of later media packets instead of in packets of their own, which saves a whole
//! packet header (RTP, SRTP tag, UDP/IP: about 60 bytes) per repair (see
//! [`crate::session`]). A receiver that does not know a block's payload type skips
//! the block (RFC 2198 §3) and still plays the primary.
//!
//! ```text
//! redundant block header (4 bytes):            primary header (1 byte):
//! |1| block PT  |  timestamp offset (14) | block length (10) |     |0| block PT  |
//! then the blocks' data in the same order, the primary's last.
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

use chorus_framing::Reader;

use crate::error::{DecodeError, UsageError};

/// Largest timestamp offset a redundant block header holds (14 bits).
pub const MAX_OFFSET: u16 = 0x3fff;
/// Longest redundant block (10-bit length).
pub const MAX_BLOCK_LEN: usize = 0x3ff;
/// Bytes of a redundant block's header.
pub const BLOCK_HEADER_LEN: usize = 4;

/// A redundant block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// Its payload type (0-127).
    pub payload_type: u8,
    /// How far its data's timestamp lies before the packet's (RTP clock units).
    pub timestamp_offset: u16,
    /// The data, at most [`MAX_BLOCK_LEN`] bytes.
    pub data: &'a [u8],
}

/// A decoded RFC 2198 payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The redundant blocks, in packet order.
    pub redundant: Vec<Block<'a>>,
    /// The primary encoding's payload type.
    pub primary_type: u8,
    /// The primary encoding.
    pub primary: &'a [u8],
}

impl<'a> Payload<'a> {
    /// Decodes `payload`, at most `max_blocks` redundant blocks (a packet claiming
    /// more is refused: each costs the receiver work).
    pub fn decode(payload: &'a [u8], max_blocks: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut headers = Vec::new();
        let primary_type = loop {
            let b = r.u8()?;
            if b & 0x80 == 0 {
                break b;
            }
            if headers.len() >= max_blocks {
                return Err(DecodeError::TooMany { max: max_blocks });
            }
            let rest = r.take(3)?;
            let word = rest
                .iter()
                .fold(u32::from(b & 0x7f), |w, &x| w << 8 | u32::from(x));
            headers.push((
                (word >> 24) as u8,
                ((word >> 10) & 0x3fff) as u16,
                (word & 0x3ff) as usize,
            ));
        };
        let mut redundant = Vec::with_capacity(headers.len());
        for (payload_type, timestamp_offset, len) in headers {
            redundant.push(Block {
                payload_type,
                timestamp_offset,
                data: r.take(len)?,
            });
        }
        Ok(Self {
            redundant,
            primary_type,
            primary: r.take_rest(),
        })
    }

    /// The exact number of bytes [`Payload::encode`] appends.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        1 + self
            .redundant
            .iter()
            .map(|b| BLOCK_HEADER_LEN + b.data.len())
            .sum::<usize>()
            + self.primary.len()
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), UsageError> {
        if self.primary_type > 127
            || self.redundant.iter().any(|b| {
                b.payload_type > 127
                    || b.timestamp_offset > MAX_OFFSET
                    || b.data.len() > MAX_BLOCK_LEN
            })
        {
            return Err(UsageError::InvalidConfig(
                "RFC 2198 blocks: payload types < 128, offsets < 2^14, data <= 1023 bytes",
            ));
        }
        out.reserve(self.encoded_len());
        for b in &self.redundant {
            // Checked above: 7 + 14 + 10 bits.
            let word = 0x8000_0000
                | u32::from(b.payload_type) << 24
                | u32::from(b.timestamp_offset) << 10
                | b.data.len() as u32;
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.push(self.primary_type);
        for b in &self.redundant {
            out.extend_from_slice(b.data);
        }
        out.extend_from_slice(self.primary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn layout_matches_rfc_2198_section_3() {
        // RFC 2198 §3's example shape: one redundant block (PT 5, offset 160, 3
        // bytes), primary PT 0 (2 bytes).
        let p = Payload {
            redundant: vec![Block {
                payload_type: 5,
                timestamp_offset: 160,
                data: &[1, 2, 3],
            }],
            primary_type: 0,
            primary: &[9, 9],
        };
        let mut out = Vec::new();
        p.encode(&mut out).unwrap();
        // F=1, PT 5 | offset 160 << 10 | length 3
        let word = 0x8000_0000u32 | 5 << 24 | 160 << 10 | 3;
        let mut want = word.to_be_bytes().to_vec();
        want.extend([0, 1, 2, 3, 9, 9]);
        assert_eq!(out, want);
        assert_eq!(Payload::decode(&out, 4), Ok(p));
    }

    #[test]
    fn too_many_blocks_and_truncation_are_refused() {
        let block = Block {
            payload_type: 112,
            timestamp_offset: 0,
            data: &[7; 10],
        };
        let p = Payload {
            redundant: vec![block; 3],
            primary_type: 111,
            primary: &[1],
        };
        let mut out = Vec::new();
        p.encode(&mut out).unwrap();
        assert_eq!(
            Payload::decode(&out, 2),
            Err(DecodeError::TooMany { max: 2 })
        );
        for cut in 0..=out.len() {
            // Cutting into the headers or the blocks' data fails; cutting only the
            // primary leaves a shorter primary.
            let r = Payload::decode(&out[..cut], 4);
            assert_eq!(r.is_ok(), cut >= 13 + 30, "{cut}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(blocks in vec((0u8..128, 0u16..=MAX_OFFSET, vec(any::<u8>(), 0..40)), 0..5),
                      primary_type in 0u8..128, primary in vec(any::<u8>(), 0..60)) {
            let p = Payload {
                redundant: blocks
                    .iter()
                    .map(|(t, o, d)| Block { payload_type: *t, timestamp_offset: *o, data: d })
                    .collect(),
                primary_type,
                primary: &primary,
            };
            let mut out = Vec::new();
            p.encode(&mut out).unwrap();
            prop_assert_eq!(out.len(), p.encoded_len());
            prop_assert_eq!(Payload::decode(&out, 8), Ok(p));
        }

        #[test]
        fn never_panics(b in vec(any::<u8>(), 0..300)) {
            crate::fuzz::red_payload(&b);
        }
    }
}
