//! The relay as a deployment runs it: chorus-mixer's `Sfu` behind one UDP socket,
//! a leg per participant told apart by its address, every leg SRTP under its own keys
//! (`LegSecurity::srtp`). Each datagram goes to `Sfu::handle_input` as it arrived
//! (the SFU unprotects it with the sender's leg, forwards, and protects each copy with
//! the receiver's leg), and whatever the SFU asks to send leaves through the batched
//! driver. The thread's CPU time and the SFU's counters are sampled when the media
//! starts and when it ends, so the figures cover exactly the media window.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus::framing::DatagramCore;
use chorus::framing::{PacketKind, Transmit, classify};
use chorus::media::congestion::abs_send_time;
use chorus::media::rtp;
use chorus::mixer::control::Message;
use chorus::mixer::sfu::{Kind, LegSecurity, Output, Peer, Sfu, SfuConfig, SfuStats};

use crate::media::{ABS_SEND_TIME_ID, Delays, Group, abs_send_time_delay, stream_info};
use crate::realtime::thread_cpu;

/// The relay's side of one participant.
pub(crate) struct Attach {
    /// Participant id, 1 to N.
    pub(crate) id: u32,
    /// Its socket's address.
    pub(crate) addr: SocketAddr,
    /// Its leg's SRTP contexts.
    pub(crate) security: LegSecurity,
    /// What it asks for.
    pub(crate) group: Group,
}

/// The relay's thread CPU time and the SFU's counters at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// When it was taken.
    pub(crate) at: Instant,
    /// The relay thread's CPU time then.
    pub(crate) cpu: Duration,
    /// The same split into user and kernel time, if the system tells.
    pub(crate) user_system: Option<(Duration, Duration)>,
    /// Every core's busy, idle and stolen time then ([`core_times`]).
    pub(crate) cores: Vec<[u64; 3]>,
    /// The SFU's counters then.
    pub(crate) stats: SfuStats,
}

/// What the relay refused or could not send.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    /// Datagrams `Sfu::handle_input` rejected, or from an unknown address.
    pub(crate) rejected: u64,
    /// The first rejection, for the report.
    pub(crate) first: Option<String>,
    /// Transmits for a peer's control channel (none expected: endpoints get no
    /// control messages from the SFU).
    pub(crate) control: u64,
}

/// The relay as a sans-IO datagram core for chorus-nat's batched driver.
pub(crate) struct Relay {
    sfu: Sfu,
    out: Output,
    by_addr: HashMap<SocketAddr, u32>,
    /// Participant `id`'s address at `id - 1`.
    addr_of: Vec<SocketAddr>,
    /// Where the outgoing bytes of one SFU call are copied, then frozen into one
    /// `Bytes` that every transmit of the call slices: no allocation per packet.
    arena: BytesMut,
    ranges: Vec<(SocketAddr, usize, usize)>,
    queue: VecDeque<Transmit>,
    /// When to sample: the start and the end of the media.
    marks: Vec<Instant>,
    /// The samples taken at the marks.
    pub(crate) samples: Vec<Sample>,
    /// Datagrams received, RTP and RTCP.
    pub(crate) received: u64,
    /// How long after the publisher sent it each RTP packet reached the SFU (from
    /// its abs-send-time, which SRTP leaves in clear): the relay's own backlog.
    pub(crate) delays: Delays,
    /// What it refused.
    pub(crate) refused: Refused,
}

impl Relay {
    /// A relay with every participant attached, publishing its stream and
    /// subscribed to the layers its group accepts (the `Subscribe` control messages
    /// arrive over each participant's control channel, before the media: not timed).
    /// The keyframe requests this starts are queued to go out first.
    pub(crate) fn new(
        now: Instant,
        config: SfuConfig,
        parties: Vec<Attach>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let mut relay = Self {
            sfu: Sfu::new(config)?,
            out: Output::new(),
            by_addr: parties.iter().map(|a| (a.addr, a.id)).collect(),
            addr_of: Vec::new(),
            arena: BytesMut::with_capacity(1 << 20),
            ranges: Vec::new(),
            queue: VecDeque::new(),
            marks: Vec::new(),
            samples: Vec::with_capacity(2),
            received: 0,
            delays: Delays::default(),
            refused: Refused::default(),
        };
        let groups: Vec<(u32, Group)> = parties.iter().map(|a| (a.id, a.group)).collect();
        relay.addr_of = vec![SocketAddr::from(([0, 0, 0, 0], 0)); parties.len()];
        for a in &parties {
            let slot = (a.id as usize)
                .checked_sub(1)
                .and_then(|i| relay.addr_of.get_mut(i))
                .ok_or("participant ids run from 1 to N")?;
            *slot = a.addr;
        }
        for a in parties {
            relay
                .sfu
                .add_endpoint(now, a.id, a.security, &mut relay.out)?;
        }
        for &(p, _) in &groups {
            relay.sfu.publish(now, p, stream_info(p), &mut relay.out)?;
        }
        for &(r, group) in &groups {
            if group.accept() == 0b111 {
                continue;
            }
            for &(p, _) in groups.iter().filter(|(p, _)| *p != r) {
                let subscribe = Message::Subscribe {
                    stream: p,
                    layers: group.accept(),
                };
                relay
                    .sfu
                    .handle_control(now, Peer::Endpoint(r), &subscribe, &mut relay.out)?;
            }
        }
        relay.take_output();
        Ok(relay)
    }

    /// Samples the thread's CPU time and the SFU's counters at these instants (the
    /// start and the end of the media).
    pub(crate) fn set_marks(&mut self, marks: [Instant; 2]) {
        self.marks = marks.to_vec();
    }

    /// The SFU's counters now.
    pub(crate) fn stats(&self) -> SfuStats {
        self.sfu.stats()
    }

    /// Moves what the SFU asked to send into the transmit queue.
    fn take_output(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.ranges.clear();
        for t in self.out.iter() {
            match (t.to, t.kind) {
                (Peer::Endpoint(id), Kind::Rtp | Kind::Rtcp) => {
                    if let Some(&addr) = (id as usize)
                        .checked_sub(1)
                        .and_then(|i| self.addr_of.get(i))
                    {
                        let start = self.arena.len();
                        self.arena.extend_from_slice(t.bytes);
                        self.ranges.push((addr, start, self.arena.len()));
                    }
                }
                // Control messages travel on the peer's control channel, links on
                // their own transport: neither exists in this benchmark.
                _ => self.refused.control += 1,
            }
        }
        self.out.clear();
        let chunk = self.arena.split().freeze();
        for &(dst, start, end) in &self.ranges {
            self.queue.push_back(Transmit {
                src: None,
                dst,
                payload: chunk.slice(start..end),
            });
        }
    }

    /// Records how late an SRTP packet reached the relay (media only).
    fn record_delay(&mut self, now: Instant, bytes: &[u8]) {
        let Some(&start) = self.marks.first() else {
            return;
        };
        if classify(bytes) != PacketKind::Rtp {
            return;
        }
        // SRTP leaves the header and its extensions in clear.
        let Ok(packet) = rtp::Packet::decode(bytes) else {
            return;
        };
        let sent = packet.extension_elements().and_then(|mut elements| {
            elements.find_map(|e| {
                e.ok()
                    .filter(|e| e.id == ABS_SEND_TIME_ID)
                    .and_then(|e| <[u8; 3]>::try_from(e.data).ok())
            })
        });
        if let Some(sent) = sent {
            let arrived = abs_send_time(now.saturating_duration_since(start));
            self.delays.record(abs_send_time_delay(sent, arrived));
        }
    }

    fn sample_due(&mut self, now: Instant) {
        while let Some(&mark) = self.marks.get(self.samples.len()) {
            if now < mark {
                break;
            }
            self.samples.push(Sample {
                at: now,
                cpu: thread_cpu(),
                user_system: user_system(),
                cores: core_times(),
                stats: self.sfu.stats(),
            });
        }
    }
}

/// The calling thread's user and kernel time, from `/proc/thread-self/stat` (fields
/// 14 and 15, in USER_HZ ticks: 10 ms on Linux).
fn user_system() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from the ")" that ends it.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let tick = Duration::from_millis(10);
    Some((tick * utime as u32, tick * stime as u32))
}

/// Each core's (busy, idle, stolen) time from `/proc/stat`, in USER_HZ ticks: busy
/// is user, nice, system, irq and softirq; idle includes iowait; stolen is the time
/// the hypervisor ran something else. Empty where the file cannot be read.
fn core_times() -> Vec<[u64; 3]> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (proc(5)).
            [at(0) + at(1) + at(2) + at(5) + at(6), at(3) + at(4), at(7)]
        })
        .collect()
}

impl DatagramCore for Relay {
    // Refusals are counted here and fail the run at the end: nothing to report.
    type Event = std::convert::Infallible;
    type Error = std::convert::Infallible;

    fn accepts(&self, _: SocketAddr, from: SocketAddr, _: &[u8]) -> bool {
        self.by_addr.contains_key(&from)
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        _local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Self::Error> {
        self.received += 1;
        let Some(&id) = self.by_addr.get(&from) else {
            self.refused.rejected += 1;
            self.refused
                .first
                .get_or_insert_with(|| "a datagram from an unknown address".into());
            return Ok(());
        };
        self.record_delay(now, bytes);
        if let Err(e) = self
            .sfu
            .handle_input(now, Peer::Endpoint(id), bytes, &mut self.out)
        {
            self.refused.rejected += 1;
            self.refused
                .first
                .get_or_insert_with(|| format!("from participant {id}: {e}"));
        }
        self.take_output();
        Ok(())
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mark = self.marks.get(self.samples.len()).copied();
        match (self.sfu.poll_timeout(), mark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.sample_due(now);
        self.sfu.handle_timeout(now, &mut self.out);
        self.take_output();
    }
}
