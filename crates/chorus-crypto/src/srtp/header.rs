//! The parts of RTP and RTCP headers SRTP needs, read through the bounds-checked
//! [`Reader`].
//!
//! RTP (RFC 3550 §5.1): the fixed 12 bytes, `CC` CSRC identifiers, and if `X` is set a
//! header extension whose length counts 32-bit words after its 4-byte preamble. All of
//! it is the SRTP "header" that stays in the clear and is authenticated; padding is
//! part of the payload and is encrypted with it.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |                             SSRC                              |
//! |                 CSRC list (CC x 32 bits) ...                  |
//! |  defined by profile (16)      |     length (16, in words)     |
//! |                 header extension (length words) ...           |
//! ```
//!
//! RTCP (RFC 3550 §6.4, RFC 3711 §3.4): the first 8 bytes (V/P/RC, PT, length, the
//! sender's SSRC) stay in the clear; everything after them in the compound packet is
//! encrypted.
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

use crate::error::DecodeError;

/// RTP and RTCP version 2 (RFC 3550 §5.1).
const VERSION: u8 = 2;

/// What SRTP reads from an RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    pub(crate) seq: u16,
    pub(crate) ssrc: u32,
    /// Bytes of header, CSRCs and extension: where the payload starts.
    pub(crate) len: usize,
}

/// Reads the RTP header at the start of `packet`.
#[inline]
pub(crate) fn rtp(packet: &[u8]) -> Result<RtpHeader, DecodeError> {
    let mut r = Reader::new(packet);
    let first = r.u8()?;
    let version = first >> 6;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let csrc_count = usize::from(first & 0x0f);
    let extension = first & 0x10 != 0;
    let _marker_and_type = r.u8()?;
    let seq = r.u16()?;
    let _timestamp = r.u32()?;
    let ssrc = r.u32()?;
    r.skip(4 * csrc_count)?;
    if extension {
        let _profile = r.u16()?;
        let words = usize::from(r.u16()?);
        r.skip(4 * words)?;
    }
    Ok(RtpHeader {
        seq,
        ssrc,
        len: r.consumed(),
    })
}

/// Length of the RTCP header that SRTCP leaves in the clear.
pub(crate) const RTCP_HEADER_LEN: usize = 8;

/// Reads the sender SSRC of the (first) RTCP packet at the start of `packet`.
#[inline]
pub(crate) fn rtcp_ssrc(packet: &[u8]) -> Result<u32, DecodeError> {
    let mut r = Reader::new(packet);
    let first = r.u8()?;
    let version = first >> 6;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let _type = r.u8()?;
    let _length = r.u16()?;
    r.u32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn reads_csrcs_and_extension_into_the_header_length() {
        let mut p = vec![0x92, 0x60, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // two CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        p.extend_from_slice(b"payload");
        let h = rtp(&p).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                seq: 0x1234,
                ssrc: 0xdead_beef,
                len: 28
            }
        );
    }

    #[test]
    fn rejects_short_headers_and_other_versions() {
        assert_eq!(
            rtp(&[0x80, 0, 0, 1]),
            Err(DecodeError::Truncated {
                offset: 4,
                needed: 4
            })
        );
        assert_eq!(rtp(&[0x40; 12]), Err(DecodeError::UnknownVersion(1)));
        // CC = 15 but no CSRCs follow.
        assert!(matches!(
            rtp(&[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Truncated { offset: 12, .. })
        ));
        // X set, extension preamble promises 2 words, 1 present.
        let mut p = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 2];
        p.extend_from_slice(&[0; 4]);
        assert!(matches!(
            rtp(&p),
            Err(DecodeError::Truncated { offset: 16, .. })
        ));
        assert_eq!(
            rtcp_ssrc(&[0x80, 200, 0, 1, 0, 0, 0]).unwrap_err(),
            DecodeError::Truncated {
                offset: 4,
                needed: 4
            }
        );
        assert_eq!(rtcp_ssrc(&[0x81, 200, 0, 1, 0, 0, 0, 7]), Ok(7));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_the_header_fits(b in vec(any::<u8>(), 0..128)) {
            if let Ok(h) = rtp(&b) {
                prop_assert!(h.len >= 12 && h.len <= b.len());
            }
            let _ = rtcp_ssrc(&b);
        }
    }
}
