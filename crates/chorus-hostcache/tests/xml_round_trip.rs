//! Any host cache, NAT info, buddy list and settings round-trip through XML
//! unchanged; arbitrary bytes never panic the loaders.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_hostcache::buddy::{Authorization, BuddyLimits, BuddyList, Contact, Presence, Status};
use chorus_hostcache::hostcache::{CacheConfig, Entry, HostCache, Source};
use chorus_hostcache::nat::{Behaviour, ClassicNat, NatInfo};
use chorus_hostcache::xml::{ConfigFile, Limits, Settings, SharedFile};
use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secs() -> impl Strategy<Value = SystemTime> {
    (0u64..2_000_000_000).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    let v4 = any::<[u8; 4]>()
        .prop_map(|b| IpAddr::V4(Ipv4Addr::from([b[0].clamp(1, 223), b[1], b[2], b[3]])));
    let v6 = any::<[u16; 8]>().prop_map(|s| {
        IpAddr::V6(Ipv6Addr::from([
            0x2001, s[1], s[2], s[3], s[4], s[5], s[6], s[7],
        ]))
    });
    (prop_oneof![v4, v6], 1u16..).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn arb_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Bootstrap),
        Just(Source::Gossip),
        Just(Source::Probe),
        Just(Source::Manual)
    ]
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        arb_addr(),
        (secs(), secs(), option::of(secs()), option::of(secs())),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        option::of((0u64..u64::from(u32::MAX)).prop_map(Duration::from_millis)),
        arb_source(),
    )
        .prop_map(
            |(
                addr,
                (first_seen, last_seen, last_success, last_attempt),
                (successes, failures, consecutive_failures),
                last_rtt,
                source,
            )| Entry {
                addr,
                first_seen,
                last_seen,
                last_success,
                last_attempt,
                successes,
                failures,
                consecutive_failures,
                last_rtt,
                source,
            },
        )
}

fn arb_behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        Just(Behaviour::EndpointIndependent),
        Just(Behaviour::AddressDependent),
        Just(Behaviour::AddressAndPortDependent)
    ]
}

fn arb_nat() -> impl Strategy<Value = NatInfo> {
    let classic = prop_oneof![
        Just(ClassicNat::OpenInternet),
        Just(ClassicNat::FullCone),
        Just(ClassicNat::RestrictedCone),
        Just(ClassicNat::PortRestrictedCone),
        Just(ClassicNat::Symmetric),
        Just(ClassicNat::UdpBlocked),
        Just(ClassicNat::Unknown)
    ];
    (
        secs(),
        option::of(arb_behaviour()),
        option::of(arb_behaviour()),
        classic,
        option::of(arb_addr()),
    )
        .prop_map(
            |(discovered_at, mapping, filtering, classic, mapped_address)| NatInfo {
                discovered_at,
                mapping,
                filtering,
                classic,
                mapped_address,
            },
        )
}

/// Text as users type it: any non-control character, including XML specials.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\p{{Cc}}\u{fffe}\u{ffff}]{{0,{max}}}")).unwrap()
}

fn name(max: usize) -> impl Strategy<Value = String> {
    text(max).prop_filter("trimmed, non-empty", |s| !s.is_empty() && s.trim() == s)
}

fn arb_contact() -> impl Strategy<Value = Contact> {
    let auth = prop_oneof![
        Just(Authorization::PendingOut),
        Just(Authorization::PendingIn),
        Just(Authorization::Authorized),
        Just(Authorization::Blocked)
    ];
    let status = prop_oneof![
        Just(Status::Offline),
        Just(Status::Online),
        Just(Status::Away),
        Just(Status::DoNotDisturb)
    ];
    let notes = proptest::string::string_regex(
        "[^\\p{Cc}\u{fffe}\u{ffff}]{0,20}(\n\t[a-z<&\"']{0,5}){0,2}",
    )
    .unwrap();
    (
        name(20),
        option::of(text(20)),
        btree_set(name(10), 0..4),
        auth,
        notes,
        option::of((status, secs()).prop_map(|(status, at)| Presence { status, at })),
    )
        .prop_map(
            |(username, display_name, groups, authorization, notes, presence)| Contact {
                username,
                display_name,
                groups: groups.into_iter().collect::<BTreeSet<_>>(),
                authorization,
                notes,
                presence,
            },
        )
}

proptest! {
    #[test]
    fn any_shared_file_round_trips(entries in vec(arb_entry(), 0..40), nat in option::of(arb_nat())) {
        let cache = HostCache::from_entries(CacheConfig::default(), entries, now()).unwrap();
        let file = SharedFile { host_cache: cache, nat, preserved: Default::default() };
        let xml = file.encode();
        let back = SharedFile::decode(xml.as_bytes(), Path::new("shared.xml"), &Limits::default(), now());
        prop_assert_eq!(back.as_ref().ok(), Some(&file), "{}", xml);
    }

    #[test]
    fn any_config_file_round_trips(
        contacts in vec(arb_contact(), 0..20),
        username in option::of(name(20)),
        listen_port in option::of(any::<u16>()),
        flags in any::<(bool, bool, bool)>(),
    ) {
        let mut buddies = BuddyList::new(BuddyLimits::default()).unwrap();
        for c in contacts {
            let _ = buddies.insert(c);
        }
        let mut settings = Settings::default();
        settings.username = username;
        settings.listen_port = listen_port;
        (settings.alternative_ports, settings.allow_super_node, settings.reveal_address_to_strangers) = flags;
        let file = ConfigFile { settings, buddies, preserved: Default::default() };
        let xml = file.encode();
        let back = ConfigFile::decode(xml.as_bytes(), Path::new("config.xml"), &Limits::default());
        prop_assert_eq!(back.as_ref().ok(), Some(&file), "{}", xml);
    }

}

const SAMPLE_SHARED: &str = include_str!("../../../docs/files/shared.xml");
const SAMPLE_CONFIG: &str = include_str!("../../../docs/files/config.xml");

#[test]
fn the_documented_samples_load() {
    let shared = SharedFile::decode(
        SAMPLE_SHARED.as_bytes(),
        Path::new("shared.xml"),
        &Limits::default(),
        now(),
    )
    .unwrap();
    assert_eq!(shared.host_cache.len(), 3);
    assert!(shared.nat.is_some());
    let config = ConfigFile::decode(
        SAMPLE_CONFIG.as_bytes(),
        Path::new("config.xml"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(config.buddies.len(), 3);
    assert_eq!(
        config.preserved.len(),
        1,
        "the sample shows a section from a newer minor version"
    );
}
