//! The initiator's audio mixer: every participant sends one stream in and gets one
//! mix-minus stream back, 2(N-1) streams for N members (counting the initiator), not
//! the N(N-1) of a full mesh.
//!
//! # Design
//!
//! A classic conference bridge decodes every member and encodes a separate mix for
//! every member: N decodes and N encodes per tick. This mixer does O(K) codec work
//! for K mixed speakers (default 3), whatever N is:
//!
//! - **Speaker selection before decoding.** Every RTP packet carries the sender's
//!   RFC 6464 audio level. The K loudest participants are chosen from those levels
//!   alone ([`speakers`]: O(N) partial selection, with hysteresis); only they are
//!   decoded. Everyone else's packets pass through the jitter buffer and are dropped
//!   without touching a decoder (a sender whose packets lack the level element is
//!   decoded anyway, and its level measured from the audio).
//! - **Mix-minus in O(N).** The speakers' frames are summed once in 32 bits; each
//!   speaker hears the sum minus their own frame ([`mix`]), soft-clipped so a loud room
//!   saturates smoothly instead of wrapping.
//! - **Encoder sharing.** Everyone who is not a speaker hears the same mix (all K
//!   speakers), so it is encoded once per distinct output codec setting and sent to all
//!   of them; each speaker's own mix-minus is encoded separately. K+1 encodes per tick
//!   for one codec setting.
//! - **Packetizing** a shared payload for a listener is writing a 12-byte RTP header
//!   (that listener's SSRC, sequence number and timestamp, and the speakers as CSRCs,
//!   RFC 3550 §7.1) in front of it, into one output buffer reused every tick.
//!
//! [`Selection::All`] turns selection off: every participant is decoded and gets a mix
//! of their own (the classic bridge), through the same code, so the two designs can be
//! measured side by side.
//!
//! Decoders and speakers' encoders live in pools and are lent to a participant while
//! it is a speaker; memory for codecs is O(K), not O(N). When a participant becomes a
//! speaker its (pooled) decoder is reset and then *primed* with that participant's
//! previous packet, whose output is discarded: the first mixed frame is then decoded
//! with the SILK/CELT history it expects instead of fading in from a cold state. A
//! speaker's pooled encoder is reset too; a listener switching between the shared
//! stream and a mix of their own hears one frame from an encoder whose history differs
//! from the previous frame's, which the Opus decoder absorbs as a short transition.
//!
//! Participants are either **remote** (Opus over RTP, through a per-participant
//! [`chorus_media::jitter::JitterBuffer`] aligning the stream to the mixing clock;
//! decoded straight to the mixing rate and channel count, whatever the sender's) or
//! **PCM** (decoded audio fed in directly: the initiator's own microphone, whose mix
//! is read back with [`Mixer::heard_by`] for its speaker; converted from any rate and
//! channel count).
//!
//! # Run loop
//!
//! 1. [`Mixer::handle_packet`] for every RTP datagram from a remote participant, and
//!    [`Mixer::handle_pcm`] for PCM participants' frames, as they arrive. An `Err` means
//!    the input was rejected and nothing changed.
//! 2. Every tick (10 or 20 ms of the caller's mixing clock) call [`Mixer::tick`], then
//!    send every [`Mixer::transmits`] packet to its participant and play
//!    [`Mixer::heard_by`] for local ones. Both stay valid until the next tick.
//!
//! Or, as a [`DatagramCore`] behind a socket (participants added with
//! [`RemoteConfig::addr`]), the mixer keeps its own clock:
//!
//! 1. [`DatagramCore::handle_datagram`] for every RTP datagram; it takes those from a
//!    participant's address ([`DatagramCore::accepts`]). The first datagram (or
//!    [`Mixer::start`]) starts the clock: the first tick is due one tick later.
//! 2. At [`DatagramCore::poll_timeout`] (the next tick, `tick` after the previous
//!    one's due time, so the clock does not drift with late wake-ups), call
//!    [`DatagramCore::handle_timeout`]: it runs [`Mixer::tick`] (an early call is a
//!    no-op; a wake-up more than a tick late skips the missed ticks rather than
//!    bursting them) and queues one [`Transmit`] per addressed participant.
//! 3. Drain [`DatagramCore::poll_transmit`]: the queue holds one tick's packets,
//!    and what is left of it when the next tick runs is dropped (counted in
//!    [`MixerStats::transmits_dropped`]).
//!
//! Invariants: nobody hears themselves; at most K participants are decoded per tick
//! (plus one priming decode per new speaker, and at most `max_measured` senders that
//! send no level); one RTP packet per remote participant per tick; a tick allocates
//! nothing per participant once warm (pools, mix buffers, the jitter buffers' scratch
//! and the output buffer are reused; measured with valgrind's dhat, see
//! `docs/performance.md`).

mod convert;
mod datagram;
pub mod mix;
pub mod speakers;

use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
#[cfg(doc)]
use chorus_framing::DatagramCore;
use chorus_framing::Transmit;
use chorus_media::jitter::{JitterBuffer, JitterConfig, Playout};
use chorus_media::opus::{Channels, Decoder, Encoder, EncoderConfig};
use chorus_media::rtp::{self, AudioLevel};

use crate::Error;
use convert::Converter;
use speakers::{Candidate, Loudness, Selector, SelectorConfig};

/// Which participants are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The K loudest by audio level (at least 1); only they are decoded.
    Loudest(usize),
    /// Everyone is decoded and gets a mix of their own: the classic bridge.
    All,
}

/// Mixer settings; checked by [`Mixer::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MixerConfig {
    /// The mixing rate: 8, 12, 16, 24 or 48 kHz. Default 48,000.
    pub sample_rate: u32,
    /// The mixing channels. Default mono.
    pub channels: Channels,
    /// The mixing tick: 10 or 20 ms. Default 20 ms.
    pub tick: Duration,
    /// Default `Loudest(3)`.
    pub selection: Selection,
    /// A speaker counts this much louder when ranked (hysteresis). Default 6 dB.
    pub switch_margin_db: u8,
    /// A new speaker keeps the seat at least this long. Default 400 ms.
    pub min_hold: Duration,
    /// A participant whose smoothed level is at or below this (in -dBov) is never
    /// mixed. Default 90.
    pub silence_level: u8,
    /// The RFC 8285 extension id negotiated for the RFC 6464 audio level. Default 1.
    pub audio_level_id: u8,
    /// The RTP payload type of Opus, in and out. Default 111.
    pub payload_type: u8,
    /// Template for each remote participant's jitter buffer (its `frame` is set per
    /// participant). Default: chorus-media's, with a 50-packet measurement window.
    pub jitter: JitterConfig,
    /// Participants at most. Default 20,000.
    pub max_participants: usize,
    /// Distinct output codec settings at most. Default 16.
    pub max_codecs: usize,
    /// Largest accepted RTP payload. Default 1,500 bytes.
    pub max_payload: usize,
    /// Senders without the audio-level element decoded at most per tick just to
    /// measure their level (in slot order); beyond this their packets count as
    /// silence, so leaving the element out cannot make the mixer decode everyone.
    /// Default 16.
    pub max_measured: usize,
}

impl Default for MixerConfig {
    fn default() -> Self {
        let mut jitter = JitterConfig::default();
        // The transit window is sorted on every packet: 1 s of history is plenty for
        // a conference and keeps that cost small at thousands of participants.
        jitter.window = 50;
        Self {
            sample_rate: 48_000,
            channels: Channels::Mono,
            tick: Duration::from_millis(20),
            selection: Selection::Loudest(3),
            switch_margin_db: 6,
            min_hold: Duration::from_millis(400),
            silence_level: 90,
            audio_level_id: 1,
            payload_type: 111,
            jitter,
            max_participants: 20_000,
            max_codecs: 16,
            max_payload: 1500,
            max_measured: 16,
        }
    }
}

/// A remote participant: Opus over RTP in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteConfig {
    /// The SSRC of the stream the mixer sends this participant. Default 0.
    pub ssrc: u32,
    /// The first outgoing sequence number (random in practice, RFC 3550 §5.1).
    /// Default 0.
    pub first_sequence: u16,
    /// The first outgoing RTP timestamp (random in practice). Default 0.
    pub first_timestamp: u32,
    /// The duration of the participant's packets: 10, 20, 40 or 60 ms and a multiple
    /// of the mixing tick. Default 20 ms.
    pub frame: Duration,
    /// The codec setting of the stream sent to this participant. Its sample rate and
    /// channels must be the mixer's and its frame the tick. Participants with equal
    /// settings share one encoder. Default: chorus-media's default (48 kHz mono,
    /// 20 ms, 32 kbit/s).
    pub codec: EncoderConfig,
    /// The participant's transport address, for the mixer as a [`DatagramCore`]: it
    /// takes RTP from this address and sends the participant's mix there. At most one
    /// participant per address. Default `None`: the caller routes by
    /// [`ParticipantId`] ([`Mixer::handle_packet`], [`Mixer::transmits`]).
    pub addr: Option<SocketAddr>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            ssrc: 0,
            first_sequence: 0,
            first_timestamp: 0,
            frame: Duration::from_millis(20),
            codec: EncoderConfig::default(),
            addr: None,
        }
    }
}

/// A PCM participant, fed decoded audio: the initiator's microphone (its mix is read
/// back with [`Mixer::heard_by`]) or a leg decoded elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PcmConfig {
    /// Input sample rate, 8,000-192,000 Hz. Default 48,000.
    pub sample_rate: u32,
    /// Input channels, 1 or 2 (interleaved). Default 1.
    pub channels: usize,
}

impl Default for PcmConfig {
    fn default() -> Self {
        Self {
            sample_rate: 48_000,
            channels: 1,
        }
    }
}

/// A participant of one [`Mixer`]. Ids are not reused while the mixer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId {
    slot: u32,
    generation: u32,
}

/// A configured bound the audio mixer hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// `max_participants` are already in the conference.
    Participants,
    /// `max_codecs` distinct output codec settings are already in use.
    Codecs,
    /// An RTP payload longer than `max_payload`.
    Payload,
}

/// A mistake of the audio mixer's caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Usage {
    /// The id is not (or no longer) a participant.
    UnknownParticipant,
    /// RTP for a PCM participant or PCM for a remote one.
    WrongKind,
    /// An invalid configuration; the text says which rule.
    InvalidConfig(&'static str),
    /// Another participant already has this [`RemoteConfig::addr`].
    DuplicateAddress,
    /// A datagram given through [`DatagramCore::handle_datagram`] from an address
    /// no participant has (its `accepts` says no to it).
    UnknownAddress,
}

/// Counters of one tick, for checking the conference's stream count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Participants, remote and PCM.
    pub participants: usize,
    /// Incoming RTP streams: one per remote participant.
    pub streams_in: usize,
    /// RTP packets (one per remote participant) sent in the last tick.
    pub streams_out: usize,
    /// Participants mixed in the last tick.
    pub speakers: usize,
    /// Opus decodes in the last tick (including concealment and priming).
    pub decodes: usize,
    /// Opus encodes in the last tick.
    pub encodes: usize,
}

/// Running totals since the mixer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    /// Ticks run.
    pub ticks: u64,
    /// Times a participant became a speaker.
    pub speaker_changes: u64,
    /// Peer packets that libopus refused (concealed instead).
    pub decode_errors: u64,
    /// Encodes or packetizations that failed (nothing sent for them).
    pub encode_errors: u64,
    /// Queued [`DatagramCore`] transmits still undrained when the next tick ran.
    pub transmits_dropped: u64,
    /// Ticks skipped because [`DatagramCore::handle_timeout`] came more than a tick
    /// late.
    pub ticks_skipped: u64,
}

/// One RTP packet to send, valid until the next [`Mixer::tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The participant it goes to.
    pub to: ParticipantId,
    /// The whole RTP packet.
    pub packet: &'a [u8],
}

/// What the jitter buffer holds per packet: a zero-copy slice of the datagram.
#[derive(Debug)]
struct Frame {
    payload: Bytes,
    level: Option<u8>,
}

/// This tick's input of a remote participant.
#[derive(Debug, Default)]
enum Current {
    #[default]
    Nothing,
    Packet(Bytes),
    Missing,
}

#[derive(Debug)]
struct Remote {
    jitter: JitterBuffer<Frame>,
    /// Samples per channel of one of its packets at the mixing rate (for concealment).
    frame_samples: usize,
    ssrc_in: Option<u32>,
    /// The last packet played had no audio level: decode it to measure one.
    measured: bool,
    current: Current,
    /// The last packet, kept (by reference count) to prime a decoder on promotion.
    last: Option<Bytes>,
    ssrc_out: u32,
    addr: Option<SocketAddr>,
    sequence: u16,
    timestamp: u32,
    marker: bool,
    codec: usize,
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Pcm {
    converter: Converter,
    channels: usize,
    next_timestamp: Option<u32>,
    heard: Vec<i16>,
}

#[derive(Debug)]
enum Kind {
    Remote(Box<Remote>),
    Pcm(Box<Pcm>),
}

#[derive(Debug)]
struct Participant {
    id: ParticipantId,
    kind: Kind,
    loudness: Loudness,
    /// Ticks as a speaker so far; `None` when not a speaker.
    speaking_for: Option<u32>,
    /// Audio at the mixing rate waiting to be mixed (decoded or fed in).
    fifo: VecDeque<i16>,
    /// This tick's frame (speakers only; allocated on first promotion, then reused).
    frame: Vec<i16>,
    /// This tick's own mix-minus (speakers only).
    own_mix: Vec<i16>,
    /// Joined after the last tick: hears nothing yet.
    fresh: bool,
}

/// One distinct output codec setting: the shared encoder and a pool for speakers.
#[derive(Debug)]
struct Codec {
    config: EncoderConfig,
    shared: Encoder,
    pool: Vec<Encoder>,
    users: usize,
    payload: Vec<u8>,
    /// Whether the shared payload is valid for this tick.
    ready: bool,
}

/// The initiator's audio mixer. Sans-IO: packets and the mixing clock are passed in.
/// See the module docs for the design and the run loop.
#[derive(Debug)]
pub struct Mixer {
    config: MixerConfig,
    tick_samples: usize,
    slots: Vec<Option<Participant>>,
    free: Vec<u32>,
    generation: u32,
    count: usize,
    codecs: Vec<Codec>,
    decoders: Vec<Decoder>,
    selector: Selector,
    /// Slots of this tick's speakers.
    speakers: Vec<u32>,
    sum: Vec<i32>,
    shared_mix: Vec<i16>,
    scratch: Vec<i16>,
    csrcs: Vec<u32>,
    out: BytesMut,
    transmits: Vec<(ParticipantId, usize, usize)>,
    counts: StreamCounts,
    stats: MixerStats,
    /// Remote participants by [`RemoteConfig::addr`].
    by_addr: HashMap<SocketAddr, ParticipantId>,
    /// When the next tick is due ([`DatagramCore::poll_timeout`]); `None` until
    /// the clock starts.
    next_tick: Option<Instant>,
    /// The last tick's packets for addressed participants.
    queue: VecDeque<Transmit>,
}

impl Mixer {
    /// A mixer with no participants; fails on an invalid configuration.
    pub fn new(config: MixerConfig) -> Result<Self, Error> {
        let bad = |why| Err(Error::AudioUsage(Usage::InvalidConfig(why)));
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&config.sample_rate) {
            return bad("mixing rate must be 8, 12, 16, 24 or 48 kHz");
        }
        if config.tick != Duration::from_millis(10) && config.tick != Duration::from_millis(20) {
            return bad("tick must be 10 or 20 ms");
        }
        if config.selection == Selection::Loudest(0) {
            return bad("at least one speaker");
        }
        if config.audio_level_id == 0 || config.payload_type > 127 {
            return bad("audio level id 1-255, payload type 0-127");
        }
        // Probe the jitter template once so per-participant creation cannot fail.
        JitterBuffer::<Frame>::new(config.jitter)?;
        let per_ms = config.sample_rate as usize / 1000;
        let tick_ms = usize::try_from(config.tick.as_millis()).unwrap_or(20);
        let tick_samples = per_ms * tick_ms * config.channels.count();
        let hold_ticks = u32::try_from(config.min_hold.as_millis() / config.tick.as_millis())
            .unwrap_or(u32::MAX);
        let speakers = match config.selection {
            Selection::Loudest(k) => k,
            Selection::All => usize::MAX,
        };
        Ok(Self {
            config,
            tick_samples,
            slots: Vec::new(),
            free: Vec::new(),
            generation: 0,
            count: 0,
            codecs: Vec::new(),
            decoders: Vec::new(),
            selector: Selector::new(SelectorConfig {
                speakers,
                margin_db: config.switch_margin_db,
                hold_ticks,
                silence_level: config.silence_level,
            }),
            speakers: Vec::new(),
            sum: vec![0; tick_samples],
            shared_mix: vec![0; tick_samples],
            scratch: Vec::new(),
            csrcs: Vec::new(),
            out: BytesMut::new(),
            transmits: Vec::new(),
            counts: StreamCounts::default(),
            stats: MixerStats::default(),
            by_addr: HashMap::new(),
            next_tick: None,
            queue: VecDeque::new(),
        })
    }

    /// The configuration in force.
    #[must_use]
    pub const fn config(&self) -> &MixerConfig {
        &self.config
    }

    /// Samples (all channels) in one tick's mix.
    #[must_use]
    pub const fn tick_samples(&self) -> usize {
        self.tick_samples
    }

    fn insert(&mut self, kind: Kind) -> Result<ParticipantId, Error> {
        if self.count >= self.config.max_participants {
            return Err(Error::AudioLimit(Limit::Participants));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1)
                    .map_err(|_| Error::AudioLimit(Limit::Participants))?
            }
        };
        self.generation = self.generation.wrapping_add(1);
        let id = ParticipantId {
            slot,
            generation: self.generation,
        };
        let participant = Participant {
            id,
            kind,
            loudness: Loudness::default(),
            speaking_for: None,
            fifo: VecDeque::new(),
            frame: Vec::new(),
            own_mix: Vec::new(),
            fresh: true,
        };
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(participant);
        }
        self.count += 1;
        Ok(id)
    }

    /// Adds a remote participant; it is mixed and sent a stream from the next tick.
    pub fn add_remote(&mut self, config: RemoteConfig) -> Result<ParticipantId, Error> {
        let bad = |why| Err(Error::AudioUsage(Usage::InvalidConfig(why)));
        let c = config.codec;
        if c.sample_rate != self.config.sample_rate
            || c.channels != self.config.channels
            || c.frame != self.config.tick
        {
            return bad("output codec must use the mixing rate, channels and tick");
        }
        if ![10, 20, 40, 60].contains(&config.frame.as_millis())
            || !config.frame.subsec_nanos().is_multiple_of(1_000_000)
            || !config
                .frame
                .as_millis()
                .is_multiple_of(self.config.tick.as_millis())
        {
            return bad("frame must be 10, 20, 40 or 60 ms and a multiple of the tick");
        }
        if config.addr.is_some_and(|a| self.by_addr.contains_key(&a)) {
            return Err(Error::AudioUsage(Usage::DuplicateAddress));
        }
        let codec = match self.codecs.iter().position(|k| k.config == c) {
            Some(i) => i,
            None => {
                if self.codecs.len() >= self.config.max_codecs {
                    return Err(Error::AudioLimit(Limit::Codecs));
                }
                self.codecs.push(Codec {
                    config: c,
                    shared: Encoder::new(c)?,
                    pool: Vec::new(),
                    users: 0,
                    payload: Vec::new(),
                    ready: false,
                });
                self.codecs.len() - 1
            }
        };
        let mut jitter_config = self.config.jitter;
        jitter_config.frame = config.frame;
        let jitter = JitterBuffer::new(jitter_config)?;
        let per_ms = self.config.sample_rate as usize / 1000;
        let frame_samples = per_ms * usize::try_from(config.frame.as_millis()).unwrap_or(20);
        let id = self.insert(Kind::Remote(Box::new(Remote {
            jitter,
            frame_samples,
            ssrc_in: None,
            measured: false,
            current: Current::Nothing,
            last: None,
            ssrc_out: config.ssrc,
            addr: config.addr,
            sequence: config.first_sequence,
            timestamp: config.first_timestamp,
            marker: true,
            codec,
            decoder: None,
            encoder: None,
            payload: Vec::new(),
        })))?;
        if let Some(k) = self.codecs.get_mut(codec) {
            k.users += 1;
        }
        if let Some(a) = config.addr {
            self.by_addr.insert(a, id);
        }
        Ok(id)
    }

    /// Adds a PCM participant (the initiator's microphone and speaker, for example).
    pub fn add_pcm(&mut self, config: PcmConfig) -> Result<ParticipantId, Error> {
        if !(8_000..=192_000).contains(&config.sample_rate) || !(1..=2).contains(&config.channels) {
            return Err(Error::AudioUsage(Usage::InvalidConfig(
                "PCM input must be 8-192 kHz, 1 or 2 channels",
            )));
        }
        let converter = Converter::new(
            config.sample_rate,
            config.channels,
            self.config.sample_rate,
            self.config.channels.count(),
        )
        .map_err(|_| Error::AudioUsage(Usage::InvalidConfig("PCM rate the resampler refuses")))?;
        self.insert(Kind::Pcm(Box::new(Pcm {
            converter,
            channels: config.channels,
            next_timestamp: None,
            heard: vec![0; self.tick_samples],
        })))
    }

    fn get_mut(&mut self, id: ParticipantId) -> Result<&mut Participant, Error> {
        self.slots
            .get_mut(id.slot as usize)
            .and_then(Option::as_mut)
            .filter(|p| p.id == id)
            .ok_or(Error::AudioUsage(Usage::UnknownParticipant))
    }

    /// Removes a participant: from the next tick it is neither mixed nor sent anything.
    /// Its pooled codecs go back to the pools.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), Error> {
        self.get_mut(id)?;
        let Some(mut p) = self.slots.get_mut(id.slot as usize).and_then(Option::take) else {
            return Err(Error::AudioUsage(Usage::UnknownParticipant));
        };
        if let Kind::Remote(r) = &mut p.kind {
            if let Some(a) = r.addr {
                self.by_addr.remove(&a);
            }
            release_codecs(&mut self.decoders, &mut self.codecs, r, false);
            if let Some(k) = self.codecs.get_mut(r.codec) {
                k.users -= 1;
            }
        }
        self.free.push(id.slot);
        self.count -= 1;
        Ok(())
    }

    /// Whether `id` is a participant now.
    #[must_use]
    pub fn contains(&self, id: ParticipantId) -> bool {
        self.slots
            .get(id.slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|p| p.id == id)
    }

    /// Starts the mixing clock of [`DatagramCore::poll_timeout`] at `now` (the first
    /// tick is due one tick later), unless it runs already; the first packet starts
    /// it too. A mixer driven by [`Mixer::tick`] alone needs neither.
    pub fn start(&mut self, now: Instant) {
        self.next_tick.get_or_insert(now + self.config.tick);
    }

    /// One RTP datagram (RFC 3550, Opus per RFC 7587) from a remote participant,
    /// received at `now`. The datagram is kept by reference, not copied. Peer data:
    /// anything malformed is an `Err` and changes nothing.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        id: ParticipantId,
        datagram: Bytes,
    ) -> Result<(), Error> {
        self.start(now);
        let (pt, level_id, max_payload) = (
            self.config.payload_type,
            self.config.audio_level_id,
            self.config.max_payload,
        );
        let p = self.get_mut(id)?;
        let Kind::Remote(r) = &mut p.kind else {
            return Err(Error::AudioUsage(Usage::WrongKind));
        };
        let packet = rtp::Packet::decode(&datagram).map_err(chorus_media::Error::from)?;
        if packet.payload_type != pt {
            return Err(Error::PayloadType(packet.payload_type));
        }
        if packet.payload.len() > max_payload {
            return Err(Error::AudioLimit(Limit::Payload));
        }
        // RFC 6464 §3 in an RFC 8285 element; a malformed block just has no level.
        let level = packet.extension_elements().and_then(|mut elements| {
            elements.find_map(|e| match e {
                Ok(e) if e.id == level_id => AudioLevel::decode(e.data).ok().map(|l| l.level),
                _ => None,
            })
        });
        let frame = Frame {
            payload: datagram.slice_ref(packet.payload),
            level,
        };
        r.jitter
            .handle_packet(now, packet.sequence, packet.timestamp, frame)
            .map_err(Error::JitterRejected)?;
        r.ssrc_in = Some(packet.ssrc);
        Ok(())
    }

    /// Decoded audio of a PCM participant: interleaved samples at its configured rate
    /// and channels, `timestamp` counting its sample frames. A gap in timestamps
    /// (up to one second) is filled with silence, an overlap is dropped, a larger jump
    /// restarts the count. At most 200 ms wait to be mixed; older audio is dropped.
    pub fn handle_pcm(
        &mut self,
        id: ParticipantId,
        timestamp: u32,
        samples: &[i16],
    ) -> Result<(), Error> {
        let max_fifo = self.tick_samples * 10;
        let mix_channels = self.config.channels.count();
        let p = self.get_mut(id)?;
        let Kind::Pcm(pcm) = &mut p.kind else {
            return Err(Error::AudioUsage(Usage::WrongKind));
        };
        let ch = pcm.channels;
        let frames = samples.len() / ch;
        let mut input = samples.get(..frames * ch).unwrap_or(&[]);
        let rate = pcm.converter.rate_in();
        if let Some(next) = pcm.next_timestamp {
            let ahead = timestamp.wrapping_sub(next) as i32;
            if ahead > 0 && ahead <= i32::try_from(rate).unwrap_or(i32::MAX) {
                let gap = pcm.converter.output_frames(ahead.unsigned_abs() as usize);
                p.fifo.extend(core::iter::repeat_n(0, gap * mix_channels));
            } else if ahead < 0 && ahead.unsigned_abs() <= rate {
                let skip = (ahead.unsigned_abs() as usize).min(frames);
                input = input.get(skip * ch..).unwrap_or(&[]);
            }
        }
        pcm.next_timestamp = Some(timestamp.wrapping_add(u32::try_from(frames).unwrap_or(0)));
        p.loudness
            .observe(AudioLevel::from_samples(input, true).level);
        pcm.converter.push(input, &mut p.fifo);
        if p.fifo.len() > max_fifo {
            let excess = p.fifo.len() - max_fifo;
            p.fifo.drain(..excess);
        }
        Ok(())
    }

    /// Runs one tick of the mixing clock at `now`: plays every jitter buffer, selects
    /// the speakers, decodes and mixes them, encodes and packetizes a stream for every
    /// remote participant. Peer faults (undecodable packets) are concealed and counted
    /// in [`Mixer::stats`], never returned.
    pub fn tick(&mut self, now: Instant) {
        self.out.clear();
        self.transmits.clear();
        self.counts = StreamCounts {
            participants: self.count,
            ..StreamCounts::default()
        };
        self.stats.ticks += 1;
        self.play(now);
        self.select();
        self.decode_speakers();
        self.mix_and_encode();
        self.packetize();
    }

    /// Step 1: one jitter-buffer frame per remote participant; levels updated.
    fn play(&mut self, now: Instant) {
        let mut measure_budget = self.config.max_measured;
        for p in self.slots.iter_mut().flatten() {
            let Kind::Remote(r) = &mut p.kind else {
                if p.fifo.len() < self.tick_samples {
                    p.loudness.observe(127);
                }
                continue;
            };
            self.counts.streams_in += 1;
            r.current = match r.jitter.poll_frame(now) {
                Some(Playout::Packet { payload, .. }) => {
                    // Without the RFC 6464 element the level is measured after
                    // decoding (step 3), so such a sender is decoded every frame.
                    r.measured = payload.level.is_none();
                    if let Some(level) = payload.level {
                        p.loudness.observe(level);
                    }
                    Current::Packet(payload.payload)
                }
                Some(Playout::Missing { .. }) => Current::Missing,
                Some(Playout::Empty) => {
                    p.loudness.observe(127);
                    Current::Nothing
                }
                None => Current::Nothing,
            };
            if r.measured {
                if measure_budget == 0 {
                    r.measured = false;
                    p.loudness.observe(127);
                } else {
                    measure_budget -= 1;
                }
            }
        }
    }

    /// Step 2: choose the speakers and lend or take back codecs.
    fn select(&mut self) {
        self.speakers.clear();
        if self.config.selection == Selection::All {
            self.speakers
                .extend(self.slots.iter().flatten().map(|p| p.id.slot));
        } else {
            let candidates = self.slots.iter().flatten().map(|p| Candidate {
                slot: p.id.slot,
                loudness: p.loudness,
                speaking_for: p.speaking_for,
            });
            let chosen = self.selector.select(candidates);
            self.speakers.extend(chosen.iter().map(|&(_, slot)| slot));
            self.speakers.sort_unstable();
        }
        self.counts.speakers = self.speakers.len();
        // Demote those no longer chosen (their pooled codecs go back).
        for i in 0..self.slots.len() {
            let chosen = self.speakers.binary_search(&(i as u32)).is_ok();
            let Some(Some(p)) = self.slots.get_mut(i) else {
                continue;
            };
            match (p.speaking_for, chosen) {
                (Some(t), true) => p.speaking_for = Some(t.saturating_add(1)),
                (None, true) => {
                    p.speaking_for = Some(0);
                    self.stats.speaker_changes += 1;
                }
                (Some(_), false) => {
                    p.speaking_for = None;
                    p.fifo.clear();
                    if let Kind::Remote(r) = &mut p.kind {
                        let keep_decoder = r.measured;
                        release_codecs(&mut self.decoders, &mut self.codecs, r, keep_decoder);
                    }
                }
                (None, false) => {}
            }
        }
    }

    /// Step 3: decode what the speakers sent into their FIFOs; drop everyone else's.
    fn decode_speakers(&mut self) {
        let (rate, channels) = (self.config.sample_rate, self.config.channels);
        let max_fifo = self.tick_samples * 10;
        for p in self.slots.iter_mut().flatten() {
            let Kind::Remote(r) = &mut p.kind else {
                if p.speaking_for.is_none() {
                    let n = self.tick_samples.min(p.fifo.len());
                    p.fifo.drain(..n);
                }
                continue;
            };
            let current = core::mem::take(&mut r.current);
            let speaking = p.speaking_for.is_some();
            if !speaking && !r.measured {
                if let Some(d) = r.decoder.take() {
                    self.decoders.push(d);
                }
                if let Current::Packet(b) = current {
                    r.last = Some(b);
                }
                continue;
            }
            if r.decoder.is_none() {
                let mut d = match self.decoders.pop() {
                    Some(d) => d,
                    None => match Decoder::new(rate, channels) {
                        Ok(d) => d,
                        Err(_) => {
                            self.stats.decode_errors += 1;
                            continue;
                        }
                    },
                };
                // A cold decoder would fade the first frame in: reset, then prime it
                // with the packet before (output discarded).
                let _ = d.reset();
                if let Some(last) = &r.last {
                    let _ = d.decode(last, &mut self.scratch);
                    self.counts.decodes += 1;
                }
                r.decoder = Some(d);
            }
            let Some(decoder) = r.decoder.as_mut() else {
                continue;
            };
            let result = match &current {
                Current::Packet(b) => {
                    let result = decoder.decode(b, &mut self.scratch);
                    if result.is_err() {
                        self.stats.decode_errors += 1;
                        decoder.conceal(r.frame_samples, &mut self.scratch)
                    } else {
                        result
                    }
                }
                Current::Missing => decoder.conceal(r.frame_samples, &mut self.scratch),
                Current::Nothing => continue,
            };
            self.counts.decodes += 1;
            let measure = r.measured && matches!(current, Current::Packet(_));
            if let Current::Packet(b) = current {
                r.last = Some(b);
            }
            if result.is_ok() {
                if measure {
                    p.loudness
                        .observe(AudioLevel::from_samples(&self.scratch, true).level);
                }
                if !speaking {
                    continue;
                }
                p.fifo.extend(self.scratch.iter().copied());
                if p.fifo.len() > max_fifo {
                    let excess = p.fifo.len() - max_fifo;
                    p.fifo.drain(..excess);
                }
            }
        }
    }

    /// Step 4: sum the speakers once, clip the shared mix, subtract each speaker's own
    /// frame for their mix-minus, and encode: the shared mix once per codec setting
    /// that has a listener, each remote speaker's mix-minus on its own encoder.
    fn mix_and_encode(&mut self) {
        let n = self.tick_samples;
        self.sum.fill(0);
        for &slot in &self.speakers {
            let Some(Some(p)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            p.frame.resize(n, 0);
            let have = n.min(p.fifo.len());
            for (d, s) in p.frame.iter_mut().zip(p.fifo.drain(..have)) {
                *d = s;
            }
            p.frame.get_mut(have..).unwrap_or(&mut []).fill(0);
            mix::accumulate(&mut self.sum, &p.frame);
        }
        mix::clip_into(&mut self.shared_mix, &self.sum);
        for &slot in &self.speakers {
            let Some(Some(p)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            let own = match &mut p.kind {
                Kind::Pcm(pcm) => &mut pcm.heard,
                Kind::Remote(_) => &mut p.own_mix,
            };
            own.resize(n, 0);
            mix::minus_into(own, &self.sum, &p.frame);
            let Kind::Remote(r) = &mut p.kind else {
                continue;
            };
            let Some(codec) = self.codecs.get_mut(r.codec) else {
                continue;
            };
            if r.encoder.is_none() {
                let e = match codec.pool.pop() {
                    Some(mut e) => e.reset().map(|()| e),
                    None => Encoder::new(codec.config),
                };
                r.encoder = e.ok();
            }
            let encoded = r
                .encoder
                .as_mut()
                .map(|e| e.encode(&p.own_mix, &mut r.payload));
            match encoded {
                Some(Ok(())) => self.counts.encodes += 1,
                _ => {
                    r.payload.clear();
                    self.stats.encode_errors += 1;
                }
            }
        }
        // Which codec settings have a listener who is not a speaker?
        for k in &mut self.codecs {
            k.ready = false;
        }
        for p in self.slots.iter_mut().flatten() {
            match &mut p.kind {
                Kind::Remote(r) if p.speaking_for.is_none() => {
                    if let Some(k) = self.codecs.get_mut(r.codec) {
                        k.ready = true;
                    }
                }
                Kind::Pcm(pcm) if p.speaking_for.is_none() => {
                    pcm.heard.copy_from_slice(&self.shared_mix);
                }
                _ => {}
            }
        }
        for k in &mut self.codecs {
            if k.ready {
                if k.shared.encode(&self.shared_mix, &mut k.payload).is_ok() {
                    self.counts.encodes += 1;
                } else {
                    k.ready = false;
                    self.stats.encode_errors += 1;
                }
            }
        }
    }

    /// Step 5: an RTP header per remote participant around its payload.
    fn packetize(&mut self) {
        let step = u32::try_from(self.config.tick.as_millis() * 48).unwrap_or(960);
        let pt = self.config.payload_type;
        for i in 0..self.slots.len() {
            // RFC 3550 §7.1: the mixer lists the sources it mixed as CSRCs (at most
            // 15), leaving out the receiver's own.
            self.csrcs.clear();
            for &s in &self.speakers {
                if s as usize == i || self.csrcs.len() == 15 {
                    continue;
                }
                if let Some(Some(Participant {
                    kind: Kind::Remote(r),
                    ..
                })) = self.slots.get(s as usize)
                    && let Some(ssrc) = r.ssrc_in
                {
                    self.csrcs.push(ssrc);
                }
            }
            let Some(Some(p)) = self.slots.get_mut(i) else {
                continue;
            };
            p.fresh = false;
            let Kind::Remote(r) = &mut p.kind else {
                continue;
            };
            let payload = if p.speaking_for.is_some() {
                &r.payload
            } else {
                match self.codecs.get(r.codec) {
                    Some(k) if k.ready => &k.payload,
                    _ => continue,
                }
            };
            if payload.is_empty() {
                continue;
            }
            let packet = rtp::Packet {
                marker: r.marker,
                payload_type: pt,
                sequence: r.sequence,
                timestamp: r.timestamp,
                ssrc: r.ssrc_out,
                csrcs: core::mem::take(&mut self.csrcs),
                extension: None,
                payload,
                padding: 0,
            };
            let start = self.out.len();
            let written = packet.encode(&mut self.out);
            self.csrcs = packet.csrcs;
            if written.is_err() {
                self.stats.encode_errors += 1;
                continue;
            }
            self.transmits.push((p.id, start, self.out.len()));
            self.counts.streams_out += 1;
            r.marker = false;
            r.sequence = r.sequence.wrapping_add(1);
            r.timestamp = r.timestamp.wrapping_add(step);
        }
    }

    /// The RTP packets of the last tick, one per remote participant.
    pub fn transmits(&self) -> impl Iterator<Item = Outgoing<'_>> + '_ {
        self.transmits.iter().filter_map(|&(to, start, end)| {
            Some(Outgoing {
                to,
                packet: self.out.get(start..end)?,
            })
        })
    }

    /// The PCM `id` was sent in the last tick (before encoding): its own mix-minus if
    /// it is a speaker, the shared mix otherwise. `None` for an unknown id or one that
    /// joined after the last tick. For a PCM participant this is what its speaker
    /// plays.
    #[must_use]
    pub fn heard_by(&self, id: ParticipantId) -> Option<&[i16]> {
        let p = self
            .slots
            .get(id.slot as usize)?
            .as_ref()
            .filter(|p| p.id == id && !p.fresh)?;
        Some(match (&p.kind, p.speaking_for) {
            (Kind::Pcm(pcm), _) => &pcm.heard,
            (Kind::Remote(_), Some(_)) => &p.own_mix,
            (Kind::Remote(_), None) => &self.shared_mix,
        })
    }

    /// The participants mixed in the last tick.
    pub fn speakers(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.speakers.iter().filter_map(|&s| {
            self.slots
                .get(s as usize)
                .and_then(Option::as_ref)
                // A slot freed and reused since the tick holds someone else.
                .filter(|p| p.speaking_for.is_some())
                .map(|p| p.id)
        })
    }

    /// Whether `id` was mixed in the last tick.
    #[must_use]
    pub fn is_speaker(&self, id: ParticipantId) -> bool {
        self.slots
            .get(id.slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|p| p.id == id && p.speaking_for.is_some())
    }

    /// The smoothed audio level of `id` in -dBov (127 = silence).
    #[must_use]
    pub fn level(&self, id: ParticipantId) -> Option<u8> {
        self.slots
            .get(id.slot as usize)?
            .as_ref()
            .filter(|p| p.id == id)
            .map(|p| p.loudness.level())
    }

    /// Stream and codec counts of the last tick.
    #[must_use]
    pub const fn counts(&self) -> StreamCounts {
        self.counts
    }

    /// Totals since the start.
    #[must_use]
    pub const fn stats(&self) -> MixerStats {
        self.stats
    }
}

/// Returns a demoted or departing participant's decoder and own encoder to the pools.
fn release_codecs(
    decoders: &mut Vec<Decoder>,
    codecs: &mut [Codec],
    r: &mut Remote,
    keep_decoder: bool,
) {
    if !keep_decoder && let Some(d) = r.decoder.take() {
        decoders.push(d);
    }
    if let (Some(e), Some(k)) = (r.encoder.take(), codecs.get_mut(r.codec)) {
        k.pool.push(e);
    }
}

#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;

#[cfg(test)]
mod tests;
