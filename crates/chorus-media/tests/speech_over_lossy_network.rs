//! 12 seconds of synthetic speech through Opus, RTP, Reed-Solomon FEC, a seeded
//! network with 10 % loss and 30 ms jitter, the FEC decoder, the jitter buffer and the
//! Opus decoder (PLC for what is still missing), scored by segmental SNR against the
//! input. Deterministic: fixed seeds, virtual time.
#![cfg(feature = "opus")]
#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_media::adapt::{ProtectionGoal, choose_protection};
use chorus_media::fec::{self, DecoderConfig, EncoderConfig as FecConfig};
use chorus_media::jitter::{JitterBuffer, JitterConfig, Playout};
use chorus_media::netsim::{LossModel, NetConfig, Network};
use chorus_media::opus::{Channels, Decoder, Encoder, EncoderConfig};
use chorus_media::rtp;

const RATE: u32 = 16_000;
const FRAME: usize = 320; // 20 ms at 16 kHz
const SECONDS: usize = 12;
const PT_OPUS: u8 = 111;
const PT_FEC: u8 = 112;

fn speech() -> Vec<i16> {
    chorus_media::quality::synthetic_speech(RATE, RATE as usize * SECONDS, 12)
}

fn segmental_snr(reference: &[i16], test: &[i16]) -> f64 {
    chorus_media::quality::segmental_snr(reference, test, FRAME)
}

struct Outcome {
    seg_snr: f64,
    /// Frames that had to be concealed (lost and not rebuilt in time).
    concealed: usize,
    recovered_by_fec: u64,
}

fn run(loss: f64, use_fec: bool) -> Outcome {
    let input = speech();
    let mut config = EncoderConfig::default();
    config.sample_rate = RATE;
    config.bitrate = 24_000;
    // The controller's choice for this loss rate (independent loss: mean burst
    // 1 / (1 - p)); on a clean path it is "nothing", in-band FEC included.
    let protection = choose_protection(loss, 1.0 / (1.0 - loss), &ProtectionGoal::default());
    config.inband_fec = use_fec && protection.opus_fec;
    config.expected_loss_percent = protection.opus_expected_loss;
    let mut opus = Encoder::new(config).unwrap();
    let (k, m) = protection.rs.unwrap_or((1, 1));
    let mut fec_config = FecConfig::default();
    (fec_config.k, fec_config.m, fec_config.stride) = (k, m, protection.stride);
    let mut fec_tx = fec::Encoder::new(fec_config).unwrap();
    let mut fec_rx = fec::Decoder::new(DecoderConfig::default()).unwrap();
    let mut net_config = NetConfig::default();
    net_config.loss = if loss > 0.0 {
        LossModel::Random { p: loss }
    } else {
        LossModel::None
    };
    net_config.delay = Duration::from_millis(30);
    net_config.jitter = Duration::from_millis(30);
    let mut net: Network<Vec<u8>> = Network::new(net_config, 2024).unwrap();
    let mut jb_config = JitterConfig::default();
    jb_config.extra_delay = if use_fec {
        protection.delay(Duration::from_millis(20))
    } else {
        Duration::ZERO
    };
    let mut jb: JitterBuffer<Vec<u8>> = JitterBuffer::new(jb_config).unwrap();
    let mut decoder = Decoder::new(RATE, Channels::Mono).unwrap();

    let base_seq = 65_000u16;
    let t0 = Instant::now();
    let frames = input.len() / FRAME;
    let mut output = vec![0i16; input.len()];
    let mut concealed = 0;
    let (mut packet, mut pcm, mut wire) = (Vec::new(), Vec::new(), BytesMut::new());
    let mut sent = 0usize;
    let mut now = t0;
    let end = t0 + Duration::from_secs(SECONDS as u64 + 2);

    let accept = |jb: &mut JitterBuffer<Vec<u8>>, now: Instant, bytes: &[u8]| {
        if let Ok(p) = rtp::Packet::decode(bytes) {
            let _ = jb.handle_packet(now, p.sequence, p.timestamp, p.payload.to_vec());
        }
    };
    while now < end {
        // Sender: one frame every 20 ms.
        if sent < frames && now >= t0 + Duration::from_millis(20 * sent as u64) {
            opus.encode(&input[sent * FRAME..(sent + 1) * FRAME], &mut packet)
                .unwrap();
            let seq = base_seq.wrapping_add(sent as u16);
            let rtp_packet = rtp::Packet {
                marker: sent == 0,
                payload_type: PT_OPUS,
                sequence: seq,
                timestamp: 960 * sent as u32,
                ssrc: 0x00C0_FFEE,
                csrcs: vec![],
                extension: None,
                payload: &packet,
                padding: 0,
            };
            wire.clear();
            rtp_packet.encode(&mut wire).unwrap();
            net.handle_send(now, wire.to_vec(), wire.len());
            if use_fec {
                fec_tx.push(seq, &wire).unwrap();
                let mut repair_seq = 0u16;
                while let Some(repair) = fec_tx.poll_repair() {
                    let p = rtp::Packet {
                        marker: false,
                        payload_type: PT_FEC,
                        sequence: repair_seq,
                        timestamp: 0,
                        ssrc: 0x00FE_C000,
                        csrcs: vec![],
                        extension: None,
                        payload: &repair,
                        padding: 0,
                    };
                    repair_seq = repair_seq.wrapping_add(1);
                    let mut w = BytesMut::new();
                    p.encode(&mut w).unwrap();
                    net.handle_send(now, w.to_vec(), w.len());
                }
            }
            sent += 1;
        }
        // Network -> receiver.
        while let Some(bytes) = net.poll_deliver(now) {
            let Ok(p) = rtp::Packet::decode(&bytes) else {
                continue;
            };
            if p.payload_type == PT_FEC {
                let _ = fec_rx.handle_repair(p.payload);
            } else {
                fec_rx.handle_source(p.sequence, &bytes);
                accept(&mut jb, now, &bytes);
            }
            while let Some(r) = fec_rx.poll_recovered() {
                // Rebuilt late by design: buffered, but not a sample of the path's delay.
                if let Ok(p) = rtp::Packet::decode(&r.packet) {
                    let _ = jb.handle_recovered(now, p.sequence, p.timestamp, p.payload.to_vec());
                }
            }
        }
        // Playout.
        while let Some(frame) = jb.poll_frame(now) {
            let seq = match &frame {
                Playout::Packet { seq, payload, .. } => {
                    decoder.decode(payload, &mut pcm).unwrap();
                    *seq
                }
                Playout::Missing { seq } => {
                    // With in-band FEC on, the next packet's copy (Opus LBRR);
                    // otherwise plain concealment.
                    match jb.peek() {
                        Some(next) if config.inband_fec => {
                            decoder.decode_fec(next, FRAME, &mut pcm).unwrap()
                        }
                        _ => decoder.conceal(FRAME, &mut pcm).unwrap(),
                    };
                    // Past the last frame the buffer conceals a few frames before
                    // it goes quiet: not a loss.
                    if usize::from(seq.wrapping_sub(base_seq)) < frames {
                        concealed += 1;
                    }
                    *seq
                }
                Playout::Empty => continue,
            };
            let index = usize::from(seq.wrapping_sub(base_seq));
            if let Some(slot) = output.get_mut(index * FRAME..(index + 1) * FRAME) {
                slot.copy_from_slice(&pcm[..FRAME]);
            }
        }
        // Virtual clock: jump to the next event.
        let next_send = (sent < frames).then(|| t0 + Duration::from_millis(20 * sent as u64));
        let next = [next_send, net.poll_timeout(), jb.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t > now => now = t,
            Some(_) => now += Duration::from_millis(1),
            None => break,
        }
    }
    // Align the codec delay (found on the first second) before scoring.
    let lag = (0..200)
        .max_by_key(|&lag| {
            let c: f64 = input[..RATE as usize]
                .iter()
                .zip(&output[lag..])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            c as i64
        })
        .unwrap();
    Outcome {
        seg_snr: segmental_snr(&input[..input.len() - lag], &output[lag..]),
        concealed,
        recovered_by_fec: fec_rx.stats().recovered,
    }
}

#[test]
fn reed_solomon_fec_keeps_speech_quality_at_ten_percent_loss() {
    let clean = run(0.0, false);
    let plc_only = run(0.10, false);
    let with_fec = run(0.10, true);
    eprintln!(
        "segSNR clean {:.2} dB, 10 % loss PLC only {:.2} dB ({} concealed), 10 % loss with FEC {:.2} dB ({} concealed, {} rebuilt)",
        clean.seg_snr,
        plc_only.seg_snr,
        plc_only.concealed,
        with_fec.seg_snr,
        with_fec.concealed,
        with_fec.recovered_by_fec
    );
    // Clean: no FEC at all; at most a packet or two late while the jitter buffer
    // learns the path (its first second).
    assert_eq!(clean.recovered_by_fec, 0);
    assert!(clean.concealed <= 2, "{}", clean.concealed);
    assert!(plc_only.concealed > 40);
    assert!(with_fec.recovered_by_fec > 25);
    assert!(
        with_fec.concealed * 5 < plc_only.concealed,
        "FEC leaves under a fifth of the losses"
    );
    assert!(with_fec.seg_snr > plc_only.seg_snr + 2.0);
    assert!(with_fec.seg_snr > clean.seg_snr - 1.0);
}
