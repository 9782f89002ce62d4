//! A three-party conference: the initiator mixes (chorus-mixer). Every other member
//! sends one SRTP-protected Opus stream with its RFC 6464 audio level to the
//! initiator over their ICE path, and gets one mix-minus stream back: 2(N-1) streams.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus::crypto::srtp::{Policy, SrtpSession};
use chorus::framing::DatagramCore;
use chorus::media::opus::{Channels, Decoder, Encoder, EncoderConfig};
use chorus::media::rtp::{self, AudioLevel, Element, Extension};
use chorus::mixer::audio::{Mixer, MixerConfig, PcmConfig, RemoteConfig};
use chorus::nat::driver::ice::{Connection, IceError};
use tokio::time::{Instant, MissedTickBehavior, interval};

use crate::DemoError;

/// Samples per 20 ms frame at 48 kHz.
pub(crate) const FRAME: usize = 960;
const PAYLOAD_TYPE: u8 = 111;
/// The RFC 8285 element id of the RFC 6464 audio level (the mixer's default).
const LEVEL_ID: u8 = 1;

/// A member other than the initiator: its side of the path to the initiator, and
/// the initiator's side, with each side's SRTP policies `(send, receive)`.
pub(crate) struct Leg {
    pub(crate) name: &'static str,
    pub(crate) mic: Vec<i16>,
    pub(crate) member: (Connection, (Policy, Policy)),
    pub(crate) initiator: (Connection, (Policy, Policy)),
}

/// What each member heard (48 kHz mono), initiator first, and the initiator's
/// stream counts.
pub(crate) struct Outcome {
    pub(crate) heard: Vec<(&'static str, Vec<i16>)>,
    pub(crate) streams_in: usize,
    pub(crate) streams_out: usize,
    pub(crate) speaker_changes: u64,
}

/// Runs the conference for as many 20 ms ticks as the microphones last.
pub(crate) async fn run(
    initiator: &'static str,
    initiator_mic: Vec<i16>,
    legs: Vec<Leg>,
) -> Result<Outcome, DemoError> {
    let ticks = initiator_mic.len() / FRAME;
    let mut members = Vec::new();
    let mut to_initiator = Vec::new();
    for leg in legs {
        let (conn, (send, recv)) = leg.member;
        members.push(tokio::spawn(member(
            leg.name, leg.mic, conn, send, recv, ticks,
        )));
        to_initiator.push(leg.initiator);
    }
    let mixed = mix(initiator, initiator_mic, to_initiator, ticks).await?;
    let mut heard = vec![(initiator, mixed.0)];
    for m in members {
        heard.push(
            m.await
                .map_err(|e| DemoError::Step(format!("member task: {e}")))??,
        );
    }
    Ok(Outcome {
        heard,
        streams_in: mixed.1,
        streams_out: mixed.2,
        speaker_changes: mixed.3,
    })
}

/// The initiator: its microphone into the mixer, every leg's packets in, one mix per
/// leg out, its own mix to its speaker.
async fn mix(
    name: &'static str,
    mic: Vec<i16>,
    mut legs: Vec<(Connection, (Policy, Policy))>,
    ticks: usize,
) -> Result<(Vec<i16>, usize, usize, u64), DemoError> {
    let mut mixer = Mixer::new(MixerConfig::default())?;
    let local = mixer.add_pcm(PcmConfig::default())?;
    let mut ids = Vec::new();
    let mut srtp = Vec::new();
    for (i, (_, (send, recv))) in legs.iter().enumerate() {
        let mut config = RemoteConfig::default();
        config.ssrc = 0x1000 + i as u32;
        ids.push(mixer.add_remote(config)?);
        srtp.push((
            SrtpSession::new(send.clone())?,
            SrtpSession::new(recv.clone())?,
        ));
    }
    let mut heard = Vec::with_capacity(mic.len());
    let (mut streams_in, mut streams_out) = (0, 0);
    // The mixer keeps its own 20 ms clock (its DatagramCore timer): wait for its
    // deadline or a packet from any leg, whichever comes first.
    mixer.start(Instant::now().into_std());
    let mut open = vec![true; legs.len()];
    let mut tick = 0;
    // A few ticks more than the talk, so the last packets are played out.
    while tick < ticks + 5 {
        let due = DatagramCore::poll_timeout(&mixer).map(Instant::from_std);
        tokio::select! {
            biased;
            () = wait(due) => {
                let frame = mic
                    .get(tick * FRAME..(tick + 1) * FRAME)
                    .unwrap_or(&[0; FRAME]);
                mixer.handle_pcm(local, (tick * FRAME) as u32, frame)?;
                DatagramCore::handle_timeout(&mut mixer, Instant::now().into_std());
                heard.extend_from_slice(mixer.heard_by(local).unwrap_or(&[0; FRAME]));
                let counts = mixer.counts();
                (streams_in, streams_out) = (counts.streams_in, counts.streams_out);
                let outgoing: Vec<(usize, Vec<u8>)> = mixer
                    .transmits()
                    .filter_map(|o| {
                        ids.iter()
                            .position(|id| *id == o.to)
                            .map(|i| (i, o.packet.to_vec()))
                    })
                    .collect();
                for (i, mut packet) in outgoing {
                    srtp[i].0.protect_rtp(&mut packet)?;
                    legs[i]
                        .0
                        .send(Bytes::from(packet))
                        .await
                        .map_err(|e| DemoError::Step(format!("{name}: {e}")))?;
                }
                tick += 1;
            }
            (i, got) = next_packet(&mut legs, &open) => match got {
                Ok(packet) => {
                    let mut packet = packet.to_vec();
                    if srtp[i].1.unprotect_rtp(&mut packet).is_ok() {
                        // A packet the mixer refuses (late, duplicate) is dropped, as
                        // the network might have.
                        let _ = mixer.handle_packet(
                            Instant::now().into_std(),
                            ids[i],
                            Bytes::from(packet),
                        );
                    }
                }
                // That leg ended; the others go on.
                Err(_) => open[i] = false,
            },
        }
    }
    Ok((
        heard,
        streams_in,
        streams_out,
        mixer.stats().speaker_changes,
    ))
}

/// Until `due` (forever for `None`).
async fn wait(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The next packet from any open leg, with the leg's index.
async fn next_packet(
    legs: &mut [(Connection, (Policy, Policy))],
    open: &[bool],
) -> (usize, Result<Bytes, IceError>) {
    let receives: Vec<_> = legs
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| open.get(*i).copied().unwrap_or(false))
        .map(|(i, (conn, _))| Box::pin(async move { (i, conn.recv().await) }))
        .collect();
    if receives.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(receives).await.0
}

/// A member: its microphone out as Opus/RTP with the audio level, the initiator's mix
/// in, decoded to what it heard.
async fn member(
    name: &'static str,
    mic: Vec<i16>,
    mut conn: Connection,
    send: Policy,
    recv: Policy,
    ticks: usize,
) -> Result<(&'static str, Vec<i16>), DemoError> {
    let (mut protect, mut unprotect) = (SrtpSession::new(send)?, SrtpSession::new(recv)?);
    let mut encoder = Encoder::new(EncoderConfig::default())?;
    let mut decoder = Decoder::new(48_000, Channels::Mono)?;
    let ssrc = u32::from_be_bytes(*b"demo") ^ name.len() as u32;
    let mut heard = Vec::new();
    let (mut opus, mut pcm, mut ext) = (Vec::new(), Vec::new(), Vec::new());
    let mut clock = interval(Duration::from_millis(20));
    clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_millis(20 * (ticks as u64 + 10));
    let mut tick = 0;
    loop {
        tokio::select! {
            _ = clock.tick(), if tick < ticks => {
                let frame = &mic[tick * FRAME..(tick + 1) * FRAME];
                opus.clear();
                encoder.encode(frame, &mut opus)?;
                let voice = frame.iter().any(|s| s.unsigned_abs() > 300);
                let level = [AudioLevel::from_samples(frame, voice).to_byte()];
                ext.clear();
                let profile = rtp::write_elements(&[Element { id: LEVEL_ID, data: &level }], &mut ext)?;
                let mut wire = BytesMut::new();
                rtp::Packet {
                    marker: tick == 0,
                    payload_type: PAYLOAD_TYPE,
                    sequence: tick as u16,
                    timestamp: (tick * FRAME) as u32,
                    ssrc,
                    csrcs: vec![],
                    extension: Some(Extension { profile, data: &ext }),
                    payload: &opus,
                    padding: 0,
                }
                .encode(&mut wire)?;
                let mut packet = wire.to_vec();
                protect.protect_rtp(&mut packet)?;
                conn.send(Bytes::from(packet)).await.map_err(|e| DemoError::Step(format!("{name}: {e}")))?;
                tick += 1;
            }
            got = conn.recv() => {
                let mut packet = got.map_err(|e| DemoError::Step(format!("{name}: {e}")))?.to_vec();
                if unprotect.unprotect_rtp(&mut packet).is_err() {
                    continue;
                }
                let p = rtp::Packet::decode(&packet)?;
                pcm.clear();
                decoder.decode(p.payload, &mut pcm)?;
                heard.extend_from_slice(&pcm);
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    Ok((name, heard))
}

/// RMS level in dBFS of `samples` (-120 for silence).
pub(crate) fn dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let power = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64;
    if power < 1.0 {
        -120.0
    } else {
        10.0 * (power / f64::from(i16::MAX).powi(2)).log10()
    }
}
