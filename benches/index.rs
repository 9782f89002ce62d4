//! chorus-index: routing-table insert and closest-k on a table of a 100,000-node
//! network, presence record sign/verify (RSA-2048 through chorus-crypto, and the
//! simulator's hash stand-in), and message encode/decode. Results in docs/index.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use chorus_crypto::SystemEntropy;
use chorus_crypto::cert::{Authority, CertificateRequest, NodeId, Role, TrustStore};
use chorus_crypto::identity::{IdentityKeyPair, KeySize};
use chorus_framing::{Entropy, SeededEntropy};
use chorus_index::message::{Body, Contact, Message, NONCE_LEN, possession_message};
use chorus_index::node::{Config, DEFAULT_NETWORK, Node, NodeIdentity};
use chorus_index::record::{CertVerifier, NatClass, PresenceRecord, Signer, Verifier, unix_secs};
use chorus_index::sim::SimVerifier;
use chorus_index::table::{RoutingTable, TableConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn random_id(e: &mut SeededEntropy) -> NodeId {
    let mut id = [0u8; 32];
    e.fill(&mut id).unwrap();
    NodeId(id)
}

fn contact(id: NodeId, i: u32) -> Contact {
    Contact {
        id,
        addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000)),
    }
}

fn table(c: &mut Criterion) {
    let mut e = SeededEntropy::new(1);
    let now = Instant::now();
    // The ids of a 100,000-node network, offered to one table.
    let ids: Vec<NodeId> = (0..100_000).map(|_| random_id(&mut e)).collect();
    let mut t = RoutingTable::new(random_id(&mut e), TableConfig::default()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        t.insert(contact(*id, i as u32), now);
    }
    let targets: Vec<NodeId> = (0..1024).map(|_| random_id(&mut e)).collect();
    let mut g = c.benchmark_group("index/table");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(format!("insert (table of {})", t.len()), |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(t.insert(contact(ids[i], i as u32), now))
        });
    });
    let mut j = 0usize;
    g.bench_function("closest 20", |b| {
        b.iter(|| {
            j = (j + 1) % targets.len();
            black_box(t.closest(&targets[j], 20))
        });
    });
    g.finish();
}

fn record(c: &mut Criterion) {
    let mut rng = SystemEntropy::new();
    let wall = SystemTime::now();
    let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng).unwrap());
    let key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng).unwrap();
    let cert = authority
        .issue(&CertificateRequest {
            username: "alice".into(),
            public_key: key.public_key().clone(),
            role: Role::User,
            serial: 1,
            not_before: wall - Duration::from_secs(60),
            not_after: wall + Duration::from_secs(86_400),
        })
        .unwrap();
    let mut trust = TrustStore::new();
    trust.add_authority(authority.public_key().clone());
    let verifier = CertVerifier::new(Arc::new(trust));
    let now = unix_secs(wall);
    let mut r = PresenceRecord {
        username: "alice".into(),
        display_name: "Alice Liddell".into(),
        user_cert: Bytes::from(cert.to_bytes()),
        super_nodes: vec!["192.0.2.1:33033".parse().unwrap()],
        candidates: vec!["198.51.100.7:4000".parse().unwrap()],
        nat_class: NatClass::PortRestricted,
        version: 1,
        issued_at: now,
        expires_at: now + 72 * 3600,
        signature: Bytes::new(),
    };
    r.sign(&key).unwrap();
    let mut g = c.benchmark_group("index/record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign (RSA-2048)", |b| {
        b.iter(|| {
            let mut x = r.clone();
            x.sign(&key).unwrap();
            black_box(x)
        });
    });
    g.bench_function("verify (certificate + signature, RSA-2048)", |b| {
        b.iter(|| verifier.verify_record(black_box(&r), wall).unwrap());
    });
    let sim = SimVerifier::new(1);
    let mut s = r.clone();
    sim.sign(&mut s);
    g.bench_function("verify (simulator's keyed hash)", |b| {
        b.iter(|| sim.verify_record(black_box(&s), wall).unwrap());
    });
    // The proof of key possession a super node gives before it is trusted as a
    // contact: an RSA-PSS signature over the requester's nonce, checked against the
    // key its certificate names.
    let node_key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng).unwrap();
    let node_cert = authority
        .issue(&CertificateRequest {
            username: "sn-1".into(),
            public_key: node_key.public_key().clone(),
            role: Role::SuperNode,
            serial: 2,
            not_before: wall - Duration::from_secs(60),
            not_after: wall + Duration::from_secs(86_400),
        })
        .unwrap()
        .to_bytes();
    let requester = NodeId([7; 32]);
    let challenge = possession_message(&[9; NONCE_LEN], &requester);
    g.bench_function("sign possession proof (RSA-2048)", |b| {
        b.iter(|| Signer::sign(&node_key, black_box(&challenge)).unwrap());
    });
    let proof = Signer::sign(&node_key, &challenge).unwrap();
    g.bench_function(
        "verify possession proof (certificate + signature, RSA-2048)",
        |b| {
            b.iter(|| {
                verifier
                    .verify_possession(black_box(&node_cert), &challenge, &proof, wall)
                    .unwrap()
            });
        },
    );
    let bytes = r.to_bytes();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| PresenceRecord::decode(black_box(&bytes)).unwrap())
    });
    g.finish();
}

fn message(c: &mut Criterion) {
    let mut e = SeededEntropy::new(2);
    let nodes: Vec<Contact> = (0..20).map(|i| contact(random_id(&mut e), i)).collect();
    let cert = vec![0x5a; 700];
    let msg = Message {
        network: 1,
        txid: 42,
        sender_cert: &cert,
        nonce: None,
        proof: None,
        cookie: None,
        padding: 0,
        body: Body::Nodes { nodes },
    };
    let bytes = msg.to_bytes();
    let mut g = c.benchmark_group("index/message");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode Nodes (20 contacts)", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            black_box(&msg).encode(&mut out);
        });
    });
    g.bench_function("decode Nodes (20 contacts)", |b| {
        b.iter(|| Message::decode(black_box(&bytes)).unwrap());
    });
    g.finish();
}

/// One node (table filled from a 100,000-node network) answering a FindNode request:
/// decode, certificate check (the simulator's, so RSA is not measured twice), rate
/// limit, closest 20, encode.
fn node(c: &mut Criterion) {
    let verifier = Arc::new(SimVerifier::new(3));
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut config = Config::default();
    // The loop below advances the clock 10 ms per request (so the rate limiter never
    // refuses): a day-long cookie stays good for the whole run.
    config.cookie_lifetime = Duration::from_secs(86_400);
    let mut n = Node::new(
        config,
        NodeIdentity {
            cert: verifier.node_cert(0),
            key: verifier.node_key(0),
        },
        verifier.clone(),
        Box::new(SeededEntropy::new(3)),
        now,
        wall,
    )
    .unwrap();
    let mut e = SeededEntropy::new(4);
    for i in 1..100_000u32 {
        let id = SimVerifier::node_id(&verifier.node_cert(u64::from(i)));
        n.add_contact(contact(id, i), now);
    }
    let cert = verifier.node_cert(7);
    let from = SocketAddr::from(([10, 0, 0, 7], 4000));
    // The requester's address is validated (return routability): its requests echo
    // the cookie the node gave it in a first answer, as a requester's do.
    let first = Message {
        network: DEFAULT_NETWORK,
        txid: 1_000,
        sender_cert: &cert,
        nonce: None,
        proof: None,
        cookie: None,
        padding: 1_200,
        body: Body::Ping,
    }
    .to_bytes();
    n.handle_input(now, from, &first).unwrap();
    let answer = n.poll_transmit().unwrap();
    let cookie = Message::decode(&answer.payload).unwrap().cookie;
    assert!(cookie.is_some());
    let requests: Vec<Bytes> = (0..256)
        .map(|i| {
            Message {
                network: DEFAULT_NETWORK,
                txid: i,
                sender_cert: &cert,
                nonce: None,
                proof: None,
                cookie,
                padding: 0,
                body: Body::FindNode {
                    target: random_id(&mut e),
                },
            }
            .to_bytes()
        })
        .collect();
    let mut g = c.benchmark_group("index/node");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut t = now;
    g.bench_function(
        format!("answer FindNode (table of {})", n.table().len()),
        |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                // Advance time so the rate limiter never refuses.
                t += Duration::from_millis(10);
                n.handle_input(t, from, &requests[i]).unwrap();
                black_box(n.poll_transmit())
            });
        },
    );
    // The same request carrying a nonce, as from a contact not yet proven: the answer
    // carries our proof, signed once per (requester, nonce) and then served from the
    // proof cache.
    let challenged: Vec<Bytes> = (0..256)
        .map(|i| {
            Message {
                network: DEFAULT_NETWORK,
                txid: i,
                sender_cert: &cert,
                nonce: Some([i as u8; NONCE_LEN]),
                proof: None,
                cookie,
                padding: 0,
                body: Body::FindNode {
                    target: random_id(&mut e),
                },
            }
            .to_bytes()
        })
        .collect();
    g.bench_function("answer FindNode with a nonce (proof cached)", |b| {
        b.iter(|| {
            i = (i + 1) % challenged.len();
            // A challenge costs 10 rate-limit tokens: 60 ms refills 12.
            t += Duration::from_millis(60);
            n.handle_input(t, from, &challenged[i]).unwrap();
            black_box(n.poll_transmit().expect("answered"))
        });
    });
    g.finish();
}

criterion_group!(benches, table, record, message, node);
criterion_main!(benches);
