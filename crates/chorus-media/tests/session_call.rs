//! Two call-leg sessions talking through seeded networks on a virtual clock: real Opus
//! audio both ways, SRTP, RTCP, FEC and adaptation. Deterministic: fixed seeds, time
//! jumps to the earliest deadline.
#![cfg(feature = "opus")]
#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::SeededEntropy;
use chorus_media::adapt::Protection;
use chorus_media::netsim::{LossModel, NetConfig, Network};
use chorus_media::quality::{aligned_segmental_snr, synthetic_speech};
use chorus_media::session::{Event, Session, SessionConfig, SessionStats};

const RATE: u32 = 16_000;
const FRAME: usize = 320;

fn srtp(key: u8) -> SrtpSession {
    let suite = Suite::AeadAes128Gcm;
    let policy = Policy::new(
        suite,
        &vec![key; suite.key_len()],
        &vec![key ^ 0x55; suite.salt_len()],
    );
    SrtpSession::new(policy.unwrap()).unwrap()
}

/// Both sessions start without FEC (the default starts with a group, which
/// [`the_initial_fec_group_waits_in_the_playout_from_the_first_packet`] tests): the
/// other tests watch FEC come on and the rate move from a plain start.
fn pair(now: Instant) -> (Session, Session) {
    pair_with(now, without_initial_fec)
}

fn without_initial_fec(c: &mut SessionConfig) {
    c.initial_protection = Protection {
        rs: None,
        stride: 1,
        opus_fec: false,
        opus_expected_loss: 0,
    };
}

/// [`pair`], both configurations changed by `configure` first.
fn pair_with(now: Instant, configure: impl Fn(&mut SessionConfig)) -> (Session, Session) {
    let mut a = SessionConfig::default();
    configure(&mut a);
    a.sample_rate = RATE;
    (a.ssrc, a.fec_ssrc) = (0xA1, 0xA2);
    let mut b = a.clone();
    (b.ssrc, b.fec_ssrc) = (0xB1, 0xB2);
    let sa = Session::new(a, srtp(1), srtp(2), Box::new(SeededEntropy::new(1)), now).unwrap();
    let sb = Session::new(b, srtp(2), srtp(1), Box::new(SeededEntropy::new(2)), now).unwrap();
    (sa, sb)
}

struct Leg {
    session: Session,
    /// Statistics one second before the end, while audio still flows.
    live: SessionStats,
    /// Statistics at each whole second.
    trace: Vec<SessionStats>,
    input: Vec<i16>,
    output: Vec<i16>,
}

/// Runs a call for `seconds`; `path(t)` is the network config for packets sent at
/// second `t` (a change starts a new network; the old one drains).
fn call(seconds: usize, path: impl Fn(usize) -> NetConfig) -> (Leg, Leg) {
    call_with(seconds, without_initial_fec, path)
}

/// [`call`], both configurations changed by `configure` first.
fn call_with(
    seconds: usize,
    configure: impl Fn(&mut SessionConfig),
    path: impl Fn(usize) -> NetConfig,
) -> (Leg, Leg) {
    let t0 = Instant::now();
    let (sa, sb) = pair_with(t0, configure);
    let speech = synthetic_speech(RATE, RATE as usize * seconds, 12);
    // B says the same thing, half a syllable later.
    let mut other = vec![0i16; 2_800];
    other.extend_from_slice(&speech[..speech.len() - 2_800]);
    let mut legs = [
        Leg {
            session: sa,
            live: SessionStats::default(),
            trace: Vec::new(),
            input: speech,
            output: Vec::new(),
        },
        Leg {
            session: sb,
            live: SessionStats::default(),
            trace: Vec::new(),
            input: other,
            output: Vec::new(),
        },
    ];
    let mut nets: [Vec<(usize, Network<Bytes>)>; 2] = [Vec::new(), Vec::new()];
    let frames = seconds * 50;
    let mut sent = 0usize;
    let mut now = t0;
    let end = t0 + Duration::from_secs(seconds as u64) + Duration::from_millis(150);
    let mut steps = 0u32;
    while now < end {
        steps += 1;
        assert!(steps < 2_000_000, "bounded");
        let second = now.duration_since(t0).as_secs() as usize;
        for (dir, seed) in [(0usize, 7u64), (1, 8)] {
            if nets[dir]
                .last()
                .is_none_or(|(s, _)| path(*s) != path(second))
            {
                nets[dir].push((
                    second,
                    Network::new(path(second), seed + second as u64).unwrap(),
                ));
            }
        }
        if sent < frames && now >= t0 + Duration::from_millis(20 * sent as u64) {
            for leg in &mut legs {
                let pcm = &leg.input[sent * FRAME..(sent + 1) * FRAME];
                leg.session.send_frame(now, pcm).unwrap();
            }
            sent += 1;
        }
        for leg in &mut legs {
            leg.session.handle_timeout(now);
            if now + Duration::from_secs(1) <= t0 + Duration::from_secs(seconds as u64) {
                leg.live = leg.session.stats();
            }
            if now >= t0 + Duration::from_secs(leg.trace.len() as u64) {
                leg.trace.push(leg.session.stats());
            }
        }
        // Outputs: datagrams into the networks, PCM to the recordings.
        for dir in 0..2 {
            while let Some(d) = legs[dir].session.poll_transmit() {
                let len = d.len();
                nets[dir]
                    .last_mut()
                    .unwrap()
                    .1
                    .handle_send(now, d, len + 28);
            }
            while let Some(pcm) = legs[dir].session.poll_pcm() {
                legs[dir].output.extend_from_slice(&pcm);
            }
            while let Some(e) = legs[dir].session.poll_event() {
                assert_eq!(e, Event::RemoteBye);
            }
        }
        for dir in 0..2 {
            for (_, net) in &mut nets[dir] {
                while let Some(d) = net.poll_deliver(now) {
                    let _ = legs[1 - dir].session.handle_input(now, &d);
                }
            }
        }
        let next_send = (sent < frames).then(|| t0 + Duration::from_millis(20 * sent as u64));
        let next = legs
            .iter()
            .filter_map(|l| l.session.poll_timeout())
            .chain(nets.iter().flatten().filter_map(|(_, n)| n.poll_timeout()))
            .chain(next_send)
            .min()
            .unwrap_or(end);
        now = if next > now {
            next
        } else {
            now + Duration::from_millis(1)
        };
    }
    let [a, b] = legs;
    (a, b)
}

/// Segmental SNR after aligning each 20 ms block of `output` to `input`.
fn aligned_snr(input: &[i16], output: &[i16]) -> f64 {
    aligned_snr_from(input, output, 0)
}

/// [`aligned_snr`] over the output from second `from` on.
fn aligned_snr_from(input: &[i16], output: &[i16], from: usize) -> f64 {
    aligned_segmental_snr(input, output, RATE, FRAME, from * RATE as usize)
}

fn show(name: &str, s: &SessionStats) {
    eprintln!(
        "{name}: sent {} ({} repair), rx {} +{} FEC +{} LBRR, concealed {}, accel {}, expand {}, \
         underruns {}, rtt {:?}, remote loss {:.3}, target {} (loss {} / remb {:?}), codec {}, \
         prot {:?} ({} changes), jb target {:?}, buffered {:?}, jb dropped {}",
        s.frames_sent,
        s.repair_sent,
        s.media_received,
        s.recovered_by_fec,
        s.recovered_inband,
        s.concealed,
        s.accelerated,
        s.expanded,
        s.underruns,
        s.rtt,
        s.remote_loss,
        s.target_bps,
        s.loss_based_bps,
        s.remote_estimate_bps,
        s.codec_bps,
        s.protection,
        s.protection_changes,
        s.jitter_target,
        s.buffered,
        s.jitter_dropped,
    );
}

fn clean(_: usize) -> NetConfig {
    let mut c = NetConfig::default();
    c.delay = Duration::from_millis(40);
    c
}

#[test]
fn a_clean_call_carries_speech_both_ways_and_measures_the_rtt() {
    let (a, b) = call(4, clean);
    show("A", &a.session.stats());
    show("B", &b.session.stats());
    let ab = aligned_snr(&a.input, &b.output);
    let ba = aligned_snr(&b.input, &a.output);
    eprintln!("segSNR A->B {ab:.2} dB, B->A {ba:.2} dB");
    for (leg, snr) in [(&a, ba), (&b, ab)] {
        let s = leg.session.stats();
        assert!(snr > 8.0, "{snr}");
        // Nothing concealed while the peer sends. After its last packet (this
        // harness sends no BYE) the jitter buffer cannot tell an ended stream from a
        // lost burst and conceals up to 5 frames at their due time before it takes
        // the stream as paused: the tail plays a PLC fade-out, and that is all.
        assert_eq!(leg.live.concealed, 0);
        assert!(s.concealed <= 5, "{}", s.concealed);
        assert_eq!(s.jitter_dropped, 0);
        assert_eq!(s.rejected, 0);
        // RTT: twice the 40 ms path, to within the 20 ms playout granularity.
        let rtt = s.rtt.expect("RTCP measured the RTT");
        assert!(
            (Duration::from_millis(75)..Duration::from_millis(105)).contains(&rtt),
            "{rtt:?}"
        );
        assert!(s.rtcp_sent >= 3);
        assert_eq!(s.protection.unwrap().rs, None, "no FEC on a clean path");
        assert!(s.remote_estimate_bps.is_some(), "REMB arrived");
    }
}

#[test]
fn a_lossy_jittery_call_turns_fec_on_and_keeps_quality() {
    let (clean_a, clean_b) = call(8, clean);
    let (a, b) = call(8, |_| {
        let mut c = clean(0);
        c.loss = LossModel::Random { p: 0.08 };
        c.jitter = Duration::from_millis(if std::env::var("NOJ").is_ok() { 0 } else { 30 });
        c
    });
    show("A", &a.session.stats());
    show("B", &b.session.stats());
    // Scored once adaptation settled (FEC needs a report or two to switch on).
    let snr = aligned_snr_from(&a.input, &b.output, 3);
    let clean_snr = aligned_snr_from(&clean_a.input, &clean_b.output, 3);
    eprintln!("segSNR clean {clean_snr:.2} dB, lossy {snr:.2} dB");
    let sa = a.session.stats();
    let sb = b.session.stats();
    assert!(sa.repair_sent > 50, "A protects its stream");
    let rebuilt = |s: &SessionStats| s.recovered_by_fec + s.recovered_inband;
    assert!(
        rebuilt(&sa) + rebuilt(&sb) >= 25,
        "losses rebuilt both ways"
    );
    // Reed-Solomon alone: the controller does not add Opus in-band FEC (LBRR) to an
    // RS group, which measured worse (docs/media.md, "FEC controller").
    assert!(sa.protection.unwrap().rs.is_some(), "{:?}", sa.protection);
    assert!(
        sa.protection_changes <= 3,
        "{} FEC group changes",
        sa.protection_changes
    );
    assert!(sa.remote_loss > 0.0 && sa.rtt.is_some());
    assert!(snr > clean_snr - 6.0, "{snr} vs {clean_snr}");
}

#[test]
fn the_initial_fec_group_waits_in_the_playout_from_the_first_packet() {
    // The default: A starts with a piggybacked (4, 2) group and B's playout waits
    // for it from the first packet, so nothing is stretched when the first repairs
    // come; the first report shows a clean path, A drops the group, and 2 s after
    // the last repair B's playout delay comes down in the pauses.
    let (a, b) = call_with(10, |_| {}, clean);
    show("A", &a.session.stats());
    show("B", &b.session.stats());
    let first = b.trace[1];
    assert!(
        first.jitter_target >= Duration::from_millis(100),
        "{first:?}"
    );
    assert!(first.expanded <= 2, "{}", first.expanded);
    let (sa, sb) = (a.session.stats(), b.live);
    assert!(sa.repair_sent > 0 && sa.protection.unwrap().rs.is_none());
    assert!(sb.jitter_target < Duration::from_millis(60), "{sb:?}");
    assert_eq!(sb.concealed, 0);
    let snr = aligned_snr(&a.input, &b.output);
    eprintln!("segSNR {snr:.2} dB");
    assert!(snr > 8.0, "{snr}");
}

#[test]
fn playout_delay_follows_the_target_down_by_time_stretching() {
    // 6 s of 100 ms jitter, then a steady path: the jitter buffer's target falls and
    // playout accelerates to follow it, without dropping whole frames.
    let (a, b) = call(14, |s| {
        let mut c = clean(0);
        if s < 6 {
            c.jitter = Duration::from_millis(100);
        }
        c
    });
    show("B", &b.live);
    let s = b.live;
    assert!(s.accelerated > 10, "{}", s.accelerated);
    assert!(s.jitter_dropped * 4 < s.accelerated, "{}", s.jitter_dropped);
    assert!(
        s.buffered < s.jitter_target + Duration::from_millis(40),
        "{:?} vs {:?}",
        s.buffered,
        s.jitter_target
    );
    let snr = aligned_snr(&a.input, &b.output);
    eprintln!("segSNR {snr:.2} dB");
    assert!(snr > 3.0, "{snr}");
}

#[test]
fn tampered_replayed_and_foreign_datagrams_are_rejected() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    a.send_frame(t0, &synthetic_speech(RATE, FRAME, 12))
        .unwrap();
    let good = a.poll_transmit().unwrap();
    for i in 0..good.len() * 8 {
        let mut bad = good.to_vec();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(b.handle_input(t0, &bad).is_err(), "bit {i}");
    }
    assert!(b.handle_input(t0, &good).is_ok());
    assert!(b.handle_input(t0, &good).is_err(), "a replay");
    assert!(b.handle_input(t0, &[]).is_err());
    // Keys of another call.
    let (mut c, _) = {
        let mut cfg = SessionConfig::default();
        cfg.sample_rate = RATE;
        let s = Session::new(cfg, srtp(9), srtp(8), Box::new(SeededEntropy::new(3)), t0).unwrap();
        (s, ())
    };
    c.send_frame(t0, &[0; FRAME]).unwrap();
    assert!(b.handle_input(t0, &c.poll_transmit().unwrap()).is_err());
    let s = b.stats();
    assert_eq!((s.datagrams_received, s.media_received), (1, 1));
    assert_eq!(s.rejected, good.len() as u64 * 8 + 3);
}

#[test]
fn the_send_rate_follows_a_bottleneck_down_and_back_up() {
    // 48 kbit/s on the wire (the default start needs ~75 with headers) for 10 s,
    // then no cap: B's REMB pulls A's rate under the cap, then lets it climb again.
    let cap = 48_000u64;
    let (a, b) = call(16, |s| {
        let mut c = clean(0);
        if s < 10 {
            c.bandwidth_bps = Some(cap);
            c.queue_bytes = 8 * 1024;
        }
        c
    });
    for (t, s) in a.trace.iter().enumerate() {
        eprintln!(
            "{t} s: target {} remb {:?} codec {} underruns {} concealed {} / B {} {}",
            s.target_bps,
            s.remote_estimate_bps,
            s.codec_bps,
            s.underruns,
            s.concealed,
            b.trace[t].underruns,
            b.trace[t].concealed
        );
    }
    let remb = |t: usize| a.trace[t].remote_estimate_bps.unwrap();
    // Down: B's estimate of the path (the wire rate) under the cap within 3 s and
    // within the documented band (at most 1.2 x the cap) while it lasts.
    assert!((1..=3).any(|t| remb(t) <= cap), "{:?}", &a.trace[..4]);
    assert!((3..10).all(|t| remb(t) as f64 <= 1.2 * cap as f64));
    // Once the rate is down, the queue never overflows or grows into a gap: no
    // concealment and at most a couple of underruns from 3 s on (the first seconds'
    // overshoot may cost some).
    let last = a.trace.last().unwrap();
    let (b3, b_end) = (b.trace[3], *b.trace.last().unwrap());
    assert_eq!(b_end.concealed, b3.concealed);
    assert!(
        b_end.underruns <= b3.underruns + 2,
        "{} -> {}",
        b3.underruns,
        b_end.underruns
    );
    // Up: once the cap is gone the rate climbs past everything it had under it.
    let under: u32 = (3..10).map(|t| a.trace[t].target_bps).max().unwrap();
    assert!(last.target_bps > under, "{} vs {under}", last.target_bps);
}

#[test]
fn the_first_frame_plays_at_its_due_time_off_the_frame_grid() {
    // A 40 ms path and a 30 ms jitter-buffer minimum: the first packet is due 70 ms
    // after it was sent, 30 ms after it arrived, half a frame off the 20 ms grid
    // the playout started on. The grid moves onto the jitter buffer's while only
    // silence has played, so the first audio comes out at 70 ms, not 80.
    let t0 = Instant::now();
    let mut a = SessionConfig::default();
    without_initial_fec(&mut a);
    a.sample_rate = RATE;
    let mut b = a.clone();
    b.jitter.min_delay = Duration::from_millis(30);
    (b.ssrc, b.fec_ssrc) = (0xB1, 0xB2);
    let mut sa = Session::new(a, srtp(1), srtp(2), Box::new(SeededEntropy::new(1)), t0).unwrap();
    let mut sb = Session::new(b, srtp(2), srtp(1), Box::new(SeededEntropy::new(2)), t0).unwrap();
    let speech = synthetic_speech(RATE, FRAME * 20, 12);
    let path = Duration::from_millis(40);
    let mut in_flight = std::collections::VecDeque::new();
    let mut outputs = Vec::new();
    let (mut now, mut sent) = (t0, 0usize);
    while now < t0 + Duration::from_millis(300) {
        if sent < 10 && now >= t0 + Duration::from_millis(20 * sent as u64) {
            sa.send_frame(now, &speech[sent * FRAME..(sent + 1) * FRAME])
                .unwrap();
            sent += 1;
            while let Some(d) = sa.poll_transmit() {
                in_flight.push_back((now + path, d));
            }
        }
        while in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (_, d) = in_flight.pop_front().unwrap();
            sb.handle_input(now, &d).unwrap();
        }
        sb.handle_timeout(now);
        while let Some(pcm) = sb.poll_pcm() {
            outputs.push((now - t0, pcm.iter().any(|&s| s != 0)));
        }
        let next = [
            sb.poll_timeout(),
            in_flight.front().map(|(at, _)| *at),
            (sent < 10).then(|| t0 + Duration::from_millis(20 * sent as u64)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
        now = next.max(now + Duration::from_micros(100));
    }
    let first_audio = outputs.iter().find(|(_, audible)| *audible).unwrap().0;
    assert_eq!(first_audio, Duration::from_millis(70), "{outputs:?}");
    // Silence before it, one frame per tick from the first packet on.
    assert_eq!(outputs[0].0, Duration::from_millis(40));
    assert!(
        outputs
            .windows(2)
            .all(|w| w[1].0 - w[0].0 <= Duration::from_millis(20))
    );
}

/// A one-way call A -> B on a 20 ms path with RTCP back, on a virtual clock, in which
/// exactly A's media packets numbered in `lost` (0-based, in send order) are lost.
/// Returns when A first protected its stream with an RS group (time since the
/// start), and both sides' statistics after `seconds`.
fn scripted_loss(
    seconds: u64,
    lost: &[usize],
    early_feedback: bool,
) -> (Option<Duration>, SessionStats, SessionStats) {
    let (at, a, b, _) = scripted_loss_with(seconds, lost, |c| {
        without_initial_fec(c);
        c.early_feedback = early_feedback;
    });
    (at, a, b)
}

/// [`scripted_loss`] with both sessions configured by `configure`; also returns how
/// many repairs A sent in packets of their own (PT 112).
fn scripted_loss_with(
    seconds: u64,
    lost: &[usize],
    configure: impl Fn(&mut SessionConfig),
) -> (Option<Duration>, SessionStats, SessionStats, usize) {
    let t0 = Instant::now();
    let (mut sa, mut sb) = pair_with(t0, configure);
    let mut separate_repairs = 0;
    let speech = synthetic_speech(RATE, FRAME * 50 * seconds as usize, 3);
    let path = Duration::from_millis(20);
    // (due, to B?, datagram)
    let mut in_flight: std::collections::VecDeque<(Instant, bool, bytes::Bytes)> =
        std::collections::VecDeque::new();
    let (mut now, mut sent, mut media) = (t0, 0usize, 0usize);
    let frames = 50 * seconds as usize;
    let mut protected = None;
    while now < t0 + Duration::from_secs(seconds) {
        if sent < frames && now >= t0 + Duration::from_millis(20 * sent as u64) {
            sa.send_frame(now, &speech[sent * FRAME..(sent + 1) * FRAME])
                .unwrap();
            sent += 1;
        }
        while in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, to_b, d) = in_flight.pop_front().unwrap();
            let s = if to_b { &mut sb } else { &mut sa };
            s.handle_input(now, &d).unwrap();
        }
        for (to_b, s) in [(true, &mut sa), (false, &mut sb)] {
            s.handle_timeout(now);
            while let Some(d) = s.poll_transmit() {
                // Media: PT 111, or 63 with a repair riding on it (RFC 2198), in the
                // clear RTP header (SRTP leaves it readable).
                separate_repairs += usize::from(to_b && d[1] & 0x7f == 112);
                if to_b && matches!(d[1] & 0x7f, 111 | 63) {
                    media += 1;
                    if lost.contains(&(media - 1)) {
                        continue;
                    }
                }
                in_flight.push_back((now + path, to_b, d));
            }
            while s.poll_pcm().is_some() {}
        }
        if protected.is_none() && sa.stats().protection.is_some_and(|p| p.rs.is_some()) {
            protected = Some(now - t0);
        }
        let next = [
            sa.poll_timeout(),
            sb.poll_timeout(),
            in_flight.front().map(|(at, _, _)| *at),
            (sent < frames).then(|| t0 + Duration::from_millis(20 * sent as u64)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
        now = next.max(now + Duration::from_micros(100));
    }
    (protected, sa.stats(), sb.stats(), separate_repairs)
}

#[test]
fn the_sender_learns_loss_bursts_from_xr_loss_rle_reports() {
    // Bursts of three every 12 packets from packet 20: 25 % loss, mean burst 3.
    let lost: Vec<usize> = (20..500).filter(|i| (i - 20) % 12 < 3).collect();
    let (_, a, _, _) = scripted_loss_with(8, &lost, |_| {});
    assert!(
        (2.5..=3.5).contains(&a.remote_mean_burst),
        "{}",
        a.remote_mean_burst
    );
    // Without the XR block the sender only has report blocks' loss fractions.
    let (_, blind, _, _) = scripted_loss_with(8, &lost, |c| c.loss_rle_feedback = false);
    assert_eq!(blind.remote_mean_burst, 1.0);
}

#[test]
fn repairs_ride_on_media_packets_and_rebuild_what_was_lost() {
    // One packet in ten lost from packet 20 on.
    let lost: Vec<usize> = (20..500).step_by(10).collect();
    let (_, a, b, separate) = scripted_loss_with(8, &lost, |_| {});
    assert!(a.repair_sent > 50, "{}", a.repair_sent);
    assert_eq!(separate, 0, "every repair rode on a media packet");
    assert!(b.recovered_by_fec >= 25, "{}", b.recovered_by_fec);
    assert_eq!(b.rejected, 0);
    // A repair on a media packet costs its shard and headers, no packet of its own:
    // well under what a repair datagram costs (RTP, SRTP tag, UDP/IP: 60+ bytes
    // besides the shard).
    let (_, a_own, b_own, separate_own) = scripted_loss_with(8, &lost, |c| {
        c.protection.piggyback = false;
    });
    assert!(separate_own > 50 && b_own.recovered_by_fec >= 25);
    let per = |s: &SessionStats| s.repair_bytes_sent as f64 / s.repair_sent as f64;
    assert!(per(&a) + 40.0 < per(&a_own), "{} {}", per(&a), per(&a_own));
}

#[test]
fn fec_comes_on_right_after_the_first_loss_by_early_feedback() {
    // Packet 60 (sent at 1.2 s) is lost; B counts it lost, not late, when the two
    // after it arrived (packet 62 at 1.26 s) and reports at once; A reads it 20 ms
    // later.
    let (at, _, b) = scripted_loss(4, &[60], true);
    assert_eq!(at, Some(Duration::from_millis(1280)), "early");
    // Without early feedback the loss waits for the next regular report, which
    // also counts the packets since, and does not turn FEC on sooner (here not at
    // all: one loss in a second's report is below the controller's smoothed floor).
    let (late, _, b_regular) = scripted_loss(4, &[60], false);
    assert!(
        late.is_none_or(|t| t > Duration::from_millis(1260)),
        "{late:?}"
    );
    // The early report replaced the regular one due next: one more at most.
    assert!(b.rtcp_sent <= b_regular.rtcp_sent + 1);
}

#[test]
fn early_feedback_sends_nothing_extra_on_a_clean_path_and_stays_bounded_on_loss() {
    let (none, _, clean) = scripted_loss(10, &[], true);
    let (_, _, clean_regular) = scripted_loss(10, &[], false);
    assert_eq!(none, None);
    assert_eq!(clean.rtcp_sent, clean_regular.rtcp_sent);
    // A loss in every 10 packets: at most one early report per regular one, each at
    // least a quarter interval (250 ms) after the last.
    let every_tenth: Vec<usize> = (5..500).step_by(10).collect();
    let (_, _, lossy) = scripted_loss(10, &every_tenth, true);
    // Early reports, with regular ones at least 0.5 s after each: at most 10 s /
    // 0.75 s of them.
    let extra = lossy.rtcp_sent - clean.rtcp_sent;
    assert!((1..=13).contains(&extra), "{extra} early reports");
}
