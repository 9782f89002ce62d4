//! 50 real nodes on loopback UDP, with real certificates and RSA-signed records:
//! they join through one seed, each publishes one user's record, each finds
//! another's, and a search by display-name word finds its user.

#![cfg(feature = "tokio")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chorus_crypto::SystemEntropy;
use chorus_crypto::cert::{Authority, CertificateRequest, Role, TrustStore};
use chorus_crypto::identity::{IdentityKeyPair, KeySize};
use chorus_index::driver::{Command, DriverEvent, drive};
use chorus_index::node::{Config, Event, Node, NodeIdentity};
use chorus_index::record::{CertVerifier, NatClass, PresenceRecord, Verifier, unix_secs};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const NODES: usize = 50;

/// The next node event; a refused command fails the test.
async fn next(events: &mut mpsc::Receiver<(usize, DriverEvent)>) -> (usize, Event) {
    match events.recv().await.unwrap() {
        (i, DriverEvent::Node(e)) => (i, e),
        (i, refused) => panic!("node {i}: {refused:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_nodes_on_loopback_find_each_others_records() {
    let mut rng = SystemEntropy::new();
    let wall = SystemTime::now();
    let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng).unwrap());
    let mut trust = TrustStore::new();
    trust.add_authority(authority.public_key().clone());
    let verifier: Arc<dyn Verifier> = Arc::new(CertVerifier::new(Arc::new(trust)));
    let issue = |name: &str, key: &IdentityKeyPair, role, serial| {
        authority
            .issue(&CertificateRequest {
                username: name.into(),
                public_key: key.public_key().clone(),
                role,
                serial,
                not_before: wall - Duration::from_secs(60),
                not_after: wall + Duration::from_secs(86_400),
            })
            .unwrap()
            .to_bytes()
    };

    // Each node's key also serves as its user's key (two certificates, two roles):
    // RSA key generation is the slow part of this test.
    let mut sockets = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..NODES {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        addrs.push(s.local_addr().unwrap());
        sockets.push(s);
    }
    let mut config = Config::default();
    config.request_timeout = Duration::from_secs(2);
    config.stall_timeout = Duration::from_millis(500);
    // Every node sends from 127.0.0.1, so per-IP rate limits would pool all 50.
    config.rate_limit = 100_000.0;
    config.rate_burst = 100_000.0;
    let mut cmds = Vec::new();
    let (event_tx, mut events) = mpsc::channel::<(usize, DriverEvent)>(1024);
    let mut records = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng).unwrap();
        let node_cert = issue(&format!("sn-{i}"), &key, Role::SuperNode, 2 * i as u64);
        let user_cert = issue(&format!("user-{i}"), &key, Role::User, 2 * i as u64 + 1);
        let key = Arc::new(key);
        let now = unix_secs(wall);
        let mut record = PresenceRecord {
            username: format!("user-{i}"),
            display_name: format!("User N{i:02}"),
            user_cert: Bytes::from(user_cert),
            super_nodes: vec![addrs[i]],
            candidates: vec![SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16))],
            nat_class: NatClass::Open,
            version: 1,
            issued_at: now,
            expires_at: now + 72 * 3600,
            signature: Bytes::new(),
        };
        record.sign(&key).unwrap();
        records.push(record);
        let node = Node::new(
            config.clone(),
            NodeIdentity {
                cert: Bytes::from(node_cert),
                key: key.clone(),
            },
            verifier.clone(),
            Box::new(SystemEntropy::new()),
            tokio::time::Instant::now().into_std(),
            SystemTime::now(),
        )
        .unwrap();
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (tx, mut rx) = mpsc::channel(64);
        tokio::spawn(drive(node, sock, cmd_rx, tx));
        let all = event_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if all.send((i, e)).await.is_err() {
                    break;
                }
            }
        });
        cmds.push(cmd_tx);
    }

    // Everyone joins through node 0, one after another.
    for (i, cmd) in cmds.iter().enumerate().skip(1) {
        cmd.send(Command::Bootstrap(vec![addrs[0]])).await.unwrap();
        loop {
            let (from, e) = next(&mut events).await;
            if from == i {
                assert!(matches!(e, Event::Bootstrapped { .. }), "{e:?}");
                break;
            }
        }
    }

    // Each node publishes its user's record.
    for (cmd, record) in cmds.iter().zip(&records) {
        cmd.send(Command::Publish(Box::new(record.clone())))
            .await
            .unwrap();
    }
    let mut published = 0;
    while published < NODES {
        if let (_, Event::Published { replicas, .. }) = next(&mut events).await {
            assert!(replicas >= 10, "{replicas} replicas");
            published += 1;
        }
    }

    // Each node finds the next node's user.
    for (i, cmd) in cmds.iter().enumerate() {
        cmd.send(Command::FindUser(format!("user-{}", (i + 1) % NODES)))
            .await
            .unwrap();
    }
    let mut found = BTreeMap::new();
    while found.len() < NODES {
        if let (i, Event::Lookup(o)) = next(&mut events).await {
            found.insert(i, o.record.clone());
        }
    }
    for (i, record) in found {
        let want = &records[(i + 1) % NODES];
        assert_eq!(record.as_ref(), Some(want), "node {i}");
    }

    // And searches by display-name word.
    cmds[3].send(Command::Search("n07".into())).await.unwrap();
    loop {
        if let (3, Event::Lookup(o)) = next(&mut events).await {
            assert_eq!(o.results, vec![records[7].clone()]);
            break;
        }
    }
    for cmd in &cmds {
        let _ = cmd.send(Command::Leave).await;
    }
}
