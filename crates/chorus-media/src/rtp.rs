//! RTP packets (RFC 3550 §5.1), header extensions (RFC 8285) and the client-to-mixer
//! audio level (RFC 6464).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |           synchronization source (SSRC) identifier            |
//! |            contributing source (CSRC) identifiers (0..15)     |
//! | profile (X=1)                 | length in 32-bit words        |
//! | header extension data ...                                     |
//! | payload ...                   | padding ...   | padding count |
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

/// The RFC 8285 §4.2 one-byte header profile.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// The RFC 8285 §4.3 two-byte header profile, with its 4 "appbits" zero.
pub const TWO_BYTE_PROFILE: u16 = 0x1000;
/// The fixed RTP header length (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// An RTP header extension block (RFC 3550 §5.3.1): a profile and whole 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The 16-bit "defined by profile" field (0xBEDE, 0x100X for RFC 8285).
    pub profile: u16,
    /// The extension data, a multiple of 4 bytes long.
    pub data: &'a [u8],
}

/// An RTP packet borrowing from its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The marker bit (for Opus: first packet after silence; video: last of a frame).
    pub marker: bool,
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The sequence number.
    pub sequence: u16,
    /// The media timestamp.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: u32,
    /// Contributing sources, at most 15.
    pub csrcs: Vec<u32>,
    /// The header extension, if the X bit is set.
    pub extension: Option<Extension<'a>>,
    /// The payload (padding removed).
    pub payload: &'a [u8],
    /// Padding length in bytes including the count byte; 0 means no P bit.
    pub padding: u8,
}

impl<'a> Packet<'a> {
    /// Decodes one RTP packet. Rejects versions other than 2, a padding count that is
    /// zero or runs into the header, and an extension running past the end.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let b0 = r.u8()?;
        let b1 = r.u8()?;
        let version = b0 >> 6;
        if version != 2 {
            return Err(DecodeError::BadVersion(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let cc = b0 & 0x0f;
        let sequence = r.u16()?;
        let timestamp = r.u32()?;
        let ssrc = r.u32()?;
        let mut csrcs = Vec::with_capacity(usize::from(cc));
        for _ in 0..cc {
            csrcs.push(r.u32()?);
        }
        let extension = if has_extension {
            let profile = r.u16()?;
            let words = r.u16()?;
            let data = r.take(usize::from(words) * 4)?;
            Some(Extension { profile, data })
        } else {
            None
        };
        let mut body = r.take_rest();
        let mut padding = 0;
        if has_padding {
            let (&count, _) = body.split_last().ok_or(DecodeError::BadPadding(0))?;
            if count == 0 || usize::from(count) > body.len() {
                return Err(DecodeError::BadPadding(count));
            }
            body = body
                .get(..body.len() - usize::from(count))
                .ok_or(DecodeError::BadPadding(count))?;
            padding = count;
        }
        Ok(Self {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence,
            timestamp,
            ssrc,
            csrcs,
            extension,
            payload: body,
            padding,
        })
    }

    /// The exact number of bytes [`Packet::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN
            + 4 * self.csrcs.len()
            + self.extension.map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
            + usize::from(self.padding)
    }

    /// Checks that the packet can be encoded (CSRC count, extension length).
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.csrcs.len() > 15 {
            return Err(UsageError::TooManyCsrcs);
        }
        if let Some(e) = self.extension
            && (!e.data.len().is_multiple_of(4) || e.data.len() / 4 > usize::from(u16::MAX))
        {
            return Err(UsageError::BadExtensionLength);
        }
        Ok(())
    }

    /// Appends the packet to `out`: exactly [`Packet::encoded_len`] bytes. Padding
    /// bytes are zeros followed by the count.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), UsageError> {
        self.validate()?;
        out.reserve(self.encoded_len());
        // validate() bounds the CSRC count to 15 and the extension to u16 words.
        let cc = u8::try_from(self.csrcs.len()).map_err(|_| UsageError::TooManyCsrcs)?;
        let b0 = 0x80
            | if self.padding > 0 { 0x20 } else { 0 }
            | if self.extension.is_some() { 0x10 } else { 0 }
            | cc;
        out.put_u8(b0);
        out.put_u8(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.put_u16(self.sequence);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
        for c in &self.csrcs {
            out.put_u32(*c);
        }
        if let Some(e) = self.extension {
            out.put_u16(e.profile);
            let words =
                u16::try_from(e.data.len() / 4).map_err(|_| UsageError::BadExtensionLength)?;
            out.put_u16(words);
            out.put_slice(e.data);
        }
        out.put_slice(self.payload);
        if self.padding > 0 {
            out.put_bytes(0, usize::from(self.padding) - 1);
            out.put_u8(self.padding);
        }
        Ok(())
    }

    /// The RFC 8285 elements of the header extension, if it uses one of its profiles.
    #[must_use]
    pub fn extension_elements(&self) -> Option<Elements<'a>> {
        self.extension.and_then(Elements::new)
    }
}

/// One RFC 8285 header extension element: a local identifier and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// The local identifier (1-14 in the one-byte form, 1-255 in the two-byte form).
    pub id: u8,
    /// The element data (1-16 bytes in the one-byte form, 0-255 in the two-byte form).
    pub data: &'a [u8],
}

/// Iterator over the RFC 8285 elements of an extension block. Yields an error once,
/// then stops, when an element runs past the end of the block.
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    rest: &'a [u8],
    two_byte: bool,
    failed: bool,
}

impl<'a> Elements<'a> {
    /// Elements of `ext`, or `None` when its profile is not an RFC 8285 one.
    #[must_use]
    pub fn new(ext: Extension<'a>) -> Option<Self> {
        let two_byte = match ext.profile {
            ONE_BYTE_PROFILE => false,
            p if p & 0xfff0 == TWO_BYTE_PROFILE => true,
            _ => return None,
        };
        Some(Self {
            rest: ext.data,
            two_byte,
            failed: false,
        })
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Element<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let (&first, tail) = self.rest.split_first()?;
            if first == 0 {
                // RFC 8285 §4.2/§4.3: padding bytes between and after elements.
                self.rest = tail;
                continue;
            }
            let parsed = if self.two_byte {
                tail.split_first().and_then(|(&len, tail)| {
                    tail.split_at_checked(usize::from(len))
                        .map(|(data, rest)| (Element { id: first, data }, rest))
                })
            } else {
                let id = first >> 4;
                if id == 15 {
                    // RFC 8285 §4.2: id 15 stops the processing of the block.
                    self.rest = &[];
                    return None;
                }
                let len = usize::from(first & 0x0f) + 1;
                tail.split_at_checked(len)
                    .map(|(data, rest)| (Element { id, data }, rest))
            };
            return match parsed {
                Some((element, rest)) => {
                    self.rest = rest;
                    Some(Ok(element))
                }
                None => {
                    self.failed = true;
                    Some(Err(DecodeError::BadExtension))
                }
            };
        }
    }
}

/// Writes `elements` as an RFC 8285 extension block into `out` (cleared first), in
/// the one-byte form when every element fits it, else in the two-byte form; padded to
/// whole words. Returns the profile to put in [`Extension::profile`].
pub fn write_elements(elements: &[Element<'_>], out: &mut Vec<u8>) -> Result<u16, UsageError> {
    out.clear();
    let one_byte = elements
        .iter()
        .all(|e| (1..=14).contains(&e.id) && (1..=16).contains(&e.data.len()));
    for e in elements {
        if e.id == 0 {
            return Err(UsageError::BadExtensionElement);
        }
        if one_byte {
            // (1..=16) checked above, so len - 1 fits in 4 bits.
            let len =
                u8::try_from(e.data.len() - 1).map_err(|_| UsageError::BadExtensionElement)?;
            out.push(e.id << 4 | len);
        } else {
            let len = u8::try_from(e.data.len()).map_err(|_| UsageError::BadExtensionElement)?;
            out.push(e.id);
            out.push(len);
        }
        out.extend_from_slice(e.data);
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    if out.len() / 4 > usize::from(u16::MAX) {
        return Err(UsageError::BadExtensionLength);
    }
    Ok(if one_byte {
        ONE_BYTE_PROFILE
    } else {
        TWO_BYTE_PROFILE
    })
}

/// The client-to-mixer audio level (RFC 6464 §3): voice activity and the level in
/// -dBov (0 = loudest, 127 = silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The V bit: the sender's voice activity detector saw speech.
    pub voice: bool,
    /// The level, 0-127 -dBov.
    pub level: u8,
}

impl AudioLevel {
    /// Parses the one-byte element data.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        match data {
            // RFC 6464 §3: one byte; RFC 8285 allows the two-byte form to pad it.
            [b, ..] => Ok(Self {
                voice: b & 0x80 != 0,
                level: b & 0x7f,
            }),
            [] => Err(DecodeError::BadExtension),
        }
    }

    /// The element data byte (the level is clamped to 127).
    #[must_use]
    pub fn to_byte(self) -> u8 {
        u8::from(self.voice) << 7 | self.level.min(127)
    }

    /// The level of 16-bit PCM samples per RFC 6464 §4: the RMS in dBov, rounded,
    /// clamped to 0-127 (127 for digital silence).
    #[must_use]
    pub fn from_samples(samples: &[i16], voice: bool) -> Self {
        if samples.is_empty() {
            return Self { voice, level: 127 };
        }
        let sum: f64 = samples
            .iter()
            .map(|&s| {
                let x = f64::from(s) / 32768.0;
                x * x
            })
            .sum();
        #[allow(clippy::cast_precision_loss, reason = "sample counts are small")]
        let rms = (sum / samples.len() as f64).sqrt();
        let db = if rms <= 0.0 {
            127.0
        } else {
            (-20.0 * rms.log10()).clamp(0.0, 127.0)
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 0..=127"
        )]
        let level = db.round() as u8;
        Self { voice, level }
    }
}

/// Extends 16-bit RTP sequence numbers to a 64-bit counter that never wraps: each new
/// value is placed nearest to the previous highest one (RFC 3550 §A.1's cycle count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceUnwrapper {
    highest: Option<u64>,
}

impl SequenceUnwrapper {
    /// A fresh unwrapper; the first value seen maps to itself plus 2^16 (so that a few
    /// earlier, reordered packets still map to non-negative values).
    #[must_use]
    pub const fn new() -> Self {
        Self { highest: None }
    }

    /// The extended value of `seq`, updating the highest seen.
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let ext = self.peek(seq);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// The extended value `seq` would get, without updating.
    #[must_use]
    pub fn peek(&self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            return (1 << 16) + u64::from(seq);
        };
        let delta = i64::from(seq.wrapping_sub(h as u16) as i16);
        h.saturating_add_signed(delta)
    }

    /// The highest extended sequence number seen so far.
    #[must_use]
    pub const fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Extends 32-bit RTP timestamps to 64 bits, like [`SequenceUnwrapper`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampUnwrapper {
    highest: Option<u64>,
}

impl TimestampUnwrapper {
    /// A fresh unwrapper; the first value maps to itself plus 2^32.
    #[must_use]
    pub const fn new() -> Self {
        Self { highest: None }
    }

    /// The extended value of `ts`, updating the highest seen.
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        let ext = match self.highest {
            None => (1 << 32) + u64::from(ts),
            Some(h) => {
                let delta = i64::from(ts.wrapping_sub(h as u32) as i32);
                h.saturating_add_signed(delta)
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    type Parts = (
        bool,
        u8,
        u16,
        u32,
        u32,
        Vec<u32>,
        Option<(u16, Vec<u8>)>,
        Vec<u8>,
        u8,
    );

    fn arb_packet_parts() -> impl Strategy<Value = Parts> {
        (
            any::<bool>(),
            0u8..128,
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            vec(any::<u32>(), 0..=15),
            proptest::option::of((
                any::<u16>(),
                vec(any::<u8>(), 0..8).prop_map(|v| {
                    let mut v = v;
                    v.resize(v.len().div_ceil(4) * 4, 0);
                    v
                }),
            )),
            vec(any::<u8>(), 0..200),
            any::<u8>(),
        )
    }

    proptest! {
        #[test]
        fn round_trip((marker, pt, seq, ts, ssrc, csrcs, ext, payload, padding) in arb_packet_parts()) {
            let p = Packet {
                marker, payload_type: pt, sequence: seq, timestamp: ts, ssrc, csrcs,
                extension: ext.as_ref().map(|(profile, data)| Extension { profile: *profile, data }),
                payload: &payload, padding,
            };
            let mut out = BytesMut::new();
            p.encode(&mut out).unwrap();
            prop_assert_eq!(out.len(), p.encoded_len());
            prop_assert_eq!(Packet::decode(&out), Ok(p));
        }

        #[test]
        fn never_panics(b in vec(any::<u8>(), 0..300)) {
            crate::fuzz::rtp_packet(&b);
        }

        #[test]
        fn elements_round_trip(elems in vec((1u8..=255, vec(any::<u8>(), 0..20)), 0..6)) {
            let elements: Vec<Element<'_>> = elems.iter().map(|(id, d)| Element { id: *id, data: d }).collect();
            let mut data = Vec::new();
            let profile = write_elements(&elements, &mut data).unwrap();
            let got: Result<Vec<_>, _> = Elements::new(Extension { profile, data: &data }).unwrap().collect();
            prop_assert_eq!(got.unwrap(), elements);
        }

        #[test]
        fn unwrapper_follows_a_walk(start in any::<u16>(), steps in vec(-50i32..200, 1..500)) {
            let mut u = SequenceUnwrapper::new();
            let mut truth = (1u64 << 16) + u64::from(start);
            prop_assert_eq!(u.unwrap(start), truth);
            for s in steps {
                truth = truth.saturating_add_signed(i64::from(s));
                prop_assert_eq!(u.unwrap(truth as u16), truth);
                // Track truth relative to the highest, as the unwrapper does.
                truth = u.highest().unwrap();
            }
        }
    }

    #[test]
    fn rejects_bad_padding_and_version() {
        let mut out = BytesMut::new();
        let p = Packet {
            marker: false,
            payload_type: 111,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
            csrcs: vec![],
            extension: None,
            payload: b"abc",
            padding: 0,
        };
        p.encode(&mut out).unwrap();
        let mut bad = out.to_vec();
        bad[0] |= 0x20;
        *bad.last_mut().unwrap() = 0;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadPadding(0)));
        *bad.last_mut().unwrap() = 200;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadPadding(200)));
        let mut v1 = out.to_vec();
        v1[0] = 0x40;
        assert_eq!(Packet::decode(&v1), Err(DecodeError::BadVersion(1)));
        for n in 0..FIXED_HEADER_LEN {
            assert!(Packet::decode(&out[..n]).is_err());
        }
    }

    #[test]
    fn audio_level_element_in_one_byte_form() {
        let level = AudioLevel {
            voice: true,
            level: 42,
        };
        let byte = [level.to_byte()];
        let mut data = Vec::new();
        let profile = write_elements(&[Element { id: 1, data: &byte }], &mut data).unwrap();
        assert_eq!(profile, ONE_BYTE_PROFILE);
        assert_eq!(data, [0x10, 0xaa, 0, 0]);
        let e = Elements::new(Extension {
            profile,
            data: &data,
        })
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
        assert_eq!(AudioLevel::decode(e.data), Ok(level));
        assert_eq!(AudioLevel::from_samples(&[0; 160], false).level, 127);
        assert_eq!(AudioLevel::from_samples(&[i16::MAX; 160], true).level, 0);
    }
}
