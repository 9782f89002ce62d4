//! Host cache invariants under any sequence of operations: never above its cap or its
//! per-subnet cap, and the ranking is a total order.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_hostcache::hostcache::{CacheConfig, GossipEntry, HostCache, Source};
use proptest::collection::vec;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(SocketAddr, u64),
    Success(SocketAddr, u64, u64),
    Failure(SocketAddr, u64),
    Gossip(Vec<SocketAddr>, u64),
    Expire(u64),
    Remove(SocketAddr),
}

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

/// Addresses from few subnets, so that the diversity bound is exercised.
fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    let v4 = (0u8..6, 0u8..4, 1u8..20).prop_map(|(a, b, c)| IpAddr::V4(Ipv4Addr::new(10, a, b, c)));
    let v6 = (0u16..3, 0u16..5)
        .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, a, b, 0, 0, 0, 1)));
    (prop_oneof![3 => v4, 1 => v6], 1u16..4).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (arb_addr(), 0u64..100_000).prop_map(|(a, s)| Op::Insert(a, s)),
        (arb_addr(), 0u64..100_000, 0u64..5_000).prop_map(|(a, s, r)| Op::Success(a, s, r)),
        (arb_addr(), 0u64..100_000).prop_map(|(a, s)| Op::Failure(a, s)),
        (vec(arb_addr(), 0..60), 0u64..100_000).prop_map(|(v, s)| Op::Gossip(v, s)),
        (0u64..10_000_000).prop_map(Op::Expire),
        arb_addr().prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn the_cache_never_exceeds_its_caps_and_ranks_totally(
        ops in vec(arb_op(), 0..150),
        max_entries in 1usize..40,
        max_per_subnet in 1usize..6,
        now in 0u64..200_000,
    ) {
        let mut config = CacheConfig::default();
        config.max_entries = max_entries;
        config.max_per_subnet = max_per_subnet;
        let mut c = HostCache::new(config).unwrap();
        for op in ops {
            match op {
                Op::Insert(a, s) => { c.insert(a, Source::Manual, t(s)).unwrap(); }
                Op::Success(a, s, r) => { c.record_success(a, Duration::from_millis(r), t(s)).unwrap(); }
                Op::Failure(a, s) => c.record_failure(a, t(s)),
                Op::Gossip(v, s) => {
                    c.merge_gossip(v.into_iter().map(|addr| GossipEntry { addr, last_seen: t(s) }), t(s));
                }
                Op::Expire(s) => { c.expire(t(s)); }
                Op::Remove(a) => { c.remove(a); }
            }
            prop_assert!(c.len() <= max_entries);
            prop_assert!(c.largest_subnet() <= max_per_subnet);
        }
        // Total order: antisymmetric, transitive, and Equal only for the same entry.
        let entries: Vec<_> = c.iter().collect();
        for x in &entries {
            for y in &entries {
                let xy = c.compare(x, y, t(now));
                prop_assert_eq!(xy, c.compare(y, x, t(now)).reverse());
                prop_assert_eq!(xy == Ordering::Equal, x.addr == y.addr);
                for z in &entries {
                    if xy == Ordering::Less && c.compare(y, z, t(now)) == Ordering::Less {
                        prop_assert_eq!(c.compare(x, z, t(now)), Ordering::Less);
                    }
                }
            }
        }
        let ranked = c.ranked(t(now));
        for w in ranked.windows(2) {
            prop_assert_eq!(c.compare(w[0], w[1], t(now)), Ordering::Less);
        }
    }
}
