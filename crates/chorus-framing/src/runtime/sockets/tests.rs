#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use std::collections::VecDeque;

use std::time::Instant;

use crate::Transmit;
use bytes::Bytes;
use nix::sys::socket::{setsockopt, sockopt};

use super::*;
use crate::runtime::Runtime;

/// Echoes every datagram back to its source and records what it got.
#[derive(Default)]
struct Echo {
    got: Vec<(SocketAddr, Vec<u8>)>,
    out: VecDeque<Transmit>,
}

impl DatagramCore for Echo {
    type Event = std::convert::Infallible;
    type Error = std::convert::Infallible;
    fn accepts(&self, _: SocketAddr, _: SocketAddr, _: &[u8]) -> bool {
        true
    }
    fn handle_datagram(
        &mut self,
        _: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Self::Error> {
        self.got.push((from, bytes.to_vec()));
        self.out
            .push_back(Transmit::new(from, Bytes::copy_from_slice(bytes)).with_src(local));
        Ok(())
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _: Instant) {}
}

async fn bound() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Tests send bursts before reading: never lose them to a small default queue.
    setsockopt(&s, sockopt::RcvBuf, &(4 << 20)).unwrap();
    s
}

/// One datagram, or a test failure after 5 s (never a hang).
async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(buf))
        .await
        .expect("a datagram within 5 s")
        .unwrap()
}

/// Waits for [`Sockets::readable`], or fails the test after 5 s (never a hang).
async fn readable(io: &mut Sockets) {
    tokio::time::timeout(std::time::Duration::from_secs(5), io.readable())
        .await
        .expect("a readable socket within 5 s")
        .unwrap();
}

/// A set of `n` loopback sockets and their addresses.
async fn many_sockets(n: usize) -> (Sockets, Vec<SocketAddr>) {
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    let mut addrs = Vec::new();
    for _ in 0..n {
        addrs.push(io.add(bound().await).unwrap());
    }
    (io, addrs)
}

#[tokio::test]
async fn runs_to_one_destination_arrive_as_separate_datagrams_in_order() {
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    let local = io.add(bound().await).unwrap();
    let peer = bound().await;
    let mut core = Echo::default();
    // 150 datagrams: runs of equal size, a shorter one ending a run, an empty one,
    // and a second destination in between.
    let other = bound().await;
    let mut expect = Vec::new();
    for i in 0..150u32 {
        let len = match i {
            70 => 10,
            71 => 0,
            _ => 100,
        };
        let dst = if i == 100 {
            other.local_addr().unwrap()
        } else {
            peer.local_addr().unwrap()
        };
        let mut p = vec![u8::try_from(i % 251).unwrap(); len];
        if let Some(b) = p.first_mut() {
            *b = u8::try_from(i).unwrap();
        }
        if i != 100 {
            expect.push(p.clone());
        }
        core.out.push_back(Transmit::new(dst, p).with_src(local));
    }
    assert_eq!(io.flush(&mut core).await.unwrap(), 150);
    let mut buf = [0u8; 2048];
    for want in &expect {
        let (n, _) = recv(&peer, &mut buf).await;
        assert_eq!(&buf[..n], want.as_slice());
    }
    let (n, _) = recv(&other, &mut buf).await;
    assert_eq!(n, 100);
    let stats = io.stats();
    eprintln!("gso={} {stats:?}", io.is_gso());
    assert_eq!(stats.sent, 150);
    if io.is_gso() {
        assert!(stats.send_calls < 10, "{stats:?}");
    }
}

#[tokio::test]
async fn gro_receiver_cuts_coalesced_datagrams_back_into_segments() {
    let mut config = SocketConfig::default();
    config.gro = true;
    let mut rx = Sockets::new(config).unwrap();
    let rx_addr = rx.add(bound().await).unwrap();
    let mut tx = Sockets::new(SocketConfig::default()).unwrap();
    let tx_addr = tx.add(bound().await).unwrap();
    let mut sender = Echo::default();
    for i in 0..40u8 {
        sender
            .out
            .push_back(Transmit::new(rx_addr, vec![i; 64]).with_src(tx_addr));
    }
    tx.flush(&mut sender).await.unwrap();
    let mut core = Echo::default();
    while core.got.len() < 40 {
        readable(&mut rx).await;
        rx.recv_ready(&mut core).unwrap();
    }
    for (i, (from, bytes)) in core.got.iter().enumerate() {
        assert_eq!(*from, tx_addr);
        assert_eq!(bytes, &vec![u8::try_from(i).unwrap(); 64]);
    }
    eprintln!("gro={} gso={} {:?}", rx.is_gro(), tx.is_gso(), rx.stats());
    if rx.is_gro() && tx.is_gso() {
        assert!(rx.stats().recv_calls < 40, "{:?}", rx.stats());
    }
}

#[tokio::test]
async fn removing_a_socket_drops_only_its_queued_datagrams() {
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    let a = io.add(bound().await).unwrap();
    let b = io.add(bound().await).unwrap();
    assert!(io.remove(a).is_some());
    assert!(io.remove(a).is_none());
    assert_eq!(io.addresses().collect::<Vec<_>>(), vec![b]);
    let peer = bound().await;
    let mut core = Echo::default();
    core.out
        .push_back(Transmit::new(peer.local_addr().unwrap(), vec![1; 8]).with_src(b));
    assert_eq!(io.flush(&mut core).await.unwrap(), 1);
    let mut buf = [0u8; 16];
    let (n, from) = recv(&peer, &mut buf).await;
    assert_eq!((n, from), (8, b));
    assert!(io.remove(b).is_some());
    assert!(matches!(io.readable().await, Err(DriverError::Closed)));
}

#[test]
fn rejects_out_of_bounds_config() {
    for f in [
        |c: &mut SocketConfig| c.batch = 0,
        |c: &mut SocketConfig| c.batch = MAX_BATCH + 1,
        |c: &mut SocketConfig| c.max_datagram = 10,
        |c: &mut SocketConfig| c.rounds = 0,
    ] {
        let mut c = SocketConfig::default();
        f(&mut c);
        assert!(Sockets::<UdpSocket>::new(c).is_err());
    }
}

#[tokio::test]
async fn unreachable_peers_do_not_stop_the_server() {
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    let local = io.add(bound().await).unwrap();
    // A closed port: ICMP port unreachable comes back as ECONNREFUSED on a later call.
    let closed = bound().await.local_addr().unwrap();
    let peer = bound().await;
    let mut core = Echo::default();
    for _ in 0..3 {
        core.out
            .push_back(Transmit::new(closed, vec![0; 8]).with_src(local));
        io.flush(&mut core).await.unwrap();
    }
    core.out
        .push_back(Transmit::new(peer.local_addr().unwrap(), vec![2; 8]).with_src(local));
    io.flush(&mut core).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(recv(&peer, &mut buf).await.0, 8);
}

#[tokio::test]
async fn every_socket_of_a_long_list_is_served() {
    // More sockets than tokio's per-poll budget of 128 ready operations.
    let (mut io, addrs) = many_sockets(300).await;
    let client = bound().await;
    let mut core = Echo::default();
    for round in 0..2u8 {
        for a in &addrs {
            client.send_to(&[round], a).await.unwrap();
        }
        let want = addrs.len() * usize::from(round + 1);
        while core.got.len() < want {
            readable(&mut io).await;
            io.recv_ready(&mut core).unwrap();
        }
        assert_eq!(core.got.len(), want);
        // Replies leave from the socket each datagram arrived on.
        io.flush(&mut core).await.unwrap();
        let mut from = std::collections::HashSet::new();
        let mut buf = [0u8; 8];
        for _ in 0..addrs.len() {
            let (n, a) = recv(&client, &mut buf).await;
            assert_eq!(&buf[..n], &[round]);
            from.insert(a);
        }
        assert_eq!(from.len(), addrs.len());
    }
}

/// Asks its driver for a second socket on the first datagram, and answers every
/// datagram from that second socket once it is there.
#[derive(Default)]
struct Opener {
    want_socket: bool,
    second: Option<SocketAddr>,
    out: VecDeque<Transmit>,
}

impl DatagramCore for Opener {
    type Event = std::convert::Infallible;
    type Error = std::convert::Infallible;
    fn accepts(&self, _: SocketAddr, _: SocketAddr, _: &[u8]) -> bool {
        true
    }
    fn handle_datagram(
        &mut self,
        _: Instant,
        local: SocketAddr,
        from: SocketAddr,
        b: &[u8],
    ) -> Result<(), Self::Error> {
        self.want_socket |= self.second.is_none();
        let src = self.second.unwrap_or(local);
        self.out
            .push_back(Transmit::new(from, Bytes::copy_from_slice(b)).with_src(src));
        Ok(())
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _: Instant) {}
}

#[tokio::test]
async fn the_run_loop_lets_an_adapter_open_sockets_the_core_asks_for() {
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    let first = io.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut core = Opener::default();
    let client = bound().await;
    let talk = async {
        let mut buf = [0u8; 8];
        client.send_to(b"one", first).await.unwrap();
        let (_, a) = recv(&client, &mut buf).await;
        assert_eq!(a, first);
        client.send_to(b"two", first).await.unwrap();
        let (n, b) = recv(&client, &mut buf).await;
        assert_eq!(&buf[..n], b"two");
        b
    };
    let mut rt = Runtime::new(&mut core, io);
    let serve = async {
        loop {
            rt.flush().await?;
            let (core, io) = rt.parts_mut();
            if std::mem::take(&mut core.want_socket) {
                core.second = Some(io.bind("127.0.0.1:0".parse().unwrap()).unwrap());
            }
            rt.flush().await?;
            rt.step().await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), DriverError>(())
    };
    let second = tokio::select! {
        r = serve => panic!("{r:?}"),
        b = talk => b,
    };
    drop(rt);
    assert_ne!(second, first);
    assert_eq!(Some(second), core.second);
}

#[tokio::test]
async fn datagrams_longer_than_a_buffer_are_dropped_not_cut() {
    let mut config = SocketConfig::default();
    config.max_datagram = 64;
    let mut io = Sockets::new(config).unwrap();
    let addr = io.add(bound().await).unwrap();
    let client = bound().await;
    client.send_to(&[7; 65], addr).await.unwrap();
    client.send_to(&[8; 64], addr).await.unwrap();
    let mut core = Echo::default();
    while io.stats().truncated + u64::try_from(core.got.len()).unwrap() < 2 {
        readable(&mut io).await;
        io.recv_ready(&mut core).unwrap();
    }
    assert_eq!(io.stats().truncated, 1);
    assert_eq!(core.got, vec![(client.local_addr().unwrap(), vec![8; 64])]);
}

/// Runs one step of [`Sockets::readable`] without waiting: whether a socket is
/// ready.
fn poll_once(io: &mut Sockets) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match io.poll_readable(&mut cx) {
        Poll::Ready(r) => {
            r.unwrap();
            true
        }
        Poll::Pending => false,
    }
}

#[tokio::test]
async fn a_wake_up_asks_and_reads_only_the_socket_that_received() {
    let (mut io, addrs) = many_sockets(300).await;
    // Each new socket is asked once, which registers its waker with the reactor.
    assert!(!poll_once(&mut io));
    assert_eq!(io.stats().readiness_polls, 300);
    let client = bound().await;
    let mut core = Echo::default();
    for (round, target) in [137usize, 5, 137, 299].into_iter().enumerate() {
        let before = io.stats();
        client.send_to(&[7; 40], addrs[target]).await.unwrap();
        readable(&mut io).await;
        assert_eq!(io.recv_ready(&mut core).unwrap(), 1);
        // Asked again: drained by the short batch, so it registers its waker again.
        assert!(!poll_once(&mut io));
        let after = io.stats();
        assert_eq!(
            after.readiness_polls - before.readiness_polls,
            2,
            "round {round}"
        );
        assert_eq!(after.recv_calls - before.recv_calls, 1, "round {round}");
        assert_eq!(after.received - before.received, 1, "round {round}");
        assert_eq!(core.got.len(), round + 1);
    }
    // Replies leave from the socket each datagram arrived on.
    io.flush(&mut core).await.unwrap();
    let mut buf = [0u8; 64];
    for target in [137usize, 5, 137, 299] {
        assert_eq!(recv(&client, &mut buf).await, (40, addrs[target]));
    }
}

#[tokio::test]
async fn a_socket_with_more_than_its_rounds_is_read_again_after_the_others() {
    let mut config = SocketConfig::default();
    config.batch = 4;
    config.rounds = 1;
    let mut io = Sockets::new(config).unwrap();
    let busy = io.add(bound().await).unwrap();
    let quiet = io.add(bound().await).unwrap();
    let client = bound().await;
    for i in 0..10u8 {
        client.send_to(&[i], busy).await.unwrap();
    }
    client.send_to(b"q", quiet).await.unwrap();
    let mut core = Echo::default();
    let mut reads = Vec::new();
    while core.got.len() < 11 {
        readable(&mut io).await;
        reads.push(io.recv_ready(&mut core).unwrap());
    }
    // The quiet socket is not kept waiting behind the busy one's ten datagrams.
    let quiet_at = core.got.iter().position(|(_, b)| b == b"q").unwrap();
    assert!(quiet_at <= 4, "{quiet_at} {reads:?}");
    let busy_order: Vec<u8> = core
        .got
        .iter()
        .filter(|(_, b)| b != b"q")
        .map(|(_, b)| b[0])
        .collect();
    assert_eq!(busy_order, (0..10).collect::<Vec<_>>());
}

#[test]
fn the_ready_queue_holds_a_slot_once_and_wakes_the_task_once() {
    let q = ReadyQueue::default();
    let mut out = Vec::new();
    q.drain_into(&mut out, Waker::noop());
    assert!(out.is_empty());
    assert!(q.push(3).is_some(), "the registered task is woken");
    assert!(q.push(3).is_none(), "and only by the first push");
    assert!(q.push(1).is_none());
    q.drain_into(&mut out, Waker::noop());
    assert_eq!(out, vec![3, 1]);
    // Drained slots can be queued again.
    assert!(q.push(3).is_some());
    out.clear();
    q.drain_into(&mut out, Waker::noop());
    assert_eq!(out, vec![3]);
}

#[tokio::test]
async fn a_socket_added_after_a_removal_takes_the_free_slot_and_is_served() {
    let (mut io, addrs) = many_sockets(3).await;
    // Removed while queued (never asked yet): its slot must not confuse the next one.
    assert!(io.remove(addrs[1]).is_some());
    let added = io.add(bound().await).unwrap();
    assert_eq!(
        io.addresses().collect::<Vec<_>>(),
        vec![addrs[0], added, addrs[2]]
    );
    let client = bound().await;
    let mut core = Echo::default();
    for to in [added, addrs[2], added] {
        client.send_to(b"x", to).await.unwrap();
        readable(&mut io).await;
        assert_eq!(io.recv_ready(&mut core).unwrap(), 1);
        io.flush(&mut core).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(recv(&client, &mut buf).await, (1, to));
    }
}

/// The portable path (one `recvfrom`/`sendto` per datagram): what every system but
/// Linux runs, here forced on Linux so it is tested.
fn portable() -> SocketConfig {
    let mut config = SocketConfig::default();
    config.batched = false;
    config
}

#[tokio::test]
async fn the_portable_path_echoes_a_burst_of_several_batches() {
    let mut io = Sockets::new(portable()).unwrap();
    let addr = io.add(bound().await).unwrap();
    assert!(!io.is_gso() && !io.is_gro());
    let client = bound().await;
    for i in 0..100u8 {
        client.send_to(&[i; 20], addr).await.unwrap();
    }
    let mut core = Echo::default();
    while core.got.len() < 100 {
        readable(&mut io).await;
        io.recv_ready(&mut core).unwrap();
    }
    io.flush(&mut core).await.unwrap();
    let mut buf = [0u8; 32];
    for i in 0..100u8 {
        let (n, from) = recv(&client, &mut buf).await;
        assert_eq!((&buf[..n], from), (&[i; 20][..], addr));
    }
    let stats = io.stats();
    assert_eq!(
        (stats.received, stats.sent, stats.send_calls),
        (100, 100, 100)
    );
    assert_eq!(stats.recv_calls, 100);
}

#[tokio::test]
async fn the_portable_path_drops_a_datagram_longer_than_a_buffer() {
    let mut config = portable();
    config.max_datagram = 64;
    let mut io = Sockets::new(config).unwrap();
    let addr = io.add(bound().await).unwrap();
    let client = bound().await;
    client.send_to(&[7; 65], addr).await.unwrap();
    client.send_to(&[8; 64], addr).await.unwrap();
    let mut core = Echo::default();
    while io.stats().truncated + u64::try_from(core.got.len()).unwrap() < 2 {
        readable(&mut io).await;
        io.recv_ready(&mut core).unwrap();
    }
    assert_eq!(io.stats().truncated, 1);
    assert_eq!(core.got, vec![(client.local_addr().unwrap(), vec![8; 64])]);
}

#[tokio::test]
async fn ipv6_sockets_echo_batches_and_gso_runs() {
    let Ok(s6) = UdpSocket::bind("[::1]:0").await else {
        return;
    };
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    io.add(bound().await).unwrap();
    let addr = io.add(s6).unwrap();
    let client = UdpSocket::bind("[::1]:0").await.unwrap();
    for i in 0..10u8 {
        client.send_to(&[i; 100], addr).await.unwrap();
    }
    let mut core = Echo::default();
    while core.got.len() < 10 {
        readable(&mut io).await;
        io.recv_ready(&mut core).unwrap();
    }
    io.flush(&mut core).await.unwrap();
    let mut buf = [0u8; 128];
    for i in 0..10u8 {
        let (n, from) = recv(&client, &mut buf).await;
        assert_eq!((&buf[..n], from), (&[i; 100][..], addr));
    }
}

#[tokio::test]
async fn an_ipv6_socket_read_after_an_ipv4_one_gets_whole_sender_addresses() {
    // recvmmsg leaves msg_namelen at the last address's length: headers shared
    // between families would cut IPv6 senders to 16 bytes.
    let Ok(s6) = UdpSocket::bind("[::1]:0").await else {
        return;
    };
    let mut io = Sockets::new(SocketConfig::default()).unwrap();
    let a4 = io.add(bound().await).unwrap();
    let a6 = io.add(s6).unwrap();
    let c4 = bound().await;
    let c6 = UdpSocket::bind("[::1]:0").await.unwrap();
    let mut core = Echo::default();
    for round in 0..3u8 {
        c4.send_to(&[round], a4).await.unwrap();
        let want = core.got.len() + 1;
        while core.got.len() < want {
            readable(&mut io).await;
            io.recv_ready(&mut core).unwrap();
        }
        c6.send_to(&[round], a6).await.unwrap();
        let want = core.got.len() + 1;
        while core.got.len() < want {
            readable(&mut io).await;
            io.recv_ready(&mut core).unwrap();
        }
    }
    let senders: Vec<SocketAddr> = core.got.iter().map(|(from, _)| *from).collect();
    let (c4, c6) = (c4.local_addr().unwrap(), c6.local_addr().unwrap());
    assert_eq!(senders, [c4, c6, c4, c6, c4, c6]);
}
