//! `--end-to-end`: the initiator as a deployment runs it. Every participant has its
//! own UDP socket and its own SRTP keys both ways; a load thread sends each
//! participant's SRTP packets to the initiator's socket at its own jittered time in
//! each 20 ms tick, and receives and unprotects the mixes. The initiator runs in real
//! time on chorus-nat's batched UDP driver (`recvmmsg`/`sendmmsg`, the driver the
//! STUN and TURN servers use) on a current-thread tokio runtime: each datagram is
//! unprotected (SRTP) and handed to the mixer; every 20 ms the mixer ticks and every
//! outgoing packet is protected under its receiver's key and sent. Any packet the
//! initiator or a participant rejects fails the run; so does losing more than 0.1 %.
//!
//! The initiator thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`: user and kernel) is
//! the cost. On loopback the kernel's receive work for a datagram runs on the
//! *sending* thread, so part of the initiator's receive cost is charged to the load
//! thread; pin the two to different cores (`--mixer-cpu`, `--load-cpu`).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::crypto::SystemEntropy;
use chorus::crypto::srtp::SrtpSession;
use chorus::framing::DatagramCore;
use chorus::framing::Transmit;
use chorus::media::jitter::Rejected;
use chorus::mixer::Error as MixerError;
use chorus::mixer::audio::ParticipantId;

use crate::realtime::{SUITE, ms, pin, policy, serve_until};
use crate::{FRAME, Options, TICK, Tick, mixer_with};
/// How late after its tick a participant's packet may leave: network jitter.
const MAX_JITTER: Duration = Duration::from_millis(30);

/// One remote participant: its socket and keys.
struct Peer {
    socket: UdpSocket,
    /// Participant -> initiator.
    up: SrtpSession,
    /// Initiator -> participant (the participant's view, to check the mix).
    down: SrtpSession,
}

/// The initiator's view of one remote participant.
struct Leg {
    id: ParticipantId,
    addr: SocketAddr,
    rx: SrtpSession,
    tx: SrtpSession,
}

/// What the load thread saw.
#[derive(Default)]
struct LoadReport {
    sent: usize,
    received: usize,
    rejected: usize,
    late_sends: usize,
}

pub(crate) fn run(o: &Options, ticks: &[Tick]) -> Result<(), Box<dyn std::error::Error>> {
    let remote = o.participants - 1;
    let mut rng = SystemEntropy::new();
    let mixer_socket = UdpSocket::bind("127.0.0.1:0")?;
    let mixer_addr = mixer_socket.local_addr()?;
    let (mixer, initiator, ids) = mixer_with(o)?;
    let mut peers = Vec::with_capacity(remote);
    let mut legs = Vec::with_capacity(remote);
    for &id in &ids {
        let (up, down) = (policy(&mut rng)?, policy(&mut rng)?);
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        legs.push(Leg {
            id,
            addr: socket.local_addr()?,
            rx: SrtpSession::new(up.clone())?,
            tx: SrtpSession::new(down.clone())?,
        });
        peers.push(Peer {
            socket,
            up: SrtpSession::new(up)?,
            down: SrtpSession::new(down)?,
        });
    }
    // Each participant's packets protected under its own key (the participants' work,
    // not timed), and when each leaves: its tick plus a jitter of 0-30 ms.
    let prep = Instant::now();
    let mut schedule: Vec<(Duration, usize, Vec<u8>)> = Vec::with_capacity(ticks.len() * remote);
    let mut jitter_state = 0x2545_f491_4f6c_dd1d_u64;
    for (t, tick) in ticks.iter().enumerate() {
        let mut begin = 0;
        for (p, &end) in tick.ends.iter().enumerate() {
            let mut packet = tick.buffer.slice(begin..end).to_vec();
            begin = end;
            peers[p].up.protect_rtp(&mut packet)?;
            jitter_state ^= jitter_state << 13;
            jitter_state ^= jitter_state >> 7;
            jitter_state ^= jitter_state << 17;
            let jitter = Duration::from_micros(jitter_state % MAX_JITTER.as_micros() as u64);
            schedule.push((TICK * t as u32 + jitter, p, packet));
        }
    }
    schedule.sort_unstable_by_key(|(at, p, _)| (*at, *p));
    println!(
        "prepared {} SRTP datagrams from {remote} sockets in {:.1} s (not timed)",
        schedule.len(),
        prep.elapsed().as_secs_f64()
    );

    let by_addr: HashMap<SocketAddr, usize> =
        legs.iter().enumerate().map(|(i, l)| (l.addr, i)).collect();
    let by_id: HashMap<ParticipantId, usize> =
        legs.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(200);
    let duration = TICK * ticks.len() as u32;
    let load_cpu = o.load_cpu;
    let load_done = Arc::clone(&done);
    let load = std::thread::spawn(move || -> Result<LoadReport, String> {
        pin(load_cpu).map_err(|e| e.to_string())?;
        load_thread(peers, schedule, mixer_addr, start, &load_done).map_err(|e| e.to_string())
    });

    pin(o.mixer_cpu)?;
    let total_ticks = ticks.len() + (MAX_JITTER.as_millis() / TICK.as_millis()) as usize + 5;
    let mut initiator = Initiator {
        mixer,
        pcm: initiator,
        legs,
        by_addr,
        by_id,
        start,
        next_tick: 0,
        total_ticks,
        queue: std::collections::VecDeque::new(),
        received: 0,
        rejected: 0,
        late: 0,
        sent: 0,
        bytes_out: 0,
        tick_late: Vec::with_capacity(total_ticks),
    };
    // The run ends after the last tick.
    let until = start + TICK * total_ticks as u32 + Duration::from_millis(10);
    let served = serve_until(&mut initiator, mixer_socket, until)?;
    let (stats, cpu, wall) = (served.stats, served.cpu, served.wall);
    done.store(true, Ordering::Relaxed);
    let report = load.join().map_err(|_| "the load thread panicked")??;

    let Initiator {
        received,
        rejected,
        late,
        sent,
        bytes_out,
        mut tick_late,
        ..
    } = initiator;
    tick_late.sort_unstable();
    let late_p99 = tick_late
        .get((tick_late.len().saturating_sub(1) as f64 * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    let fraction = served.core_fraction();
    let n = o.participants;
    println!(
        "end_to_end suite={SUITE:?} duration={:.1} s",
        duration.as_secs_f64()
    );
    println!(
        "initiator received={received} rejected={rejected} too_late_to_play={late} sent={sent} \
         bytes_out_per_tick={:.0} tick_late_p99={:.3} ms",
        bytes_out as f64 / total_ticks as f64,
        ms(late_p99)
    );
    println!(
        "initiator system calls: {} recvmmsg ({:.1} datagrams each), {} sendmmsg/GSO \
         ({:.1} each)",
        stats.recv_calls,
        stats.received as f64 / stats.recv_calls.max(1) as f64,
        stats.send_calls,
        stats.sent as f64 / stats.send_calls.max(1) as f64
    );
    println!(
        "participants sent={} received_mixes={} rejected={} sent_late_by_more_than_5ms={}",
        report.sent, report.received, report.rejected, report.late_sends
    );
    println!(
        "initiator_cpu={:.3} s over {:.3} s wall = {:.1} % of one core; cpu_per_tick={:.3} ms",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * fraction,
        ms(cpu) / total_ticks as f64
    );
    println!(
        "participants_per_core={:.0} (N / core fraction at N={n}; linear extrapolation)",
        n as f64 / fraction.max(1e-9)
    );
    if rejected > 0 || report.rejected > 0 {
        return Err(format!(
            "rejected packets: {rejected} at the initiator, {} at participants",
            report.rejected
        )
        .into());
    }
    // Loopback loses nothing unless a receiver falls behind: then the initiator did
    // not keep up in real time, and the run does not count.
    let lost_in = report.sent.saturating_sub(received);
    let lost_out = sent.saturating_sub(report.received);
    println!("lost datagrams: {lost_in} to the initiator, {lost_out} to participants");
    if lost_in * 1000 > report.sent || lost_out * 1000 > sent {
        return Err("more than 0.1 % of datagrams lost: not real time at this N".into());
    }
    Ok(())
}

/// The initiator as a sans-IO datagram core: SRTP, the mixer, a 20 ms clock.
struct Initiator {
    mixer: chorus::mixer::audio::Mixer,
    pcm: ParticipantId,
    legs: Vec<Leg>,
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<ParticipantId, usize>,
    start: Instant,
    next_tick: usize,
    total_ticks: usize,
    queue: std::collections::VecDeque<Transmit>,
    received: usize,
    rejected: usize,
    late: usize,
    sent: usize,
    bytes_out: usize,
    tick_late: Vec<Duration>,
}

impl Initiator {
    fn tick(&mut self, now: Instant) -> Result<(), Box<dyn std::error::Error>> {
        let silence = [0i16; FRAME];
        self.mixer
            .handle_pcm(self.pcm, (self.next_tick * FRAME) as u32, &silence)?;
        self.mixer.tick(now);
        let mut buf = [0u8; 1500];
        for out in self.mixer.transmits() {
            let leg = self
                .by_id
                .get(&out.to)
                .and_then(|&i| self.legs.get_mut(i))
                .ok_or("a mix for an unknown participant")?;
            let len = out.packet.len();
            buf.get_mut(..len)
                .ok_or("a mix larger than a datagram")?
                .copy_from_slice(out.packet);
            let len = leg.tx.protect_rtp_in_place(&mut buf, len)?;
            self.queue.push_back(Transmit {
                src: None,
                dst: leg.addr,
                payload: Bytes::copy_from_slice(&buf[..len]),
            });
            self.sent += 1;
            self.bytes_out += len;
        }
        Ok(())
    }
}

impl DatagramCore for Initiator {
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
        let Some(leg) = self.by_addr.get(&from).and_then(|&i| self.legs.get_mut(i)) else {
            self.rejected += 1;
            return Ok(());
        };
        let mut packet = bytes.to_vec();
        if leg.rx.unprotect_rtp(&mut packet).is_err() {
            self.rejected += 1;
            return Ok(());
        }
        match self.mixer.handle_packet(now, leg.id, Bytes::from(packet)) {
            Ok(()) => {}
            // Past its playout time: what jitter does, not a fault.
            Err(MixerError::JitterRejected(Rejected::Late)) => self.late += 1,
            Err(_) => self.rejected += 1,
        }
        Ok(())
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.next_tick < self.total_ticks).then(|| self.start + TICK * self.next_tick as u32)
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.next_tick < self.total_ticks && now >= self.start + TICK * self.next_tick as u32
        {
            self.tick_late
                .push(now - (self.start + TICK * self.next_tick as u32));
            if self.tick(now).is_err() {
                self.rejected += 1;
            }
            self.next_tick += 1;
        }
    }
}

/// Sends every scheduled datagram at its time, and receives and unprotects the mixes.
fn load_thread(
    mut peers: Vec<Peer>,
    schedule: Vec<(Duration, usize, Vec<u8>)>,
    to: SocketAddr,
    start: Instant,
    done: &AtomicBool,
) -> std::io::Result<LoadReport> {
    for p in &peers {
        p.socket.set_nonblocking(true)?;
    }
    let mut report = LoadReport::default();
    let mut buf = vec![0u8; 2048];
    let mut drain = |peers: &mut [Peer], report: &mut LoadReport| -> std::io::Result<()> {
        for p in peers.iter_mut() {
            loop {
                match p.socket.recv(&mut buf) {
                    Ok(n) => {
                        report.received += 1;
                        if p.down.unprotect_rtp_in_place(&mut buf[..n]).is_err() {
                            report.rejected += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    };
    let mut next_drain = start;
    for (at, p, packet) in &schedule {
        let due = start + *at;
        loop {
            let now = Instant::now();
            if now >= next_drain {
                drain(&mut peers, &mut report)?;
                next_drain += TICK;
                continue;
            }
            if now >= due {
                if now - due > Duration::from_millis(5) {
                    report.late_sends += 1;
                }
                break;
            }
            std::thread::sleep((due - now).min(next_drain - now));
        }
        peers[*p].socket.send_to(packet, to)?;
        report.sent += 1;
    }
    // The last mixes: until the initiator stops ticking, then once more.
    while !done.load(Ordering::Relaxed) {
        drain(&mut peers, &mut report)?;
        std::thread::sleep(TICK / 4);
    }
    std::thread::sleep(Duration::from_millis(50));
    drain(&mut peers, &mut report)?;
    Ok(report)
}
