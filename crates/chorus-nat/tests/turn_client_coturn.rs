//! The Chorus TURN client against coturn's `turnserver` (an independent RFC 5766/8656
//! implementation, Debian package `coturn`) on loopback, over UDP and over TCP:
//! long-term credentials (401, then authenticated requests), Allocate, CreatePermission,
//! Send indications and Data indications, ChannelBind and ChannelData both ways to a
//! UDP echo peer on 127.0.0.1, refreshes of the permission, the channel and the
//! allocation, and the zero-lifetime Refresh that deletes it. Then the same through the
//! tokio driver (`TurnHandle`), and EVEN-PORT with RESERVATION-TOKEN.
//!
//! The sans-IO core is pumped by the test itself so that it sees every datagram and can
//! tell a Data indication from ChannelData. Refreshes are reached by moving the core's
//! clock forward (it only ever sees `now` as an input); coturn is unaffected.
//!
//! Without coturn the tests print why they skip, unless `CHORUS_REQUIRE_INTEROP=1`.
//! Every process started here is killed by a drop guard; every wait is bounded.
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_framing::SeededEntropy;
use chorus_nat::client::{ClientConfig, Transport};
use chorus_nat::driver::turn_client::TurnHandle;
use chorus_nat::stun::Limits;
use chorus_nat::turn::client::{Deframer, Event};
use chorus_nat::{TurnClient, TurnClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

mod support;
use support::{Guard, TempDir, free_port, have};

/// Starts `turnserver` on 127.0.0.1:`port` with long-term credentials alice:secret in
/// realm example.org, relaying on 127.0.0.1 ports `relay.0..=relay.1`.
fn start_turnserver(dir: &TempDir, port: u16, relay: (u16, u16)) -> Guard {
    let conf = dir.path().join("turnserver.conf");
    std::fs::write(
        &conf,
        format!(
            "listening-ip=127.0.0.1\nlistening-port={port}\nrelay-ip=127.0.0.1\n\
             min-port={}\nmax-port={}\nlt-cred-mech\nuser=alice:secret\nrealm=example.org\n\
             allow-loopback-peers\nno-multicast-peers\nno-tls\nno-dtls\nno-cli\n\
             simple-log\nlog-file={}\npidfile={}\nuserdb={}\n",
            relay.0,
            relay.1,
            dir.path().join("turnserver.log").display(),
            dir.path().join("turnserver.pid").display(),
            dir.path().join("turndb").display()
        ),
    )
    .unwrap();
    let child = Command::new("turnserver")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    Guard(child)
}

fn log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("turnserver.log")).unwrap_or_default()
}

/// A relay port range unlikely to collide between the tests of this binary.
fn relay_range(slot: u16) -> (u16, u16) {
    let base = 40_000 + (std::process::id() % 500) as u16 * 40 + slot * 10;
    (base, base + 9)
}

/// A UDP echo peer on 127.0.0.1.
async fn echo_peer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

fn config(server: SocketAddr, transport: Transport) -> TurnClientConfig {
    let mut cfg = TurnClientConfig::new(server, transport, "alice", "secret");
    // Short retransmissions: the first requests may reach coturn before it listens.
    let mut stun = ClientConfig::default();
    stun.rto = Duration::from_millis(100);
    stun.max_sends = 4;
    stun.last_wait_multiplier = 4;
    cfg.stun = stun;
    cfg.software = Some("chorus-test".to_owned());
    cfg
}

enum Io {
    Udp(UdpSocket),
    Tcp(TcpStream, Deframer),
}

/// The test's own run loop around the core: it records how every inbound message was
/// framed and moves the core's clock with `skew`.
struct Pump {
    core: TurnClient,
    io: Io,
    server: SocketAddr,
    skew: Duration,
    events: VecDeque<Event>,
    /// First byte of each inbound message: 0x00-0x3f STUN, 0x40-0x7f ChannelData.
    inbound: Vec<u8>,
}

impl Pump {
    async fn new(core: TurnClient) -> Self {
        let server = core.config().server;
        let io = match core.config().transport {
            Transport::Udp => Io::Udp(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            Transport::Tcp => Io::Tcp(
                TcpStream::connect(server).await.unwrap(),
                Deframer::new(&Limits::default()),
            ),
        };
        Self {
            core,
            io,
            server,
            skew: Duration::ZERO,
            events: VecDeque::new(),
            inbound: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.skew
    }

    async fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            assert_eq!(t.dst, self.server);
            match &mut self.io {
                Io::Udp(s) => {
                    s.send_to(&t.payload, t.dst).await.unwrap();
                }
                Io::Tcp(s, _) => s.write_all(&t.payload).await.unwrap(),
            }
        }
        while let Some(e) = self.core.poll_event() {
            self.events.push_back(e);
        }
    }

    fn input(&mut self, bytes: &[u8]) {
        self.inbound.push(bytes.first().copied().unwrap_or(0xff));
        let now = self.now();
        let _ = self.core.handle_input(now, self.server, bytes);
    }

    /// The next event, within 10 s of real time.
    async fn next(&mut self) -> Event {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        match self.step(until, |_, _| false).await {
            Some(e) => e,
            None => panic!("no event within 10 s"),
        }
    }

    /// Runs the loop until an event (returned), `settled(core)` holds or `until` passes
    /// (both `None`). Never cancelled mid-write.
    async fn step(
        &mut self,
        until: tokio::time::Instant,
        settled: impl Fn(&TurnClient, Instant) -> bool,
    ) -> Option<Event> {
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush().await;
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if settled(&self.core, self.now()) || tokio::time::Instant::now() >= until {
                return None;
            }
            let deadline = self.core.poll_timeout().map(|t| t - self.skew);
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let mut messages = Vec::new();
            tokio::select! {
                () = async {
                    match &mut self.io {
                        Io::Udp(s) => {
                            let (n, _) = s.recv_from(&mut buf).await.unwrap();
                            messages.push(buf[..n].to_vec());
                        }
                        Io::Tcp(s, stream) => {
                            let want = stream.space().min(buf.len());
                            let n = s.read(&mut buf[..want]).await.unwrap();
                            assert!(n > 0, "coturn closed the TCP connection");
                            stream.push(&buf[..n]);
                            while let Some(m) = stream.next_message().unwrap() {
                                messages.push(m.to_vec());
                            }
                        }
                    }
                } => {}
                () = sleep => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
                () = tokio::time::sleep_until(until) => {}
            }
            for m in messages {
                self.input(&m);
            }
        }
    }

    /// Moves the core's clock to its next deadline and fires it.
    fn jump(&mut self) {
        let next = self.core.poll_timeout().expect("a deadline");
        let now = self.now();
        if next > now {
            self.skew += next - now;
        }
        let now = self.now();
        self.core.handle_timeout(now);
    }
}

/// Allocates through coturn, retrying a bounded number of times while it starts (each
/// UDP attempt ends with its transaction timeout, about a second).
async fn allocate(
    dir: &TempDir,
    server: SocketAddr,
    transport: Transport,
    seed: u64,
) -> (Pump, Event) {
    if transport == Transport::Tcp {
        let mut tries = 0;
        while TcpStream::connect(server).await.is_err() {
            tries += 1;
            assert!(
                tries < 200,
                "coturn never listened on TCP; its log:\n{}",
                log(dir)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for attempt in 0..60 {
        let mut core = TurnClient::new(
            config(server, transport),
            Box::new(SeededEntropy::new(seed + attempt)),
        )
        .unwrap();
        core.allocate(Instant::now()).unwrap();
        let mut pump = Pump::new(core).await;
        match pump.next().await {
            e @ Event::Allocated { .. } => return (pump, e),
            Event::AllocationFailed { code: None, .. } => {}
            other => panic!("allocation failed: {other:?}\ncoturn log:\n{}", log(dir)),
        }
    }
    panic!("coturn never answered; its log:\n{}", log(dir));
}

/// Sends `data` to the echo peer and waits for it to come back.
async fn echo(p: &mut Pump, peer: SocketAddr, data: &[u8]) -> u8 {
    p.core.send(peer, data).unwrap();
    let before = p.inbound.len();
    loop {
        match p.next().await {
            Event::Data {
                peer: from,
                data: got,
            } => {
                assert_eq!(from, peer);
                assert_eq!(&got[..], data);
                // The message that carried it is the latest inbound one.
                assert!(p.inbound.len() > before);
                return *p.inbound.last().unwrap();
            }
            Event::Refreshed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn full_session(transport: Transport, slot: u16) {
    let dir = TempDir::new(&format!("turn-client-{slot}"));
    let port = free_port("127.0.0.1");
    let relay = relay_range(slot);
    let _server = start_turnserver(&dir, port, relay);
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let (peer, echo_task) = echo_peer().await;

    let (mut p, allocated) = allocate(&dir, server, transport, u64::from(slot) * 100).await;
    let Event::Allocated {
        relayed,
        mapped,
        lifetime,
        ..
    } = allocated
    else {
        unreachable!()
    };
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(
        (relay.0..=relay.1).contains(&relayed[0].port()),
        "{relayed:?}"
    );
    assert_eq!(mapped.map(|m| m.ip()), Some(IpAddr::from([127, 0, 0, 1])));
    assert_eq!(lifetime, Duration::from_secs(600));

    let now = p.now();
    p.core.create_permission(now, peer.ip()).unwrap();
    assert_eq!(p.next().await, Event::PermissionCreated { ip: peer.ip() });
    // Send indication out, Data indication back (RFC 8656 §10).
    let first = echo(&mut p, peer, b"via a Send indication").await;
    assert!(
        first < 0x40,
        "a Data indication (STUN), got first byte {first:#x}"
    );

    let now = p.now();
    let channel = p.core.bind_channel(now, peer).unwrap();
    assert_eq!(p.next().await, Event::ChannelBound { peer, channel });
    // ChannelData out, ChannelData back (RFC 8656 §12).
    let first = echo(&mut p, peer, b"via ChannelData").await;
    assert_eq!(first, 0x40, "ChannelData on channel {channel:#x}");
    let odd = echo(&mut p, peer, b"odd").await; // padding over TCP
    assert_eq!(odd, 0x40);

    // Refresh the permission (240 s), the allocation (450 s) and the channel (480 s)
    // by moving the core's clock; coturn must accept each. "Settled": every request
    // was answered.
    let settled = |c: &TurnClient, _: Instant| c.pending_requests() == 0;
    let mut refreshed = false;
    while p.skew < Duration::from_secs(481) {
        p.jump();
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match p.step(until, settled).await {
                Some(Event::Refreshed { lifetime }) => {
                    assert_eq!(lifetime, Duration::from_secs(600));
                    refreshed = true;
                }
                Some(other) => panic!("unexpected {other:?}\ncoturn log:\n{}", log(&dir)),
                None => break,
            }
        }
        assert!(
            settled(&p.core, p.now()),
            "refreshes unanswered; log:\n{}",
            log(&dir)
        );
    }
    assert!(refreshed, "the allocation was refreshed");
    assert_eq!(
        p.core.channel(peer),
        Some((channel, true)),
        "the channel survived"
    );
    assert_eq!(p.core.permission(peer.ip()), Some(true));
    assert_eq!(echo(&mut p, peer, b"after the refreshes").await, 0x40);

    let now = p.now();
    p.core.close(now).unwrap();
    assert_eq!(p.next().await, Event::Closed);

    // The same through the tokio driver.
    let mut handle = TurnHandle::connect_with(
        config(server, transport),
        Box::new(SeededEntropy::new(u64::from(slot) * 100 + 99)),
    )
    .await
    .unwrap();
    assert!((relay.0..=relay.1).contains(&handle.relayed()[0].port()));
    handle.create_permission(peer.ip()).await.unwrap();
    handle.send_to(peer, b"driver: send").await.unwrap();
    let (from, data) = tokio::time::timeout(Duration::from_secs(10), handle.recv_from())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, data), (peer, Bytes::from_static(b"driver: send")));
    handle.bind_channel(peer).await.unwrap();
    handle.send_to(peer, b"driver: channel").await.unwrap();
    let (from, data) = tokio::time::timeout(Duration::from_secs(10), handle.recv_from())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, data), (peer, Bytes::from_static(b"driver: channel")));
    tokio::time::timeout(Duration::from_secs(10), handle.close())
        .await
        .unwrap()
        .unwrap();
    echo_task.abort();
}

#[tokio::test]
async fn chorus_turn_client_relays_through_coturn_over_udp() {
    if !have("turnserver") {
        return;
    }
    full_session(Transport::Udp, 0).await;
}

#[tokio::test]
async fn chorus_turn_client_relays_through_coturn_over_tcp() {
    if !have("turnserver") {
        return;
    }
    full_session(Transport::Tcp, 1).await;
}

#[tokio::test]
async fn even_port_reservation_token_gives_the_odd_port_to_a_second_allocation() {
    if !have("turnserver") {
        return;
    }
    let dir = TempDir::new("turn-client-even");
    let port = free_port("127.0.0.1");
    let relay = relay_range(2);
    let _server = start_turnserver(&dir, port, relay);
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut first, _) = allocate(&dir, server, Transport::Udp, 500).await;
    let now = first.now();
    first.core.close(now).unwrap();
    assert_eq!(first.next().await, Event::Closed);

    let mut cfg = config(server, Transport::Udp);
    cfg.even_port = Some(true);
    let mut core = TurnClient::new(cfg, Box::new(SeededEntropy::new(600))).unwrap();
    core.allocate(Instant::now()).unwrap();
    let mut even = Pump::new(core).await;
    let Event::Allocated {
        relayed,
        reservation_token,
        ..
    } = even.next().await
    else {
        panic!("EVEN-PORT allocation failed; coturn log:\n{}", log(&dir));
    };
    assert_eq!(relayed[0].port() % 2, 0, "{relayed:?}");
    let token = reservation_token.expect("a RESERVATION-TOKEN");

    let mut cfg = config(server, Transport::Udp);
    cfg.reservation_token = Some(token);
    let mut core = TurnClient::new(cfg, Box::new(SeededEntropy::new(700))).unwrap();
    core.allocate(Instant::now()).unwrap();
    let mut odd = Pump::new(core).await;
    match odd.next().await {
        Event::Allocated { relayed: r, .. } => assert_eq!(r[0].port(), relayed[0].port() + 1),
        other => panic!("{other:?}; coturn log:\n{}", log(&dir)),
    }
}

/// ICE over a real TURN relay: agent A has no host socket, only the relayed candidate
/// of an allocation on coturn ([`TurnHandle::into_relay_channel`], which creates the
/// permission for B's address when A first sends to it); B has a host candidate. The
/// pair that wins goes through coturn, and both sides say so.
#[tokio::test]
async fn ice_connects_through_a_coturn_relay() {
    use chorus_nat::driver::ice::{Signalling, connect};
    use chorus_nat::ice::{Agent, CandidateKind, IceConfig, PathKind, Role};
    use tokio::sync::mpsc;

    if !have("turnserver") {
        return;
    }
    let dir = TempDir::new("turn-client-ice");
    let port = free_port("127.0.0.1");
    let relay = relay_range(3);
    let _server = start_turnserver(&dir, port, relay);
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    // Readiness: a first allocation through the bounded retry loop.
    let (mut probe, _) = allocate(&dir, server, Transport::Udp, 800).await;
    let now = probe.now();
    probe.core.close(now).unwrap();

    let handle = TurnHandle::connect_with(
        config(server, Transport::Udp),
        Box::new(SeededEntropy::new(801)),
    )
    .await
    .unwrap();
    let channel = handle.into_relay_channel().unwrap();
    let relayed = channel.relayed;
    assert!((relay.0..=relay.1).contains(&relayed.port()));

    let (a_tx, b_rx) = mpsc::channel(64);
    let (b_tx, a_rx) = mpsc::channel(64);
    let agent = |role, seed| {
        let mut c = IceConfig::default();
        c.role = role;
        Agent::new(c, Box::new(SeededEntropy::new(seed))).unwrap()
    };
    let b_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            connect(
                agent(Role::Controlling, 1),
                vec![],
                Some(channel),
                Signalling { tx: a_tx, rx: a_rx }
            ),
            connect(
                agent(Role::Controlled, 2),
                vec![b_sock],
                None,
                Signalling { tx: b_tx, rx: b_rx }
            ),
        )
    })
    .await
    .expect("ICE finished in time");
    let (mut a, mut b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        other => panic!("ICE failed: {other:?}; coturn log:\n{}", log(&dir)),
    };
    assert_eq!((a.kind(), b.kind()), (PathKind::Relayed, PathKind::Relayed));
    assert_eq!(a.local().kind, CandidateKind::Relayed);
    assert_eq!(
        b.remote().addr,
        relayed,
        "B sees A at the coturn relayed address"
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        a.send(Bytes::from_static(&[0x80, 7])).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Bytes::from_static(&[0x80, 7]));
        b.send(Bytes::from_static(&[0x80, 8])).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), Bytes::from_static(&[0x80, 8]));
    })
    .await
    .expect("data through the relay");
}
