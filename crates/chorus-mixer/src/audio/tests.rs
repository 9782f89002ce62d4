//! Mixing correctness on real Opus packets: every participant's stream is also decoded
//! by a reference decoder in the test, and what each participant hears is checked
//! sample for sample against the soft-clipped sum of the others' reference audio.
#![allow(
    clippy::field_reassign_with_default,
    reason = "the style callers outside the crate must use (non_exhaustive)"
)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_media::opus::{Channels, Decoder, Encoder, EncoderConfig};
use chorus_media::rtp::{self, AudioLevel, Element, Extension};
use proptest::prelude::*;

use std::net::SocketAddr;

use chorus_framing::{DatagramCore, Transmit};

use super::*;

const TICK: Duration = Duration::from_millis(20);

/// What a test participant says.
#[derive(Clone, Copy)]
enum Voice {
    Tone { hz: f64, amplitude: f64 },
    Silence,
}

/// A remote participant's client: encodes its voice, sends RTP with the RFC 6464
/// level, and decodes its own packets with a reference decoder at the mixing format.
struct Client {
    id: ParticipantId,
    voice: Voice,
    rate: u32,
    channels: Channels,
    encoder: Encoder,
    reference: Decoder,
    sequence: u16,
    /// Whether packets carry the RFC 6464 level.
    send_level: bool,
    /// Samples sent so far (per channel).
    clock: u64,
    /// The reference decode of every packet sent, in order.
    sent: Vec<Vec<i16>>,
}

impl Client {
    fn new(mixer: &mut Mixer, voice: Voice, rate: u32, channels: Channels) -> Self {
        Self::with_bitrate(mixer, voice, rate, channels, 32_000)
    }

    /// A client to whom the mixer sends at `bitrate` bit/s.
    fn with_bitrate(
        mixer: &mut Mixer,
        voice: Voice,
        rate: u32,
        channels: Channels,
        bitrate: u32,
    ) -> Self {
        let mut remote = RemoteConfig::default();
        remote.codec.bitrate = bitrate;
        Self::with_remote(mixer, voice, rate, channels, remote)
    }

    /// A client whose mixer-side configuration starts from `remote`.
    fn with_remote(
        mixer: &mut Mixer,
        voice: Voice,
        rate: u32,
        channels: Channels,
        mut remote: RemoteConfig,
    ) -> Self {
        remote.ssrc = 0x1000 + mixer.count as u32;
        remote.codec.frame = mixer.config().tick;
        let id = mixer.add_remote(remote).unwrap();
        let mut config = EncoderConfig::default();
        config.sample_rate = rate;
        config.channels = channels;
        let encoder = Encoder::new(config).unwrap();
        Self {
            id,
            voice,
            rate,
            channels,
            encoder,
            reference: Decoder::new(48_000, Channels::Mono).unwrap(),
            sequence: 100,
            send_level: true,
            clock: 0,
            sent: Vec::new(),
        }
    }

    /// One 20 ms packet.
    fn next_packet(&mut self) -> Bytes {
        let n = self.rate as usize / 50;
        let ch = self.channels.count();
        let mut pcm = Vec::with_capacity(n * ch);
        for i in 0..n as u64 {
            let s = match self.voice {
                Voice::Tone { hz, amplitude } => {
                    let t = (self.clock + i) as f64 / f64::from(self.rate);
                    (amplitude * (t * hz * std::f64::consts::TAU).sin()) as i16
                }
                Voice::Silence => 0,
            };
            pcm.extend(std::iter::repeat_n(s, ch));
        }
        self.clock += n as u64;
        let mut payload = Vec::new();
        self.encoder.encode(&pcm, &mut payload).unwrap();
        let mut reference = Vec::new();
        self.reference.decode(&payload, &mut reference).unwrap();
        self.sent.push(reference);
        let level = [AudioLevel::from_samples(&pcm, true).to_byte()];
        let mut ext = Vec::new();
        let profile = rtp::write_elements(
            &[Element {
                id: 1,
                data: &level,
            }],
            &mut ext,
        )
        .unwrap();
        let packet = rtp::Packet {
            marker: false,
            payload_type: 111,
            sequence: self.sequence,
            timestamp: u32::from(self.sequence) * 960,
            ssrc: 0xABC0_0000 | self.id.slot,
            csrcs: vec![],
            extension: self.send_level.then_some(Extension {
                profile,
                data: &ext,
            }),
            payload: &payload,
            padding: 0,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let mut out = BytesMut::new();
        packet.encode(&mut out).unwrap();
        out.freeze()
    }
}

struct Harness {
    mixer: Mixer,
    clients: Vec<Client>,
    t0: Instant,
    ticks: u32,
}

impl Harness {
    fn new(config: MixerConfig, voices: &[Voice]) -> Self {
        let mut mixer = Mixer::new(config).unwrap();
        let clients = voices
            .iter()
            .map(|&v| Client::new(&mut mixer, v, 48_000, Channels::Mono))
            .collect();
        Self {
            mixer,
            clients,
            t0: Instant::now(),
            ticks: 0,
        }
    }

    /// One tick: every client sends a packet (no jitter), then the mixer ticks.
    fn tick(&mut self) {
        let now = self.t0 + TICK * self.ticks;
        for c in &mut self.clients {
            let packet = c.next_packet();
            self.mixer.handle_packet(now, c.id, packet).unwrap();
        }
        self.mixer.tick(now);
        self.ticks += 1;
    }

    /// The soft-clipped sum of the reference audio of packet `index` of every client
    /// but `except`.
    fn expected(&self, index: usize, except: Option<ParticipantId>) -> Vec<i16> {
        let mut sum = vec![0i32; 960];
        for c in self.clients.iter().filter(|c| Some(c.id) != except) {
            if let Voice::Silence = c.voice {
                continue;
            }
            if let Some(frame) = c.sent.get(index) {
                mix::accumulate(&mut sum, frame);
            }
        }
        sum.iter().map(|&s| mix::soft_clip(s)).collect()
    }

    /// The jitter buffer's delay in ticks (the same for every client here): the `d`
    /// for which everybody hears exactly the others' packets `tick - d`.
    fn check_mix_minus(&self) -> usize {
        let latest = self.ticks as usize - 1;
        (0..4)
            .find(|&d| {
                self.clients.iter().all(|c| {
                    self.mixer.heard_by(c.id)
                        == Some(self.expected(latest - d, Some(c.id)).as_slice())
                })
            })
            .unwrap_or_else(|| panic!("no delay makes the mix the sum of the others"))
    }
}

fn tone(hz: f64, amplitude: f64) -> Voice {
    Voice::Tone { hz, amplitude }
}

#[test]
fn everyone_hears_exactly_the_sum_of_the_others_and_never_themselves() {
    let mut config = MixerConfig::default();
    config.selection = Selection::All;
    let mut h = Harness::new(
        config,
        &[
            tone(300.0, 4000.0),
            tone(440.0, 3000.0),
            tone(700.0, 2000.0),
            tone(1100.0, 5000.0),
        ],
    );
    for _ in 0..3 {
        h.tick();
    }
    let delay = h.check_mix_minus();
    for _ in 0..10 {
        h.tick();
        assert_eq!(h.check_mix_minus(), delay);
        // Nobody's mix contains their own voice: it differs from the full sum.
        for c in &h.clients {
            assert_ne!(
                h.mixer.heard_by(c.id).unwrap(),
                h.expected(h.ticks as usize - 1 - delay, None)
            );
        }
    }
    let counts = h.mixer.counts();
    assert_eq!(
        (counts.decodes, counts.encodes, counts.streams_out),
        (4, 4, 4)
    );
}

#[test]
fn only_the_loudest_are_decoded_and_listeners_share_one_encoding() {
    // 3 talkers among 12; the 9 silent ones are never decoded.
    let mut voices = vec![
        tone(300.0, 6000.0),
        tone(500.0, 4000.0),
        tone(800.0, 3000.0),
    ];
    voices.extend(std::iter::repeat_n(Voice::Silence, 9));
    let mut h = Harness::new(MixerConfig::default(), &voices);
    for _ in 0..8 {
        h.tick();
    }
    h.check_mix_minus();
    let counts = h.mixer.counts();
    assert_eq!(counts.speakers, 3);
    assert_eq!(counts.decodes, 3, "silent streams are not decoded");
    assert_eq!(counts.encodes, 4, "K own mixes + one shared");
    assert_eq!(counts.streams_in + counts.streams_out, 24);
    let speakers: Vec<_> = h.mixer.speakers().collect();
    assert_eq!(
        speakers,
        [h.clients[0].id, h.clients[1].id, h.clients[2].id]
    );
    // Listeners get the same payload behind their own RTP header.
    let packets: Vec<_> = h.mixer.transmits().collect();
    assert_eq!(packets.len(), 12);
    let payload = |p: &Outgoing<'_>| rtp::Packet::decode(p.packet).unwrap().payload.to_vec();
    let shared: Vec<_> = packets
        .iter()
        .filter(|p| !h.mixer.is_speaker(p.to))
        .collect();
    assert_eq!(shared.len(), 9);
    assert!(shared.iter().all(|p| payload(p) == payload(shared[0])));
    for p in packets.iter().filter(|p| h.mixer.is_speaker(p.to)) {
        assert_ne!(payload(p), payload(shared[0]));
        let rtp = rtp::Packet::decode(p.packet).unwrap();
        assert_eq!(rtp.csrcs.len(), 2, "the other two speakers as CSRCs");
    }
    let ssrcs: std::collections::HashSet<u32> = packets
        .iter()
        .map(|p| rtp::Packet::decode(p.packet).unwrap().ssrc)
        .collect();
    assert_eq!(ssrcs.len(), 12, "one outgoing SSRC per participant");
}

#[test]
fn the_shared_mix_is_encoded_once_per_codec_setting() {
    let mut h = Harness::new(
        MixerConfig::default(),
        &[
            tone(300.0, 6000.0),
            tone(500.0, 4000.0),
            tone(800.0, 3000.0),
        ],
    );
    for bitrate in [32_000, 32_000, 16_000, 16_000, 16_000] {
        let c = Client::with_bitrate(
            &mut h.mixer,
            Voice::Silence,
            48_000,
            Channels::Mono,
            bitrate,
        );
        h.clients.push(c);
    }
    for _ in 0..6 {
        h.tick();
    }
    h.check_mix_minus();
    assert_eq!(
        h.mixer.counts().encodes,
        3 + 2,
        "3 mix-minus, 2 shared settings"
    );
    let payload_of = |c: &Client| {
        let out = h.mixer.transmits().find(|o| o.to == c.id).unwrap();
        rtp::Packet::decode(out.packet).unwrap().payload.to_vec()
    };
    let [fast1, fast2, slow1, slow2, slow3] = [3, 4, 5, 6, 7].map(|i| payload_of(&h.clients[i]));
    assert_eq!(fast1, fast2);
    assert_eq!((&slow1, &slow1), (&slow2, &slow3));
    assert_ne!(fast1, slow1);
    assert!(slow1.len() < fast1.len(), "16 kbit/s packets are smaller");
}

#[test]
fn a_participant_who_joins_hears_the_next_tick_and_one_who_leaves_disappears() {
    let mut h = Harness::new(
        MixerConfig::default(),
        &[tone(300.0, 4000.0), tone(600.0, 4000.0), Voice::Silence],
    );
    for _ in 0..5 {
        h.tick();
    }
    let newcomer = Client::new(&mut h.mixer, Voice::Silence, 48_000, Channels::Mono);
    assert_eq!(h.mixer.heard_by(newcomer.id), None, "nothing yet");
    let newcomer_id = newcomer.id;
    h.clients.push(newcomer);
    h.tick();
    let delay = h.check_mix_minus();
    assert!(h.mixer.transmits().any(|p| p.to == newcomer_id));
    assert!(
        h.mixer
            .heard_by(newcomer_id)
            .unwrap()
            .iter()
            .any(|&s| s != 0)
    );

    // The 600 Hz talker leaves: from the next tick nobody hears it or sends to it.
    let gone = h.clients.remove(1);
    h.mixer.remove(gone.id).unwrap();
    h.tick();
    assert!(h.mixer.transmits().all(|p| p.to != gone.id));
    assert_eq!(h.mixer.heard_by(gone.id), None);
    assert_eq!(
        h.mixer.handle_packet(h.t0, gone.id, Bytes::new()),
        Err(Error::AudioUsage(Usage::UnknownParticipant))
    );
    for c in &h.clients {
        let index = h.ticks as usize - 1 - delay;
        assert_eq!(
            h.mixer.heard_by(c.id).unwrap(),
            h.expected(index, Some(c.id))
        );
    }
    assert_eq!(h.mixer.counts().streams_out, 3);
}

#[test]
fn silence_in_silence_out() {
    let mut h = Harness::new(MixerConfig::default(), &[Voice::Silence; 4]);
    let mut decoder = Decoder::new(48_000, Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    for _ in 0..10 {
        h.tick();
        assert_eq!(h.mixer.counts().speakers, 0);
        assert_eq!(h.mixer.counts().decodes, 0);
        assert_eq!(h.mixer.counts().encodes, 1, "one shared (silent) encoding");
        for c in &h.clients {
            assert!(h.mixer.heard_by(c.id).unwrap().iter().all(|&s| s == 0));
        }
        let first = h.mixer.transmits().next().unwrap();
        decoder
            .decode(rtp::Packet::decode(first.packet).unwrap().payload, &mut pcm)
            .unwrap();
        assert!(
            pcm.iter().all(|&s| s.abs() <= 2),
            "decoded output is silent"
        );
    }
}

#[test]
fn loud_rooms_are_soft_clipped_not_wrapped() {
    let mut config = MixerConfig::default();
    config.selection = Selection::All;
    let voices: Vec<Voice> = (0..5)
        .map(|i| tone(200.0 + 50.0 * f64::from(i), 20_000.0))
        .collect();
    let mut h = Harness::new(config, &voices);
    for _ in 0..6 {
        h.tick();
    }
    h.check_mix_minus();
    let heard = h.mixer.heard_by(h.clients[0].id).unwrap();
    let peak = heard.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak > mix::KNEE as u16, "the limiter engaged: {peak}");
}

#[test]
fn inputs_at_other_rates_and_channel_counts_are_mixed_at_the_mixing_format() {
    let mut config = MixerConfig::default();
    config.selection = Selection::All;
    let mut mixer = Mixer::new(config).unwrap();
    let clients = vec![
        Client::new(&mut mixer, tone(300.0, 4000.0), 16_000, Channels::Mono),
        Client::new(&mut mixer, tone(500.0, 4000.0), 48_000, Channels::Stereo),
        Client::new(&mut mixer, tone(700.0, 4000.0), 8_000, Channels::Mono),
    ];
    // The initiator's microphone: 32 kHz stereo, 10 ms frames.
    let mut pcm_config = PcmConfig::default();
    pcm_config.sample_rate = 32_000;
    pcm_config.channels = 2;
    let mic = mixer.add_pcm(pcm_config).unwrap();
    let mut h = Harness {
        mixer,
        clients,
        t0: Instant::now(),
        ticks: 0,
    };
    let mut reference = Converter::new(32_000, 2, 48_000, 1).unwrap();
    let mut mic_audio = VecDeque::new();
    let mut mic_ts = 0u32;
    for _ in 0..8 {
        for _ in 0..2 {
            let frame: Vec<i16> = (0..320)
                .flat_map(|i| {
                    let t = f64::from(mic_ts + i) / 32_000.0;
                    let s = (3000.0 * (t * 1000.0 * std::f64::consts::TAU).sin()) as i16;
                    [s, s / 2]
                })
                .collect();
            h.mixer.handle_pcm(mic, mic_ts, &frame).unwrap();
            reference.push(&frame, &mut mic_audio);
            mic_ts += 320;
        }
        h.tick();
    }
    // The last mic frame went out on the last tick (PCM needs no jitter buffer).
    let mic_frame: Vec<i16> = mic_audio
        .iter()
        .skip(mic_audio.len() - 960)
        .copied()
        .collect();
    let delay = (0..4)
        .find(|&d| {
            let index = h.ticks as usize - 1 - d;
            h.clients.iter().all(|c| {
                let mut sum = vec![0i32; 960];
                mix::accumulate(&mut sum, &mic_frame);
                for o in h.clients.iter().filter(|o| o.id != c.id) {
                    mix::accumulate(&mut sum, &o.sent[index]);
                }
                let expected: Vec<i16> = sum.iter().map(|&s| mix::soft_clip(s)).collect();
                h.mixer.heard_by(c.id) == Some(expected.as_slice())
            })
        })
        .expect("remote participants hear the others and the microphone");
    // The initiator's speaker plays the three remote participants, not the mic.
    let mut sum = vec![0i32; 960];
    for c in &h.clients {
        mix::accumulate(&mut sum, &c.sent[h.ticks as usize - 1 - delay]);
    }
    let expected: Vec<i16> = sum.iter().map(|&s| mix::soft_clip(s)).collect();
    assert_eq!(h.mixer.heard_by(mic).unwrap(), expected.as_slice());
    // Streams: 3 in, 3 out for 4 members (the initiator is one): 2(N-1).
    let counts = h.mixer.counts();
    assert_eq!(
        counts.streams_in + counts.streams_out,
        crate::streams_for(4)
    );
}

#[test]
fn a_10_ms_clock_mixes_20_ms_packets_over_two_ticks() {
    let mut config = MixerConfig::default();
    config.tick = Duration::from_millis(10);
    config.selection = Selection::All;
    let mut mixer = Mixer::new(config).unwrap();
    assert_eq!(mixer.tick_samples(), 480);
    let mut a = Client::new(&mut mixer, tone(440.0, 5000.0), 48_000, Channels::Mono);
    let mut b = Client::new(&mut mixer, Voice::Silence, 48_000, Channels::Mono);
    let t0 = Instant::now();
    let mut heard_by_b = Vec::new();
    for t in 0..30u32 {
        let now = t0 + Duration::from_millis(10) * t;
        if t % 2 == 0 {
            for c in [&mut a, &mut b] {
                let packet = c.next_packet();
                mixer.handle_packet(now, c.id, packet).unwrap();
            }
        }
        mixer.tick(now);
        heard_by_b.extend_from_slice(mixer.heard_by(b.id).unwrap());
        assert_eq!(mixer.transmits().count(), 2, "a packet to each every 10 ms");
    }
    // b hears a's audio without a seam, after a whole number of ticks.
    let reference = a.sent.concat();
    let delay = (0..10)
        .map(|d| d * 480)
        .find(|&d| heard_by_b[d..] == reference[..heard_by_b.len() - d])
        .expect("b hears a, in order and complete");
    assert!(heard_by_b[..delay].iter().all(|&s| s == 0));
}

#[test]
fn speaker_selection_follows_levels_without_flapping() {
    // K = 1. Participant 0 talks from the start; participant 1, 14 dB louder, from
    // tick 30. Then both talk at the same level: the seat stays where it is.
    let mut config = MixerConfig::default();
    config.selection = Selection::Loudest(1);
    let mut h = Harness::new(
        config,
        &[tone(300.0, 2000.0), Voice::Silence, Voice::Silence],
    );
    let mut history = Vec::new();
    for t in 0..90 {
        if t == 30 {
            h.clients[1].voice = tone(500.0, 10_000.0);
        }
        if t == 60 {
            h.clients[0].voice = tone(300.0, 10_000.0);
        }
        h.tick();
        history.push(h.mixer.speakers().collect::<Vec<_>>());
    }
    let (a, b) = (h.clients[0].id, h.clients[1].id);
    assert_eq!(history[29], [a]);
    let switch = history.iter().position(|s| s == &[b]).unwrap();
    assert!((30..35).contains(&switch), "switched at tick {switch}");
    assert!(history[switch..].iter().all(|s| s == &[b]), "no flapping");
    assert_eq!(h.mixer.stats().speaker_changes, 2);
}

#[test]
fn a_sender_without_levels_is_decoded_and_ranked_by_its_measured_level() {
    let mut config = MixerConfig::default();
    config.selection = Selection::Loudest(1);
    let mut h = Harness::new(
        config,
        &[tone(300.0, 1000.0), tone(500.0, 12_000.0), Voice::Silence],
    );
    h.clients[1].send_level = false;
    for _ in 0..30 {
        h.tick();
    }
    // The loud sender without levels wins the seat from its measured level (once
    // the first speaker's hold has passed).
    assert_eq!(h.mixer.speakers().collect::<Vec<_>>(), [h.clients[1].id]);
    assert!(h.mixer.level(h.clients[1].id).unwrap() < 15);
    // Its decoder ran all along (to measure), so the mix is exactly its audio.
    let latest = h.ticks as usize - 1;
    let heard = h.mixer.heard_by(h.clients[2].id).unwrap();
    assert!((0..4).any(|d| heard == h.clients[1].sent[latest - d].as_slice()));
    assert!(
        h.mixer
            .heard_by(h.clients[1].id)
            .unwrap()
            .iter()
            .all(|&s| s == 0)
    );
    // It goes quiet: still decoded (to measure), no longer mixed once 0 is louder.
    h.clients[1].voice = tone(500.0, 100.0);
    for _ in 0..60 {
        h.tick();
    }
    assert_eq!(h.mixer.speakers().collect::<Vec<_>>(), [h.clients[0].id]);
    assert_eq!(
        h.mixer.counts().decodes,
        2,
        "the speaker and the measured sender"
    );

    // With no measuring budget, a sender without levels counts as silent.
    let mut config = MixerConfig::default();
    config.selection = Selection::Loudest(1);
    config.max_measured = 0;
    let mut h = Harness::new(config, &[tone(500.0, 12_000.0), Voice::Silence]);
    h.clients[0].send_level = false;
    for _ in 0..10 {
        h.tick();
        assert_eq!(h.mixer.counts().decodes, 0);
    }
    assert_eq!(h.mixer.speakers().count(), 0);
}

#[test]
fn a_new_speakers_decoder_is_primed_with_the_previous_packet() {
    let mut config = MixerConfig::default();
    config.selection = Selection::Loudest(1);
    let mut h = Harness::new(config, &[tone(300.0, 1000.0), tone(500.0, 200.0)]);
    for t in 0..40 {
        if t == 20 {
            // Participant 1 gets loud: promoted without having been decoded before.
            h.clients[1].voice = tone(500.0, 12_000.0);
        }
        h.tick();
    }
    assert!(h.mixer.is_speaker(h.clients[1].id));
    // Participant 0 hears 1 through a decoder that joined mid-stream; after priming it
    // matches the reference decoder (which decoded every packet) closely.
    let heard = h.mixer.heard_by(h.clients[0].id).unwrap().to_vec();
    let reference = h.expected(h.ticks as usize - 2, Some(h.clients[0].id));
    let err: f64 = heard
        .iter()
        .zip(&reference)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / 960.0;
    let signal = 12_000.0f64.powi(2) / 2.0;
    assert!(err < signal / 100.0, "error {err} against signal {signal}");
}

#[test]
fn rejects_bad_configurations_and_hostile_packets() {
    let mut c = MixerConfig::default();
    c.tick = Duration::from_millis(30);
    assert!(Mixer::new(c).is_err());
    let mut c = MixerConfig::default();
    c.selection = Selection::Loudest(0);
    assert!(Mixer::new(c).is_err());
    let mut mixer = Mixer::new(MixerConfig::default()).unwrap();
    let mut r = RemoteConfig::default();
    r.codec.sample_rate = 16_000;
    assert!(mixer.add_remote(r).is_err());
    let mut r = RemoteConfig::default();
    r.frame = Duration::from_millis(10);
    assert!(mixer.add_remote(r).is_err(), "shorter than the tick");
    let id = mixer.add_remote(RemoteConfig::default()).unwrap();
    let now = Instant::now();
    assert!(matches!(
        mixer.handle_packet(now, id, Bytes::from_static(&[0x80])),
        Err(Error::Media(_))
    ));
    let mut wire = BytesMut::new();
    let mut packet = rtp::Packet {
        marker: false,
        payload_type: 0,
        sequence: 1,
        timestamp: 0,
        ssrc: 9,
        csrcs: vec![],
        extension: None,
        payload: &[0xFF; 10],
        padding: 0,
    };
    packet.encode(&mut wire).unwrap();
    assert_eq!(
        mixer.handle_packet(now, id, wire.split().freeze()),
        Err(Error::PayloadType(0))
    );
    packet.payload_type = 111;
    packet.encode(&mut wire).unwrap();
    let datagram = wire.split().freeze();
    mixer.handle_packet(now, id, datagram.clone()).unwrap();
    assert_eq!(
        mixer.handle_packet(now, id, datagram),
        Err(Error::JitterRejected(
            chorus_media::jitter::Rejected::Duplicate
        ))
    );
    let big = [0u8; 1600];
    packet.payload = &big;
    packet.sequence = 2;
    packet.encode(&mut wire).unwrap();
    assert_eq!(
        mixer.handle_packet(now, id, wire.split().freeze()),
        Err(Error::AudioLimit(Limit::Payload))
    );
    let pcm = mixer.add_pcm(PcmConfig::default()).unwrap();
    assert_eq!(
        mixer.handle_packet(now, pcm, Bytes::new()),
        Err(Error::AudioUsage(Usage::WrongKind))
    );
    assert_eq!(
        mixer.handle_pcm(id, 0, &[0; 960]),
        Err(Error::AudioUsage(Usage::WrongKind))
    );
    let mut c = MixerConfig::default();
    c.max_participants = 1;
    let mut small = Mixer::new(c).unwrap();
    small.add_pcm(PcmConfig::default()).unwrap();
    assert_eq!(
        small.add_pcm(PcmConfig::default()),
        Err(Error::AudioLimit(Limit::Participants))
    );
}

#[test]
fn a_garbage_opus_payload_is_concealed_not_fatal() {
    let mut config = MixerConfig::default();
    config.selection = Selection::All;
    let mut mixer = Mixer::new(config).unwrap();
    let a = mixer.add_remote(RemoteConfig::default()).unwrap();
    let _b = mixer.add_remote(RemoteConfig::default()).unwrap();
    let t0 = Instant::now();
    for i in 0..5u16 {
        let mut wire = BytesMut::new();
        rtp::Packet {
            marker: false,
            payload_type: 111,
            sequence: i,
            timestamp: u32::from(i) * 960,
            ssrc: 1,
            csrcs: vec![],
            extension: None,
            // TOC of a 20 ms CELT frame, then a code-3 count byte claiming 63 frames.
            payload: &[0xFF, 0xFF, 0x01, 0x02],
            padding: 0,
        }
        .encode(&mut wire)
        .unwrap();
        let now = t0 + TICK * u32::from(i);
        mixer.handle_packet(now, a, wire.freeze()).unwrap();
        mixer.tick(now);
        assert_eq!(mixer.transmits().count(), 2);
    }
    assert!(mixer.stats().decode_errors > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_datagrams_never_panic_the_mixer(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz::mixer_input(&data);
    }
}

/// Moves everything `core` has to send into `sent`, through the trait.
fn drain<C: DatagramCore>(core: &mut C, sent: &mut Vec<Transmit>) {
    while let Some(t) = core.poll_transmit() {
        sent.push(t);
    }
    assert!(core.poll_event().is_none());
}

/// Feeds `datagrams` (from, bytes) and the core's own timers up to `until`, through
/// `DatagramCore` only; returns what it sent and the datagrams it refused.
fn drive<C: DatagramCore>(
    core: &mut C,
    start: Instant,
    datagrams: &[(Duration, SocketAddr, Bytes)],
    until: Duration,
) -> (Vec<Transmit>, usize) {
    let local: SocketAddr = "192.0.2.1:5004".parse().unwrap();
    let (mut sent, mut refused) = (Vec::new(), 0);
    let mut next = datagrams.iter().peekable();
    loop {
        let arrival = next.peek().map(|(at, ..)| start + *at);
        let timer = core.poll_timeout();
        let now = match (arrival, timer) {
            (Some(a), Some(t)) => a.min(t),
            (Some(a), None) => a,
            (None, Some(t)) => t,
            (None, None) => break,
        };
        if now > start + until {
            break;
        }
        if arrival == Some(now) {
            let (_, from, bytes) = next.next().unwrap();
            if core.accepts(local, *from, bytes) {
                core.handle_datagram(now, local, *from, bytes).unwrap();
            } else {
                refused += 1;
            }
        } else {
            core.handle_timeout(now);
        }
        drain(core, &mut sent);
    }
    (sent, refused)
}

#[test]
fn the_mixer_as_a_datagram_core_ticks_on_its_own_clock_and_sends_to_addresses() {
    let mut mixer = Mixer::new(MixerConfig::default()).unwrap();
    let addrs: Vec<SocketAddr> = (1..=3)
        .map(|i| format!("198.51.100.{i}:4000").parse().unwrap())
        .collect();
    let mut clients: Vec<Client> = addrs
        .iter()
        .map(|&a| {
            let mut remote = RemoteConfig::default();
            remote.addr = Some(a);
            Client::with_remote(
                &mut mixer,
                Voice::Tone {
                    hz: 440.0,
                    amplitude: 6000.0,
                },
                48_000,
                Channels::Mono,
                remote,
            )
        })
        .collect();
    let mut duplicate = RemoteConfig::default();
    duplicate.addr = Some(addrs[0]);
    assert_eq!(
        mixer.add_remote(duplicate),
        Err(Error::AudioUsage(Usage::DuplicateAddress))
    );
    assert_eq!(
        mixer.poll_timeout(),
        None,
        "no clock before the first datagram"
    );

    // 50 frames from each, 20 ms apart (2 ms between senders); a stranger's RTP
    // and an RTCP packet from a participant are not the mixer's.
    let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let mut datagrams = Vec::new();
    for f in 0..50u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            let at = TICK * f + Duration::from_millis(2 * i as u64);
            datagrams.push((at, addrs[i], c.next_packet()));
        }
    }
    datagrams.push((Duration::from_millis(501), stranger, datagrams[0].2.clone()));
    datagrams.push((
        Duration::from_millis(503),
        addrs[1],
        Bytes::from_static(&[0x80, 200, 0, 1]),
    ));
    datagrams.sort_by_key(|d| d.0);
    let start = Instant::now();
    let (sent, refused) = drive(&mut mixer, start, &datagrams, Duration::from_secs(1));

    assert_eq!(refused, 2);
    // The clock started at the first datagram: a tick every 20 ms after it.
    let ticks = mixer.stats().ticks;
    assert_eq!(ticks, 50, "1 s of 20 ms ticks");
    assert_eq!(mixer.stats().ticks_skipped, 0);
    assert_eq!(mixer.stats().transmits_dropped, 0);
    assert_eq!(mixer.poll_timeout(), Some(start + TICK * 51));
    // One packet per participant per tick (from the tick after it joined), to its
    // address, as RTP from the mixer.
    let per_addr = sent.len() / 3;
    assert!(
        per_addr as u64 >= ticks - 1,
        "{per_addr} packets each in {ticks} ticks"
    );
    for (i, &a) in addrs.iter().enumerate() {
        let to_a: Vec<_> = sent.iter().filter(|t| t.dst == a).collect();
        assert_eq!(to_a.len(), per_addr);
        let last = rtp::Packet::decode(&to_a[to_a.len() - 1].payload).unwrap();
        assert_eq!(last.payload_type, 111);
        assert_eq!(last.ssrc, 0x1000 + i as u32);
    }
    assert!(mixer.counts().speakers > 0, "the tones were mixed");
}

#[test]
fn an_early_timeout_is_a_no_op_and_a_late_one_skips_missed_ticks() {
    let mut mixer = Mixer::new(MixerConfig::default()).unwrap();
    let t0 = Instant::now();
    mixer.start(t0);
    mixer.start(t0 + TICK * 5);
    assert_eq!(
        mixer.poll_timeout(),
        Some(t0 + TICK),
        "the first start holds"
    );
    mixer.handle_timeout(t0 + TICK / 2);
    assert_eq!(mixer.stats().ticks, 0);
    mixer.handle_timeout(t0 + TICK);
    assert_eq!(mixer.stats().ticks, 1);
    assert_eq!(mixer.poll_timeout(), Some(t0 + TICK * 2));
    // 3.5 ticks late: one tick runs, the three missed ones (due at 3, 4, 5) are skipped.
    mixer.handle_timeout(t0 + TICK * 2 + TICK * 7 / 2);
    assert_eq!(mixer.stats().ticks, 2);
    assert_eq!(mixer.stats().ticks_skipped, 3);
    assert_eq!(
        mixer.poll_timeout(),
        Some(t0 + TICK * 2 + TICK * 7 / 2 + TICK)
    );
    let from: SocketAddr = "198.51.100.1:4000".parse().unwrap();
    assert_eq!(
        mixer.handle_datagram(t0, from, from, &[0x80, 111, 0, 0]),
        Err(Error::AudioUsage(Usage::UnknownAddress))
    );
}
