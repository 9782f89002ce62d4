//! Speech quality of the shipped call leg, scored whole: two
//! `chorus_media::session::Session`s (the code a call runs: Opus, RTP, adaptive
//! Reed-Solomon FEC, SRTP AEAD-AES-128-GCM, RTCP reports with early feedback and REMB,
//! the jitter buffer, time stretching) talk both ways over two seeded impaired
//! `netsim::Network`s, one per direction, each with its own seed. Media, repair
//! packets and RTCP all take the impaired path, so the reports that switch FEC on can
//! be lost too. Deterministic: a virtual clock jumps to the earliest of the sessions'
//! `poll_timeout`, the next 20 ms frame and the next network delivery; nothing sleeps.
//!
//! Alice sends the input WAV from t = 0 (frame n at n x 20 ms); Bob talks at the same
//! time (the same speech, rotated by half its length), so that both sessions send
//! sender reports and both directions carry media. Nothing is warmed up: the call
//! starts with the session's initial protection (none) and the whole of what Bob
//! plays is scored.
//!
//! Output: Bob's playout, each 20 ms frame placed at the instant of the playout tick
//! that produced it, counted from the moment Alice sent her first frame, cut to the
//! input's length. The initial playout delay is therefore silence at the start of the
//! output (delay, not missing speech); the input ends in 300 ms of silence, which is
//! what falls off the end. PESQ-WB (ITU-T P.862.2, `benches/media-quality-pesq.py`)
//! aligns the two itself; the segmental SNR is computed after per-block alignment
//! (`quality::aligned_segmental_snr`).
//!
//! Delay is measured on the audio: for each 20 ms block of the output that is speech
//! (RMS above -40 dBFS), the lag behind the input that best correlates a 160 ms
//! window around it (0-600 ms, searched independently per block), kept when the
//! normalised correlation reaches 0.6 (concealed audio seldom does; the count kept is
//! printed).
//! Mouth-to-ear = that lag + 20 ms (a frame is sent when its 20 ms have been
//! captured): network delay and jitter, jitter-buffer and FEC wait, time stretching,
//! the codec's look-ahead and the frame. *Added delay* is the examples/media-quality.rs
//! definition, for comparison: the lag less the path's fixed delay and the codec
//! look-ahead.
//!
//! See docs/media.md ("The shipped session, scored whole").

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::crypto::srtp::{Policy, SrtpSession, Suite};
use chorus::framing::SeededEntropy;
use chorus::media::adapt::{Protection, RateConfig};
use chorus::media::netsim::{LossModel, NetConfig, Network, parse_trace};
use chorus::media::opus::{Encoder, EncoderConfig};
use chorus::media::quality::aligned_segmental_snr;
use chorus::media::session::{Session, SessionConfig, SessionStats};

#[path = "common/speech_io.rs"]
mod speech_io;
use speech_io::{parse_duration, parse_fraction, percentile, read_input, write_wav};

const HELP: &str = "\
call-quality: speech through two shipped chorus-media Sessions over impaired paths, scored

USAGE: cargo run --release --example call-quality -- --input speech.wav [OPTIONS]

OPTIONS:
  --input <wav>      16-bit PCM WAV, mono (or the first channel), any common rate
                     (default: 10 s of synthetic voiced speech)
  --output <wav>     what Bob played: 48 kHz mono, the input's length, from the
                     moment Alice sent her first frame
  --bitrate <bit/s>  the session's send rate, start and cap (RTP payload bits: Opus
                     plus FEC repair; the Opus share is rate / (1 + FEC overhead))
                     (default: the session's RateConfig, 48,000 start, 128,000 cap)
  --fixed-rate <bit/s>
                     pin the send rate (start = floor = cap): a diagnostic, to tell
                     the rate controller's share of a score from the rest
  --loss <p>         loss rate of each direction: 10% or 0.1 (default 0)
  --burst <packets>  mean loss burst; > 1 uses Gilbert-Elliott (default 1: random)
  --trace <file>     replay a loss trace (1/x lost, 0/. delivered) instead
  --jitter <d>       uniform extra network delay, 30ms / 0.03s / 30 (ms) (default 30ms)
  --delay <d>        fixed one-way network delay (default 30ms)
  --seed <n>         seed of Alice -> Bob; Bob -> Alice uses seed + 1,000,000
                     (default 1)
  --fec <mode>       auto (default: Reed-Solomon groups chosen from the peer's
                     reports), none, lbrr (Opus in-band FEC only, from the start,
                     with the --loss rate as the encoder's loss hint) or K,M[,S]
                     (a fixed Reed-Solomon group, interleaved S deep; K,M[,S]+lbrr
                     adds Opus in-band FEC with the --loss rate as its hint)
  --fec-initial <mode>
                     the protection Alice starts with, until the first report
                     about her stream: none or K,M[,S] (default: the session's
                     SessionConfig::initial_protection)
  --fec-budget <x>   most repairs per media packet the automatic choice may spend,
                     in both of its tiers (default: 1 and 2)
  --fates <file>     write one character per media packet Alice sent, in order: 1
                     delivered by the network, 0 lost (with --fec none, one per
                     frame: the loss pattern benches/media-dred.c decodes along)
  --no-piggyback     every repair in a packet of its own (default: repairs of
                     groups with m <= k ride on the next media packets, RFC 2198)
  --no-pesq          skip the PESQ score
";

const RATE: u32 = 48_000;
const FRAME: usize = 960;
const FRAME_DUR: Duration = Duration::from_millis(20);
/// UDP over IPv4 headers, for the network's size accounting.
const UDP_IP: usize = 28;
/// Output blocks quieter than this RMS (about -40 dBFS) are not speech: their lag is
/// not a delay measurement.
const SPEECH_RMS: f64 = 328.0;
/// Delay search: up to 600 ms, over a 160 ms window around each 20 ms block, at
/// 8 kHz (48 kHz averaged over 6 samples); a block counts when the best lag's
/// normalised correlation reaches 0.6 (concealed audio rarely does).
const MAX_LAG_MS: usize = 600;
const WINDOW_MS: usize = 160;
const MIN_CORRELATION: f64 = 0.6;

struct Options {
    input: Option<String>,
    output: Option<String>,
    bitrate: Option<u32>,
    fixed_rate: bool,
    loss: f64,
    burst: f64,
    trace: Option<String>,
    jitter: Duration,
    delay: Duration,
    seed: u64,
    pesq: bool,
    fec: FecMode,
    fec_budget: Option<f64>,
    fec_initial: Option<Protection>,
    piggyback: bool,
    fates: Option<String>,
}

/// `--fec`.
#[derive(Clone, Copy)]
enum FecMode {
    Auto,
    Fixed(Protection),
    Lbrr,
}

fn parse() -> Result<Option<Options>, String> {
    let mut o = Options {
        input: None,
        output: None,
        bitrate: None,
        fixed_rate: false,
        loss: 0.0,
        burst: 1.0,
        trace: None,
        jitter: Duration::from_millis(30),
        delay: Duration::from_millis(30),
        seed: 1,
        pesq: true,
        fec: FecMode::Auto,
        fec_budget: None,
        fec_initial: None,
        piggyback: true,
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
            "--no-piggyback" => {
                o.piggyback = false;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--input" => o.input = Some(value),
            "--output" => o.output = Some(value),
            "--trace" => o.trace = Some(value),
            "--bitrate" => {
                o.bitrate = Some(value.parse().ok().filter(|b| *b >= 6_000).ok_or_else(bad)?);
            }
            "--fixed-rate" => {
                o.bitrate = Some(value.parse().ok().filter(|b| *b >= 6_000).ok_or_else(bad)?);
                o.fixed_rate = true;
            }
            "--loss" => o.loss = parse_fraction(&value).ok_or_else(bad)?,
            "--burst" => {
                o.burst = value.parse().ok().filter(|b| *b >= 1.0).ok_or_else(bad)?;
            }
            "--jitter" => o.jitter = parse_duration(&value).ok_or_else(bad)?,
            "--delay" => o.delay = parse_duration(&value).ok_or_else(bad)?,
            "--seed" => o.seed = value.parse().map_err(|_| bad())?,
            "--fec" => o.fec = parse_fec(&value).ok_or_else(bad)?,
            "--fates" => o.fates = Some(value),
            "--fec-initial" => match parse_fec(&value) {
                Some(FecMode::Fixed(p)) => o.fec_initial = Some(p),
                _ => return Err(bad()),
            },
            "--fec-budget" => {
                o.fec_budget = Some(value.parse().ok().filter(|b| *b >= 0.0).ok_or_else(bad)?);
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Some(o))
}

fn parse_fec(value: &str) -> Option<FecMode> {
    let none = Protection {
        rs: None,
        stride: 1,
        opus_fec: false,
        opus_expected_loss: 0,
    };
    match value {
        "auto" => return Some(FecMode::Auto),
        "none" => return Some(FecMode::Fixed(none)),
        "lbrr" => return Some(FecMode::Lbrr),
        _ => {}
    }
    // `K,M[,S]+lbrr`: the group and Opus in-band FEC together.
    let (value, lbrr) = match value.strip_suffix("+lbrr") {
        Some(group) => (group, true),
        None => (value, false),
    };
    let v: Vec<u8> = value
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let (k, m, stride) = match v[..] {
        [k, m] => (k, m, 1),
        [k, m, s] => (k, m, s),
        _ => return None,
    };
    (k > 0 && m > 0 && stride > 0).then_some(FecMode::Fixed(Protection {
        rs: Some((k, m)),
        stride,
        opus_fec: lbrr,
        ..none
    }))
}

fn net_config(o: &Options) -> Result<NetConfig, Box<dyn std::error::Error>> {
    let mut c = NetConfig::default();
    c.delay = o.delay;
    c.jitter = o.jitter;
    c.loss = match &o.trace {
        Some(path) => LossModel::Trace(parse_trace(&std::fs::read_to_string(path)?, 1_000_000)?),
        None if o.loss == 0.0 => LossModel::None,
        None if o.burst > 1.0 => {
            // Mean burst b: leave the bad state with 1/b; enter it so that the
            // stationary loss is `loss` (as examples/media-quality.rs).
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
    Ok(c)
}

/// Fixed test keys (both ends must agree; the suite is the one calls use).
fn srtp(key: u8) -> Result<SrtpSession, Box<dyn std::error::Error>> {
    let suite = Suite::AeadAes128Gcm;
    let policy = Policy::new(
        suite,
        &vec![key; suite.key_len()],
        &vec![key ^ 0x5a; suite.salt_len()],
    )?;
    Ok(SrtpSession::new(policy)?)
}

/// What a datagram is, from its clear-text header (SRTP leaves it readable).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Media = 0,
    Repair = 1,
    Rtcp = 2,
}

fn kind(datagram: &[u8], repair_pt: u8) -> Kind {
    match datagram.get(1) {
        // RFC 5761 §4: RTCP packet types 192-223 sit where RTP has M + PT.
        Some(b) if (192..=223).contains(b) => Kind::Rtcp,
        Some(b) if b & 0x7f == repair_pt => Kind::Repair,
        _ => Kind::Media,
    }
}

/// Per direction and kind: datagrams sent, their bytes (SRTP, no UDP/IP), lost.
#[derive(Default, Clone, Copy)]
struct Wire {
    sent: u64,
    bytes: u64,
    lost: u64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The delay of each speech block of `output` behind `input`, in ms: for each 20 ms
/// block of `output` louder than [`SPEECH_RMS`], the lag in 0..[`MAX_LAG_MS`] that
/// maximises the normalised correlation of the [`WINDOW_MS`] around it with the input,
/// kept when that correlation reaches [`MIN_CORRELATION`]. Each block is searched
/// independently (no tracking that could wander through concealed audio). Returns the
/// lags and the number of speech blocks.
fn speech_lags(input: &[i16], output: &[i16]) -> (Vec<f64>, usize) {
    const DECIMATE: usize = 6;
    let down = |x: &[i16]| -> Vec<f32> {
        x.chunks(DECIMATE)
            .map(|c| c.iter().map(|&s| f32::from(s)).sum::<f32>() / c.len() as f32)
            .collect()
    };
    let (x, y) = (down(input), down(output));
    let per_ms = RATE as usize / DECIMATE / 1000;
    let (max_lag, half) = (MAX_LAG_MS * per_ms, WINDOW_MS * per_ms / 2);
    let block = FRAME / DECIMATE;
    let (mut lags, mut speech) = (Vec::new(), 0);
    for (b, out) in output.chunks_exact(FRAME).enumerate() {
        let rms = (out.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / FRAME as f64).sqrt();
        if rms < SPEECH_RMS {
            continue;
        }
        speech += 1;
        let centre = b * block + block / 2;
        let (Some(lo), hi) = (centre.checked_sub(half), centre + half) else {
            continue;
        };
        let Some(w) = y.get(lo..hi) else {
            continue;
        };
        let ww: f32 = w.iter().map(|v| v * v).sum();
        let mut best = (f64::MIN, 0usize);
        for lag in 0..=max_lag.min(lo) {
            let Some(r) = x.get(lo - lag..hi - lag) else {
                continue;
            };
            let (mut xy, mut xx) = (0f32, 0f32);
            for (a, b) in r.iter().zip(w) {
                xy += a * b;
                xx += a * a;
            }
            let c = f64::from(xy) / (f64::from(xx) * f64::from(ww)).sqrt().max(1.0);
            if c > best.0 {
                best = (c, lag);
            }
        }
        if best.0 >= MIN_CORRELATION {
            lags.push(best.1 as f64 / per_ms as f64);
        }
    }
    (lags, speech)
}

struct Leg {
    session: Session,
    input: Vec<i16>,
    /// What this leg played, on the call's timeline (sample 0 = the first send).
    played: Vec<i16>,
}

#[allow(
    clippy::too_many_lines,
    reason = "one linear harness and its report, easier to read whole"
)]
fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let input = read_input(o.input.as_deref())?;
    let frames = input.len().div_ceil(FRAME);
    let mut padded = input.clone();
    padded.resize(frames * FRAME, 0);
    // Bob says the same, rotated by half: double talk, as in a call.
    let mut other = padded.clone();
    other.rotate_left(frames / 2 * FRAME);

    let t0 = Instant::now();
    let mut config = SessionConfig::default();
    if let Some(bps) = o.bitrate {
        let mut rate = RateConfig::default();
        (rate.start_bps, rate.max_bps) = (bps, bps);
        rate.min_bps = if o.fixed_rate {
            bps
        } else {
            rate.min_bps.min(bps)
        };
        config.rate = rate;
    }
    config.force_protection = match o.fec {
        FecMode::Auto => None,
        FecMode::Fixed(p) => Some(Protection {
            opus_expected_loss: if p.opus_fec {
                (o.loss * 100.0).round().clamp(1.0, 100.0) as u8
            } else {
                0
            },
            ..p
        }),
        FecMode::Lbrr => Some(Protection {
            rs: None,
            stride: 1,
            opus_fec: true,
            opus_expected_loss: (o.loss * 100.0).round().clamp(1.0, 100.0) as u8,
        }),
    };
    config.protection.piggyback = o.piggyback;
    if let Some(p) = o.fec_initial {
        config.initial_protection = p;
    }
    if let Some(b) = o.fec_budget {
        config.protection.max_overhead = config.protection.max_overhead.min(b);
        config.protection.heavy_max_overhead = config.protection.heavy_max_overhead.min(b);
    }
    let repair_pt = config.fec_payload_type;
    (config.ssrc, config.fec_ssrc) = (0xA1, 0xA2);
    let alice = Session::new(
        config.clone(),
        srtp(1)?,
        srtp(2)?,
        Box::new(SeededEntropy::new(o.seed.wrapping_mul(2))),
        t0,
    )?;
    (config.ssrc, config.fec_ssrc) = (0xB1, 0xB2);
    let bob = Session::new(
        config,
        srtp(2)?,
        srtp(1)?,
        Box::new(SeededEntropy::new(o.seed.wrapping_mul(2) + 1)),
        t0,
    )?;
    let timeline = input.len();
    let mut legs = [
        Leg {
            session: alice,
            input: padded,
            played: vec![0; timeline],
        },
        Leg {
            session: bob,
            input: other,
            played: vec![0; timeline],
        },
    ];
    let net = net_config(o)?;
    let mut nets = [
        Network::<Bytes>::new(net.clone(), o.seed)?,
        Network::<Bytes>::new(net, o.seed.wrapping_add(1_000_000))?,
    ];
    let mut wire = [[Wire::default(); 3]; 2];
    // Alice's media packets, in send order: delivered by the network or not.
    let mut media_fates = String::new();
    let send_time = |n: usize| t0 + FRAME_DUR * u32::try_from(n).unwrap_or(u32::MAX);
    // The talk, then a second for the last packets, reports and BYE.
    let end = send_time(frames) + Duration::from_secs(1);
    let mut now = t0;
    let mut sent = 0usize;
    let mut steps = 0u64;
    let mut stalls = 0u64;
    let mut again = 0u8;
    // Alice's Opus rate per frame sent, and when her packet FEC first came on (with
    // the frames Bob had lost by then: the start-up the whole-call score includes).
    let mut codec_bps = Vec::with_capacity(frames);
    let mut fec_on: Option<(Duration, u64)> = None;
    while now < end {
        steps += 1;
        if steps > 50_000_000 {
            return Err("the virtual clock did not advance".into());
        }
        if sent < frames && now >= send_time(sent) {
            for leg in &mut legs {
                let pcm = leg
                    .input
                    .get(sent * FRAME..(sent + 1) * FRAME)
                    .ok_or("short input")?;
                leg.session.send_frame(now, pcm)?;
            }
            codec_bps.push(f64::from(legs[0].session.stats().codec_bps));
            if fec_on.is_none() && legs[0].session.stats().repair_sent > 0 {
                let b = legs[1].session.stats();
                let lost = b.concealed + b.recovered_inband;
                fec_on = Some((now.saturating_duration_since(t0), lost));
            }
            sent += 1;
            if sent == frames {
                // RTCP BYE (over the impaired path like everything else).
                legs.iter_mut().for_each(|l| l.session.close());
            }
        }
        for leg in &mut legs {
            leg.session.handle_timeout(now);
        }
        // Deliveries, then every output drained (the run loop's contract).
        for dir in 0..2 {
            while let Some(d) = nets[dir].poll_deliver(now) {
                // A rejected datagram is counted in the receiver's stats.
                let _ = legs[1 - dir].session.handle_input(now, &d);
            }
        }
        for (dir, leg) in legs.iter_mut().enumerate() {
            while let Some(d) = leg.session.poll_transmit() {
                let w = &mut wire[dir][kind(&d, repair_pt) as usize];
                w.sent += 1;
                w.bytes += d.len() as u64;
                let len = d.len() + UDP_IP;
                let is_media = dir == 0 && kind(&d, repair_pt) == Kind::Media;
                let delivered = nets[dir].handle_send(now, d, len);
                if !delivered {
                    w.lost += 1;
                }
                if is_media {
                    media_fates.push(if delivered { '1' } else { '0' });
                }
            }
            // Each frame at its playout tick: the clock stops at every tick (it is
            // the session's poll_timeout), so `now` is that tick.
            while let Some(pcm) = leg.session.poll_pcm() {
                let at = now.saturating_duration_since(t0);
                let start = usize::try_from(at.as_nanos() * u128::from(RATE) / 1_000_000_000)
                    .unwrap_or(usize::MAX);
                for (slot, s) in leg.played.iter_mut().skip(start).zip(pcm) {
                    *slot = s;
                }
            }
            while leg.session.poll_event().is_some() {}
        }
        let next = legs
            .iter()
            .filter_map(|l| l.session.poll_timeout())
            .chain(nets.iter().filter_map(Network::poll_timeout))
            .chain((sent < frames).then(|| send_time(sent)))
            .min()
            .unwrap_or(end);
        if next > now {
            (now, again) = (next, 0);
        } else if again < 8 {
            // Something came due at this instant after its turn in this step (a
            // packet starts the playout clock at `now`; RTCP and REMB share a
            // handle_timeout): another step at the same instant serves it on time.
            again += 1;
        } else {
            stalls += 1;
            (now, again) = (now + Duration::from_millis(1), 0);
        }
    }

    if let Some(path) = &o.fates {
        std::fs::write(path, &media_fates)?;
    }
    let [alice, bob] = legs;
    let (tx, rx): (SessionStats, SessionStats) = (alice.session.stats(), bob.session.stats());
    let output = bob.played;
    let [media, repair, rtcp] = wire[0];
    let [_, _, rtcp_back] = wire[1];

    // Delay, on the audio.
    let lookahead = Encoder::new(EncoderConfig::default())?.lookahead()?;
    let lookahead_ms = lookahead as f64 * 1000.0 / f64::from(RATE);
    let (mut lags_ms, speech_blocks) = speech_lags(&input, &output);
    lags_ms.sort_by(f64::total_cmp);
    let frame_ms = FRAME_DUR.as_secs_f64() * 1000.0;
    let delay_ms = o.delay.as_secs_f64() * 1000.0;
    let (lag_mean, lag_p95) = (mean(&lags_ms), percentile(&lags_ms, 0.95));
    let m2e = (lag_mean + frame_ms, lag_p95 + frame_ms);
    let added = (
        lag_mean - delay_ms - lookahead_ms,
        lag_p95 - delay_ms - lookahead_ms,
    );

    let frames_sent = tx.frames_sent.max(1) as f64;
    let pct = |x: u64, of: u64| 100.0 * x as f64 / of.max(1) as f64;
    let wire_lost = pct(media.lost, media.sent);
    let missing = rx.concealed + rx.recovered_inband;
    let residual = 100.0 * missing as f64 / frames_sent;
    // On the wire, UDP/IPv4 headers included: repair bytes (their own datagrams, or
    // the RFC 2198 blocks riding on media packets) against the media's.
    let media_wire = media.bytes + media.sent * UDP_IP as u64
        - (tx.repair_bytes_sent - (repair.bytes + repair.sent * UDP_IP as u64));
    let fec_bytes = pct(tx.repair_bytes_sent, media_wire);
    let fec_packets = pct(tx.repair_sent, media.sent);
    // Alice's stream on the wire over the call: media and repair SRTP packets plus
    // their UDP/IPv4 headers.
    let talk = frames as f64 * FRAME_DUR.as_secs_f64();
    let wire_kbps = ((media.bytes + repair.bytes) as f64
        + ((media.sent + repair.sent) * UDP_IP as u64) as f64)
        * 8.0
        / talk
        / 1000.0;
    let snr = aligned_segmental_snr(&input, &output, RATE, FRAME, 0);

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
        "path                  each way: {loss_desc}, delay {:?} + jitter {:?}; seed {} (back {})",
        o.delay,
        o.jitter,
        o.seed,
        o.seed.wrapping_add(1_000_000)
    );
    println!(
        "call                  {:.2} s of speech from t = 0, all of it scored; SRTP AEAD-AES-128-GCM",
        input.len() as f64 / f64::from(RATE)
    );
    println!(
        "media A->B            {} packets, {} lost on the wire ({:.2} %)",
        media.sent,
        media.lost,
        pct(media.lost, media.sent)
    );
    println!(
        "repair A->B           {} in packets of their own ({} lost), {} riding on media packets",
        repair.sent,
        repair.lost,
        tx.repair_sent - repair.sent
    );
    println!(
        "RTCP                  A->B {} sent, {} lost; B->A {} sent, {} lost",
        rtcp.sent, rtcp.lost, rtcp_back.sent, rtcp_back.lost
    );
    println!(
        "at Bob                {} received, {} rebuilt by RS FEC, {} by Opus LBRR, {} concealed by PLC, {} underruns, {} rejected",
        rx.media_received,
        rx.recovered_by_fec,
        rx.recovered_inband,
        rx.concealed,
        rx.underruns,
        rx.rejected
    );
    println!(
        "residual loss         {residual:.2} % ({missing} of {} frames missing after RS FEC)",
        tx.frames_sent
    );
    println!(
        "FEC overhead          {fec_bytes:.1} % of media bytes on the wire ({} repairs, {fec_packets:.1} % of media packets)",
        tx.repair_sent
    );
    let mut sorted_bps = codec_bps.clone();
    sorted_bps.sort_by(f64::total_cmp);
    println!(
        "Opus rate             mean {:.0} bit/s, min {:.0}, max {:.0} (Alice, per frame sent); \
         {wire_kbps:.1} kbit/s of media and repair on the wire",
        mean(&codec_bps),
        sorted_bps.first().copied().unwrap_or(0.0),
        sorted_bps.last().copied().unwrap_or(0.0)
    );
    match fec_on {
        Some((at, lost)) => println!(
            "FEC start-up          first repair packet at {:.2} s; Bob had lost {lost} frames by then",
            at.as_secs_f64()
        ),
        None => println!("FEC start-up          no repair packet sent"),
    }
    println!(
        "Alice at the end      protection {:?} ({} group changes), Opus {} bit/s, target {} bit/s, rtt {:?}",
        tx.protection, tx.protection_changes, tx.codec_bps, tx.target_bps, tx.rtt
    );
    println!(
        "Bob at the end        jitter-buffer target {:?}, accelerated {}, expanded {}",
        rx.jitter_target, rx.accelerated, rx.expanded
    );
    println!(
        "mouth-to-ear          mean {:.1} ms, p95 {:.1} ms (audio lag of {} of {speech_blocks} speech blocks + {frame_ms:.0} ms frame)",
        m2e.0,
        m2e.1,
        lags_ms.len()
    );
    println!(
        "added delay           mean {:.1} ms, p95 {:.1} ms (lag - {delay_ms:.0} ms path - {lookahead_ms:.1} ms look-ahead; media-quality's definition)",
        added.0, added.1
    );
    println!("segmental SNR         {snr:.2} dB");
    if stalls > 0 {
        println!("clock                 {stalls} times nothing due after 8 steps (1 ms taken)");
    }
    let temp = |name: &str| {
        std::env::temp_dir()
            .join(format!("call-quality-{name}-{}.wav", std::process::id()))
            .display()
            .to_string()
    };
    let reference = temp("ref");
    write_wav(&reference, input.clone())?;
    let degraded = o.output.clone().unwrap_or_else(|| temp("out"));
    write_wav(&degraded, output)?;
    let mut pesq = String::from("n/a");
    if o.pesq {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/media-quality-pesq.py");
        match std::process::Command::new("python3")
            .args([script, &reference, &degraded])
            .output()
        {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                print!("{text}");
                if let Some(score) = text.split_whitespace().nth(1) {
                    pesq = score.to_string();
                }
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
    let _ = std::fs::remove_file(&reference);
    match &o.output {
        Some(path) => println!("wrote                 {path}"),
        None => {
            let _ = std::fs::remove_file(&degraded);
        }
    }
    println!(
        "result seed={} pesq_wb={pesq} seg_snr_db={snr:.2} wire_loss={wire_lost:.2}% \
         residual_loss={residual:.2}% fec_overhead_bytes={fec_bytes:.1}% \
         fec_overhead_packets={fec_packets:.1}% mouth_to_ear_ms={:.1}/{:.1} \
         added_delay_ms={:.1}/{:.1} rtcp_lost={}/{} opus_bps={:.0} wire_kbps={wire_kbps:.1} \
         fec_on_s={}",
        o.seed,
        m2e.0,
        m2e.1,
        added.0,
        added.1,
        rtcp.lost + rtcp_back.lost,
        rtcp.sent + rtcp_back.sent,
        mean(&codec_bps),
        fec_on.map_or_else(
            || "-".to_string(),
            |(at, _)| format!("{:.2}", at.as_secs_f64())
        ),
    );
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
            eprintln!("call-quality: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("call-quality: {e}");
            ExitCode::FAILURE
        }
    }
}
