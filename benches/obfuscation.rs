//! Cost of the optional obfuscation layer (`chorus_crypto::obfuscation`) per packet.
//!
//! Groups (run `cargo bench --bench obfuscation`):
//! - `obfuscate/<size>`: one `<size>`-byte payload obfuscated into a reused buffer,
//!   its IV drawn from [`SystemEntropy`] as in production (one `getrandom` per packet).
//! - `deobfuscate/<size>`: the resulting packet turned back into its payload.
//! - `copy/<size>`: the baseline measured in the same run: the payload appended to a
//!   reused buffer, the copy any packet-rewriting layer costs at least.
//!
//! Sizes: 160 bytes (a 20 ms voice packet) and 1200 bytes (an MTU-sized video packet).
//! Each packet pays a fixed cost, independent of its size (a SHA-256 for the packet
//! key, the RC4 key schedule and 3072 discarded keystream bytes), plus RC4 over the
//! payload; comparing the two sizes separates the two.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use chorus_crypto::SystemEntropy;
use chorus_crypto::obfuscation::{OVERHEAD, Obfuscator};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Payload sizes: a voice packet and an MTU-sized packet.
const SIZES: [usize; 2] = [160, 1200];

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn obfuscation(c: &mut Criterion) {
    let obfuscator =
        Obfuscator::new(b"chorus benchmark obfuscation key").expect("a 32-byte key is valid");

    let mut group = c.benchmark_group("obfuscate");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            let mut rng = SystemEntropy::new();
            let mut out = BytesMut::with_capacity(size + OVERHEAD);
            b.iter(|| {
                out.clear();
                obfuscator
                    .obfuscate(&mut rng, black_box(payload), &mut out)
                    .expect("system entropy works");
                black_box(&out);
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("deobfuscate");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let payload = payload(size);
        let mut wire = BytesMut::new();
        obfuscator
            .obfuscate(&mut SystemEntropy::new(), &payload, &mut wire)
            .expect("system entropy works");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            let mut out = BytesMut::with_capacity(size);
            b.iter(|| {
                out.clear();
                obfuscator
                    .deobfuscate(black_box(wire), &mut out)
                    .expect("long enough");
                black_box(&out);
            });
            assert_eq!(out[..], payload[..]);
        });
    }
    group.finish();

    let mut group = c.benchmark_group("copy");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            let mut out = BytesMut::with_capacity(size + OVERHEAD);
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(payload));
                black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, obfuscation);
criterion_main!(benches);
