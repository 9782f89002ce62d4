//! Speech through the whole media path and back, scored: WAV in -> Opus -> RTP ->
//! Reed-Solomon FEC -> a seeded impaired network -> FEC recovery -> jitter buffer ->
//! Opus decoding (in-band FEC, then PLC) -> WAV out (48 kHz mono, the input's length,
//! time-aligned with it).
//!
//! The protection is chosen as in a call: the receiver's loss record goes back to the
//! sender every report interval, and `adapt::ProtectionController` picks the
//! Reed-Solomon group and Opus in-band FEC from it (starting with none). A warm-up
//! (by default 3 s of the input, not scored) lets it settle as in a call that has run
//! for a few seconds. The score is PESQ-WB (ITU-T P.862.2) from
//! `benches/media-quality-pesq.py` when python3 with `pesq` and `numpy` is available,
//! and the segmental SNR always. See `docs/media.md` for the delay accounting.
//!
//! This is a hand-wired pipeline, not the code a call runs: the headline speech
//! quality comes from `examples/call-quality.rs`, which scores the shipped
//! `chorus_media::session::Session` whole. This example is kept as the comparison: it
//! shows what the same codec and FEC reach with a fixed Opus rate and a controller
//! that sees every loss (docs/media.md, "The shipped session, scored whole", explains
//! the gap).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus::media::adapt::{Protection, ProtectionController, ProtectionGoal};
use chorus::media::fec::{self, DecoderConfig, EncoderConfig as FecConfig, RepairPacket};
use chorus::media::jitter::{JitterBuffer, JitterConfig, Playout};
use chorus::media::netsim::{LossModel, NetConfig, Network, parse_trace};
use chorus::media::opus::{Application, Channels, Decoder, Encoder, EncoderConfig};
use chorus::media::rtp;

#[path = "common/speech_io.rs"]
mod speech_io;
use speech_io::{parse_duration, parse_fraction, percentile, read_input, write_wav};

const HELP: &str = "\
media-quality: speech through Opus + RTP + FEC over an impaired network, scored

USAGE: cargo run --release --example media-quality -- --input speech.wav [OPTIONS]

OPTIONS:
  --input <wav>        16-bit PCM WAV, mono (or the first channel), any common rate
                       (default: 10 s of synthetic voiced speech)
  --output <wav>       what the receiver played: 48 kHz mono, the input's length
  --reference <wav>    also write the input as sent (48 kHz mono)
  --bitrate <bit/s>    Opus media bitrate (default 32000)
  --loss <p>           loss rate: 10% or 0.1 (default 0)
  --burst <packets>    mean loss burst; > 1 uses Gilbert-Elliott (default 1: random)
  --trace <file>       replay a loss trace (1/x lost, 0/. delivered) instead
  --jitter <d>         uniform extra network delay, 30ms / 0.03s / 30 (ms) (default 30ms)
  --delay <d>          fixed one-way network delay (default 30ms)
  --seed <n>           network seed (default 1)
  --complexity <0-10>  Opus encoder complexity (default 10)
  --application <a>    Opus application: voip or audio (default voip)
  --frame <ms>         Opus frame / packet duration, 20 or 40 (default 20)
  --fec <mode>         auto (the controller, default), off, or k,m[,stride] fixed
  --opus-fec <mode>    auto (the controller's choice, default), on or off
  --residual <p>       the controller's residual loss goal, 1% or 0.01 (default 1%)
  --max-fec-delay <d>  the controller's FEC delay budget, first tier (default 50ms)
  --max-overhead <x>   the controller's repair overhead cap, first tier, 1 = 100 %
                       (default 1)
  --heavy-max-fec-delay <d>, --heavy-max-overhead <x>
                       the same for the second tier, used when the first cannot
                       reach 1 % residual loss (default 110ms and 2)
  --warmup <seconds>   input replayed first, not scored, so the controller settles
                       (default 3)
  --fates <file>       write one character per scored frame: 1 played from a
                       packet, 0 concealed (for benches/media-dred.sh)
  --no-pesq            skip the PESQ score
  --plc-only           shorthand for --fec off --opus-fec off
";

const RATE: u32 = 48_000;
const PT_OPUS: u8 = 111;
const PT_FEC: u8 = 112;
/// Receiver reports (loss record to the sender) every 250 ms, RFC 4585 early
/// feedback style; the history half-life is 3 s.
const REPORT_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, PartialEq)]
enum Fec {
    Auto,
    Off,
    Fixed(u8, u8, u8),
}

#[derive(Clone, Copy, PartialEq)]
enum OpusFec {
    Auto,
    On,
    Off,
}

struct Options {
    input: Option<String>,
    output: Option<String>,
    reference: Option<String>,
    loss: f64,
    burst: f64,
    trace: Option<String>,
    jitter: Duration,
    delay: Duration,
    bitrate: u32,
    seed: u64,
    frame_ms: u32,
    complexity: u8,
    audio: bool,
    fec: Fec,
    opus_fec: OpusFec,
    goal: ProtectionGoal,
    warmup: f64,
    pesq: bool,
    fates: Option<String>,
}

fn parse_fec(v: &str) -> Option<Fec> {
    match v {
        "auto" => Some(Fec::Auto),
        "off" => Some(Fec::Off),
        _ => {
            let n: Vec<u8> = v
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            match n[..] {
                [k, m] if k > 0 && m > 0 => Some(Fec::Fixed(k, m, 1)),
                [k, m, d] if k > 0 && m > 0 && (1..=16).contains(&d) => Some(Fec::Fixed(k, m, d)),
                _ => None,
            }
        }
    }
}

fn parse() -> Result<Option<Options>, String> {
    let mut o = Options {
        input: None,
        output: None,
        reference: None,
        loss: 0.0,
        burst: 1.0,
        trace: None,
        jitter: Duration::from_millis(30),
        delay: Duration::from_millis(30),
        bitrate: 32_000,
        seed: 1,
        frame_ms: 20,
        complexity: 10,
        audio: false,
        fec: Fec::Auto,
        opus_fec: OpusFec::Auto,
        goal: ProtectionGoal::default(),
        warmup: 3.0,
        pesq: true,
        fates: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-pesq" => {
                o.pesq = false;
                continue;
            }
            "--plc-only" => {
                (o.fec, o.opus_fec) = (Fec::Off, OpusFec::Off);
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--input" => o.input = Some(value),
            "--output" => o.output = Some(value),
            "--reference" => o.reference = Some(value),
            "--trace" => o.trace = Some(value),
            "--fates" => o.fates = Some(value),
            "--loss" => o.loss = parse_fraction(&value).ok_or_else(bad)?,
            "--burst" => {
                o.burst = value.parse().ok().filter(|b| *b >= 1.0).ok_or_else(bad)?;
            }
            "--jitter" | "--jitter-ms" => o.jitter = parse_duration(&value).ok_or_else(bad)?,
            "--delay" => o.delay = parse_duration(&value).ok_or_else(bad)?,
            "--bitrate" => o.bitrate = value.parse().map_err(|_| bad())?,
            "--seed" => o.seed = value.parse().map_err(|_| bad())?,
            "--frame" => {
                o.frame_ms = value
                    .parse()
                    .ok()
                    .filter(|f| [20, 40].contains(f))
                    .ok_or_else(bad)?;
            }
            "--complexity" => {
                o.complexity = value.parse().ok().filter(|c| *c <= 10).ok_or_else(bad)?;
            }
            "--application" => {
                o.audio = match value.as_str() {
                    "voip" => false,
                    "audio" => true,
                    _ => return Err(bad()),
                }
            }
            "--fec" => o.fec = parse_fec(&value).ok_or_else(bad)?,
            "--opus-fec" => {
                o.opus_fec = match value.as_str() {
                    "auto" => OpusFec::Auto,
                    "on" => OpusFec::On,
                    "off" => OpusFec::Off,
                    _ => return Err(bad()),
                }
            }
            "--residual" => o.goal.residual = parse_fraction(&value).ok_or_else(bad)?,
            "--max-fec-delay" => o.goal.max_delay = parse_duration(&value).ok_or_else(bad)?,
            "--heavy-max-fec-delay" => {
                o.goal.heavy_max_delay = parse_duration(&value).ok_or_else(bad)?;
            }
            "--heavy-max-overhead" => {
                o.goal.heavy_max_overhead = value
                    .parse()
                    .ok()
                    .filter(|x: &f64| *x >= 0.0)
                    .ok_or_else(bad)?;
            }
            "--max-overhead" => {
                o.goal.max_overhead = value
                    .parse()
                    .ok()
                    .filter(|x: &f64| *x >= 0.0)
                    .ok_or_else(bad)?;
            }
            "--warmup" => {
                o.warmup = value
                    .parse()
                    .ok()
                    .filter(|x: &f64| (0.0..=60.0).contains(x))
                    .ok_or_else(bad)?;
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Some(o))
}

/// The protection actually applied: the controller's choice under the overrides.
fn applied(o: &Options, chosen: Protection, loss_hint: u8) -> Protection {
    let mut p = chosen;
    match o.fec {
        Fec::Auto => {}
        Fec::Off => (p.rs, p.stride) = (None, 1),
        Fec::Fixed(k, m, d) => (p.rs, p.stride) = (Some((k, m)), d),
    }
    match o.opus_fec {
        OpusFec::Auto if o.fec == Fec::Auto => {}
        // With packet FEC forced off, the controller's LBRR choice for "no packet FEC".
        OpusFec::Auto => p.opus_fec = chosen.opus_fec && p.rs.is_none(),
        OpusFec::On => p.opus_fec = true,
        OpusFec::Off => p.opus_fec = false,
    }
    p.opus_expected_loss = if p.opus_fec { loss_hint.max(1) } else { 0 };
    p
}

struct Counters {
    sent: u64,
    wire_lost: u64,
    media_bytes: u64,
    repair_packets: u64,
    repair_bytes: u64,
    concealed: u64,
    lbrr_used: u64,
    added_ms: Vec<f64>,
}

/// The RFC 8285 element id of the transport-wide sequence number: one counter over
/// every packet sent, media and repair alike (as WebRTC's transport-wide congestion
/// control extension), so that the receiver's loss record shows the path's bursts
/// as they were, whatever the mix of packets.
const EXT_TRANSPORT_SEQ: u8 = 5;

/// An RTP packet carrying `payload`, with the next transport-wide sequence number.
fn rtp_packet(
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    payload: &[u8],
    transport_seq: &mut u16,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut ext = Vec::new();
    let tw = transport_seq.to_be_bytes();
    *transport_seq = transport_seq.wrapping_add(1);
    let profile = rtp::write_elements(
        &[rtp::Element {
            id: EXT_TRANSPORT_SEQ,
            data: &tw,
        }],
        &mut ext,
    )?;
    let p = rtp::Packet {
        marker: false,
        payload_type,
        sequence,
        timestamp,
        ssrc: u32::from(payload_type),
        csrcs: vec![],
        extension: Some(rtp::Extension {
            profile,
            data: &ext,
        }),
        payload,
        padding: 0,
    };
    let mut wire = BytesMut::new();
    p.encode(&mut wire)?;
    Ok(wire.to_vec())
}

fn transport_seq(p: &rtp::Packet<'_>) -> Option<u16> {
    let element = p
        .extension_elements()?
        .filter_map(Result::ok)
        .find(|e| e.id == EXT_TRANSPORT_SEQ)?;
    Some(u16::from_be_bytes(element.data.try_into().ok()?))
}

/// Sends the repair packets `tx` has ready, each in an RTP packet of its own type and
/// SSRC, counting them in `c` when given.
fn send_repairs(
    tx: &mut fec::Encoder,
    net: &mut Network<Vec<u8>>,
    now: Instant,
    seqs: &mut (u16, u16),
    mut c: Option<&mut Counters>,
) -> Result<(), Box<dyn std::error::Error>> {
    while let Some(repair) = tx.poll_repair() {
        let w = rtp_packet(PT_FEC, seqs.0, 0, &repair, &mut seqs.1)?;
        seqs.0 = seqs.0.wrapping_add(1);
        if let Some(c) = c.as_deref_mut() {
            c.repair_packets += 1;
            c.repair_bytes += w.len() as u64;
        }
        let len = w.len();
        net.handle_send(now, w, len);
    }
    Ok(())
}

#[allow(
    clippy::too_many_lines,
    reason = "one linear pipeline, easier to read whole"
)]
fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let input = read_input(o.input.as_deref())?;
    let frame = RATE as usize / 1000 * o.frame_ms as usize;
    let frame_dur = Duration::from_millis(u64::from(o.frame_ms));
    let warm_frames = ((o.warmup * f64::from(RATE)) as usize / frame).min(input.len() / frame);
    // The encoder's look-ahead delays the output; one extra frame of silence flushes it.
    let mut config = EncoderConfig::default();
    config.bitrate = o.bitrate;
    config.frame = frame_dur;
    config.complexity = o.complexity;
    if o.audio {
        config.application = Application::Audio;
    }
    config.inband_fec = false;
    config.expected_loss_percent = 0;
    let mut opus = Encoder::new(config)?;
    let lookahead = opus.lookahead()?;
    let scored_frames = input.len().div_ceil(frame) + lookahead.div_ceil(frame);
    let total_frames = warm_frames + scored_frames;
    // What is sent: the warm-up (the input's start), then the input, zero-padded.
    let mut sent_audio = input[..warm_frames * frame].to_vec();
    sent_audio.extend_from_slice(&input);
    sent_audio.resize(total_frames * frame, 0);

    let mut goal = o.goal;
    goal.frame = frame_dur;
    if o.opus_fec == OpusFec::On {
        goal.opus_fec_with_rs = true;
    }
    let half_life = (3000 / u64::from(o.frame_ms)).max(1);
    let mut controller = ProtectionController::new(goal, half_life);
    let mut protection = applied(o, controller.protection(), 0);
    let fec_config = |p: &Protection| {
        p.rs.map(|(k, m)| {
            let mut c = FecConfig::default();
            (c.k, c.m, c.stride) = (k, m, p.stride);
            c
        })
    };
    let mut fec_tx = match fec_config(&protection) {
        Some(c) => Some(fec::Encoder::new(c)?),
        None => None,
    };
    opus.set_inband_fec(protection.opus_fec, protection.opus_expected_loss)?;
    let mut fec_rx = fec::Decoder::new(DecoderConfig::default())?;

    let mut net_config = NetConfig::default();
    net_config.delay = o.delay;
    net_config.jitter = o.jitter;
    net_config.loss = match &o.trace {
        Some(path) => LossModel::Trace(parse_trace(&std::fs::read_to_string(path)?, 1_000_000)?),
        None if o.loss == 0.0 => LossModel::None,
        None if o.burst > 1.0 => {
            // Mean burst b: leave the bad state with 1/b; enter it so that the
            // stationary loss is `loss`.
            let r = 1.0 / o.burst;
            LossModel::GilbertElliott {
                p_good_to_bad: (o.loss * r / (1.0 - o.loss)).min(1.0),
                p_bad_to_good: r,
                loss_good: 0.0,
                loss_bad: 1.0,
            }
        }
        None => LossModel::Random { p: o.loss },
    };
    let mut net: Network<Vec<u8>> = Network::new(net_config, o.seed)?;
    let mut jb_config = JitterConfig::default();
    jb_config.frame = frame_dur;
    let mut jb: JitterBuffer<Vec<u8>> = JitterBuffer::new(jb_config)?;
    let mut decoder = Decoder::new(RATE, Channels::Mono)?;

    let mut played = vec![0i16; total_frames * frame];
    let mut fates = vec![b'0'; total_frames - warm_frames];
    let (mut packet, mut pcm) = (Vec::new(), Vec::new());
    let mut c = Counters {
        sent: 0,
        wire_lost: 0,
        media_bytes: 0,
        repair_packets: 0,
        repair_bytes: 0,
        concealed: 0,
        lbrr_used: 0,
        added_ms: Vec::new(),
    };
    let mut recovered_scored = 0u64;
    let mut highest_seq: Option<u16> = None;
    // The receiver's knowledge of the FEC group delay, from the repair headers it gets.
    let mut fec_seen: Option<(Instant, Duration)> = None;
    let mut lbrr_seen: Option<Instant> = None;
    let mut fec_wait = Duration::ZERO;
    let mut next_report: Option<Instant> = None;
    let mut feedback: Vec<(Instant, Vec<bool>)> = Vec::new();
    let mut record: Vec<bool> = Vec::new();
    // (repair stream sequence, transport-wide sequence)
    let mut seqs = (0u16, 0u16);
    let mut protections = Vec::new();
    let t0 = Instant::now();
    let send_time = |i: usize| t0 + frame_dur * u32::try_from(i).unwrap_or(u32::MAX);
    let mut now = t0;
    let mut sent = 0usize;
    loop {
        // Sender: one frame per frame duration.
        if sent < total_frames && now >= send_time(sent) {
            opus.encode(&sent_audio[sent * frame..(sent + 1) * frame], &mut packet)?;
            let seq = sent as u16;
            let ts = (RATE / 1000 * o.frame_ms).wrapping_mul(sent as u32);
            let wire = rtp_packet(PT_OPUS, seq, ts, &packet, &mut seqs.1)?;
            let scored = sent >= warm_frames;
            if scored {
                c.sent += 1;
                c.media_bytes += wire.len() as u64;
            }
            if !net.handle_send(now, wire.clone(), wire.len()) && scored {
                c.wire_lost += 1;
            }
            if let Some(tx) = fec_tx.as_mut() {
                tx.push(seq, &wire)?;
                send_repairs(tx, &mut net, now, &mut seqs, scored.then_some(&mut c))?;
            }
            sent += 1;
        }
        // Sender: reports from the receiver (after one network delay) drive the controller.
        feedback.retain(|(at, fates)| {
            if *at > now {
                return true;
            }
            for &lost in fates {
                controller.record(lost);
            }
            false
        });
        if let Some(next) = controller.report() {
            let next = applied(
                o,
                next,
                (controller.estimator().loss_rate() * 100.0).round() as u8,
            );
            if next != protection {
                if fec_config(&next) != fec_config(&protection) {
                    if let Some(tx) = fec_tx.as_mut() {
                        tx.flush();
                        let scored = sent >= warm_frames;
                        send_repairs(tx, &mut net, now, &mut seqs, scored.then_some(&mut c))?;
                    }
                    fec_tx = match fec_config(&next) {
                        Some(c) => Some(fec::Encoder::new(c)?),
                        None => None,
                    };
                }
                opus.set_inband_fec(next.opus_fec, next.opus_expected_loss)?;
                protection = next;
                protections.push((sent, next));
            }
        }
        // Network -> receiver.
        while let Some(bytes) = net.poll_deliver(now) {
            let Ok(p) = rtp::Packet::decode(&bytes) else {
                continue;
            };
            // The loss record for the sender: gaps in the transport-wide sequence.
            if let Some(seq) = transport_seq(&p) {
                match highest_seq {
                    None => record.push(false),
                    Some(h) if seq.wrapping_sub(h) < 0x8000 && seq != h => {
                        let gap = usize::from(seq.wrapping_sub(h)) - 1;
                        record.extend(std::iter::repeat_n(true, gap));
                        record.push(false);
                    }
                    Some(_) => {}
                }
                if highest_seq.is_none_or(|h| seq.wrapping_sub(h) < 0x8000) {
                    highest_seq = Some(seq);
                }
            }
            if p.payload_type == PT_FEC {
                if let Ok(r) = RepairPacket::decode(p.payload) {
                    let wait = frame_dur * (u32::from(r.k) * u32::from(r.stride) - 1);
                    fec_seen = Some((now, wait));
                }
                let _ = fec_rx.handle_repair(p.payload);
            } else {
                if chorus::media::opus::has_inband_fec(p.payload) == Some(true) {
                    lbrr_seen = Some(now);
                }
                fec_rx.handle_source(p.sequence, &bytes);
                let _ = jb.handle_packet(now, p.sequence, p.timestamp, p.payload.to_vec());
            }
            while let Some(r) = fec_rx.poll_recovered() {
                if let Ok(p) = rtp::Packet::decode(&r.packet) {
                    if usize::from(p.sequence) >= warm_frames {
                        recovered_scored += 1;
                    }
                    let _ = jb.handle_recovered(now, p.sequence, p.timestamp, p.payload.to_vec());
                }
            }
        }
        // Receiver: the jitter buffer waits for what the sender's protection needs,
        // as the stream shows it: a Reed-Solomon group's repair packets (the first
        // source waits for the last one), or the next packet's in-band FEC (one frame).
        // Neither seen for a second: no wait.
        let recent = |at: Instant| now.saturating_duration_since(at) <= Duration::from_secs(1);
        let rs_wait = fec_seen
            .filter(|(at, _)| recent(*at))
            .map_or(Duration::ZERO, |(_, d)| d);
        let lbrr_wait = if lbrr_seen.is_some_and(recent) {
            frame_dur
        } else {
            Duration::ZERO
        };
        let wait = rs_wait.max(lbrr_wait);
        if wait != fec_wait {
            jb.set_extra_delay(wait);
            fec_wait = wait;
        }
        // Receiver: a report every REPORT_EVERY, arriving after the path's delay.
        if now >= *next_report.get_or_insert(now + REPORT_EVERY) {
            feedback.push((now + o.delay, core::mem::take(&mut record)));
            next_report = Some(now + REPORT_EVERY);
        }
        // Playout.
        while let Some(f) = jb.poll_frame(now) {
            let (seq, frame_played) = match f {
                Playout::Packet { seq, payload, .. } => {
                    decoder.decode(&payload, &mut pcm)?;
                    (seq, Some(true))
                }
                Playout::Missing { seq } => {
                    // (Past the last frame the buffer conceals a few more: not losses.)
                    let scored = (warm_frames..total_frames).contains(&usize::from(seq));
                    c.concealed += u64::from(scored);
                    match jb.peek() {
                        Some(next) if protection.opus_fec || o.opus_fec == OpusFec::On => {
                            if chorus::media::opus::has_inband_fec(next) == Some(true) {
                                c.lbrr_used += u64::from(scored);
                            }
                            decoder.decode_fec(next, frame, &mut pcm)?
                        }
                        _ => decoder.conceal(frame, &mut pcm)?,
                    };
                    (seq, Some(false))
                }
                Playout::Empty => continue,
            };
            let i = usize::from(seq);
            if (warm_frames..total_frames).contains(&i) {
                // Added delay: playout minus (send time + the path's fixed delay), i.e.
                // the jitter buffer's wait, FEC waiting included.
                let added = now.saturating_duration_since(send_time(i) + o.delay);
                c.added_ms.push(added.as_secs_f64() * 1000.0);
            }
            if let (Some(fate), Some(k)) = (frame_played, i.checked_sub(warm_frames))
                && let Some(slot) = fates.get_mut(k)
            {
                *slot = if fate { b'1' } else { b'0' };
            }
            if let Some(slot) = played.get_mut(i * frame..(i + 1) * frame) {
                slot.copy_from_slice(pcm.get(..frame).ok_or("short decode")?);
            }
        }
        let next_send = (sent < total_frames).then(|| send_time(sent));
        let pending = next_send.is_some() || net.poll_timeout().is_some() || !jb.is_empty();
        if !pending {
            break;
        }
        let next = [
            next_send,
            net.poll_timeout(),
            jb.poll_timeout(),
            next_report,
            feedback.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        now = next
            .filter(|&t| t > now)
            .unwrap_or(now + Duration::from_millis(1));
    }

    // The received speech, aligned with the input (codec look-ahead removed).
    let start = warm_frames * frame + lookahead;
    let output: Vec<i16> = played[start..start + input.len()].to_vec();
    let frames = c.sent.max(1) as f64;
    c.added_ms.sort_by(f64::total_cmp);
    let mean = c.added_ms.iter().sum::<f64>() / c.added_ms.len().max(1) as f64;
    let loss_desc = match (&o.trace, o.burst > 1.0) {
        (Some(t), _) => format!("trace {t}"),
        (None, true) => format!(
            "{:.1} % Gilbert-Elliott, mean burst {}",
            o.loss * 100.0,
            o.burst
        ),
        (None, false) => format!("{:.1} % random", o.loss * 100.0),
    };
    println!(
        "path                  {loss_desc}, delay {:?} + jitter {:?}, seed {}",
        o.delay, o.jitter, o.seed
    );
    println!(
        "media                 Opus {} bit/s, {} ms frames; {:.1} s scored after {:.1} s warm-up",
        o.bitrate,
        o.frame_ms,
        input.len() as f64 / f64::from(RATE),
        (warm_frames * frame) as f64 / f64::from(RATE)
    );
    for (at, p) in &protections {
        let when = (*at as f64 - warm_frames as f64) * f64::from(o.frame_ms) / 1000.0;
        println!(
            "protection at {when:+6.2} s rs {:?} stride {} opus_fec {} (hint {} %)",
            p.rs, p.stride, p.opus_fec, p.opus_expected_loss
        );
    }
    println!("packets sent          {}", c.sent);
    println!(
        "lost on the wire      {} ({:.2} %)",
        c.wire_lost,
        100.0 * c.wire_lost as f64 / frames
    );
    println!("recovered by FEC      {recovered_scored}");
    println!(
        "concealed             {} ({} of them by Opus in-band FEC, the rest by PLC)",
        c.concealed, c.lbrr_used
    );
    println!(
        "residual loss         {:.2} %",
        100.0 * c.concealed as f64 / frames
    );
    println!(
        "FEC overhead          {:.1} % of media bytes ({} repair packets, {:.1} % of media packets)",
        100.0 * c.repair_bytes as f64 / c.media_bytes.max(1) as f64,
        c.repair_packets,
        100.0 * c.repair_packets as f64 / frames
    );
    println!(
        "added delay           mean {mean:.1} ms, p95 {:.1} ms (jitter buffer + FEC wait)",
        percentile(&c.added_ms, 0.95)
    );
    println!(
        "jitter buffer         {:?} target {:?}",
        jb.stats(),
        jb.target_delay()
    );
    println!(
        "segmental SNR         {:.2} dB",
        chorus::media::quality::segmental_snr(&input, &output, frame)
    );
    // The given path, or a temporary file removed at the end.
    let path_or_temp = |given: &Option<String>, name: &str| match given {
        Some(path) => path.clone(),
        None => std::env::temp_dir()
            .join(format!("media-quality-{name}-{}.wav", std::process::id()))
            .display()
            .to_string(),
    };
    let reference = path_or_temp(&o.reference, "ref");
    write_wav(&reference, input)?;
    let degraded = path_or_temp(&o.output, "out");
    write_wav(&degraded, output)?;
    if let Some(path) = &o.fates {
        std::fs::write(path, &fates)?;
    }
    if o.pesq {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/media-quality-pesq.py");
        match std::process::Command::new("python3")
            .args([script, &reference, &degraded])
            .output()
        {
            Ok(out) if out.status.success() => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
            Ok(out) => println!(
                "PESQ-WB               unavailable ({})",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("failed")
            ),
            Err(e) => println!("PESQ-WB               unavailable (python3: {e})"),
        }
    }
    for (path, keep) in [
        (&reference, o.reference.is_some()),
        (&degraded, o.output.is_some()),
    ] {
        if keep {
            println!("wrote                 {path}");
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("media-quality: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media-quality: {e}");
            ExitCode::FAILURE
        }
    }
}
