//! Speech through the whole media path and back, scored: WAV in -> Opus -> RTP ->
//! Reed-Solomon FEC -> a seeded impaired network -> FEC recovery -> jitter buffer ->
//! Opus decoding (in-band FEC, then PLC) -> WAV out, with the segmental SNR against
//! the input and the loss before and after FEC.
//!
//! Without `--input`, 10 s of synthetic voiced speech are used. The output WAV (48 kHz
//! mono) can be scored with an external PESQ implementation against the input.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus::media::adapt::{ProtectionGoal, choose_protection};
use chorus::media::fec::{self, DecoderConfig, EncoderConfig as FecConfig};
use chorus::media::jitter::{JitterBuffer, JitterConfig, Playout};
use chorus::media::netsim::{LossModel, NetConfig, Network, parse_trace};
use chorus::media::opus::{Channels, Decoder, Encoder, EncoderConfig};
use chorus::media::{rtp, wav};

const HELP: &str = "\
media-quality: speech through Opus + RTP + FEC over an impaired network, scored

USAGE: cargo run --example media-quality -- [OPTIONS]

OPTIONS:
  --input <wav>          16-bit PCM WAV to send (default: 10 s of synthetic speech)
  --output <wav>         where to write what the receiver played (48 kHz mono)
  --reference <wav>      where to write what was sent (48 kHz mono), for PESQ:
                         python3 examples/media-quality-pesq.py <reference> <output>
  --loss <0-1>           random loss probability (default 0.1)
  --burst <packets>      mean loss burst length; > 1 uses Gilbert-Elliott (default 1)
  --trace <file>         replay a loss trace (1/x lost, 0/. delivered) instead
  --jitter-ms <ms>       uniform extra delay (default 30)
  --bitrate <bit/s>      Opus bitrate (default 24000)
  --seed <n>             network seed (default 1)
  --no-fec               no Reed-Solomon FEC and no Opus in-band FEC
";

const RATE: u32 = 48_000;
const FRAME: usize = 960;

struct Options {
    input: Option<String>,
    output: Option<String>,
    reference: Option<String>,
    loss: f64,
    burst: f64,
    trace: Option<String>,
    jitter_ms: u64,
    bitrate: u32,
    seed: u64,
    fec: bool,
}

fn parse() -> Result<Option<Options>, String> {
    let mut o = Options {
        input: None,
        output: None,
        reference: None,
        loss: 0.1,
        burst: 1.0,
        trace: None,
        jitter_ms: 30,
        bitrate: 24_000,
        seed: 1,
        fec: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-fec" => {
                o.fec = false;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--input" => o.input = Some(value),
            "--output" => o.output = Some(value),
            "--reference" => o.reference = Some(value),
            "--loss" => {
                o.loss = value
                    .parse()
                    .map_err(|_| format!("bad value for {flag}: {value}"))?
            }
            "--burst" => {
                o.burst = value
                    .parse()
                    .map_err(|_| format!("bad value for {flag}: {value}"))?
            }
            "--trace" => o.trace = Some(value),
            "--jitter-ms" => o.jitter_ms = value.parse().map_err(bad)?,
            "--bitrate" => {
                o.bitrate = value
                    .parse()
                    .map_err(|_| format!("bad value for {flag}: {value}"))?
            }
            "--seed" => {
                o.seed = value
                    .parse()
                    .map_err(|_| format!("bad value for {flag}: {value}"))?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Some(o))
}

fn synthetic_speech(seconds: usize) -> Vec<i16> {
    chorus::media::quality::synthetic_speech(RATE, RATE as usize * seconds, 20)
}

fn segmental_snr(reference: &[i16], test: &[i16]) -> f64 {
    chorus::media::quality::segmental_snr(reference, test, FRAME)
}

fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let input = match &o.input {
        Some(path) => {
            let w = wav::read(&std::fs::read(path)?, 1 << 30)?;
            let mono: Vec<i16> = w
                .samples
                .iter()
                .step_by(usize::from(w.channels))
                .copied()
                .collect();
            wav::resample(&mono, 1, w.sample_rate, RATE)
        }
        None => synthetic_speech(10),
    };
    let protection = choose_protection(
        if o.fec { o.loss } else { 0.0 },
        o.burst,
        &ProtectionGoal::default(),
    );
    let mut config = EncoderConfig::default();
    config.bitrate = o.bitrate;
    config.inband_fec = o.fec;
    config.expected_loss_percent = protection.opus_expected_loss;
    let mut opus = Encoder::new(config)?;
    let mut fec_tx = protection
        .rs
        .filter(|_| o.fec)
        .map(|(k, m)| {
            let mut c = FecConfig::default();
            (c.k, c.m, c.stride) = (k, m, protection.stride);
            fec::Encoder::new(c)
        })
        .transpose()?;
    let mut fec_rx = fec::Decoder::new(DecoderConfig::default())?;
    let mut net_config = NetConfig::default();
    net_config.jitter = Duration::from_millis(o.jitter_ms);
    net_config.loss = match &o.trace {
        Some(path) => LossModel::Trace(parse_trace(&std::fs::read_to_string(path)?, 1_000_000)?),
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
    let mut net: Network<(bool, Vec<u8>)> = Network::new(net_config, o.seed)?;
    let mut jb_config = JitterConfig::default();
    jb_config.extra_delay = if fec_tx.is_some() {
        protection.delay(Duration::from_millis(20))
    } else {
        Duration::ZERO
    };
    let mut jb: JitterBuffer<Vec<u8>> = JitterBuffer::new(jb_config)?;
    let mut decoder = Decoder::new(RATE, Channels::Mono)?;

    let frames = input.len() / FRAME;
    let mut output = vec![0i16; frames * FRAME];
    let (mut packet, mut pcm, mut wire) = (Vec::new(), Vec::new(), BytesMut::new());
    let (mut sent, mut media_lost, mut concealed) = (0usize, 0u64, 0u64);
    let t0 = Instant::now();
    let mut now = t0;
    loop {
        if sent < frames && now >= t0 + Duration::from_millis(20 * sent as u64) {
            opus.encode(&input[sent * FRAME..(sent + 1) * FRAME], &mut packet)?;
            let seq = sent as u16;
            let p = rtp::Packet {
                marker: sent == 0,
                payload_type: 111,
                sequence: seq,
                timestamp: 960 * sent as u32,
                ssrc: 1,
                csrcs: vec![],
                extension: None,
                payload: &packet,
                padding: 0,
            };
            wire.clear();
            p.encode(&mut wire)?;
            if !net.handle_send(now, (false, wire.to_vec()), wire.len()) {
                media_lost += 1;
            }
            if let Some(tx) = fec_tx.as_mut() {
                tx.push(seq, &wire)?;
                while let Some(repair) = tx.poll_repair() {
                    let len = repair.len() + 12;
                    net.handle_send(now, (true, repair), len);
                }
            }
            sent += 1;
        }
        while let Some((is_repair, bytes)) = net.poll_deliver(now) {
            if is_repair {
                let _ = fec_rx.handle_repair(&bytes);
            } else if let Ok(p) = rtp::Packet::decode(&bytes) {
                fec_rx.handle_source(p.sequence, &bytes);
                let _ = jb.handle_packet(now, p.sequence, p.timestamp, p.payload.to_vec());
            }
            while let Some(r) = fec_rx.poll_recovered() {
                if let Ok(p) = rtp::Packet::decode(&r.packet) {
                    let _ = jb.handle_packet(now, p.sequence, p.timestamp, p.payload.to_vec());
                }
            }
        }
        while let Some(frame) = jb.poll_frame(now) {
            let seq = match frame {
                Playout::Packet { seq, payload, .. } => {
                    decoder.decode(&payload, &mut pcm)?;
                    seq
                }
                Playout::Missing { seq } => {
                    concealed += 1;
                    match jb.peek() {
                        Some(next) if o.fec => decoder.decode_fec(next, FRAME, &mut pcm)?,
                        _ => decoder.conceal(FRAME, &mut pcm)?,
                    };
                    seq
                }
                Playout::Empty => continue,
            };
            let i = usize::from(seq);
            if let Some(slot) = output.get_mut(i * FRAME..(i + 1) * FRAME) {
                slot.copy_from_slice(&pcm[..FRAME]);
            }
        }
        let next_send = (sent < frames).then(|| t0 + Duration::from_millis(20 * sent as u64));
        let pending = next_send.is_some() || net.poll_timeout().is_some() || !jb.is_empty();
        if !pending {
            break;
        }
        let next = [next_send, net.poll_timeout(), jb.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        now = next
            .filter(|&t| t > now)
            .unwrap_or(now + Duration::from_millis(1));
    }
    let lag = (0..2000)
        .max_by_key(|&lag| {
            input[..RATE as usize]
                .iter()
                .zip(&output[lag..])
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum::<i64>()
        })
        .unwrap_or(0);
    println!("frames sent           {frames}");
    println!("protection            {protection:?}");
    println!(
        "media packets lost    {media_lost} ({:.1} %)",
        100.0 * media_lost as f64 / frames.max(1) as f64
    );
    println!("rebuilt by RS FEC     {}", fec_rx.stats().recovered);
    println!(
        "concealed at playout  {concealed} ({:.1} %)",
        100.0 * concealed as f64 / frames.max(1) as f64
    );
    println!("jitter buffer target  {:?}", jb.target_delay());
    println!(
        "segmental SNR         {:.2} dB",
        segmental_snr(
            &input[..input.len().min(output.len()) - lag],
            &output[lag..]
        )
    );
    if let Some(path) = &o.reference {
        let mut file = Vec::new();
        let samples = input[..frames * FRAME].to_vec();
        wav::write(
            &wav::Wav {
                sample_rate: RATE,
                channels: 1,
                samples,
            },
            &mut file,
        )?;
        std::fs::write(path, file)?;
    }
    if let Some(path) = &o.output {
        let mut file = Vec::new();
        wav::write(
            &wav::Wav {
                sample_rate: RATE,
                channels: 1,
                samples: output,
            },
            &mut file,
        )?;
        std::fs::write(path, file)?;
        println!("wrote                 {path}");
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
