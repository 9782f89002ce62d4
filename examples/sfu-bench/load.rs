//! The participants, all on one load thread: each has its own UDP socket and its own
//! SRTP keys both ways, publishes its stream in real time, and receives, checks and
//! repairs the others'.
//!
//! - **Publishing.** At its own phase in every 33 ms frame interval a participant
//!   builds the frame of each layer (`media.rs`), protects every packet with its
//!   uplink key and sends it to the relay; once a second it sends a sender report of
//!   each layer. A PLI or FIR from the relay makes that layer's next frame a keyframe.
//! - **Loss.** A participant discards 1 % (`--loss`) of the RTP datagrams it reads,
//!   retransmissions included, before unprotecting them: the loss of the relay's
//!   downlink to it. The draw comes from a small generator of its own with a fixed
//!   seed per participant (a benchmark's loss pattern, not secret: no `Entropy`).
//! - **Receiving.** Every other datagram is unprotected with its downlink key (one
//!   that fails fails the run), then per stream: chorus-media's `NackGenerator`
//!   (RFC 4585 §6.2.1: NACK at once, again every 50 ms, three times, then a PLI),
//!   RFC 3550 receive statistics, a window of which sequence numbers arrived (a gap
//!   that never fills is a packet lost for good), the layer and temporal layer the
//!   relay chose, and the delay since the publisher sent it.
//! - **Feedback.** After each pass over the sockets, the NACKs (and PLIs) due leave
//!   as one SRTCP compound per receiver (reduced size, RFC 5506); once a second each
//!   receiver sends an RR with a block per stream (at most 31) and a REMB with its
//!   group's estimate (`media.rs`, `Group`).
//!
//! The thread sleeps until the next frame is due or for 1 ms, whichever is sooner,
//! and reads every socket with `recvmmsg` after each wake-up.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use chorus::crypto::srtp::SrtpSession;
use chorus::crypto::{AuthError, Error as CryptoError};
use chorus::framing::{PacketKind, classify};
use chorus::media::congestion::abs_send_time;
use chorus::media::feedback::{NackConfig, NackGenerator};
use chorus::media::rtcp::{self, RembBitrate};
use chorus::media::rtp::{self, SequenceUnwrapper};
use chorus::media::stats::ReceiveStats;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

use crate::media::{Delays, FRAME_INTERVAL, Group, Publisher, Stamp, feedback_ssrc, ssrc};
use crate::realtime::thread_cpu;

/// Datagrams per `recvmmsg`.
const BATCH: usize = 32;
/// Receive buffer per datagram.
const SLOT: usize = 2048;
/// Sequence numbers of a stream whose arrival is remembered.
const WINDOW: u64 = 4096;
/// Most RTCP packets in one compound (the relay's `rtcp::Limits` default).
const MAX_COMPOUND: usize = 16;
/// A frame that leaves later than this after its time counts as late.
const LATE: Duration = Duration::from_millis(5);
/// How often receiver reports, REMBs and sender reports go out.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// When things happen, shared by every participant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The relay's address.
    pub(crate) relay: SocketAddr,
    /// The first frames are due.
    pub(crate) start: Instant,
    /// No frame is due from here on.
    pub(crate) end: Instant,
    /// No feedback leaves from here on (the relay is about to stop).
    pub(crate) quiet: Instant,
    /// Share of RTP datagrams each participant discards.
    pub(crate) loss: f64,
    /// How often the switching group changes its estimate.
    pub(crate) switch_every: Option<Duration>,
}

impl Plan {
    /// Whether the switching group is in its constrained phase at `now`.
    fn constrained(&self, now: Instant) -> bool {
        self.switch_every.is_some_and(|every| {
            (now.saturating_duration_since(self.start).as_nanos() / every.as_nanos().max(1)) % 2
                == 1
        })
    }
}

/// What one group of receivers got.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GroupReport {
    /// Participants in it.
    pub(crate) members: u64,
    /// RTP packets received by layer (after the simulated loss).
    pub(crate) by_layer: [u64; 3],
    /// Packets of a layer or temporal layer the group should not get.
    pub(crate) unexpected: u64,
}

/// What the participants saw.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    pub(crate) rtp_sent: u64,
    pub(crate) rtcp_sent: u64,
    pub(crate) frames: u64,
    pub(crate) late_frames: u64,
    /// Datagrams read from the sockets (before the simulated loss).
    pub(crate) received: u64,
    pub(crate) rtp_received: u64,
    /// RTP datagrams discarded by the simulated loss.
    pub(crate) dropped: u64,
    pub(crate) rejected: u64,
    pub(crate) first_rejection: Option<String>,
    /// NACK packets sent, and the sequence numbers they asked for.
    pub(crate) nacks: u64,
    pub(crate) nacked: u64,
    /// PLIs the receivers sent (a NACK given up).
    pub(crate) plis: u64,
    /// Packets that filled a gap (retransmissions), duplicates (SRTP replays
    /// included), packets that came after their gap had left the window.
    pub(crate) recovered: u64,
    pub(crate) duplicates: u64,
    pub(crate) too_old: u64,
    /// Sequence numbers the receivers expected, and those never received.
    pub(crate) expected: u64,
    pub(crate) unrecovered: u64,
    /// PLI and FIR entries that reached publishers.
    pub(crate) keyframe_requests: u64,
    pub(crate) periodic_keyframes: u64,
    pub(crate) requested_keyframes: u64,
    /// NACKed sequence numbers that reached publishers (not in the relay's history).
    pub(crate) origin_nacked: u64,
    /// Receiver reports from the relay to publishers; sender reports forwarded to
    /// receivers.
    pub(crate) relay_reports: u64,
    pub(crate) sender_reports: u64,
    pub(crate) groups: [GroupReport; 5],
    /// Delay from the publisher's send to the receiver's read, first copies only.
    pub(crate) delay: Delays,
    /// The load thread's CPU time over the media, and the media's wall time.
    pub(crate) cpu: Duration,
    pub(crate) wall: Duration,
}

impl LoadReport {
    fn reject(&mut self, why: impl FnOnce() -> String) {
        self.rejected += 1;
        self.first_rejection.get_or_insert_with(why);
    }
}

/// What became of one arriving sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Newer than any before.
    New,
    /// Filled a gap.
    Recovered,
    /// Arrived before.
    Duplicate,
    /// Its gap had already left the window (counted lost).
    TooOld,
}

/// Which of a stream's last [`WINDOW`] sequence numbers arrived. A number that leaves
/// the window (or is still missing at the end) without arriving is lost for good.
struct Window {
    unwrap: SequenceUnwrapper,
    first: Option<u64>,
    highest: u64,
    bits: Vec<u64>,
    lost: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            unwrap: SequenceUnwrapper::new(),
            first: None,
            highest: 0,
            bits: vec![0; (WINDOW / 64) as usize],
            lost: 0,
        }
    }

    fn bit(&mut self, ext: u64) -> (&mut u64, u64) {
        let slot = ext % WINDOW;
        (&mut self.bits[(slot / 64) as usize], 1 << (slot % 64))
    }

    fn mark(&mut self, seq: u16) -> Arrival {
        let ext = self.unwrap.unwrap(seq);
        let Some(first) = self.first else {
            self.first = Some(ext);
            self.highest = ext;
            let (word, bit) = self.bit(ext);
            *word |= bit;
            return Arrival::New;
        };
        if ext > self.highest {
            // One step at a time: each number entering the window pushes out the
            // one WINDOW before it.
            for s in self.highest + 1..=ext {
                let (word, bit) = self.bit(s);
                let missed = s >= first + WINDOW && *word & bit == 0;
                *word &= !bit;
                self.lost += u64::from(missed);
            }
            self.highest = ext;
            let (word, bit) = self.bit(ext);
            *word |= bit;
            return Arrival::New;
        }
        if ext + WINDOW <= self.highest || ext < first {
            return Arrival::TooOld;
        }
        let (word, bit) = self.bit(ext);
        if *word & bit != 0 {
            return Arrival::Duplicate;
        }
        *word |= bit;
        Arrival::Recovered
    }

    /// (expected, lost for good) at the end of the run.
    fn finish(&mut self) -> (u64, u64) {
        let Some(first) = self.first else {
            return (0, 0);
        };
        let from = first.max((self.highest + 1).saturating_sub(WINDOW));
        let mut missing = 0;
        for s in from..=self.highest {
            let (word, bit) = self.bit(s);
            if *word & bit == 0 {
                missing += 1;
            }
        }
        (self.highest - first + 1, self.lost + missing)
    }
}

/// One stream as a receiver gets it.
struct Incoming {
    nack: NackGenerator,
    stats: ReceiveStats,
    window: Window,
    last_sr: Option<(u32, Instant)>,
    /// In the receiver's list of streams with feedback to send.
    listed: bool,
}

/// A small xorshift generator for the simulated loss.
struct Draw(u64);

impl Draw {
    /// Whether this datagram is lost, with probability `p`.
    fn lost(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// One participant on the load thread.
pub(crate) struct Party {
    id: u32,
    group: Group,
    socket: UdpSocket,
    /// Protects what it sends (its uplink key).
    up: SrtpSession,
    /// Unprotects what the relay sends it (its downlink key).
    down: SrtpSession,
    publisher: Publisher,
    /// The streams it receives, by the SSRC the relay sends them as.
    streams: HashMap<u32, Incoming>,
    /// Streams with NACKs or a PLI pending.
    dirty: Vec<u32>,
    draw: Draw,
    next_frame: Instant,
    next_report: Instant,
    next_sr: Instant,
    /// The switching phase its last REMB announced.
    constrained: bool,
    /// Protected datagrams being built.
    wire: Vec<u8>,
}

impl Party {
    /// Participant `id` (1-based) of `n`, in `group`, sending its first frame at
    /// `first_frame`, a periodic keyframe every `key_every` frames.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u32,
        n: usize,
        group: Group,
        socket: UdpSocket,
        up: SrtpSession,
        down: SrtpSession,
        first_frame: Instant,
        key_every: u64,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let nack = NackConfig::default();
        let mut streams = HashMap::with_capacity(n);
        for p in (1..=n as u32).filter(|&p| p != id) {
            streams.insert(
                ssrc(p, 0),
                Incoming {
                    nack: NackGenerator::new(nack)?,
                    stats: ReceiveStats::new(90_000),
                    window: Window::new(),
                    last_sr: None,
                    listed: false,
                },
            );
        }
        // Publishers' periodic keyframes out of phase with each other.
        let key_phase = u64::from(id) * key_every / n as u64;
        Ok(Self {
            id,
            group,
            socket,
            up,
            down,
            publisher: Publisher::new(id, key_every, key_phase),
            streams,
            dirty: Vec::new(),
            draw: Draw(
                0x9e37_79b9_7f4a_7c15 ^ u64::from(id).wrapping_mul(0xff51_afd7_ed55_8ccd) | 1,
            ),
            next_frame: first_frame,
            next_report: first_frame,
            next_sr: first_frame,
            constrained: false,
            wire: Vec::with_capacity(SLOT),
        })
    }

    /// `plain` (RTCP) protected with the uplink key and sent.
    fn send_rtcp(
        &mut self,
        plan: &Plan,
        plain: &[u8],
        report: &mut LoadReport,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.wire.clear();
        self.wire.extend_from_slice(plain);
        self.up.protect_rtcp(&mut self.wire)?;
        self.socket.send_to(&self.wire, plan.relay)?;
        report.rtcp_sent += 1;
        Ok(())
    }

    /// The frame due: every layer's packets, protected and sent.
    fn send_frame(
        &mut self,
        plan: &Plan,
        buf: &mut BytesMut,
        report: &mut LoadReport,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let now = Instant::now();
        if now.saturating_duration_since(self.next_frame) > LATE {
            report.late_frames += 1;
        }
        let since = now.saturating_duration_since(plan.start);
        let Self {
            publisher,
            up,
            socket,
            wire,
            ..
        } = self;
        let mut sent = 0;
        publisher.frame(
            since.as_micros() as u32,
            abs_send_time(since),
            buf,
            |plain| {
                wire.clear();
                wire.extend_from_slice(plain);
                up.protect_rtp(wire)?;
                socket.send_to(wire, plan.relay)?;
                sent += 1;
                Ok(())
            },
        )?;
        report.rtp_sent += sent;
        report.frames += 1;
        self.next_frame += FRAME_INTERVAL;
        Ok(())
    }

    /// Reads its socket until it would block.
    fn drain(
        &mut self,
        plan: &Plan,
        rx: &mut Receiver,
        report: &mut LoadReport,
    ) -> Result<(), Box<dyn std::error::Error>> {
        loop {
            let n = rx.recv(&self.socket)?;
            let now = Instant::now();
            for i in 0..n {
                let (buf, len) = rx.datagram(i);
                self.handle(now, plan, &mut buf[..len], report);
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }

    fn handle(&mut self, now: Instant, plan: &Plan, bytes: &mut [u8], report: &mut LoadReport) {
        report.received += 1;
        let id = self.id;
        match classify(bytes) {
            PacketKind::Rtp => {
                report.rtp_received += 1;
                if self.draw.lost(plan.loss) {
                    report.dropped += 1;
                    return;
                }
                match self.down.unprotect_rtp_in_place(bytes) {
                    Ok(len) => self.handle_rtp(now, plan, &bytes[..len], report),
                    // A second retransmission of one packet (a NACK repeated while
                    // the first answer was on its way): SRTP's replay check drops
                    // it, as any receiver would.
                    Err(CryptoError::Auth(AuthError::Replay)) => report.duplicates += 1,
                    Err(e) => report.reject(|| format!("participant {id}: SRTP: {e}")),
                }
            }
            PacketKind::Rtcp => match self.down.unprotect_rtcp_in_place(bytes) {
                Ok(len) => self.handle_rtcp(now, &bytes[..len], report),
                Err(e) => report.reject(|| format!("participant {id}: SRTCP: {e}")),
            },
            other => report.reject(|| format!("participant {id}: a {other:?} datagram")),
        }
    }

    fn handle_rtp(&mut self, now: Instant, plan: &Plan, plain: &[u8], report: &mut LoadReport) {
        let id = self.id;
        let packet = match rtp::Packet::decode(plain) {
            Ok(p) => p,
            Err(e) => return report.reject(|| format!("participant {id}: RTP: {e}")),
        };
        let Some(s) = self.streams.get_mut(&packet.ssrc) else {
            let ssrc = packet.ssrc;
            return report.reject(|| format!("participant {id}: unknown SSRC {ssrc:#x}"));
        };
        let Some(stamp) = Stamp::read(packet.payload) else {
            return report.reject(|| format!("participant {id}: a payload without a stamp"));
        };
        let arrival = s.window.mark(packet.sequence);
        match arrival {
            Arrival::New => {
                let at = now.saturating_duration_since(plan.start).as_micros() as u32;
                let us = at.wrapping_sub(stamp.sent_us);
                report.delay.record(Duration::from_micros(u64::from(us)));
            }
            Arrival::Recovered => report.recovered += 1,
            Arrival::Duplicate => report.duplicates += 1,
            Arrival::TooOld => report.too_old += 1,
        }
        s.nack.handle_packet(now, packet.sequence);
        s.stats
            .handle_packet(now, packet.sequence, packet.timestamp);
        if s.nack.missing() > 0 && !s.listed {
            s.listed = true;
            self.dirty.push(packet.ssrc);
        }
        let g = &mut report.groups[Group::ALL
            .iter()
            .position(|&g| g == self.group)
            .unwrap_or(0)];
        if let Some(n) = g.by_layer.get_mut(usize::from(stamp.layer)) {
            *n += 1;
        }
        if self
            .group
            .expected()
            .is_some_and(|(layer, tid)| stamp.layer != layer || stamp.tid > tid)
        {
            g.unexpected += 1;
        }
    }

    fn handle_rtcp(&mut self, now: Instant, plain: &[u8], report: &mut LoadReport) {
        let id = self.id;
        let packets = match rtcp::decode_compound(plain, &rtcp::Limits::default()) {
            Ok(p) => p,
            Err(e) => return report.reject(|| format!("participant {id}: RTCP: {e}")),
        };
        for p in packets {
            match p {
                rtcp::Packet::Pli { media_ssrc, .. } => {
                    report.keyframe_requests += 1;
                    if !self.publisher.request_keyframe(media_ssrc) {
                        report.reject(|| format!("participant {id}: a PLI for {media_ssrc:#x}"));
                    }
                }
                rtcp::Packet::Fir { entries, .. } => {
                    for e in entries {
                        report.keyframe_requests += 1;
                        if !self.publisher.request_keyframe(e.ssrc) {
                            report.reject(|| format!("participant {id}: a FIR for {:#x}", e.ssrc));
                        }
                    }
                }
                // Not answered: this publisher keeps no history (a retransmission
                // from the origin would reach only receivers that had not passed
                // its index, docs/conference.md).
                rtcp::Packet::Nack { entries, .. } => {
                    report.origin_nacked +=
                        entries.iter().map(|e| e.lost().count() as u64).sum::<u64>();
                }
                rtcp::Packet::ReceiverReport { .. } => report.relay_reports += 1,
                rtcp::Packet::SenderReport { ssrc, info, .. } => {
                    match self.streams.get_mut(&ssrc) {
                        Some(s) => {
                            s.last_sr = Some((rtcp::ntp_middle(info.ntp), now));
                            report.sender_reports += 1;
                        }
                        None => report.reject(|| format!("participant {id}: an SR for {ssrc:#x}")),
                    }
                }
                other => report.reject(|| format!("participant {id}: unexpected RTCP {other:?}")),
            }
        }
    }

    /// The NACKs and PLIs due, as few compounds as the relay's limits allow.
    fn send_nacks(
        &mut self,
        now: Instant,
        plan: &Plan,
        buf: &mut BytesMut,
        report: &mut LoadReport,
    ) -> Result<(), Box<dyn std::error::Error>> {
        buf.clear();
        let mut in_compound = 0;
        let mut i = 0;
        let me = feedback_ssrc(self.id);
        while let Some(&media_ssrc) = self.dirty.get(i) {
            let Some(s) = self.streams.get_mut(&media_ssrc) else {
                self.dirty.swap_remove(i);
                continue;
            };
            let mut packets = Vec::new();
            if let Some(entries) = s.nack.poll_nack(now) {
                report.nacks += 1;
                report.nacked += entries.iter().map(|e| e.lost().count() as u64).sum::<u64>();
                packets.push(rtcp::Packet::Nack {
                    sender_ssrc: me,
                    media_ssrc,
                    entries,
                });
            }
            if s.nack.take_keyframe_request() {
                report.plis += 1;
                packets.push(rtcp::Packet::Pli {
                    sender_ssrc: me,
                    media_ssrc,
                });
            }
            if s.nack.missing() == 0 {
                s.listed = false;
                self.dirty.swap_remove(i);
            } else {
                i += 1;
            }
            for p in packets {
                if in_compound == MAX_COMPOUND {
                    let plain = buf.split();
                    self.send_rtcp(plan, &plain, report)?;
                    in_compound = 0;
                }
                p.encode(buf)?;
                in_compound += 1;
            }
        }
        if !buf.is_empty() {
            let plain = buf.split();
            self.send_rtcp(plan, &plain, report)?;
        }
        Ok(())
    }

    /// An RR with a block per stream (at most 31) and a REMB with its estimate.
    fn send_report(
        &mut self,
        now: Instant,
        plan: &Plan,
        buf: &mut BytesMut,
        report: &mut LoadReport,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.constrained = self.group == Group::Switching && plan.constrained(now);
        let estimate = self.group.estimate(self.streams.len(), self.constrained);
        let blocks = self
            .streams
            .iter_mut()
            .filter(|(_, s)| s.stats.received() > 0)
            .take(31)
            .map(|(&ssrc, s)| {
                let (lsr, dlsr) = rtcp::last_sr_fields(s.last_sr, now);
                s.stats.report_block(ssrc, lsr, dlsr)
            })
            .collect();
        let me = feedback_ssrc(self.id);
        buf.clear();
        rtcp::encode_compound(
            &[
                rtcp::Packet::ReceiverReport {
                    ssrc: me,
                    reports: blocks,
                },
                rtcp::Packet::Remb {
                    sender_ssrc: me,
                    bitrate: RembBitrate::from_bps(estimate),
                    ssrcs: Vec::new(),
                },
            ],
            buf,
        )?;
        let plain = buf.split();
        self.send_rtcp(plan, &plain, report)?;
        self.next_report = now + REPORT_INTERVAL;
        Ok(())
    }

    /// Feedback due at `now`: NACKs and PLIs, the periodic report (at once when the
    /// switching phase changes), the publisher's sender reports.
    fn feedback(
        &mut self,
        now: Instant,
        plan: &Plan,
        buf: &mut BytesMut,
        report: &mut LoadReport,
    ) -> Result<(), Box<dyn std::error::Error>> {
        if !self.dirty.is_empty() {
            self.send_nacks(now, plan, buf, report)?;
        }
        let switched = self.group == Group::Switching && plan.constrained(now) != self.constrained;
        if now >= self.next_report || switched {
            self.send_report(now, plan, buf, report)?;
        }
        if now >= self.next_sr && now < plan.end {
            self.publisher.sender_reports(ntp(), buf)?;
            let plain = buf.split();
            self.send_rtcp(plan, &plain, report)?;
            self.next_sr = now + REPORT_INTERVAL;
        }
        Ok(())
    }
}

/// The NTP time now (RFC 5905: seconds since 1900 and a binary fraction).
fn ntp() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() + 2_208_988_800;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    secs << 32 | frac
}

/// `recvmmsg` buffers, shared by every socket.
pub(crate) struct Receiver {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Vec<u8>,
    lens: [usize; BATCH],
}

impl Receiver {
    fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
        }
    }

    /// One `recvmmsg` without waiting: how many datagrams arrived.
    fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        let mut chunks = self.bufs.chunks_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        match recvmmsg(
            sock.as_raw_fd(),
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => {
                let mut n = 0;
                for (len, r) in self.lens.iter_mut().zip(results) {
                    *len = r.bytes;
                    n += 1;
                }
                Ok(n)
            }
            Err(nix::errno::Errno::EAGAIN) => Ok(0),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// Datagram `i` of the last call: its buffer and length.
    fn datagram(&mut self, i: usize) -> (&mut [u8], usize) {
        let len = self.lens[i];
        (&mut self.bufs[i * SLOT..(i + 1) * SLOT], len)
    }
}

/// Runs every participant until the relay is done: frames until `plan.end`,
/// feedback until `plan.quiet`, reading until `done`, then once more.
pub(crate) fn run(
    mut parties: Vec<Party>,
    plan: Plan,
    done: &AtomicBool,
) -> Result<LoadReport, Box<dyn std::error::Error>> {
    // Sleeps of well under a millisecond must not become the default 50 µs slack.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    for p in &parties {
        p.socket.set_nonblocking(true)?;
    }
    let mut report = LoadReport::default();
    for p in &parties {
        let g = Group::ALL.iter().position(|&g| g == p.group).unwrap_or(0);
        report.groups[g].members += 1;
    }
    let mut rx = Receiver::new();
    let mut buf = BytesMut::with_capacity(SLOT);
    // Every receiver's first estimate, before any media.
    let now = Instant::now();
    for p in &mut parties {
        p.send_report(now, &plan, &mut buf, &mut report)?;
    }
    let mut cpu_marks: Vec<(Instant, Duration)> = Vec::with_capacity(2);
    loop {
        let now = Instant::now();
        if now >= plan.end && done.load(Ordering::Relaxed) {
            break;
        }
        // The thread's CPU time over the media: sampled at its start and its end.
        if let Some(&mark) = [plan.start, plan.end].get(cpu_marks.len())
            && now >= mark
        {
            cpu_marks.push((now, thread_cpu()));
        }
        if now >= plan.start && now < plan.end {
            for p in &mut parties {
                while p.next_frame <= now && p.next_frame < plan.end {
                    p.send_frame(&plan, &mut buf, &mut report)?;
                }
            }
        }
        for p in &mut parties {
            p.drain(&plan, &mut rx, &mut report)?;
        }
        if now < plan.quiet {
            for p in &mut parties {
                p.feedback(now, &plan, &mut buf, &mut report)?;
            }
        }
        let next_frame = parties.iter().map(|p| p.next_frame).min();
        let wake = next_frame
            .filter(|&t| t < plan.end)
            .map_or(now + Duration::from_millis(1), |t| {
                t.min(now + Duration::from_millis(1))
            });
        let left = wake.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for p in &mut parties {
        p.drain(&plan, &mut rx, &mut report)?;
    }
    if let [(t0, c0), (t1, c1)] = cpu_marks[..] {
        report.cpu = c1.saturating_sub(c0);
        report.wall = t1 - t0;
    }
    for p in &mut parties {
        report.periodic_keyframes += p.publisher.periodic_keyframes;
        report.requested_keyframes += p.publisher.requested_keyframes;
        for s in p.streams.values_mut() {
            let (expected, lost) = s.window.finish();
            report.expected += expected;
            report.unrecovered += lost;
        }
    }
    Ok(report)
}

/// Participant sockets' receive buffer: a burst of keyframes must not overflow it.
pub(crate) fn socket() -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&socket, sockopt::RcvBufForce, &(4usize << 20)).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &(4usize << 20));
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_gaps_that_never_fill_as_lost() {
        let mut w = Window::new();
        // 65,530 .. past the wrap, with 65,533 missing until a retransmission and
        // 2 missing for good.
        for seq in [65_530u16, 65_531, 65_532, 65_534, 65_535, 0, 1, 3] {
            assert_eq!(w.mark(seq), Arrival::New);
        }
        assert_eq!(w.mark(65_533), Arrival::Recovered);
        assert_eq!(w.mark(65_533), Arrival::Duplicate);
        assert_eq!(w.finish(), (10, 1));
        // A gap that leaves the window is lost; its packet arriving later is too old.
        let mut w = Window::new();
        w.mark(0);
        w.mark(2);
        w.mark(2 + WINDOW as u16);
        assert_eq!(w.mark(1), Arrival::TooOld);
        let (expected, lost) = w.finish();
        assert_eq!(expected, WINDOW + 3);
        // 1 left the window missing; 3 .. WINDOW + 1 never arrived either.
        assert_eq!(lost, 1 + (WINDOW - 1));
    }
}
