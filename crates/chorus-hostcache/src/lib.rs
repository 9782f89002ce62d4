//! What a Chorus client remembers between runs, and how it finds the network.
//!
//! Skype kept a host cache of up to 200 super nodes and its NAT type in `shared.xml`,
//! and the buddy list in `config.xml`, in clear; at login it probed cached super nodes
//! over UDP, then TCP, then seven hard-coded bootstrap nodes, every 6 seconds. Chorus
//! keeps that shape and makes it robust:
//!
//! - [`hostcache`]: the ranked, bounded, subnet-diverse host cache with gossip merge,
//!   expiry and a refresh schedule.
//! - [`bootstrap`]: the bootstrap procedure as a sans-IO state machine; [`driver`]
//!   runs it on tokio (feature `tokio`, on by default).
//! - [`buddy`]: contacts, authorization (pending-out, pending-in, authorized,
//!   blocked), groups, notes and last known presence.
//! - [`nat`]: the last NAT behaviour discovery result.
//! - [`xml`] and [`store`]: `shared.xml` and `config.xml` (format in `docs/files.md`),
//!   written atomically and durably under a lock, never silently discarded when
//!   damaged, optionally encrypted at rest with chorus-crypto's
//!   [`at_rest`](chorus_crypto::at_rest).
//!
//! Everything but [`store`] and [`driver`] is free of I/O: time and randomness are
//! parameters. Every byte read from disk or the network is hostile: bounded, validated,
//! never a panic.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use chorus_crypto::SystemEntropy;
//! use chorus_hostcache::bootstrap::{probe_reply, Bootstrap, BootstrapConfig, Event};
//! use chorus_hostcache::hostcache::Source;
//! use chorus_hostcache::store::{Store, StoreConfig};
//!
//! let dir = std::env::temp_dir().join(format!("chorus-hostcache-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = Store::new(&dir, StoreConfig::default())?;
//! let wall = SystemTime::now();
//!
//! // First run: nothing cached; the application's bootstrap list is all we have.
//! let mut shared = store.load_shared(wall)?.unwrap_or(store.empty_shared()?);
//! let seed = "192.0.2.1:33033".parse()?;
//! let mut boot = Bootstrap::new(BootstrapConfig::default(), Box::new(SystemEntropy::new()))?;
//! let t0 = Instant::now();
//! boot.start(t0, shared.host_cache.best(16, wall), vec![seed])?;
//!
//! // Wire the core to a "super node" by hand: it answers the probe after 30 ms.
//! let probe = boot.poll_transmit().expect("a probe to the bootstrap node");
//! boot.handle_input(t0 + Duration::from_millis(30), probe.dst, &probe_reply(&probe.payload).unwrap())?;
//! while let Some(event) = boot.poll_event() {
//!     if let Event::Connected { addr, rtt, .. } = event {
//!         shared.host_cache.insert(addr, Source::Bootstrap, wall)?;
//!         shared.host_cache.record_success(addr, rtt, wall)?;
//!     }
//! }
//! store.save_shared(&shared)?;
//!
//! // Next run: the node is cached and ranked first.
//! let shared = store.load_shared(wall)?.expect("saved");
//! assert_eq!(shared.host_cache.best(1, wall), vec![seed]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bootstrap;
pub mod buddy;
#[cfg(feature = "tokio")]
pub mod driver;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod hostcache;
pub mod nat;
pub mod store;
pub mod xml;

pub use error::{
    DecodeError, Error, FileError, FileErrorKind, Limit, Position, UsageError, Violation,
};
