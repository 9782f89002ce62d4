//! The video SFU's forwarding path (run `cargo bench --bench sfu`).
//!
//! - `sfu_forward/10x10`: one relay, 10 participants each publishing three simulcast
//!   VP8 layers (300 / 700 / 1,200-byte packets) and receiving the other 9 at the
//!   top layer. One iteration is one packet of every layer of every sender (30 in)
//!   and the 90 rewritten packets out; throughput counts packets out.
//!   `sfu_forward/10x10_abs_send_time`: the same with an abs-send-time extension in
//!   every packet, which the relay stamps with its own send time.
//! - `sfu_per_receiver/forwarded/R`: one 1,200-byte packet to R receivers of its
//!   layer (selection, sequence/timestamp/SSRC rewrite and copy per receiver).
//! - `sfu_per_receiver/skipped/R`: the same packet, R receivers on another layer
//!   (selection only: nothing is sent).
//! - `rtp_copy_baseline/R`: decoding the packet and copying it R times into the same
//!   kind of arena, with no SFU: the floor any forwarder pays.
//! - `sfu_temporal/64`: a stream with three temporal layers in each simulcast layer
//!   (VP8 TIDs in the descriptor); 32 receivers take every temporal layer of the top
//!   layer, 32 only its base. One iteration is four 1,200-byte packets, TIDs 0, 2, 1,
//!   2 (each a frame): the descriptor read, each receiver's temporal decision and the
//!   renumbering past the frames a receiver does not get; 160 packets out, and the
//!   throughput counts the 256 per-receiver decisions.
//!
//! The per-receiver cost is the slope between R = 1 and R = 64. Sequence numbers of
//! the input advance each iteration so that every packet is new to the rewriters.
//!
//! Every leg is SRTP (AEAD_AES_128_GCM, each with its own keys), so the figures
//! include the relay's SRTP unprotect of each packet in and protect of each packet
//! out (and the copy into each leg's retransmission history). The senders' own
//! protection is done in criterion's untimed setup (`iter_batched`).

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_media::rtp;
use chorus_mixer::control::{Codec, Layer, StreamInfo};
use chorus_mixer::sfu::{LegSecurity, Output, Peer, Sfu, SfuConfig};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 3] = [300, 700, 1200];

fn info(p: u32) -> StreamInfo {
    let mut s = StreamInfo::video(
        p,
        p,
        Codec::Vp8,
        (0..3)
            .map(|l| Layer {
                ssrc: p << 8 | l,
                bitrate_bps: [150_000, 500_000, 1_500_000][l as usize],
            })
            .collect(),
    );
    if p == TEMPORAL_PUBLISHER {
        s.temporal = vec![40, 60];
    }
    s
}

/// The publisher whose stream has temporal layers (in `temporal_bench` only).
const TEMPORAL_PUBLISHER: u32 = 77;

/// A VP8 keyframe-start packet of `size` bytes for layer `l` of participant `p`.
fn packet(p: u32, l: usize, seq: u16) -> Vec<u8> {
    // S=1, PID 0; the VP8 header's P bit 0: a keyframe.
    rtp_packet(p, l, seq, &[0x10])
}

/// A packet of layer `l` of participant `p`, `SIZES[l]` bytes, its payload starting
/// with `head`.
fn rtp_packet(p: u32, l: usize, seq: u16, head: &[u8]) -> Vec<u8> {
    let mut payload = vec![0u8; SIZES[l] - rtp::FIXED_HEADER_LEN];
    payload[..head.len()].copy_from_slice(head);
    let pkt = rtp::Packet {
        marker: true,
        payload_type: 96,
        sequence: seq,
        timestamp: u32::from(seq) * 3000,
        ssrc: p << 8 | l as u32,
        csrcs: vec![],
        extension: None,
        payload: &payload,
        padding: 0,
    };
    let mut b = BytesMut::new();
    pkt.encode(&mut b).unwrap();
    b.to_vec()
}

fn set_seq(b: &mut [u8], seq: u16) {
    b[2..4].copy_from_slice(&seq.to_be_bytes());
}

/// The SRTP session of key `k` (AEAD_AES_128_GCM, the suite between Chorus peers).
fn session(k: u32) -> SrtpSession {
    let suite = Suite::AeadAes128Gcm;
    let bytes = |n: usize| -> Vec<u8> { (0..n).map(|i| (k as u8) ^ (i as u8)).collect() };
    let mut policy = Policy::new(suite, &bytes(suite.key_len()), &bytes(suite.salt_len())).unwrap();
    policy.max_ssrcs = 1024;
    SrtpSession::new(policy).unwrap()
}

/// Participant `p`'s leg at the relay: it sends under key 2p, receives under 2p + 1.
fn leg(p: u32) -> LegSecurity {
    LegSecurity::srtp(session(2 * p), session(2 * p + 1))
}

/// The senders' ends of their legs, which protect what they send.
struct Senders(std::collections::HashMap<u32, SrtpSession>);

impl Senders {
    fn new(publishers: impl Iterator<Item = u32>) -> Self {
        Self(publishers.map(|p| (p, session(2 * p))).collect())
    }

    /// `plain` as participant `p` sends it: SRTP.
    fn seal(&mut self, p: u32, plain: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(plain.len() + 16);
        b.extend_from_slice(plain);
        self.0.get_mut(&p).unwrap().protect_rtp(&mut b).unwrap();
        b
    }
}

/// A relay with `publishers` publishing (ids 1..) and `receivers` receiving only
/// (ids 1000..), every receiver at `bandwidth`; one keyframe of every layer has been
/// forwarded so every receiver is on its target layer.
fn relay(publishers: u32, receivers: u32, bandwidth: u64) -> (Sfu, Output, Instant, Senders) {
    relay_of(1..=publishers, &[(receivers, bandwidth)])
}

/// As [`relay`], with publishers by id and groups of receivers (count, bandwidth).
fn relay_of(
    publishers: std::ops::RangeInclusive<u32>,
    groups: &[(u32, u64)],
) -> (Sfu, Output, Instant, Senders) {
    let now = Instant::now();
    let mut sfu = Sfu::new(SfuConfig::default()).unwrap();
    let mut out = Output::new();
    let mut senders = Senders::new(publishers.clone());
    let bandwidth = 100_000_000;
    for p in publishers.clone() {
        sfu.add_endpoint(now, p, leg(p), &mut out).unwrap();
        sfu.set_bandwidth(now, p, bandwidth, &mut out).unwrap();
    }
    let mut r = 1000;
    for &(receivers, bandwidth) in groups {
        for _ in 0..receivers {
            sfu.add_endpoint(now, r, leg(r), &mut out).unwrap();
            sfu.set_bandwidth(now, r, bandwidth, &mut out).unwrap();
            r += 1;
        }
    }
    for p in publishers.clone() {
        sfu.publish(now, p, info(p), &mut out).unwrap();
    }
    for p in publishers {
        for l in 0..3 {
            let sealed = senders.seal(p, &packet(p, l, 0));
            sfu.handle_input(now, Peer::Endpoint(p), &sealed, &mut out)
                .unwrap();
        }
    }
    out.clear();
    (sfu, out, now, senders)
}

/// `bytes` with an abs-send-time header extension (RFC 8285 one-byte id 3) added.
fn with_abs_send_time(bytes: &[u8]) -> Vec<u8> {
    let p = rtp::Packet::decode(bytes).unwrap();
    let mut ext = Vec::new();
    let element = rtp::Element {
        id: 3,
        data: &[1, 2, 3],
    };
    let profile = rtp::write_elements(&[element], &mut ext).unwrap();
    let with = rtp::Packet {
        extension: Some(rtp::Extension {
            profile,
            data: &ext,
        }),
        ..p
    };
    let mut b = BytesMut::new();
    with.encode(&mut b).unwrap();
    b.to_vec()
}

fn forward_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu_forward");
    g.throughput(Throughput::Elements(90));
    for (name, stamped) in [("10x10", false), ("10x10_abs_send_time", true)] {
        let (mut sfu, mut out, now, mut senders) = relay(10, 0, 100_000_000);
        let mut packets: Vec<(u32, Vec<u8>)> = (1..=10)
            .flat_map(|p| (0..3).map(move |l| (p, packet(p, l, 1))))
            .map(|(p, b)| (p, if stamped { with_abs_send_time(&b) } else { b }))
            .collect();
        let mut seq = 1u16;
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    packets
                        .iter_mut()
                        .map(|(p, bytes)| {
                            set_seq(bytes, seq);
                            (*p, senders.seal(*p, bytes))
                        })
                        .collect::<Vec<_>>()
                },
                |sealed| {
                    out.clear();
                    for (p, bytes) in sealed.iter() {
                        sfu.handle_input(now, Peer::Endpoint(*p), bytes, &mut out)
                            .unwrap();
                    }
                    assert_eq!(out.len(), 90);
                    black_box(out.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn per_receiver_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu_per_receiver");
    for receivers in [1u32, 16, 64] {
        g.throughput(Throughput::Elements(u64::from(receivers)));
        for (name, bandwidth, layer) in [("forwarded", 100_000_000, 2), ("skipped", 200_000, 2)] {
            // At 200 kbit/s receivers are on layer 0: layer-2 packets go to nobody.
            let (mut sfu, mut out, now, mut senders) = relay(1, receivers, bandwidth);
            let mut bytes = packet(1, layer, 1);
            let mut seq = 1u16;
            let expect = if name == "forwarded" {
                receivers as usize
            } else {
                0
            };
            g.bench_with_input(BenchmarkId::new(name, receivers), &receivers, |b, _| {
                b.iter_batched_ref(
                    || {
                        seq = seq.wrapping_add(1);
                        set_seq(&mut bytes, seq);
                        senders.seal(1, &bytes)
                    },
                    |sealed| {
                        out.clear();
                        sfu.handle_input(now, Peer::Endpoint(1), sealed, &mut out)
                            .unwrap();
                        assert_eq!(out.len(), expect);
                        black_box(out.len())
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("rtp_copy_baseline");
    for receivers in [1u32, 16, 64] {
        g.throughput(Throughput::Elements(u64::from(receivers)));
        let bytes = packet(1, 2, 1);
        let mut arena = BytesMut::new();
        let mut items: Vec<(usize, usize)> = Vec::new();
        g.bench_with_input(
            BenchmarkId::from_parameter(receivers),
            &receivers,
            |b, &n| {
                b.iter(|| {
                    arena.clear();
                    items.clear();
                    let p = rtp::Packet::decode(black_box(&bytes)).unwrap();
                    for _ in 0..n {
                        let start = arena.len();
                        arena.extend_from_slice(&bytes);
                        items.push((start, arena.len()));
                    }
                    black_box((p.ssrc, items.len()))
                })
            },
        );
    }
    g.finish();
}

/// A 1,200-byte single-packet VP8 delta frame of layer 2 with temporal id `tid`
/// (RFC 7741 descriptor: X, S, PID 0; T with TID and Y).
fn temporal_packet(tid: u8, sync: bool, seq: u16) -> Vec<u8> {
    let head = [0x90, 0x20, tid << 6 | u8::from(sync) << 5, 0x01];
    rtp_packet(TEMPORAL_PUBLISHER, 2, seq, &head)
}

fn temporal_bench(c: &mut Criterion) {
    // 100 Mbit/s: layer 2, every temporal layer. 700 kbit/s: layer 2's base (600 k).
    let (mut sfu, mut out, now, mut senders) = relay_of(
        TEMPORAL_PUBLISHER..=TEMPORAL_PUBLISHER,
        &[(32, 100_000_000), (32, 700_000)],
    );
    let mut frames: Vec<Vec<u8>> = [(0, false), (2, true), (1, true), (2, false)]
        .iter()
        .map(|&(tid, sync)| temporal_packet(tid, sync, 1))
        .collect();
    let mut seq = 1u16;
    let mut g = c.benchmark_group("sfu_temporal");
    g.throughput(Throughput::Elements(4 * 64));
    g.bench_function("64", |b| {
        b.iter_batched_ref(
            || {
                frames
                    .iter_mut()
                    .map(|bytes| {
                        seq = seq.wrapping_add(1);
                        set_seq(bytes, seq);
                        senders.seal(TEMPORAL_PUBLISHER, bytes)
                    })
                    .collect::<Vec<_>>()
            },
            |sealed| {
                out.clear();
                for bytes in sealed.iter() {
                    sfu.handle_input(now, Peer::Endpoint(TEMPORAL_PUBLISHER), bytes, &mut out)
                        .unwrap();
                }
                assert_eq!(out.len(), 4 * 32 + 32);
                black_box(out.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, forward_bench, per_receiver_bench, temporal_bench);
criterion_main!(benches);
