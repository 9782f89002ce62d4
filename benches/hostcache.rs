//! chorus-hostcache: ranking and gossip merge of a full 200-entry host cache; load and
//! save of `shared.xml` (200 nodes) and of a 5,000-contact `config.xml`, in memory and
//! through the crash-safe store (two fsyncs per save). Results in docs/performance.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_hostcache::buddy::Status;
use chorus_hostcache::hostcache::{GossipEntry, HostCache, Source};
use chorus_hostcache::store::{Store, StoreConfig};
use chorus_hostcache::xml::{ConfigFile, Limits, SharedFile};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, (i % 250) as u8, (i / 250) as u8, 1], 33033))
}

/// A full cache: 200 nodes in 200 subnets with varied history.
fn full_cache() -> HostCache {
    let mut c = HostCache::new(Default::default()).unwrap();
    for i in 0..200u32 {
        let t = now() - Duration::from_secs(u64::from(i) * 97);
        c.insert(addr(i), Source::Gossip, t).unwrap();
        if i % 3 == 0 {
            c.record_success(addr(i), Duration::from_millis(u64::from(i % 90) + 5), t)
                .unwrap();
        }
        if i % 5 == 0 {
            c.record_failure(addr(i), t);
        }
    }
    assert_eq!(c.len(), 200);
    c
}

fn big_config() -> ConfigFile {
    let mut f = ConfigFile::new(&Limits::default()).unwrap();
    for i in 0..5000 {
        let name = format!("user{i:05}");
        f.buddies.request(&name).unwrap();
        f.buddies.handle_accepted(&name).unwrap();
        f.buddies
            .set_display_name(&name, Some(&format!("User Number {i}")))
            .unwrap();
        f.buddies
            .add_to_group(&name, if i % 2 == 0 { "Friends" } else { "Work" })
            .unwrap();
        f.buddies
            .update_presence(&name, Status::Online, now())
            .unwrap();
    }
    f
}

fn bench(c: &mut Criterion) {
    let cache = full_cache();
    let mut g = c.benchmark_group("hostcache");
    g.throughput(Throughput::Elements(200));
    g.bench_function("rank_200", |b| b.iter(|| black_box(&cache).best(16, now())));
    let gossip: Vec<GossipEntry> = (1000..1050)
        .map(|i| GossipEntry {
            addr: addr(i),
            last_seen: now(),
        })
        .collect();
    g.throughput(Throughput::Elements(50));
    g.bench_function("merge_50_gossip_into_200", |b| {
        b.iter_batched(
            || cache.clone(),
            |mut c| c.merge_gossip(black_box(gossip.iter().copied()), now()),
            criterion::BatchSize::SmallInput,
        );
    });
    g.finish();

    let mut shared = SharedFile::new(&Limits::default()).unwrap();
    shared.host_cache = cache;
    let xml = shared.encode();
    let mut g = c.benchmark_group("shared_xml_200");
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.bench_function("encode", |b| b.iter(|| black_box(&shared).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| {
            SharedFile::decode(
                black_box(xml.as_bytes()),
                Path::new("shared.xml"),
                &Limits::default(),
                now(),
            )
            .unwrap()
        });
    });
    let dir = std::env::temp_dir().join(format!("chorus-bench-hostcache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::new(&dir, StoreConfig::default()).unwrap();
    g.bench_function("store_save", |b| {
        b.iter(|| store.save_shared(black_box(&shared)).unwrap())
    });
    g.bench_function("store_load", |b| {
        b.iter(|| store.load_shared(now()).unwrap().unwrap())
    });
    g.finish();

    let config = big_config();
    let xml = config.encode();
    let mut g = c.benchmark_group("config_xml_5000_contacts");
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.sample_size(20);
    g.bench_function("encode", |b| b.iter(|| black_box(&config).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| {
            ConfigFile::decode(
                black_box(xml.as_bytes()),
                Path::new("config.xml"),
                &Limits::default(),
            )
            .unwrap()
        });
    });
    g.bench_function("store_save", |b| {
        b.iter(|| {
            store
                .save_config(
                    black_box(&config),
                    None,
                    &mut chorus_framing::SeededEntropy::new(1),
                )
                .unwrap()
        });
    });
    g.bench_function("store_load", |b| {
        b.iter(|| store.load_config(None, now()).unwrap().unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
