//! Opus packet framing (RFC 6716 §3), read without libopus: the first frame of a
//! packet and the SILK LBRR (in-band FEC) flag, for a receiver that must know whether
//! the next packet can rebuild a lost one, or a forwarder that does not decode.
//! Available without the `opus` feature; every length is checked against the input.

/// The first frame of an Opus packet (RFC 6716 §3.2), `None` if the packet is
/// malformed. Peer data: every length is checked against what is there.
#[must_use]
pub fn first_frame(packet: &[u8]) -> Option<&[u8]> {
    let (&toc, rest) = packet.split_first()?;
    // A frame length: one byte below 252, else two (§3.2.1).
    let length = |b: &[u8]| -> Option<(usize, usize)> {
        let b0 = usize::from(*b.first()?);
        if b0 < 252 {
            Some((b0, 1))
        } else {
            Some((b0 + 4 * usize::from(*b.get(1)?), 2))
        }
    };
    match toc & 0x3 {
        // One frame, or two of equal size (§3.2.2, §3.2.3).
        0 => Some(rest),
        1 => (rest.len() % 2 == 0)
            .then(|| rest.get(..rest.len() / 2))
            .flatten(),
        // Two frames, the first one's length coded (§3.2.4).
        2 => {
            let (n, used) = length(rest)?;
            rest.get(used..used.checked_add(n)?)
        }
        // A frame count byte, optional padding, then CBR or VBR frames (§3.2.5).
        _ => {
            let (&fc, mut body) = rest.split_first()?;
            let (vbr, padded, count) = (fc & 0x80 != 0, fc & 0x40 != 0, usize::from(fc & 0x3f));
            if count == 0 {
                return None;
            }
            let mut padding = 0usize;
            if padded {
                loop {
                    let (&p, tail) = body.split_first()?;
                    body = tail;
                    padding += if p == 255 { 254 } else { usize::from(p) };
                    if p != 255 {
                        break;
                    }
                }
            }
            let data = body.len().checked_sub(padding)?;
            let body = body.get(..data)?;
            if vbr {
                let (n, used) = length(body)?;
                // count - 1 lengths in all (the last frame's is implied), then the
                // frames.
                let mut at = used;
                for _ in 2..count {
                    at += length(body.get(at..)?)?.1;
                }
                body.get(at..at.checked_add(n)?)
            } else {
                (body.len() % count == 0)
                    .then(|| body.get(..body.len() / count))
                    .flatten()
            }
        }
    }
}

/// Whether an Opus packet carries in-band FEC (LBRR) data for the previous frame.
/// `None` when the packet does not parse.
#[must_use]
pub fn has_inband_fec(packet: &[u8]) -> Option<bool> {
    // RFC 6716 §3.1: the TOC byte; LBRR exists only in SILK and hybrid modes (config
    // 0-15), signalled by the LBRR flag after the VAD flags of the first frame.
    let toc = *packet.first()?;
    if toc >> 3 >= 16 {
        return Some(false);
    }
    let first = *first_frame(packet)?.first()?;
    let channels: u32 = if toc & 0x04 != 0 { 2 } else { 1 };
    // SILK frames per Opus frame: 10/20 ms -> 1, 40 ms -> 2, 60 ms -> 3 (hybrid modes,
    // configs 12-15, have only 10 and 20 ms).
    let config = toc >> 3;
    let silk_frames: u32 = match (config >= 12, config & 0x3) {
        (false, 2) => 2,
        (false, 3) => 3,
        _ => 1,
    };
    // The VAD flags and the LBRR flag of each channel are the range coder's first,
    // uniformly coded symbols: the top bits of the first byte (as WebRTC reads them).
    Some((0..channels).any(|n| {
        let bit = (n + 1) * (silk_frames + 1) - 1;
        first & (0x80 >> bit) != 0
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_frame_follows_every_framing_code() {
        let f1 = [0xAAu8, 1, 2];
        let f2 = [0x55u8, 3, 4];
        // Code 0: one frame; code 1: two of equal size.
        assert_eq!(first_frame(&[0x08, 0xAA, 1, 2]), Some(&f1[..]));
        assert_eq!(first_frame(&[0x09, 0xAA, 1, 2, 0x55, 3, 4]), Some(&f1[..]));
        assert_eq!(first_frame(&[0x09, 0xAA, 1, 2]), None, "odd length");
        // Code 2: the first frame's length, one byte or two (252 + 4 * second).
        assert_eq!(
            first_frame(&[0x0A, 3, 0xAA, 1, 2, 0x55, 3, 4]),
            Some(&f1[..])
        );
        let mut long = vec![0x0A, 252, 1];
        long.extend(std::iter::repeat_n(7, 256));
        assert_eq!(first_frame(&long).map(<[u8]>::len), Some(256));
        assert_eq!(first_frame(&[0x0A, 9, 0xAA]), None, "length past the end");
        // Code 3, CBR with padding (255 = 254 and more), and VBR.
        let mut cbr = vec![0x0B, 0x40 | 2, 255, 1];
        cbr.extend_from_slice(&f1);
        cbr.extend_from_slice(&f2);
        cbr.extend(std::iter::repeat_n(0, 255));
        assert_eq!(first_frame(&cbr), Some(&f1[..]));
        let vbr = [0x0B, 0x80 | 2, 3, 0xAA, 1, 2, 0x55, 3, 4];
        assert_eq!(first_frame(&vbr), Some(&f1[..]));
        let vbr3 = [0x0B, 0x80 | 3, 3, 1, 0xAA, 1, 2, 0x55, 3, 4];
        assert_eq!(first_frame(&vbr3), Some(&f1[..]));
        assert_eq!(first_frame(&[0x0B, 0x80]), None, "no frames");
        assert_eq!(first_frame(&[]), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            crate::fuzz::opus_packet(&b);
        }
    }
}
