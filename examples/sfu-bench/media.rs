//! The traffic: simulcast VP8 publishers with three temporal layers in every simulcast
//! layer, and the groups of receivers, each asking for other layers.
//!
//! Every publisher sends three simulcast layers (150 kbit/s, 500 kbit/s, 1.5 Mbit/s:
//! 180p, 360p and 720p, the bitrates of chorus-mixer's tests) at 30 frames per second,
//! each in the libvpx L1T3 temporal pattern (TIDs 0, 2, 1, 2; TID 0 frames carry 40 %
//! of the bytes, TID 1 20 %, TID 2 40 %, as the stream announces). A keyframe is four
//! times the layer's average frame and comes every `--keyframe-every` seconds per layer
//! (publishers out of phase) and at the next frame after a PLI or FIR for the layer.
//! Frames are cut into payloads of at most 1,100 bytes: on the top layer a delta frame
//! is 5 or 10 packets and a keyframe 23. Every packet carries the RFC 7741 descriptor
//! (PictureID, TL0PICIDX, TID and Y) and the abs-send-time extension, which the relay
//! restamps; the first bytes after the descriptor name the packet's layer and TID and
//! when it was sent, so that receivers can check what the relay chose for them and
//! measure the delay.

use std::time::Duration;

use bytes::BytesMut;
use chorus::media::rtcp::{self, SenderInfo};
use chorus::media::rtp::{self, Element, Extension};
use chorus::media::video::Vp8Descriptor;
use chorus::mixer::control::{Codec, Layer, StreamInfo};

/// Frames per second of every layer.
pub(crate) const FPS: u32 = 30;
/// The time between two frames.
pub(crate) const FRAME_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / FPS as u64);
/// Simulcast layer bitrates, bit/s, lowest first.
pub(crate) const BITRATES: [u32; 3] = [150_000, 500_000, 1_500_000];
/// The temporal split announced: TID 0 alone takes 40 % of a layer, TIDs 0-1 60 %.
const TEMPORAL_SPLIT: [u8; 2] = [40, 60];
/// The L1T3 pattern: each frame's TID and whether it is a layer-sync frame (it
/// references only TID 0, RFC 7741 §4.2 Y bit).
const PATTERN: [(u8, bool); 4] = [(0, false), (2, true), (1, true), (2, false)];
/// A frame's size over its layer's average frame, by TID: 40 / 20 / 40 % of the bytes
/// over a pattern of four frames, the split announced.
const TID_SIZE: [f64; 3] = [1.6, 0.8, 0.8];
/// A keyframe's size over its layer's average frame.
const KEYFRAME_SIZE: f64 = 4.0;
/// Largest RTP payload: the descriptor and a slice of the frame.
const MAX_PAYLOAD: usize = 1_100;
/// The RFC 8285 id of abs-send-time (the SFU's default, chorus-media's sessions').
pub(crate) const ABS_SEND_TIME_ID: u8 = 3;
/// Payload type of VP8.
const PAYLOAD_TYPE: u8 = 96;

/// The SSRC of `layer` of participant `p`'s stream; the relay sends every layer of it
/// to receivers as layer 0's SSRC.
pub(crate) const fn ssrc(p: u32, layer: u8) -> u32 {
    p << 8 | layer as u32
}

/// The SSRC participant `p` sends its RTCP feedback (receiver reports, REMB, NACK,
/// PLI) as.
pub(crate) const fn feedback_ssrc(p: u32) -> u32 {
    p << 8 | 0xff
}

/// What participant `p` publishes: stream `p`, three VP8 layers with three temporal
/// layers each.
pub(crate) fn stream_info(p: u32) -> StreamInfo {
    let layers = (0..3u8)
        .map(|l| Layer {
            ssrc: ssrc(p, l),
            bitrate_bps: BITRATES[usize::from(l)],
        })
        .collect();
    let mut info = StreamInfo::video(p, p, Codec::Vp8, layers);
    info.temporal = TEMPORAL_SPLIT.to_vec();
    info
}

/// What a group of receivers asks the relay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// Every stream at the top layer, every temporal layer (REMB above it all).
    Top,
    /// The middle layer at most (a `Subscribe` for layers 0-1: a smaller window).
    Middle,
    /// The lowest layer only (`Subscribe` for layer 0: thumbnails).
    Low,
    /// The lowest layer's base temporal layer (7.5 frames per second): a REMB that
    /// fits nothing more.
    LowBase,
    /// Every layer accepted; the REMB alternates between the `Top` and `LowBase`
    /// estimates every `--switch-every` seconds, so the relay moves these receivers
    /// between layer 2 and layer 0 at keyframes.
    Switching,
}

impl Group {
    /// Every group, in the order participants are dealt to them.
    pub(crate) const ALL: [Self; 5] = [
        Self::Top,
        Self::Middle,
        Self::Low,
        Self::LowBase,
        Self::Switching,
    ];

    /// Participant `index`'s group (0-based): round robin.
    pub(crate) fn of(index: usize) -> Self {
        Self::ALL[index % Self::ALL.len()]
    }

    /// The layers it subscribes to (bit i = layer i).
    pub(crate) fn accept(self) -> u8 {
        match self {
            Self::Top | Self::Switching => 0b111,
            Self::Middle => 0b011,
            Self::Low | Self::LowBase => 0b001,
        }
    }

    /// Its REMB estimate for `streams` streams; `constrained` is the `Switching`
    /// group's low phase.
    pub(crate) fn estimate(self, streams: usize, constrained: bool) -> u64 {
        let streams = streams as u64;
        let base = u64::from(BITRATES[0]) * u64::from(TEMPORAL_SPLIT[0]) / 100;
        match self {
            // Each stream's lowest choice (layer 0, TID 0) fits, and 20 kbit/s to
            // spare is less than any stream's next step (TID 1: +30 kbit/s).
            Self::LowBase => streams * base + 20_000,
            Self::Switching if constrained => streams * base + 20_000,
            // Twice the top layer for every stream.
            _ => streams * 2 * u64::from(BITRATES[2]) + 1_000_000,
        }
    }

    /// The layer and the highest TID its receivers should get of every stream, when
    /// it does not change.
    pub(crate) fn expected(self) -> Option<(u8, u8)> {
        match self {
            Self::Top => Some((2, 2)),
            Self::Middle => Some((1, 2)),
            Self::Low => Some((0, 2)),
            Self::LowBase => Some((0, 0)),
            Self::Switching => None,
        }
    }

    /// A short name for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Top => "top",
            Self::Middle => "middle",
            Self::Low => "low",
            Self::LowBase => "low-base",
            Self::Switching => "switching",
        }
    }
}

/// What the first bytes after the VP8 descriptor say about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The simulcast layer it was sent on.
    pub(crate) layer: u8,
    /// Its temporal layer.
    pub(crate) tid: u8,
    /// When it was sent, microseconds after the start of the run (wrapping).
    pub(crate) sent_us: u32,
}

/// Bytes of the stamp after the VP8 payload header byte.
const STAMP_LEN: usize = 6;

impl Stamp {
    /// Reads the stamp of a received RTP payload.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let (_, body) = Vp8Descriptor::decode(payload).ok()?;
        let s = body.get(1..1 + STAMP_LEN)?;
        let (&[layer, tid], time) = s.split_first_chunk::<2>()?;
        Some(Self {
            layer,
            tid,
            sent_us: u32::from_be_bytes(time.try_into().ok()?),
        })
    }
}

/// One publisher's encoder state: sequence numbers, picture ids and the temporal
/// pattern of each layer, keyframes due.
pub(crate) struct Publisher {
    id: u32,
    frames: u64,
    seq: [u16; 3],
    timestamp: [u32; 3],
    picture_id: [u16; 3],
    tl0_pic_idx: [u8; 3],
    /// Position in [`PATTERN`] of each layer's next frame (a keyframe restarts it).
    position: [usize; 3],
    want_key: [bool; 3],
    key_every: u64,
    key_phase: u64,
    /// Packets and payload bytes sent per layer, for sender reports.
    packets: [u32; 3],
    octets: [u32; 3],
    /// Keyframes sent: periodic ones and those asked for.
    pub(crate) periodic_keyframes: u64,
    pub(crate) requested_keyframes: u64,
    payload: Vec<u8>,
    ext: Vec<u8>,
}

impl Publisher {
    /// Publisher `id`, with a keyframe every `key_every` frames, the first periodic
    /// one after `key_every - key_phase` frames; the first frame of every layer is a
    /// keyframe too.
    pub(crate) fn new(id: u32, key_every: u64, key_phase: u64) -> Self {
        // Unrelated starting numbers per layer, some near the 16-bit wrap.
        let mix = id.wrapping_mul(0x9e37_79b9);
        Self {
            id,
            frames: 0,
            seq: [
                mix as u16,
                (mix >> 8) as u16,
                65_500u16.wrapping_add(id as u16),
            ],
            timestamp: [mix, mix.rotate_left(11), mix.rotate_left(22)],
            picture_id: [(mix & 0x7fff) as u16, 0, 0x7ff0],
            tl0_pic_idx: [mix as u8, 0, 0],
            position: [0; 3],
            want_key: [false; 3],
            key_every: key_every.max(1),
            key_phase,
            packets: [0; 3],
            octets: [0; 3],
            periodic_keyframes: 0,
            requested_keyframes: 0,
            payload: Vec::with_capacity(MAX_PAYLOAD + 32),
            ext: Vec::with_capacity(8),
        }
    }

    /// A PLI or FIR for `ssrc`: that layer's next frame is a keyframe. Whether the
    /// SSRC is one of this publisher's.
    pub(crate) fn request_keyframe(&mut self, ssrc: u32) -> bool {
        let layer = (ssrc & 0xff) as usize;
        if ssrc >> 8 != self.id || layer >= 3 {
            return false;
        }
        self.want_key[layer] = true;
        true
    }

    /// The next frame of every layer, each packet written into `buf` in the clear
    /// and handed to `send`; `sent_us` is the send time for the stamp and
    /// `abs_send_time` the 24-bit abs-send-time value.
    pub(crate) fn frame(
        &mut self,
        sent_us: u32,
        abs_send_time: [u8; 3],
        buf: &mut BytesMut,
        mut send: impl FnMut(&[u8]) -> Result<(), Box<dyn std::error::Error>>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        // The first frame of every layer is a keyframe: count it with the periodic ones.
        let periodic =
            self.frames == 0 || (self.frames + self.key_phase).is_multiple_of(self.key_every);
        for l in 0..3 {
            let requested = std::mem::take(&mut self.want_key[l]);
            let key = requested || periodic;
            if key {
                self.position[l] = 0;
                if periodic {
                    self.periodic_keyframes += 1;
                } else {
                    self.requested_keyframes += 1;
                }
            }
            let (tid, sync) = PATTERN[self.position[l] % PATTERN.len()];
            self.position[l] += 1;
            if tid == 0 {
                self.tl0_pic_idx[l] = self.tl0_pic_idx[l].wrapping_add(1);
            }
            let average = f64::from(BITRATES[l]) / 8.0 / f64::from(FPS);
            let size = average
                * if key {
                    KEYFRAME_SIZE
                } else {
                    TID_SIZE[usize::from(tid)]
                };
            let parts = (size as usize).div_ceil(MAX_PAYLOAD - 16).max(1);
            let part_len = (size as usize / parts).max(1 + STAMP_LEN);
            for part in 0..parts {
                self.payload.clear();
                Vp8Descriptor {
                    start_of_partition: part == 0,
                    picture_id: Some(self.picture_id[l]),
                    tl0_pic_idx: Some(self.tl0_pic_idx[l]),
                    tid: Some((tid, sync && !key)),
                    ..Vp8Descriptor::default()
                }
                .encode(&mut self.payload);
                // The VP8 payload header's P bit: 0 for a keyframe (RFC 7741 §4.3).
                self.payload.push(u8::from(!key));
                self.payload.extend_from_slice(&[l as u8, tid]);
                self.payload.extend_from_slice(&sent_us.to_be_bytes());
                self.payload
                    .resize(self.payload.len() + part_len - 1 - STAMP_LEN, 0x5a);
                self.ext.clear();
                let profile = rtp::write_elements(
                    &[Element {
                        id: ABS_SEND_TIME_ID,
                        data: &abs_send_time,
                    }],
                    &mut self.ext,
                )?;
                buf.clear();
                rtp::Packet {
                    marker: part + 1 == parts,
                    payload_type: PAYLOAD_TYPE,
                    sequence: self.seq[l],
                    timestamp: self.timestamp[l],
                    ssrc: ssrc(self.id, l as u8),
                    csrcs: Vec::new(),
                    extension: Some(Extension {
                        profile,
                        data: &self.ext,
                    }),
                    payload: &self.payload,
                    padding: 0,
                }
                .encode(buf)?;
                send(buf)?;
                self.seq[l] = self.seq[l].wrapping_add(1);
                self.packets[l] = self.packets[l].wrapping_add(1);
                self.octets[l] = self.octets[l].wrapping_add(self.payload.len() as u32);
            }
            self.picture_id[l] = (self.picture_id[l] + 1) & 0x7fff;
            self.timestamp[l] = self.timestamp[l].wrapping_add(90_000 / FPS);
        }
        self.frames += 1;
        Ok(())
    }

    /// A sender report of every layer (RFC 3550 §6.4.1) at NTP time `ntp`, as one
    /// compound packet in the clear.
    pub(crate) fn sender_reports(
        &self,
        ntp: u64,
        buf: &mut BytesMut,
    ) -> Result<(), Box<dyn std::error::Error>> {
        buf.clear();
        let reports: Vec<rtcp::Packet<'_>> = (0..3)
            .map(|l| rtcp::Packet::SenderReport {
                ssrc: ssrc(self.id, l as u8),
                info: SenderInfo {
                    ntp,
                    rtp_timestamp: self.timestamp[l],
                    packet_count: self.packets[l],
                    octet_count: self.octets[l],
                },
                reports: Vec::new(),
            })
            .collect();
        rtcp::encode_compound(&reports, buf)?;
        Ok(())
    }
}

/// A histogram of delays: 100 µs buckets up to 1 s, and one for the rest.
#[derive(Debug, Clone)]
pub(crate) struct Delays {
    buckets: Vec<u64>,
}

/// Width of a [`Delays`] bucket, microseconds.
const BUCKET_US: u64 = 100;
/// Buckets below 1 s.
const BUCKETS: usize = 10_000;

impl Default for Delays {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS + 1],
        }
    }
}

impl Delays {
    /// One delay.
    pub(crate) fn record(&mut self, d: Duration) {
        let bucket = usize::try_from(d.as_micros() / u128::from(BUCKET_US)).unwrap_or(BUCKETS);
        if let Some(n) = self.buckets.get_mut(bucket.min(BUCKETS)) {
            *n += 1;
        }
    }

    /// The delay below which a share `q` of those recorded fell (to the bucket's
    /// upper edge; 1 s for the overflow bucket).
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let total: u64 = self.buckets.iter().sum();
        let want = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        let at = self
            .buckets
            .iter()
            .position(|&n| {
                seen += n;
                seen >= want
            })
            .unwrap_or(BUCKETS);
        Duration::from_micros(BUCKET_US * (at as u64 + 1).min(BUCKETS as u64))
    }
}

/// The delay from an abs-send-time value (RFC 8285 extension, 6.18 fixed-point
/// seconds, wrapping every 64 s) to `now`, both on the run's clock.
pub(crate) fn abs_send_time_delay(sent: [u8; 3], now: [u8; 3]) -> Duration {
    let value = |b: [u8; 3]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let units = value(now).wrapping_sub(value(sent)) & 0x00ff_ffff;
    Duration::from_nanos((u64::from(units) * 1_000_000_000) >> 18)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_send_time_delays_survive_the_64_second_wrap() {
        let at = |s: f64| chorus::media::congestion::abs_send_time(Duration::from_secs_f64(s));
        let d = abs_send_time_delay(at(63.999), at(64.001));
        assert!((d.as_secs_f64() - 0.002).abs() < 10e-6, "{d:?}");
        let mut h = Delays::default();
        for ms in [1u64, 1, 1, 2, 900, 5_000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Duration::from_micros(1_100));
        assert_eq!(h.quantile(1.0), Duration::from_secs(1));
    }
}
