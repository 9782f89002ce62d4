//! SRTP throughput of `chorus-crypto`, per suite, at voice and video packet sizes.
//!
//! Groups (results, machine and the libsrtp comparison in `docs/performance.md`; run
//! `cargo bench --bench srtp`, or `benches/compare-libsrtp.sh` for the comparison):
//! - `srtp_protect/<suite>/<payload>`: copy a fixed RTP packet (12-byte header,
//!   `<payload>` bytes of payload) into a reused buffer, write the next sequence number
//!   into it, and protect it in place. The sequence number advances every packet (so
//!   the ROC wraps every 65536), as a real sender's does. The measured path includes
//!   the sender's index check (an index at or below the highest sent is refused, RFC
//!   3711 §3.3.1; `allow_repeat_tx` off, as in libsrtp's bench), which libsrtp's
//!   `srtp_protect` also performs.
//! - `srtp_unprotect/<suite>/<payload>`: 1024 consecutive packets are protected up
//!   front. A fresh receiving session unprotects packet 0 untimed (creating its SSRC
//!   context), then packets 1..1023 are timed, each copied into the reused buffer and
//!   unprotected in place; then the next fresh receiver. Replay protection stays on.
//! - `srtp_hmac_sha1/<impl>/<len>`: HMAC-SHA1 over `<len>` bytes with a pre-keyed
//!   state, ring against RustCrypto (the measurement behind the choice of HMAC).
//!
//! `benches/libsrtp-bench.c` does exactly the same with libsrtp (same header, payload,
//! sequence numbering, batch of 1024 and untimed first packet), so the two can be
//! compared. Throughput is in payload bytes; packets/s is 1 / time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};

/// Payload sizes: a 20 ms Opus/G.711 voice frame and an MTU-sized video packet.
const PAYLOADS: [usize; 2] = [160, 1200];
/// Packets protected up front for the unprotect benchmark.
const BATCH: usize = 1024;
/// The SSRC of every benchmark packet.
const SSRC: u32 = 0xdeca_fbad;

fn session(suite: Suite) -> SrtpSession {
    let key: Vec<u8> = (0..suite.key_len()).map(|i| i as u8).collect();
    let salt: Vec<u8> = (0..suite.salt_len()).map(|i| 0xa0 + i as u8).collect();
    SrtpSession::new(Policy::new(suite, &key, &salt).expect("valid key")).expect("valid policy")
}

/// A 12-byte RTP header (V=2, PT 111, SEQ `seq`, timestamp 0, SSRC [`SSRC`]) and
/// `payload` bytes of payload.
fn packet(seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend((0..payload).map(|i| (i % 251) as u8));
    p
}

fn protect(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_protect");
    for suite in Suite::ALL {
        for payload in PAYLOADS {
            group.throughput(Throughput::Bytes(payload as u64));
            group.bench_function(BenchmarkId::new(suite.name(), payload), |b| {
                let mut tx = session(suite);
                let template = packet(0, payload);
                let len = template.len();
                let mut buf = vec![0u8; len + suite.rtp_tag_len()];
                let mut seq = 0u16;
                b.iter(|| {
                    buf[..len].copy_from_slice(&template);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    black_box(tx.protect_rtp_in_place(black_box(&mut buf), len)).expect("protect")
                });
            });
        }
    }
    group.finish();
}

fn unprotect(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_unprotect");
    for suite in Suite::ALL {
        for payload in PAYLOADS {
            let mut tx = session(suite);
            let wire: Vec<Vec<u8>> = (0..BATCH)
                .map(|i| {
                    let mut p = packet(i as u16, payload);
                    tx.protect_rtp(&mut p).expect("protect");
                    p
                })
                .collect();
            let len = wire[0].len();
            group.throughput(Throughput::Bytes(payload as u64));
            group.bench_function(BenchmarkId::new(suite.name(), payload), |b| {
                let mut buf = vec![0u8; len];
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let mut rx = session(suite);
                        buf.copy_from_slice(&wire[0]);
                        rx.unprotect_rtp_in_place(&mut buf).expect("first packet");
                        let n = left.min(BATCH as u64 - 1) as usize;
                        let start = Instant::now();
                        for p in &wire[1..=n] {
                            buf.copy_from_slice(p);
                            black_box(rx.unprotect_rtp_in_place(black_box(&mut buf)))
                                .expect("unprotect");
                        }
                        total += start.elapsed();
                        left -= n as u64;
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

/// The HMAC choice: SRTP authenticates header + payload + ROC (176 bytes for a
/// 160-byte payload) with a key fixed for the session.
fn hmac_sha1(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_hmac_sha1");
    let key = [0x42u8; 20];
    for len in [176usize, 1216] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        let ring_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
        group.bench_function(BenchmarkId::new("ring", len), |b| {
            b.iter(|| {
                let mut ctx = ring::hmac::Context::with_key(&ring_key);
                ctx.update(black_box(&data));
                black_box(ctx.sign())
            });
        });
        let keyed = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&key).expect("any key");
        group.bench_function(BenchmarkId::new("rustcrypto", len), |b| {
            b.iter(|| {
                let mut mac = keyed.clone();
                mac.update(black_box(&data));
                black_box(mac.finalize().into_bytes())
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = protect, unprotect, hmac_sha1
}
criterion_main!(benches);
