//! The initiator's audio mixer under load: N participants (the initiator, with a silent
//! local microphone, plus N-1 remote ones sending Opus over RTP with RFC 6464 levels),
//! mixed on one thread for S seconds of generated speech.
//!
//! Before timing starts, every participant's RTP datagrams for the whole run are
//! built: a few talkers (synthetic speech, taking turns at different loudness) and
//! everyone else sending quiet background noise (about -60 dBov), all 20 ms Opus
//! packets at 32 kbit/s. A few distinct tracks are encoded and shared by participants,
//! each with its own SSRC and sequence numbers. The timed part is everything the
//! initiator does per 20 ms tick: hand every datagram to the mixer (jitter buffers),
//! select speakers, decode what is needed, mix, encode, and packetize one RTP packet
//! per remote participant. CPU time is the thread's (`CLOCK_THREAD_CPUTIME_ID`).
//!
//! `--classic` runs the classic bridge through the same code: every participant
//! decoded, a separate mix-minus encoded for every participant.
//!
//! That in-memory mode measures the mixer alone. `--end-to-end` (end_to_end.rs) adds
//! what a deployment pays: SRTP both ways, a UDP socket per participant, system calls,
//! packets arriving with jitter in real time.

mod end_to_end;
#[path = "../common/realtime.rs"]
mod realtime;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus::media::opus::{Encoder, EncoderConfig};
use chorus::media::quality::synthetic_speech;
use chorus::media::rtp::{self, AudioLevel, Element, Extension};
use chorus::mixer::audio::{Mixer, MixerConfig, ParticipantId, PcmConfig, RemoteConfig, Selection};
use realtime::{ms, thread_cpu};

const HELP: &str = "\
conference-bench: the initiator's audio mixer on one thread

USAGE: cargo run --release --example conference-bench -- [OPTIONS]

OPTIONS:
  --participants <N>   members, the initiator included (default 1000, at least 2)
  --speakers <K>       loudest participants mixed (default 3)
  --seconds <S>        seconds of audio to mix (default 10)
  --talkers <T>        participants who talk (default K + 2)
  --classic            decode everyone and encode a mix for everyone
  --end-to-end         real time over UDP on loopback with SRTP both ways (see
                       end_to_end.rs); otherwise the mixer alone, in memory
  --mixer-cpu <C>      pin the initiator's thread to core C (--end-to-end)
  --load-cpu <C>       pin the participants' load thread to core C (--end-to-end)
";

const RATE: u32 = 48_000;
pub(crate) const FRAME: usize = 960;
pub(crate) const TICK: Duration = Duration::from_millis(20);
/// Distinct background-noise tracks shared by the silent participants.
const NOISE_TRACKS: usize = 8;

pub(crate) struct Options {
    pub(crate) participants: usize,
    speakers: usize,
    seconds: usize,
    talkers: Option<usize>,
    classic: bool,
    end_to_end: bool,
    pub(crate) mixer_cpu: Option<usize>,
    pub(crate) load_cpu: Option<usize>,
}

fn parse() -> Result<Option<Options>, String> {
    let mut o = Options {
        participants: 1000,
        speakers: 3,
        seconds: 10,
        talkers: None,
        classic: false,
        end_to_end: false,
        mixer_cpu: None,
        load_cpu: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--classic" => {
                o.classic = true;
                continue;
            }
            "--end-to-end" => {
                o.end_to_end = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("bad value for {flag}: {value}"))?;
        match flag.as_str() {
            "--participants" => o.participants = n,
            "--speakers" => o.speakers = n,
            "--seconds" => o.seconds = n,
            "--talkers" => o.talkers = Some(n),
            "--mixer-cpu" => o.mixer_cpu = Some(n),
            "--load-cpu" => o.load_cpu = Some(n),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.participants < 2 || o.speakers == 0 || o.seconds == 0 {
        return Err("need --participants >= 2, --speakers >= 1, --seconds >= 1".into());
    }
    Ok(Some(o))
}

/// One track: per tick, the Opus payload and its RFC 6464 level byte.
struct Track {
    frames: Vec<(Vec<u8>, u8)>,
}

fn encode_track(pcm: &[i16]) -> Result<Track, chorus::media::Error> {
    let mut encoder = Encoder::new(EncoderConfig::default())?;
    let mut frames = Vec::with_capacity(pcm.len() / FRAME);
    for chunk in pcm.chunks_exact(FRAME) {
        let mut payload = Vec::new();
        encoder.encode(chunk, &mut payload)?;
        let level = AudioLevel::from_samples(chunk, true).to_byte();
        frames.push((payload, level));
    }
    Ok(Track { frames })
}

/// Talker `i`: synthetic speech in a voice of its own (the generator read at a
/// different rate: a 3.5 % higher pitch per talker), its own loudness, talking in
/// turns (4 s on, then quiet while others talk) so the set of loudest changes.
fn talker(i: usize, ticks: usize) -> Vec<i16> {
    let samples = ticks * FRAME;
    let voice = (f64::from(RATE) / 1.035f64.powi((i % 12) as i32)) as u32;
    let speech = synthetic_speech(voice, samples + 7_919 * i, 20);
    let gain = 1.0 - 0.12 * (i % 6) as f64;
    (0..samples)
        .map(|n| {
            let t = n as f64 / f64::from(RATE);
            let turn = !((t / 4.0) as usize + i).is_multiple_of(3);
            let g = if turn { gain } else { gain * 0.05 };
            (f64::from(speech[n + 7_919 * i]) * g) as i16
        })
        .collect()
}

/// Quiet background noise (about -60 dBov), from a seeded generator.
fn noise(seed: u64, ticks: usize) -> Vec<i16> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..ticks * FRAME)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as i64 % 64 - 32) as i16
        })
        .collect()
}

/// Every tick's datagrams in one buffer (as a batched receive would leave them), and
/// where each participant's is.
pub(crate) struct Tick {
    pub(crate) buffer: Bytes,
    pub(crate) ends: Vec<usize>,
}

fn prepare(
    o: &Options,
    talkers: usize,
    ticks: usize,
) -> Result<Vec<Tick>, Box<dyn std::error::Error>> {
    let mut tracks = Vec::new();
    for i in 0..talkers {
        tracks.push(encode_track(&talker(i, ticks))?);
    }
    for i in 0..NOISE_TRACKS {
        tracks.push(encode_track(&noise(i as u64 + 1, ticks))?);
    }
    let remote = o.participants - 1;
    let track_of = |p: usize| {
        if p < talkers {
            p
        } else {
            talkers + p % NOISE_TRACKS
        }
    };
    let mut ext = Vec::new();
    let mut out = Vec::with_capacity(ticks);
    for t in 0..ticks {
        let mut buffer = BytesMut::with_capacity(remote * 100);
        let mut ends = Vec::with_capacity(remote);
        for p in 0..remote {
            let (payload, level) = &tracks[track_of(p)].frames[t];
            let profile = rtp::write_elements(
                &[Element {
                    id: 1,
                    data: &[*level],
                }],
                &mut ext,
            )?;
            let seq = (p as u32).wrapping_mul(7_919).wrapping_add(t as u32);
            rtp::Packet {
                marker: t == 0,
                payload_type: 111,
                sequence: seq as u16,
                timestamp: seq.wrapping_mul(960),
                ssrc: 0x5000_0000 + p as u32,
                csrcs: vec![],
                extension: Some(Extension {
                    profile,
                    data: &ext,
                }),
                payload,
                padding: 0,
            }
            .encode(&mut buffer)?;
            ends.push(buffer.len());
        }
        out.push(Tick {
            buffer: buffer.freeze(),
            ends,
        });
    }
    Ok(out)
}

/// The mixer, its initiator (a local PCM participant) and the remote participants.
pub(crate) fn mixer_with(
    o: &Options,
) -> Result<(Mixer, ParticipantId, Vec<ParticipantId>), Box<dyn std::error::Error>> {
    let mut config = MixerConfig::default();
    config.selection = if o.classic {
        Selection::All
    } else {
        Selection::Loudest(o.speakers)
    };
    config.max_participants = o.participants.max(config.max_participants);
    let mut mixer = Mixer::new(config)?;
    let initiator = mixer.add_pcm(PcmConfig::default())?;
    let mut ids = Vec::with_capacity(o.participants - 1);
    for p in 0..o.participants - 1 {
        let mut remote = RemoteConfig::default();
        remote.ssrc = 0x7000_0000 + p as u32;
        remote.first_sequence = (p as u16).wrapping_mul(31);
        ids.push(mixer.add_remote(remote)?);
    }
    Ok((mixer, initiator, ids))
}

fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let ticks = o.seconds * 50;
    let talkers = o.talkers.unwrap_or(o.speakers + 2).min(o.participants - 1);
    let prep_start = Instant::now();
    let prepared = prepare(o, talkers, ticks)?;
    let prep = prep_start.elapsed();

    if o.end_to_end {
        return end_to_end::run(o, &prepared);
    }
    let (mut mixer, initiator, ids) = mixer_with(o)?;
    let silence = [0i16; FRAME];

    let t0 = Instant::now();
    let mut per_tick = Vec::with_capacity(ticks);
    let (mut decodes, mut encodes, mut bytes_out, mut rejected) = (0usize, 0usize, 0usize, 0usize);
    let mut max_streams = (0, 0);
    for (t, tick) in prepared.iter().enumerate() {
        let now = t0 + TICK * t as u32;
        let start = thread_cpu();
        let mut begin = 0;
        for (&id, &end) in ids.iter().zip(&tick.ends) {
            if mixer
                .handle_packet(now, id, tick.buffer.slice(begin..end))
                .is_err()
            {
                rejected += 1;
            }
            begin = end;
        }
        mixer.handle_pcm(initiator, (t * FRAME) as u32, &silence)?;
        mixer.tick(now);
        // "Sending": every packet handed to the socket layer would be read once.
        for out in mixer.transmits() {
            bytes_out += std::hint::black_box(out.packet).len();
        }
        std::hint::black_box(mixer.heard_by(initiator));
        per_tick.push(thread_cpu().saturating_sub(start));
        let c = mixer.counts();
        decodes += c.decodes;
        encodes += c.encodes;
        max_streams = (c.streams_in, c.streams_out);
    }
    if std::env::var_os("CONFERENCE_BENCH_WORST").is_some() {
        let mut worst: Vec<(Duration, usize)> = per_tick.iter().copied().zip(0..).collect();
        worst.sort_unstable_by(|a, b| b.cmp(a));
        eprintln!("worst ticks: {:?}", &worst[..10.min(worst.len())]);
    }
    let cpu: Duration = per_tick.iter().sum();
    let mut sorted = per_tick.clone();
    sorted.sort_unstable();
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let mean = cpu / ticks as u32;
    // The first second warms up (codecs created and lent, jitter buffers filling,
    // fresh Opus encoders): its p99 is shown apart.
    let mut steady: Vec<Duration> = per_tick.iter().skip(50).copied().collect();
    steady.sort_unstable();
    let steady_p99 = steady
        .get((steady.len().saturating_sub(1) as f64 * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    let n = o.participants;
    let stats = mixer.stats();
    println!(
        "design={} participants={n} speakers={} talkers={talkers} seconds={} ticks={ticks}",
        if o.classic {
            "classic"
        } else {
            "speaker-selected"
        },
        if o.classic { n } else { o.speakers },
        o.seconds
    );
    println!(
        "prepared {} datagrams in {:.1} s (not timed)",
        ticks * (n - 1),
        prep.as_secs_f64()
    );
    println!(
        "cpu_per_tick mean={:.3} ms p50={:.3} ms p99={:.3} ms p99_after_1s={:.3} ms max={:.3} ms (tick = 20 ms)",
        ms(mean),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(steady_p99),
        ms(*sorted.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "per_tick decodes={:.1} encodes={:.1} speaker_changes={} decode_errors={} rejected={rejected} bytes_out={:.0}",
        decodes as f64 / ticks as f64,
        encodes as f64 / ticks as f64,
        stats.speaker_changes,
        stats.decode_errors,
        bytes_out as f64 / ticks as f64
    );
    println!(
        "streams in={} out={} total={} expected 2(N-1)={} (full mesh N(N-1)={})",
        max_streams.0,
        max_streams.1,
        max_streams.0 + max_streams.1,
        chorus::mixer::streams_for(n),
        n * (n - 1)
    );
    if max_streams.0 + max_streams.1 != chorus::mixer::streams_for(n) {
        return Err("stream count differs from 2(N-1)".into());
    }
    let realtime_factor = (ticks as f64 * 0.02) / cpu.as_secs_f64().max(1e-9);
    println!("realtime_factor={realtime_factor:.2}");
    println!(
        "participants_per_core={:.0} (N x realtime factor at N={n}; linear extrapolation; \
         the mixer alone, in memory: no SRTP, no sockets)",
        n as f64 * realtime_factor
    );
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conference-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
