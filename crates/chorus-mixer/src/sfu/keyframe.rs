//! Per-packet frame information: does this RTP packet start a frame a decoder can
//! start from (the SFU only switches a receiver to another layer at such a packet),
//! and, for temporally scalable streams, which temporal layer is the frame in and can
//! a receiver start taking that temporal layer there.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use chorus_media::rtp;
use chorus_media::video::Vp8Descriptor;

use crate::control::{Codec, StreamInfo};

/// How the SFU recognizes the first packet of a keyframe in a stream. The SFU is
/// otherwise codec-agnostic: it never looks into payloads for anything else.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum KeyframeRule {
    /// VP8 (RFC 7741 §4.2-§4.3): the descriptor's S bit with partition 0, and the P bit
    /// of the VP8 payload header clear.
    Vp8,
    /// H.264 (RFC 6184): an SPS or IDR NAL unit in a single NAL unit packet, a STAP-A
    /// that aggregates one, or the first FU-A fragment of an IDR slice.
    H264,
    /// The sender marks frames with the frame-marking header extension
    /// (draft-ietf-avtext-framemarking §3.1, one-byte form with this RFC 8285 id): a
    /// packet with the S (start of frame) and I (independent) bits starts a keyframe.
    /// Works for any codec, VP9 and AV1 included.
    FrameMarking {
        /// The RFC 8285 extension id (1-14).
        id: u8,
    },
    /// The caller's own detector.
    Custom(fn(&rtp::Packet<'_>) -> bool),
}

impl KeyframeRule {
    /// The rule for an announced stream: frame marking when the sender announced it,
    /// else the codec's own payload format; `None` for a codec this module cannot
    /// read without frame marking.
    #[must_use]
    pub fn for_stream(info: &StreamInfo) -> Option<Self> {
        match (info.frame_marking, info.codec) {
            (Some(id), _) => Some(Self::FrameMarking { id }),
            (None, Codec::Vp8) => Some(Self::Vp8),
            (None, Codec::H264) => Some(Self::H264),
            // Opus has no keyframes: every packet is a valid switching point.
            (None, Codec::Opus) => Some(Self::Custom(|_| true)),
            (None, Codec::Vp9 | Codec::Av1) => None,
        }
    }

    /// Whether this rule reads temporal layer ids, so that a temporally scalable
    /// stream can be thinned per receiver: VP8 (the descriptor's TID) and frame marking
    /// (its TID field).
    #[must_use]
    pub const fn reads_temporal_ids(&self) -> bool {
        matches!(self, Self::Vp8 | Self::FrameMarking { .. })
    }

    /// What `packet` says about its frame's place in the temporal structure. A packet
    /// whose rule carries no temporal information, or whose payload does not parse,
    /// is in temporal layer 0 and starts nothing.
    #[must_use]
    pub fn temporal(&self, packet: &rtp::Packet<'_>) -> Temporal {
        match self {
            // RFC 7741 §4.2: TID and Y (layer sync) in the descriptor's extension;
            // a frame starts at the S bit of partition 0.
            Self::Vp8 => {
                Vp8Descriptor::decode(packet.payload).map_or(Temporal::default(), |(d, body)| {
                    let start = d.start_of_partition && d.partition == 0;
                    let (tid, y) = d.tid.unwrap_or((0, false));
                    let key = start && body.first().is_some_and(|b| b & 1 == 0);
                    Temporal {
                        tid,
                        frame_start: start,
                        sync: key || (start && y),
                        keyframe: key,
                    }
                })
            }
            // draft-ietf-avtext-framemarking §3.1/§3.2: S E I D | B TID (the short
            // form's low bits are zero: TID 0).
            Self::FrameMarking { id } => {
                frame_marking(packet, *id).map_or(Temporal::default(), |b| {
                    let start = b & 0x80 != 0;
                    Temporal {
                        tid: b & 0x07,
                        frame_start: start,
                        sync: start && b & 0x28 != 0,
                        keyframe: start && b & 0x20 != 0,
                    }
                })
            }
            Self::H264 | Self::Custom(_) => Temporal::default(),
        }
    }

    /// Whether `packet` starts a keyframe.
    #[must_use]
    pub fn starts_keyframe(&self, packet: &rtp::Packet<'_>) -> bool {
        match self {
            Self::Vp8 => Vp8Descriptor::decode(packet.payload).is_ok_and(|(d, body)| {
                d.start_of_partition && d.partition == 0 && body.first().is_some_and(|b| b & 1 == 0)
            }),
            Self::H264 => h264_starts_keyframe(packet.payload),
            Self::FrameMarking { id } => {
                frame_marking(packet, *id).is_some_and(|b| b & 0xa0 == 0xa0)
            }
            Self::Custom(f) => f(packet),
        }
    }
}

/// A packet's temporal layer and whether a receiver may start taking that layer
/// there ([`KeyframeRule::temporal`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Temporal {
    /// The temporal layer id of the packet's frame (0 = base).
    pub tid: u8,
    /// The packet starts a frame: where a receiver's temporal layer may change
    /// without cutting a frame.
    pub frame_start: bool,
    /// The frame starts here and references nothing above the base layer (VP8's Y
    /// bit, frame marking's B bit) or nothing at all (a keyframe): a receiver can
    /// start decoding its temporal layer at it.
    pub sync: bool,
    /// The packet starts a keyframe: every temporal layer can start here.
    pub keyframe: bool,
}

/// The first byte of the frame-marking extension element with RFC 8285 id `id`.
fn frame_marking(packet: &rtp::Packet<'_>, id: u8) -> Option<u8> {
    packet.extension_elements()?.find_map(|e| {
        e.ok()
            .filter(|e| e.id == id)
            .and_then(|e| e.data.first().copied())
    })
}

/// NAL unit types that make a packet a keyframe start: SPS (7), IDR slice (5).
fn is_key_nal(header: u8) -> bool {
    matches!(header & 0x1f, 5 | 7)
}

fn h264_starts_keyframe(payload: &[u8]) -> bool {
    match payload {
        // STAP-A (RFC 6184 §5.7.1): 16-bit sizes and NAL units.
        [h, rest @ ..] if h & 0x1f == 24 => {
            let mut rest = rest;
            while let [s0, s1, tail @ ..] = rest {
                let n = usize::from(u16::from_be_bytes([*s0, *s1]));
                let Some((nal, tail)) = tail.split_at_checked(n) else {
                    return false;
                };
                if nal.first().is_some_and(|&b| is_key_nal(b)) {
                    return true;
                }
                rest = tail;
            }
            false
        }
        // FU-A (RFC 6184 §5.8): the start bit and the fragmented unit's type.
        [h, fu, ..] if h & 0x1f == 28 => fu & 0x80 != 0 && is_key_nal(*fu),
        [h, ..] => is_key_nal(*h),
        [] => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> rtp::Packet<'_> {
        rtp::Packet {
            marker: false,
            payload_type: 96,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
            csrcs: vec![],
            extension: None,
            payload,
            padding: 0,
        }
    }

    #[test]
    fn vp8_key_and_delta_frames() {
        // S=1, PID 0; VP8 payload header P bit 0 = keyframe, 1 = interframe.
        assert!(KeyframeRule::Vp8.starts_keyframe(&packet(&[0x10, 0x00, 0x9d])));
        assert!(!KeyframeRule::Vp8.starts_keyframe(&packet(&[0x10, 0x01, 0x9d])));
        // Not the start of partition 0.
        assert!(!KeyframeRule::Vp8.starts_keyframe(&packet(&[0x00, 0x00])));
        assert!(!KeyframeRule::Vp8.starts_keyframe(&packet(&[])));
    }

    #[test]
    fn vp8_packets_from_the_packetizer() {
        use chorus_media::video::{Codec as VCodec, packetize};
        let key = [0x00u8, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let delta = [0x01u8, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let k = packetize(VCodec::Vp8, &key, 6).unwrap();
        let d = packetize(VCodec::Vp8, &delta, 6).unwrap();
        assert!(KeyframeRule::Vp8.starts_keyframe(&packet(&k[0])));
        assert!(!KeyframeRule::Vp8.starts_keyframe(&packet(&k[1])));
        assert!(!KeyframeRule::Vp8.starts_keyframe(&packet(&d[0])));
    }

    #[test]
    fn vp8_temporal_ids_and_layer_sync() {
        use chorus_media::video::Vp8Descriptor;
        let with = |tid: u8, y: bool, start: bool, key: bool| {
            let mut p = Vec::new();
            Vp8Descriptor {
                start_of_partition: start,
                picture_id: Some(300),
                tl0_pic_idx: Some(7),
                tid: Some((tid, y)),
                ..Vp8Descriptor::default()
            }
            .encode(&mut p);
            p.extend_from_slice(&[u8::from(!key), 0x9d]);
            p
        };
        let r = KeyframeRule::Vp8;
        let t = |b: &[u8]| r.temporal(&packet(b));
        assert_eq!(
            t(&with(2, true, true, false)),
            Temporal {
                tid: 2,
                frame_start: true,
                sync: true,
                keyframe: false
            }
        );
        assert!(!t(&with(2, false, true, false)).sync, "Y clear");
        assert!(!t(&with(1, true, false, false)).sync, "not a frame start");
        assert!(
            t(&with(0, false, true, true)).sync,
            "a keyframe is a sync point"
        );
        assert_eq!(
            t(&[0x80]),
            Temporal::default(),
            "unparsable: base, no start"
        );
        assert!(r.reads_temporal_ids() && !KeyframeRule::H264.reads_temporal_ids());
    }

    #[test]
    fn h264_forms() {
        let r = KeyframeRule::H264;
        assert!(r.starts_keyframe(&packet(&[0x65, 1, 2]))); // IDR
        assert!(r.starts_keyframe(&packet(&[0x67, 1, 2]))); // SPS
        assert!(!r.starts_keyframe(&packet(&[0x41, 1, 2]))); // non-IDR slice
        // STAP-A with SPS.
        assert!(r.starts_keyframe(&packet(&[0x78, 0, 2, 0x68, 1, 0, 2, 0x67, 1])));
        assert!(!r.starts_keyframe(&packet(&[0x78, 0, 2, 0x68, 1, 0, 9, 0x67])));
        // FU-A: start of an IDR slice, then a middle fragment.
        assert!(r.starts_keyframe(&packet(&[0x7c, 0x85, 1])));
        assert!(!r.starts_keyframe(&packet(&[0x7c, 0x05, 1])));
    }

    #[test]
    fn frame_marking_extension() {
        let mut ext = Vec::new();
        let data = [0xa0u8];
        let profile =
            rtp::write_elements(&[rtp::Element { id: 3, data: &data }], &mut ext).unwrap();
        let mut p = packet(&[0]);
        p.extension = Some(rtp::Extension {
            profile,
            data: &ext,
        });
        assert!(KeyframeRule::FrameMarking { id: 3 }.starts_keyframe(&p));
        assert!(!KeyframeRule::FrameMarking { id: 4 }.starts_keyframe(&p));
        let data = [0x80u8]; // start of frame, not independent
        let mut ext2 = Vec::new();
        rtp::write_elements(&[rtp::Element { id: 3, data: &data }], &mut ext2).unwrap();
        p.extension = Some(rtp::Extension {
            profile,
            data: &ext2,
        });
        assert!(!KeyframeRule::FrameMarking { id: 3 }.starts_keyframe(&p));
        // The scalable form: S, B, TID 2 (3 bytes: with LID and TL0PICIDX).
        let data = [0x8au8, 0, 9];
        let mut ext3 = Vec::new();
        rtp::write_elements(&[rtp::Element { id: 3, data: &data }], &mut ext3).unwrap();
        p.extension = Some(rtp::Extension {
            profile,
            data: &ext3,
        });
        assert_eq!(
            KeyframeRule::FrameMarking { id: 3 }.temporal(&p),
            Temporal {
                tid: 2,
                frame_start: true,
                sync: true,
                keyframe: false
            }
        );
    }
}
