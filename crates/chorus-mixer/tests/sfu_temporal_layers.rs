//! Temporal scalability (SVC) inside simulcast layers: each receiver gets the frame
//! rate its bandwidth allows, every frame it gets is complete and has its
//! references, its sequence numbers run on without a gap, NACKs map back across the
//! frames it does not get, and a relay link carries every temporal layer once.
//!
//! The sender encodes an L1T3 pattern in each of two simulcast layers (temporal ids
//! 0, 2, 1, 2; the frames that reference only the base layer are layer-sync points,
//! the last of the four also references the first TID 2 frame), marks the
//! temporal id in the VP8 payload descriptor or in the frame-marking extension, and
//! writes into each packet the frame it belongs to and the frames it references, so
//! the receivers can check decodability without a codec.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_media::video::Vp8Descriptor;
use chorus_media::{rtcp, rtp};
use chorus_mixer::control::{Codec, Layer, Message, StreamInfo};
use chorus_mixer::sfu::{Kind, Output, Peer, Sfu, SfuConfig};
use common::{Party, endpoint_leg, link_leg, rtp_bytes, ssrc_of};
use proptest::prelude::*;

const SENDER: u32 = 1;
const LINK: u32 = 100;
const FRAME_MARKING_ID: u8 = 5;
/// Layer bitrates; temporal layers take 40 %, 60 % and 100 % of them.
const BITRATES: [u32; 2] = [200_000, 1_000_000];
const PACKETS_PER_FRAME: u8 = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Marking {
    Vp8,
    FrameMarking,
}

fn stream(marking: Marking) -> StreamInfo {
    let layers = (0..2)
        .map(|l| Layer {
            ssrc: 0x100 + l,
            bitrate_bps: BITRATES[l as usize],
        })
        .collect();
    let mut info = match marking {
        Marking::Vp8 => StreamInfo::video(1, SENDER, Codec::Vp8, layers),
        Marking::FrameMarking => {
            let mut i = StreamInfo::video(1, SENDER, Codec::Vp9, layers);
            i.frame_marking = Some(FRAME_MARKING_ID);
            i
        }
    };
    info.temporal = vec![40, 60];
    info
}

/// One frame as the packets describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FrameTag {
    id: u32,
    tid: u8,
    part: u8,
    refs: Vec<u32>,
}

fn tag_bytes(t: &FrameTag) -> Vec<u8> {
    let mut b = t.id.to_be_bytes().to_vec();
    b.extend([t.tid, t.part, t.refs.len() as u8]);
    for r in &t.refs {
        b.extend(r.to_be_bytes());
    }
    b
}

fn parse_tag(b: &[u8]) -> FrameTag {
    let n = usize::from(b[6]);
    FrameTag {
        id: u32::from_be_bytes(b[..4].try_into().unwrap()),
        tid: b[4],
        part: b[5],
        refs: (0..n)
            .map(|i| u32::from_be_bytes(b[7 + 4 * i..11 + 4 * i].try_into().unwrap()))
            .collect(),
    }
}

/// An L1T3 encoder per simulcast layer.
struct Sender {
    marking: Marking,
    frame: u32,
    seq: [u16; 2],
    ts: [u32; 2],
    /// Position in the 0, 2, 1, 2 pattern; reset by a keyframe.
    pos: [u8; 2],
    last_tl0: [u32; 2],
    last: [u32; 2],
    last_tid2: [u32; 2],
    want_key: [bool; 2],
    picture_id: u16,
    /// Whether layer-sync frames are marked (VP8 Y, frame marking B); some encoders
    /// do not.
    mark_sync: bool,
    /// Every packet sent: (ssrc, seq) -> frame id, to check NACKs.
    sent: HashMap<(u32, u16), u32>,
}

impl Sender {
    fn new(marking: Marking) -> Self {
        Self {
            marking,
            frame: 0,
            seq: [65_530, 20_000],
            ts: [1_000, 5_000_000],
            pos: [0; 2],
            last_tl0: [0; 2],
            last: [0; 2],
            last_tid2: [0; 2],
            want_key: [true; 2],
            picture_id: 0x7ff0,
            mark_sync: true,
            sent: HashMap::new(),
        }
    }

    fn frame(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        for l in 0..2usize {
            let key = std::mem::take(&mut self.want_key[l]);
            if key {
                self.pos[l] = 0;
            }
            let id = self.frame * 2 + l as u32;
            let (tid, sync, refs) = match self.pos[l] {
                _ if key => (0, true, vec![]),
                0 => (0, false, vec![self.last_tl0[l]]),
                1 => (2, true, vec![self.last[l]]),
                2 => (1, true, vec![self.last_tl0[l]]),
                // Not a sync point: a receiver that starts TID 2 here lacks a
                // reference.
                _ => (2, false, vec![self.last[l], self.last_tid2[l]]),
            };
            for part in 0..PACKETS_PER_FRAME {
                let start = part == 0;
                let tag = tag_bytes(&FrameTag {
                    id,
                    tid,
                    part,
                    refs: refs.clone(),
                });
                let mut payload = Vec::new();
                let mut marking = None;
                match self.marking {
                    Marking::Vp8 => Vp8Descriptor {
                        start_of_partition: start,
                        picture_id: Some(self.picture_id),
                        tl0_pic_idx: Some(self.last_tl0[l] as u8),
                        tid: Some((tid, sync && !key && self.mark_sync)),
                        ..Vp8Descriptor::default()
                    }
                    .encode(&mut payload),
                    Marking::FrameMarking => {
                        // S E I D B TID, then LID and TL0PICIDX.
                        let b0 = u8::from(start) << 7
                            | u8::from(part == PACKETS_PER_FRAME - 1) << 6
                            | u8::from(key) << 5
                            | u8::from(sync && !key && self.mark_sync) << 3
                            | tid;
                        marking = Some([b0, 0, self.last_tl0[l] as u8]);
                    }
                }
                // The VP8 payload header's P bit (RFC 7741 §4.3) on the first packet.
                payload.push(if start && !key { 0x01 } else { 0x00 });
                payload.extend(&tag);
                let ssrc = 0x100 + l as u32;
                let elements: Vec<rtp::Element<'_>> = marking
                    .iter()
                    .map(|data| rtp::Element {
                        id: FRAME_MARKING_ID,
                        data,
                    })
                    .collect();
                let last = part == PACKETS_PER_FRAME - 1;
                let seq = self.seq[l];
                out.push(rtp_bytes(ssrc, seq, self.ts[l], last, &elements, &payload));
                self.sent.insert((ssrc, self.seq[l]), id);
                self.seq[l] = self.seq[l].wrapping_add(1);
            }
            match tid {
                0 => self.last_tl0[l] = id,
                2 => self.last_tid2[l] = id,
                _ => {}
            }
            self.last[l] = id;
            self.pos[l] = (self.pos[l] + 1) % 4;
            self.ts[l] = self.ts[l].wrapping_add(3000);
        }
        self.frame += 1;
        out
    }
}

/// What one receiver got and decoded.
#[derive(Default)]
struct Receiver {
    /// (sequence number, frame tag) in arrival order.
    packets: Vec<(u16, FrameTag)>,
    /// Frames complete and with every reference decoded.
    decoded: HashSet<u32>,
    /// Packets seen per frame.
    parts: HashMap<u32, u8>,
}

impl Receiver {
    fn receive(&mut self, seq: u16, payload: &[u8], marking: Marking) {
        let skip = match marking {
            Marking::Vp8 => {
                let (_, body) = Vp8Descriptor::decode(payload).unwrap();
                payload.len() - body.len() + 1
            }
            Marking::FrameMarking => 1,
        };
        let tag = parse_tag(&payload[skip..]);
        let n = self.parts.entry(tag.id).or_default();
        *n += 1;
        if *n == PACKETS_PER_FRAME {
            assert!(
                tag.refs.iter().all(|r| self.decoded.contains(r)),
                "frame {} (tid {}) arrived without its references {:?}",
                tag.id,
                tag.tid,
                tag.refs
            );
            self.decoded.insert(tag.id);
        }
        self.packets.push((seq, tag));
    }

    /// No gap or repeat in the sequence numbers, and no frame left incomplete
    /// (but the last, still arriving).
    fn check(&self) {
        for w in self.packets.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "gap or repeat");
        }
        let last = self.packets.last().map(|p| p.1.id);
        for (id, n) in &self.parts {
            assert!(
                *n == PACKETS_PER_FRAME || Some(*id) == last,
                "frame {id} cut: {n} packets"
            );
        }
    }

    /// Frames decoded from frame `from` on, per layer.
    fn decoded_since(&self, from: u32) -> [usize; 2] {
        let mut n = [0; 2];
        for id in &self.decoded {
            if id / 2 >= from {
                n[(id % 2) as usize] += 1;
            }
        }
        n
    }
}

/// One relay (or two joined by a link, the sender on the first), the sender and
/// receivers, on a virtual clock with a lossless network.
struct Conference {
    now: Instant,
    relays: Vec<Sfu>,
    /// The relay each receiver is attached to.
    home: HashMap<u32, usize>,
    sender: Sender,
    receivers: HashMap<u32, Receiver>,
    /// Receivers that lose every output packet with these sequence numbers.
    lose: HashMap<u32, HashSet<u16>>,
    /// NACKs that reached the sender: (ssrc, lost sequence numbers).
    nacks: Vec<(u32, Vec<u16>)>,
    /// PLIs that reached the sender.
    plis: u64,
    /// RTP packets carried over the link, per SSRC.
    link_rtp: HashMap<u32, u64>,
    marking: Marking,
    /// Every participant's end of its SRTP leg.
    parties: HashMap<u32, Party>,
    out: Output,
}

impl Conference {
    fn new(marking: Marking, relays: usize, receivers: &[(u32, usize, u64)]) -> Self {
        Self::with_config(&SfuConfig::default(), marking, relays, receivers)
    }

    fn with_config(
        config: &SfuConfig,
        marking: Marking,
        relays: usize,
        receivers: &[(u32, usize, u64)],
    ) -> Self {
        let now = Instant::now();
        let mut c = Self {
            now,
            relays: (0..relays)
                .map(|_| Sfu::new(config.clone()).unwrap())
                .collect(),
            home: HashMap::new(),
            sender: Sender::new(marking),
            receivers: HashMap::new(),
            lose: HashMap::new(),
            nacks: Vec::new(),
            plis: 0,
            link_rtp: HashMap::new(),
            marking,
            parties: HashMap::from([(SENDER, Party::new(SENDER))]),
            out: Output::new(),
        };
        if relays == 2 {
            c.relays[0]
                .add_link(LINK, link_leg(0, 1), &mut c.out)
                .unwrap();
            c.flush(0);
            c.relays[1]
                .add_link(LINK, link_leg(1, 0), &mut c.out)
                .unwrap();
            c.flush(1);
        }
        c.relays[0]
            .add_endpoint(now, SENDER, endpoint_leg(SENDER), &mut c.out)
            .unwrap();
        c.flush(0);
        for &(p, r, bps) in receivers {
            c.home.insert(p, r);
            c.receivers.insert(p, Receiver::default());
            c.parties.insert(p, Party::new(p));
            c.relays[r]
                .add_endpoint(now, p, endpoint_leg(p), &mut c.out)
                .unwrap();
            c.flush(r);
            c.relays[r].set_bandwidth(now, p, bps, &mut c.out).unwrap();
            c.flush(r);
        }
        c.relays[0]
            .publish(now, SENDER, stream(marking), &mut c.out)
            .unwrap();
        c.flush(0);
        c
    }

    fn set_bandwidth(&mut self, p: u32, bps: u64) {
        let r = self.home[&p];
        self.relays[r]
            .set_bandwidth(self.now, p, bps, &mut self.out)
            .unwrap();
        self.flush(r);
    }

    /// One frame from the sender, then 33 ms and the relays' timers.
    fn tick(&mut self) {
        for b in self.sender.frame() {
            let sealed = self.parties.get_mut(&SENDER).unwrap().seal(&b);
            self.deliver(0, Peer::Endpoint(SENDER), sealed);
        }
        self.now += Duration::from_millis(33);
        for r in 0..self.relays.len() {
            if self.relays[r].poll_timeout().is_some_and(|t| t <= self.now) {
                self.relays[r].handle_timeout(self.now, &mut self.out);
                self.flush(r);
            }
        }
    }

    fn deliver(&mut self, r: usize, from: Peer, bytes: Vec<u8>) {
        let mut queue = VecDeque::from([(r, from, bytes)]);
        while let Some((r, from, bytes)) = queue.pop_front() {
            self.relays[r]
                .handle_input(self.now, from, &bytes, &mut self.out)
                .unwrap();
            queue.extend(self.drain(r));
        }
    }

    fn flush(&mut self, r: usize) {
        for (r, from, bytes) in self.drain(r) {
            self.deliver(r, from, bytes);
        }
    }

    fn drain(&mut self, r: usize) -> Vec<(usize, Peer, Vec<u8>)> {
        let mut next = Vec::new();
        for t in self.out.iter() {
            match (t.to, t.kind) {
                (Peer::Link(_), kind) => {
                    if kind == Kind::Rtp {
                        *self.link_rtp.entry(ssrc_of(t.bytes)).or_default() += 1;
                    }
                    next.push((1 - r, Peer::Link(LINK), t.bytes.to_vec()));
                }
                (Peer::Endpoint(SENDER), Kind::Rtcp) => {
                    let plain = self
                        .parties
                        .get_mut(&SENDER)
                        .unwrap()
                        .open(t.bytes)
                        .unwrap();
                    for f in rtcp::decode_compound(&plain, &rtcp::Limits::default()).unwrap() {
                        match f {
                            rtcp::Packet::Pli { media_ssrc, .. } => {
                                self.sender.want_key[(media_ssrc - 0x100) as usize] = true;
                                self.plis += 1;
                            }
                            rtcp::Packet::Nack {
                                media_ssrc,
                                entries,
                                ..
                            } => self.nacks.push((
                                media_ssrc,
                                entries.iter().flat_map(|e| e.lost()).collect(),
                            )),
                            _ => {}
                        }
                    }
                }
                (Peer::Endpoint(p), Kind::Rtp) => {
                    // Lost on the way: the receiver never sees it.
                    let seq = u16::from_be_bytes([t.bytes[2], t.bytes[3]]);
                    if self.lose.get(&p).is_some_and(|l| l.contains(&seq)) {
                        continue;
                    }
                    let plain = self.parties.get_mut(&p).unwrap().open(t.bytes).unwrap();
                    let pkt = rtp::Packet::decode(&plain).unwrap();
                    let payload = pkt.payload.to_vec();
                    let marking = self.marking;
                    self.receivers
                        .get_mut(&p)
                        .unwrap()
                        .receive(pkt.sequence, &payload, marking);
                }
                _ => {}
            }
        }
        self.out.clear();
        next
    }

    fn selection(&self, p: u32) -> (Option<u8>, u8) {
        let s = self.relays[self.home[&p]].selection(p, 1).unwrap();
        (s.current, s.temporal)
    }
}

/// Receivers: (id, relay, bandwidth) and the (layer, temporal layer) each should
/// end on: 10 Mbit/s takes everything; 450 kbit/s fits layer 1's base (400 k);
/// 150 kbit/s layer 0 up to TID 1 (120 k); 700 kbit/s layer 1 up to TID 1 (600 k).
const RECEIVERS: [(u32, u64, (u8, u8)); 4] = [
    (2, 10_000_000, (1, 2)),
    (3, 450_000, (1, 0)),
    (4, 150_000, (0, 1)),
    (5, 700_000, (1, 1)),
];

fn frame_rates_follow_bandwidth(marking: Marking, relays: usize) {
    let at: Vec<_> = RECEIVERS
        .iter()
        .map(|&(p, bps, _)| (p, relays - 1, bps))
        .collect();
    let mut c = Conference::new(marking, relays, &at);
    for _ in 0..200 {
        c.tick();
    }
    for &(p, _, (layer, tid)) in &RECEIVERS {
        assert_eq!(c.selection(p), (Some(layer), tid), "receiver {p}");
        let r = &c.receivers[&p];
        r.check();
        // From frame 40 on (every switch done), the share of the layer's frames the
        // pattern gives the temporal layer: 1/4, 1/2 or all 160.
        let got = r.decoded_since(40);
        let want = [40, 80, 160][usize::from(tid)];
        assert_eq!(got[usize::from(layer)], want, "receiver {p}: {got:?}");
        assert_eq!(got[usize::from(1 - layer)], 0, "receiver {p}: {got:?}");
    }
    let dropped = c.relays[relays - 1].stats().temporal_dropped;
    assert!(dropped > 0);
}

#[test]
fn each_receiver_gets_the_frame_rate_its_bandwidth_allows_vp8() {
    frame_rates_follow_bandwidth(Marking::Vp8, 1);
}

#[test]
fn each_receiver_gets_the_frame_rate_its_bandwidth_allows_frame_marking() {
    frame_rates_follow_bandwidth(Marking::FrameMarking, 1);
}

/// Behind a link, the remote relay thins per receiver; the link carries each packet
/// of a subscribed layer once, every temporal layer included.
#[test]
fn a_link_carries_every_temporal_layer_once_and_the_far_relay_thins() {
    frame_rates_follow_bandwidth(Marking::Vp8, 2);
    let at: Vec<_> = RECEIVERS.iter().map(|&(p, bps, _)| (p, 1, bps)).collect();
    let mut c = Conference::new(Marking::Vp8, 2, &at);
    for _ in 0..100 {
        c.tick();
    }
    // Both layers have receivers from the start: every packet crosses once.
    let sent_per_layer = u64::from(PACKETS_PER_FRAME) * 100;
    assert_eq!(c.link_rtp[&0x100], sent_per_layer);
    assert_eq!(c.link_rtp[&0x101], sent_per_layer);
    assert_eq!(c.relays[0].stats().temporal_dropped, 0);
}

#[test]
fn a_sender_that_marks_no_sync_frames_is_asked_for_a_keyframe_to_go_up() {
    for marking in [Marking::Vp8, Marking::FrameMarking] {
        let mut c = Conference::new(marking, 1, &[(2, 0, 10_000_000)]);
        c.sender.mark_sync = false;
        for _ in 0..20 {
            c.tick();
        }
        assert_eq!(c.selection(2), (Some(1), 2), "all from the first keyframe");
        c.set_bandwidth(2, 450_000);
        for _ in 0..4 {
            c.tick();
        }
        assert_eq!(c.selection(2), (Some(1), 0), "down at the next frame");
        let plis = c.plis;
        c.set_bandwidth(2, 10_000_000);
        // No sync frame comes: the receiver stays at the base for the keyframe
        // interval (500 ms), then the relay asks for a keyframe, which starts every
        // temporal layer at once.
        for _ in 0..12 {
            c.tick();
        }
        assert_eq!(c.selection(2), (Some(1), 0), "{marking:?}");
        assert_eq!(c.plis, plis, "no request yet");
        for _ in 0..6 {
            c.tick();
        }
        assert_eq!(c.plis, plis + 1, "{marking:?}");
        assert_eq!(c.selection(2), (Some(1), 2), "{marking:?}");
        // Every frame it got had its references (checked on arrival).
        c.receivers[&2].check();
    }
}

#[test]
fn nacks_map_back_across_frames_the_receiver_does_not_get() {
    // Without a history to answer from, the relay asks the sender.
    let mut config = SfuConfig::default();
    config.retransmit_history = 0;
    let mut c = Conference::with_config(&config, Marking::Vp8, 1, &[(4, 0, 150_000)]);
    for _ in 0..20 {
        c.tick();
    }
    // Receiver 4 (layer 0, TIDs 0-1) loses the next two packets it would get; it asks
    // for them by its own numbers.
    let next = c.receivers[&4].packets.last().unwrap().0.wrapping_add(1);
    let lost = [next, next.wrapping_add(1)];
    c.lose.insert(4, lost.into_iter().collect());
    // Two frames: exactly one of them is of TID 0 or 1 (the pattern is 0, 2, 1, 2),
    // and none after it may reference the damaged frame yet.
    for _ in 0..2 {
        c.tick();
    }
    let nack = rtcp::Packet::Nack {
        sender_ssrc: 0x4444,
        media_ssrc: 0x100,
        entries: rtcp::NackEntry::from_lost(&lost),
    };
    let mut b = BytesMut::new();
    nack.encode(&mut b).unwrap();
    let sealed = c.parties.get_mut(&4).unwrap().seal(&b);
    c.deliver(0, Peer::Endpoint(4), sealed);
    let (ssrc, seqs) = c.nacks.last().expect("a NACK reached the sender").clone();
    assert_eq!(ssrc, 0x100);
    // The sender's own numbers of the two packets: the first two of the first frame
    // after the loss began that receiver 4 gets (TID 0 or 1), skipping TID 2 frames.
    let frames: Vec<u32> = seqs.iter().map(|s| c.sender.sent[&(0x100, *s)]).collect();
    let r = &c.receivers[&4];
    let after: Vec<&FrameTag> = r.packets.iter().map(|p| &p.1).collect();
    assert_eq!(frames[0], frames[1], "both lost packets are of one frame");
    assert!(
        after.iter().all(|t| t.id != frames[0] || t.part == 2),
        "the NACKed packets are the ones the receiver lost"
    );
    let tid = after
        .iter()
        .find(|t| t.id == frames[0])
        .map(|t| t.tid)
        .unwrap();
    assert!(tid <= 1, "a frame of a temporal layer receiver 4 gets");
}

#[test]
fn a_stream_whose_temporal_ids_cannot_be_read_is_refused() {
    let now = Instant::now();
    let mut sfu = Sfu::new(SfuConfig::default()).unwrap();
    let mut out = Output::new();
    sfu.add_endpoint(now, 1, endpoint_leg(1), &mut out).unwrap();
    let mut h264 = stream(Marking::Vp8);
    h264.codec = Codec::H264;
    assert_eq!(
        sfu.publish(now, 1, h264.clone(), &mut out)
            .unwrap_err()
            .to_string(),
        "sfu: stream 1: temporal layers announced but no temporal ids readable"
    );
    // With frame marking the temporal ids are in the extension.
    h264.frame_marking = Some(3);
    sfu.publish(now, 1, h264.clone(), &mut out).unwrap();
    // The announcement goes over a control channel with its temporal shares.
    let mut b = BytesMut::new();
    Message::Publish(h264.clone()).encode(&mut b).unwrap();
    assert_eq!(Message::decode(&b), Ok(Message::Publish(h264)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Estimates that change every few frames: whatever the schedule, every frame a
    /// receiver gets is complete and decodable, its numbering has no gap, and once
    /// the estimate settles the receiver reaches the layer and temporal layer it
    /// allows.
    #[test]
    fn temporal_switches_never_break_decoding(
        schedule in proptest::collection::vec((0usize..6, 1u32..12), 1..12),
        frame_marking in any::<bool>(),
    ) {
        const RATES: [u64; 6] = [90_000, 130_000, 250_000, 450_000, 700_000, 5_000_000];
        const WANT: [(u8, u8); 6] = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)];
        let marking = if frame_marking { Marking::FrameMarking } else { Marking::Vp8 };
        let mut c = Conference::new(marking, 1, &[(2, 0, RATES[0])]);
        let mut last = 0;
        for (rate, frames) in schedule {
            c.set_bandwidth(2, RATES[rate]);
            for _ in 0..frames {
                c.tick();
            }
            last = rate;
        }
        // Long enough for a keyframe request and four sync frames.
        for _ in 0..40 {
            c.tick();
        }
        c.receivers[&2].check();
        prop_assert_eq!(c.selection(2), (Some(WANT[last].0), WANT[last].1));
    }
}
