//! Two tokio ICE drivers on loopback: a direct host-to-host connection, and one where
//! host candidates are withheld from signalling so that only a fake relay (an
//! in-test UDP forwarder owning a "relayed" socket) connects them.
#![cfg(feature = "tokio")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chorus_framing::SeededEntropy;
use chorus_nat::driver::ice::{Connection, IceError, RelayChannel, Signalling, connect};
use chorus_nat::ice::{Agent, CandidateKind, IceConfig, PathKind, Role};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const LIMIT: Duration = Duration::from_secs(60);

fn agent(role: Role, seed: u64) -> Agent {
    let mut config = IceConfig::default();
    config.role = role;
    Agent::new(config, Box::new(SeededEntropy::new(seed))).unwrap()
}

/// Two signalling endpoints joined by forwarding tasks that drop every line for which
/// `keep` is false (a signalling server that withholds candidates).
fn signalling(tasks: &mut JoinSet<()>, keep: fn(&str) -> bool) -> (Signalling, Signalling) {
    let (a_tx, mut a_out) = mpsc::channel::<String>(64);
    let (b_tx, mut b_out) = mpsc::channel::<String>(64);
    let (to_a, a_rx) = mpsc::channel::<String>(64);
    let (to_b, b_rx) = mpsc::channel::<String>(64);
    let filter = move |text: String| -> String {
        text.split_inclusive('\n')
            .filter(|line| keep(line))
            .collect()
    };
    tasks.spawn(async move {
        while let Some(t) = a_out.recv().await {
            if to_b.send(filter(t)).await.is_err() {
                break;
            }
        }
    });
    tasks.spawn(async move {
        while let Some(t) = b_out.recv().await {
            if to_a.send(filter(t)).await.is_err() {
                break;
            }
        }
    });
    (
        Signalling { tx: a_tx, rx: a_rx },
        Signalling { tx: b_tx, rx: b_rx },
    )
}

async fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// A fake relay: owns the "relayed" socket; what the agent hands it goes out from
/// that socket, what arrives there goes to the agent.
async fn fake_relay(tasks: &mut JoinSet<()>, via_tcp: bool) -> RelayChannel {
    let sock = std::sync::Arc::new(loopback().await);
    let relayed = sock.local_addr().unwrap();
    let (to_relay, mut outgoing) = mpsc::channel::<(SocketAddr, Bytes)>(64);
    let (incoming, from_relay) = mpsc::channel::<(SocketAddr, Bytes)>(64);
    let send_sock = sock.clone();
    tasks.spawn(async move {
        while let Some((peer, bytes)) = outgoing.recv().await {
            let _ = send_sock.send_to(&bytes, peer).await;
        }
    });
    tasks.spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let bytes = Bytes::copy_from_slice(&buf[..n]);
            if incoming.send((from, bytes)).await.is_err() {
                break;
            }
        }
    });
    RelayChannel {
        relayed,
        related: "127.0.0.1:9".parse().unwrap(),
        via_tcp,
        to_relay,
        from_relay,
    }
}

async fn connect_pair(
    a: (Agent, Vec<UdpSocket>, Option<RelayChannel>, Signalling),
    b: (Agent, Vec<UdpSocket>, Option<RelayChannel>, Signalling),
) -> (Connection, Connection) {
    let (ra, rb) = tokio::time::timeout(LIMIT, async {
        tokio::join!(connect(a.0, a.1, a.2, a.3), connect(b.0, b.1, b.2, b.3))
    })
    .await
    .expect("ICE finished in time");
    (ra.unwrap(), rb.unwrap())
}

/// Data crosses both ways; each side keeps serving the agent while it waits.
async fn exchange_data(a: &mut Connection, b: &mut Connection) {
    tokio::time::timeout(LIMIT, async {
        a.send(Bytes::from_static(&[0x80, 1])).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Bytes::from_static(&[0x80, 1]));
        b.send(Bytes::from_static(&[0x80, 2])).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), Bytes::from_static(&[0x80, 2]));
    })
    .await
    .expect("data in time");
}

#[tokio::test(start_paused = true)]
async fn loopback_hosts_connect_directly() {
    let mut tasks = JoinSet::new();
    let (sa, sb) = signalling(&mut tasks, |_| true);
    let (mut a, mut b) = connect_pair(
        (
            agent(Role::Controlling, 1),
            vec![loopback().await],
            None,
            sa,
        ),
        (agent(Role::Controlled, 2), vec![loopback().await], None, sb),
    )
    .await;
    assert_eq!((a.kind(), b.kind()), (PathKind::Direct, PathKind::Direct));
    assert_eq!(a.remote().addr, b.local().addr);
    assert_eq!(b.remote().addr, a.local().addr);
    exchange_data(&mut a, &mut b).await;
}

#[tokio::test(start_paused = true)]
async fn dual_stack_hosts_prefer_ipv6() {
    let (Ok(a6), Ok(b6)) = (
        UdpSocket::bind("[::1]:0").await,
        UdpSocket::bind("[::1]:0").await,
    ) else {
        chorus_testkit::skip("no IPv6 loopback (::1)");
        return;
    };
    let mut tasks = JoinSet::new();
    let (sa, sb) = signalling(&mut tasks, |_| true);
    let (mut a, mut b) = connect_pair(
        (
            agent(Role::Controlling, 1),
            vec![loopback().await, a6],
            None,
            sa,
        ),
        (
            agent(Role::Controlled, 2),
            vec![loopback().await, b6],
            None,
            sb,
        ),
    )
    .await;
    assert_eq!((a.kind(), b.kind()), (PathKind::Direct, PathKind::Direct));
    assert!(a.local().addr.is_ipv6() && b.local().addr.is_ipv6());
    exchange_data(&mut a, &mut b).await;
}

fn no_host_lines(line: &str) -> bool {
    !line.contains(" typ host")
}

#[tokio::test(start_paused = true)]
async fn withheld_host_candidates_leave_only_the_relay() {
    let mut tasks = JoinSet::new();
    let (sa, sb) = signalling(&mut tasks, no_host_lines);
    let relay = fake_relay(&mut tasks, false).await;
    let relayed = relay.relayed;
    let (mut a, mut b) = connect_pair(
        (
            agent(Role::Controlling, 1),
            vec![loopback().await],
            Some(relay),
            sa,
        ),
        (agent(Role::Controlled, 2), vec![loopback().await], None, sb),
    )
    .await;
    assert_eq!((a.kind(), b.kind()), (PathKind::Relayed, PathKind::Relayed));
    assert_eq!(a.local().kind, CandidateKind::Relayed);
    assert_eq!(a.local().addr, relayed);
    assert_eq!(b.remote().addr, relayed);
    exchange_data(&mut a, &mut b).await;
}

#[tokio::test(start_paused = true)]
async fn a_relay_over_tcp_is_reported_as_such() {
    let mut tasks = JoinSet::new();
    let (sa, sb) = signalling(&mut tasks, no_host_lines);
    let relay = fake_relay(&mut tasks, true).await;
    let (a, b) = connect_pair(
        (
            agent(Role::Controlling, 1),
            vec![loopback().await],
            Some(relay),
            sa,
        ),
        (agent(Role::Controlled, 2), vec![loopback().await], None, sb),
    )
    .await;
    assert_eq!(
        (a.kind(), b.kind()),
        (PathKind::RelayedTcp, PathKind::RelayedTcp)
    );
}

#[tokio::test(start_paused = true)]
async fn no_path_at_all_fails_instead_of_hanging() {
    let mut tasks = JoinSet::new();
    // Nothing but credentials and the end marker reach the other side.
    let (sa, sb) = signalling(&mut tasks, |line| !line.contains("candidate:"));
    let r = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            connect(
                agent(Role::Controlling, 1),
                vec![loopback().await],
                None,
                sa
            ),
            connect(agent(Role::Controlled, 2), vec![loopback().await], None, sb),
        )
    })
    .await
    .expect("ICE gave up in time");
    assert!(matches!(r.0, Err(IceError::Failed(_))), "{:?}", r.0.err());
    assert!(matches!(r.1, Err(IceError::Failed(_))), "{:?}", r.1.err());
}
