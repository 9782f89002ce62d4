//! What an operator's logs show of a relayed call: what happened (allocations, the
//! selected path, refusals), never whom (no IP address, no user name), unless the
//! embedder builds with chorus-framing's `log-sensitive` feature.
#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_framing::SeededEntropy;
use chorus_nat::TurnClientConfig;
use chorus_nat::client::Transport;
use chorus_nat::driver::ice::{Signalling, connect};
use chorus_nat::driver::turn_client::{TurnError, TurnHandle};
use chorus_nat::driver::turn_server;
use chorus_nat::ice::{Agent, IceConfig, PathKind, Role};
use chorus_nat::turn::server::StaticUsers;
use chorus_nat::{TurnConfig, TurnServer};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Every log line, formatted, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Whether `text` holds something shaped like an IPv4 address (four dot-separated
/// numbers) or an IPv6 one (a `::` run or five colon-separated hex groups).
fn has_ip(text: &str) -> Option<String> {
    for word in text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
        let dotted = word.split('.').filter(|p| !p.is_empty()).count();
        let is_v4 = dotted >= 4
            && word
                .split('.')
                .take(4)
                .all(|p| !p.is_empty() && p.chars().take_while(char::is_ascii_digit).count() > 0);
        let is_v6 = word.contains("::") || word.split(':').filter(|g| !g.is_empty()).count() >= 5;
        if is_v4 || is_v6 {
            return Some(word.to_owned());
        }
    }
    None
}

fn turn_core() -> TurnServer {
    let mut cfg = TurnConfig::default();
    cfg.realm = "example.org".into();
    cfg.relay_ips = vec![[127, 0, 0, 1].into()];
    // A range of this test binary's own.
    cfg.relay_ports = 34_000..=34_999;
    cfg.allow_loopback_peers = true;
    let mut users = StaticUsers::new("example.org");
    users.add("alice", "secret");
    users.add("bob", "hunter2");
    TurnServer::new(cfg, Box::new(users), Box::new(SeededEntropy::new(70))).unwrap()
}

fn client(server: SocketAddr, user: &str, password: &str) -> TurnClientConfig {
    TurnClientConfig::new(server, Transport::Udp, user, password)
}

#[test]
fn the_logs_of_a_relayed_call_name_no_address_and_no_user() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        // Module paths (`chorus_nat::driver`) would look like IPv6 to the detector.
        .with_target(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every task of the call runs on this thread, under this subscriber.
    tracing::subscriber::with_default(subscriber, || runtime.block_on(relayed_call()));

    let text = logs.text();
    for expected in [
        "socket added",
        "allocation opening",
        "TURN allocation granted",
        "ICE pair selected",
        "request challenged",
        "TURN allocation refused",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    if chorus_framing::LOG_SENSITIVE {
        assert!(text.contains("127.0.0.1"), "log-sensitive shows addresses");
        return;
    }
    assert!(text.contains("client=<redacted>"), "{text}");
    assert_eq!(has_ip(&text), None, "an address in:\n{text}");
    for name in ["alice", "bob", "mallory"] {
        assert!(!text.contains(name), "{name} in:\n{text}");
    }
}

/// Two relay-only ICE agents through the Chorus TURN server, data both ways, and one
/// client with a wrong password.
async fn relayed_call() {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = udp.local_addr().unwrap();
    let server = turn_server::spawn(turn_core(), vec![udp], vec![]);

    let refused = TurnHandle::connect_with(
        client(server_addr, "mallory", "guess"),
        Box::new(SeededEntropy::new(1)),
    )
    .await;
    assert!(
        matches!(refused, Err(TurnError::Failed { .. })),
        "{refused:?}"
    );

    let relay = |user: &'static str, password: &'static str, seed| async move {
        TurnHandle::connect_with(
            client(server_addr, user, password),
            Box::new(SeededEntropy::new(seed)),
        )
        .await
        .unwrap()
        .into_relay_channel()
        .unwrap()
    };
    let (a_relay, b_relay) = (
        relay("alice", "secret", 2).await,
        relay("bob", "hunter2", 3).await,
    );
    let agent = |role, seed| {
        let mut c = IceConfig::default();
        c.role = role;
        Agent::new(c, Box::new(SeededEntropy::new(seed))).unwrap()
    };
    let (a_tx, b_rx) = mpsc::channel(64);
    let (b_tx, a_rx) = mpsc::channel(64);
    let (a, b) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(
            connect(
                agent(Role::Controlling, 4),
                vec![],
                Some(a_relay),
                Signalling { tx: a_tx, rx: a_rx }
            ),
            connect(
                agent(Role::Controlled, 5),
                vec![],
                Some(b_relay),
                Signalling { tx: b_tx, rx: b_rx }
            ),
        )
    })
    .await
    .expect("ICE finished in time");
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.kind(), b.kind()), (PathKind::Relayed, PathKind::Relayed));
    tokio::time::timeout(Duration::from_secs(10), async {
        for i in 0..5u8 {
            a.send(Bytes::from(vec![0x80, i])).await.unwrap();
            assert_eq!(b.recv().await.unwrap(), Bytes::from(vec![0x80, i]));
            b.send(Bytes::from(vec![0x80, 100 + i])).await.unwrap();
            assert_eq!(a.recv().await.unwrap(), Bytes::from(vec![0x80, 100 + i]));
        }
    })
    .await
    .expect("media through the relay");
    drop((a, b));
    server.shutdown().await.unwrap();
}

#[test]
fn the_address_detector_finds_what_it_must() {
    assert!(has_ip("client=127.0.0.1:5000 x").is_some());
    assert!(has_ip("peer [::1]:9").is_some());
    assert!(has_ip("2001:db8:0:1:2:3:4:5").is_some());
    assert_eq!(
        has_ip("2026-12-07T23:20:01.123Z DEBUG socket added local=<redacted>"),
        None
    );
}
