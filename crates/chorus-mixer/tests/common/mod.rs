//! An in-memory conference of relays for the SFU tests: simulcast VP8 senders,
//! relays joined by links, and a lossless network that delivers every transmit in
//! order on a virtual clock. Every leg is SRTP with its own keys in each direction:
//! participants protect what they send and unprotect what they get with real
//! `SrtpSession`s, and relays exchange SRTP over their links.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::{PacketKind, classify};
use chorus_media::{rtcp, rtp};
use chorus_mixer::control::{Codec, Layer, StreamInfo};
use chorus_mixer::sfu::{Kind, LegSecurity, Output, Peer, Sfu, SfuConfig};

/// The SRTP session of key `k` (AEAD_AES_128_GCM, key and salt from `k`): one per
/// direction of every leg.
pub fn srtp(k: u32) -> SrtpSession {
    let suite = Suite::AeadAes128Gcm;
    let bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| (k.wrapping_mul(0x9e37_79b9) >> (8 * (i % 4))) as u8 ^ i as u8)
            .collect()
    };
    SrtpSession::new(Policy::new(suite, &bytes(suite.key_len()), &bytes(suite.salt_len())).unwrap())
        .unwrap()
}

/// The key participant `p` sends under (its uplink to its relay).
pub fn uplink_key(p: u32) -> u32 {
    2 * p
}

/// The key participant `p` receives under (its relay's downlink to it).
pub fn downlink_key(p: u32) -> u32 {
    2 * p + 1
}

/// The relay's side of participant `p`'s leg.
pub fn endpoint_leg(p: u32) -> LegSecurity {
    LegSecurity::srtp(srtp(uplink_key(p)), srtp(downlink_key(p)))
}

/// The key relay `from` sends to relay `to` under.
pub fn link_key(from: usize, to: usize) -> u32 {
    1_000_000 + 1000 * from as u32 + to as u32
}

/// Relay `me`'s side of its link to relay `other`.
pub fn link_leg(me: usize, other: usize) -> LegSecurity {
    LegSecurity::srtp(srtp(link_key(other, me)), srtp(link_key(me, other)))
}

/// A participant's end of its leg: protects what it sends, unprotects what it gets.
pub struct Party {
    pub send: SrtpSession,
    pub receive: SrtpSession,
}

impl Party {
    pub fn new(p: u32) -> Self {
        Self {
            send: srtp(uplink_key(p)),
            receive: srtp(downlink_key(p)),
        }
    }

    /// `plain` protected to send if it is RTP or RTCP; a control message goes as it
    /// is (in a deployment, over the authenticated control channel).
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut b = plain.to_vec();
        match classify(plain) {
            PacketKind::Rtp => self.send.protect_rtp(&mut b).unwrap(),
            PacketKind::Rtcp => self.send.protect_rtcp(&mut b).unwrap(),
            _ => {}
        }
        b
    }

    /// What the relay sent, unprotected.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Vec<u8>, chorus_crypto::Error> {
        let mut b = bytes.to_vec();
        match classify(bytes) {
            PacketKind::Rtp => self.receive.unprotect_rtp(&mut b)?,
            PacketKind::Rtcp => self.receive.unprotect_rtcp(&mut b)?,
            other => panic!("not SRTP or SRTCP: {other:?}"),
        }
        Ok(b)
    }
}

/// The SSRC in an (S)RTP header, which SRTP leaves in clear.
pub fn ssrc_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[8..12].try_into().unwrap())
}

/// Layer bitrates of every test stream.
pub const BITRATES: [u32; 3] = [150_000, 500_000, 1_500_000];

/// An RTP packet on the wire (PT 96), with `elements` as RFC 8285 header extension
/// elements (none: no extension).
pub fn rtp_bytes(
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker: bool,
    elements: &[rtp::Element<'_>],
    payload: &[u8],
) -> Vec<u8> {
    let mut ext = Vec::new();
    let profile = (!elements.is_empty()).then(|| rtp::write_elements(elements, &mut ext).unwrap());
    let p = rtp::Packet {
        marker,
        payload_type: 96,
        sequence,
        timestamp,
        ssrc,
        csrcs: vec![],
        extension: profile.map(|profile| rtp::Extension {
            profile,
            data: &ext,
        }),
        payload,
        padding: 0,
    };
    let mut b = bytes::BytesMut::new();
    p.encode(&mut b).unwrap();
    b.to_vec()
}

/// The SSRC of `layer` of participant `p`'s stream.
pub fn ssrc(p: u32, layer: u8) -> u32 {
    p << 8 | u32::from(layer)
}

/// Participant `p` publishes stream `p` with three VP8 layers.
pub fn stream_info(p: u32) -> StreamInfo {
    StreamInfo::video(
        p,
        p,
        Codec::Vp8,
        (0..3u8)
            .map(|l| Layer {
                ssrc: ssrc(p, l),
                bitrate_bps: BITRATES[usize::from(l)],
            })
            .collect(),
    )
}

/// A simulcast VP8 sender: per frame, two packets per layer; a keyframe every
/// `key_every` frames and right after a keyframe request for that layer.
pub struct Sender {
    pub participant: u32,
    seq: [u16; 3],
    ts: [u32; 3],
    want_key: [bool; 3],
    pub frames: u64,
    pub key_every: u64,
    /// Packets sent per layer.
    pub sent: [u64; 3],
    /// Layers the sender does not send (as a simulcast encoder under congestion).
    pub stopped: [bool; 3],
}

impl Sender {
    pub fn new(participant: u32, key_every: u64) -> Self {
        // Unrelated bases per layer, near the 16-bit wrap for some.
        Self {
            participant,
            seq: [
                65_500u16.wrapping_add(participant as u16 * 7),
                1_000,
                40_000,
            ],
            ts: [4_000_000_000, 12_345, 777_777],
            want_key: [true; 3],
            frames: 0,
            key_every,
            sent: [0; 3],
            stopped: [false; 3],
        }
    }

    pub fn request_keyframe(&mut self, ssrc: u32) {
        if ssrc >> 8 == self.participant {
            self.want_key[(ssrc & 0xff) as usize] = true;
        }
    }

    /// The next frame's packets, all layers.
    pub fn frame(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for l in 0..3 {
            if self.stopped[l] {
                // A restarted layer starts with a keyframe.
                self.want_key[l] = true;
                self.ts[l] = self.ts[l].wrapping_add(3000);
                continue;
            }
            let key = self.want_key[l] || self.frames.is_multiple_of(self.key_every);
            self.want_key[l] = false;
            for part in 0..2 {
                // VP8 descriptor: S=1 PID 0 on the first packet; VP8 header P bit.
                // The last byte names the layer, so receivers can tell what they got.
                let mut payload = match (part, key) {
                    (0, true) => vec![0x10, 0x00, 0x9d, 0x01, 0x2a],
                    (0, false) => vec![0x10, 0x01, 0x00, 0x00, 0x00],
                    _ => vec![0x00, 0xaa, 0xbb, 0xcc, 0xdd],
                };
                payload.push(l as u8);
                out.push(rtp_bytes(
                    ssrc(self.participant, l as u8),
                    self.seq[l],
                    self.ts[l],
                    part == 1,
                    &[],
                    &payload,
                ));
                self.seq[l] = self.seq[l].wrapping_add(1);
                self.sent[l] += 1;
            }
            self.ts[l] = self.ts[l].wrapping_add(3000);
        }
        self.frames += 1;
        out
    }
}

/// What a participant received.
#[derive(Default)]
pub struct Inbox {
    /// RTP packets in arrival order, by SSRC: (sequence, timestamp, payload).
    pub rtp: HashMap<u32, Vec<(u16, u32, Vec<u8>)>>,
    /// The same packets as they arrived: SRTP.
    pub wire: HashMap<u32, Vec<Vec<u8>>>,
}

/// Relays, the links between them, and where each participant is attached.
pub struct Net {
    pub now: Instant,
    pub relays: Vec<Sfu>,
    /// (relay, link id) -> (relay, link id) at the other end.
    pub links: HashMap<(usize, u32), (usize, u32)>,
    pub home: HashMap<u32, usize>,
    pub senders: HashMap<u32, Sender>,
    pub parties: HashMap<u32, Party>,
    pub inbox: HashMap<u32, Inbox>,
    /// RTP packets carried per (relay sending, link id, SSRC).
    pub link_rtp: HashMap<(usize, u32, u32), u64>,
    /// Keyframe requests each sender got (PLI and FIR), by SSRC.
    pub keyframe_requests: HashMap<u32, u64>,
    /// Every control message sent over a link: (relay, link, bytes).
    pub link_control: Vec<(usize, u32, Vec<u8>)>,
    /// Every RTP and RTCP packet sent over a link, as sent: (relay, link, kind,
    /// bytes).
    pub link_media: Vec<(usize, u32, Kind, Vec<u8>)>,
    out: Output,
}

impl Net {
    pub fn new(relays: usize, config: &SfuConfig) -> Self {
        Self {
            now: Instant::now(),
            relays: (0..relays)
                .map(|_| Sfu::new(config.clone()).unwrap())
                .collect(),
            links: HashMap::new(),
            home: HashMap::new(),
            senders: HashMap::new(),
            parties: HashMap::new(),
            inbox: HashMap::new(),
            link_rtp: HashMap::new(),
            keyframe_requests: HashMap::new(),
            link_control: Vec::new(),
            link_media: Vec::new(),
            out: Output::new(),
        }
    }

    /// Links relays `a` and `b` (link ids are the other relay's index plus 100).
    pub fn link(&mut self, a: usize, b: usize) {
        let (la, lb) = (b as u32 + 100, a as u32 + 100);
        self.links.insert((a, la), (b, lb));
        self.links.insert((b, lb), (a, la));
        self.relays[a]
            .add_link(la, link_leg(a, b), &mut self.out)
            .unwrap();
        self.flush(a);
        self.relays[b]
            .add_link(lb, link_leg(b, a), &mut self.out)
            .unwrap();
        self.flush(b);
    }

    /// Attaches participant `p` to relay `r`, publishing its stream.
    pub fn join(&mut self, p: u32, r: usize, key_every: u64) {
        self.home.insert(p, r);
        self.inbox.insert(p, Inbox::default());
        self.senders.insert(p, Sender::new(p, key_every));
        self.parties.insert(p, Party::new(p));
        let now = self.now;
        self.relays[r]
            .add_endpoint(now, p, endpoint_leg(p), &mut self.out)
            .unwrap();
        self.flush(r);
        self.relays[r]
            .publish(now, p, stream_info(p), &mut self.out)
            .unwrap();
        self.flush(r);
    }

    pub fn set_bandwidth(&mut self, p: u32, bps: u64) {
        let r = self.home[&p];
        let now = self.now;
        self.relays[r]
            .set_bandwidth(now, p, bps, &mut self.out)
            .unwrap();
        self.flush(r);
    }

    /// `plain` (RTP or RTCP) protected by participant `p`, as it would send it.
    pub fn seal(&mut self, p: u32, plain: &[u8]) -> Vec<u8> {
        self.parties.get_mut(&p).unwrap().seal(plain)
    }

    /// What a relay sent participant `p`, unprotected by `p`.
    pub fn open(&mut self, p: u32, bytes: &[u8]) -> Vec<u8> {
        self.parties.get_mut(&p).unwrap().open(bytes).unwrap()
    }

    /// Participant `p` sends `bytes` (RTP or RTCP) to its relay, SRTP-protected.
    pub fn send_from(&mut self, p: u32, bytes: &[u8]) {
        let r = self.home[&p];
        let sealed = self.parties.get_mut(&p).unwrap().seal(bytes);
        self.input(r, Peer::Endpoint(p), sealed);
    }

    /// Every sender sends one frame, then time advances by `step` and timers run.
    pub fn tick(&mut self, step: Duration) {
        let mut ps: Vec<u32> = self.senders.keys().copied().collect();
        ps.sort_unstable();
        for p in ps {
            let packets = self.senders.get_mut(&p).unwrap().frame();
            for b in packets {
                self.send_from(p, &b);
            }
        }
        self.now += step;
        for r in 0..self.relays.len() {
            if self.relays[r].poll_timeout().is_some_and(|t| t <= self.now) {
                let now = self.now;
                self.relays[r].handle_timeout(now, &mut self.out);
                self.flush(r);
            }
        }
    }

    fn input(&mut self, r: usize, from: Peer, bytes: Vec<u8>) {
        let mut queue = VecDeque::from([(r, from, bytes)]);
        while let Some((r, from, bytes)) = queue.pop_front() {
            let now = self.now;
            self.relays[r]
                .handle_input(now, from, &bytes, &mut self.out)
                .unwrap_or_else(|e| panic!("relay {r} rejected a packet from {from:?}: {e}"));
            queue.extend(self.drain(r));
        }
    }

    fn flush(&mut self, r: usize) {
        let queue: VecDeque<_> = self.drain(r).into();
        for (r, from, bytes) in queue {
            self.input(r, from, bytes);
        }
    }

    /// Takes relay `r`'s output: endpoint traffic is recorded, link traffic returned
    /// for delivery.
    fn drain(&mut self, r: usize) -> Vec<(usize, Peer, Vec<u8>)> {
        let mut next = Vec::new();
        for t in self.out.iter() {
            match t.to {
                Peer::Endpoint(p) => match t.kind {
                    Kind::Rtp => {
                        let plain = self.parties.get_mut(&p).unwrap().open(t.bytes).unwrap();
                        let pkt = rtp::Packet::decode(&plain).unwrap();
                        let inbox = self.inbox.get_mut(&p).unwrap();
                        inbox.rtp.entry(pkt.ssrc).or_default().push((
                            pkt.sequence,
                            pkt.timestamp,
                            pkt.payload.to_vec(),
                        ));
                        inbox
                            .wire
                            .entry(pkt.ssrc)
                            .or_default()
                            .push(t.bytes.to_vec());
                    }
                    Kind::Rtcp => {
                        let plain = self.parties.get_mut(&p).unwrap().open(t.bytes).unwrap();
                        for f in rtcp::decode_compound(&plain, &rtcp::Limits::default()).unwrap() {
                            let ssrcs: Vec<u32> = match f {
                                rtcp::Packet::Pli { media_ssrc, .. } => vec![media_ssrc],
                                rtcp::Packet::Fir { entries, .. } => {
                                    entries.iter().map(|e| e.ssrc).collect()
                                }
                                _ => vec![],
                            };
                            for s in ssrcs {
                                *self.keyframe_requests.entry(s).or_default() += 1;
                                self.senders.get_mut(&p).unwrap().request_keyframe(s);
                            }
                        }
                    }
                    Kind::Control => {}
                },
                Peer::Link(l) => {
                    let (other, back) = self.links[&(r, l)];
                    if t.kind == Kind::Rtp {
                        *self.link_rtp.entry((r, l, ssrc_of(t.bytes))).or_default() += 1;
                    }
                    if t.kind == Kind::Control {
                        self.link_control.push((r, l, t.bytes.to_vec()));
                    } else {
                        self.link_media.push((r, l, t.kind, t.bytes.to_vec()));
                    }
                    next.push((other, Peer::Link(back), t.bytes.to_vec()));
                }
            }
        }
        self.out.clear();
        next
    }
}

/// The sequence numbers `p` received on `ssrc` run on by one, with no gap or repeat,
/// and timestamps never go back.
pub fn assert_continuous(inbox: &Inbox, ssrc: u32) {
    let got = &inbox.rtp[&ssrc];
    for w in got.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0.wrapping_add(1),
            "sequence gap or repeat on {ssrc:#x}"
        );
        let dt = w[1].1.wrapping_sub(w[0].1);
        assert!(dt < 0x8000_0000, "timestamp went back on {ssrc:#x}");
    }
}

/// The layer a received packet came from (the sender's last payload byte).
pub fn layer_of(packet: &(u16, u32, Vec<u8>)) -> u8 {
    *packet.2.last().unwrap()
}

/// Whether a received packet starts a VP8 keyframe.
pub fn is_keyframe_start(packet: &(u16, u32, Vec<u8>)) -> bool {
    packet.2.starts_with(&[0x10, 0x00])
}

/// A REMB (receiver estimated maximum bitrate) of `bps` from SSRC 77, unprotected.
pub fn remb(bps: u64) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    rtcp::Packet::Remb {
        sender_ssrc: 77,
        bitrate: rtcp::RembBitrate::from_bps(bps),
        ssrcs: vec![],
    }
    .encode(&mut b)
    .unwrap();
    b.to_vec()
}

/// A relay with sender 1 (one layer, SSRC 0x100) and receivers 2 and 3.
pub fn one_layer_relay() -> (Sfu, Output, Instant, [Party; 3]) {
    let t0 = Instant::now();
    let mut sfu = Sfu::new(SfuConfig::default()).unwrap();
    let mut out = Output::new();
    for p in 1..=3 {
        sfu.add_endpoint(t0, p, endpoint_leg(p), &mut out).unwrap();
    }
    let layers = vec![Layer {
        ssrc: 0x100,
        bitrate_bps: 150_000,
    }];
    sfu.publish(t0, 1, StreamInfo::video(1, 1, Codec::Vp8, layers), &mut out)
        .unwrap();
    out.clear();
    (sfu, out, t0, [Party::new(1), Party::new(2), Party::new(3)])
}
