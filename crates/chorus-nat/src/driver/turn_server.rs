//! The tokio driver of the TURN server core: UDP and TCP listeners, relay sockets
//! opened and closed as the core asks, and nothing else.
//!
//! One task owns the [`TurnServer`] and, in one [`Sockets`] set of chorus-framing's runtime, its
//! listening and relay UDP sockets: batched system calls on Linux, and readiness per
//! socket, so a wake-up costs O(sockets that became readable), not O(allocations).
//! TCP clients ([`run`]) are served by a reader task per connection that forwards its
//! messages over a bounded channel: streams are cut into STUN messages (by the
//! header's length) and ChannelData messages (by their length, padded to four bytes,
//! RFC 8656 §12.5).
//!
//! ```
//! use chorus_crypto::SystemEntropy;
//! use chorus_nat::driver::turn_server;
//! use chorus_nat::turn::server::StaticUsers;
//! use chorus_nat::{TurnConfig, TurnServer};
//! use tokio::net::{TcpListener, UdpSocket};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let mut users = StaticUsers::new("example.org");
//! users.add("alice", "secret");
//! let mut config = TurnConfig::default();
//! config.realm = "example.org".into();
//! let core = TurnServer::new(config, Box::new(users), Box::new(SystemEntropy::new()))?;
//! let udp = UdpSocket::bind("127.0.0.1:0").await?;
//! let tcp = TcpListener::bind("127.0.0.1:0").await?;
//! let server = turn_server::spawn(core, vec![udp], vec![tcp]);
//! // ... serve clients, then:
//! server.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use chorus_framing::runtime::{Runtime, SocketConfig, Sockets, now};
use chorus_framing::{DatagramCore, Transmit};

use super::DriverError;
use crate::TurnServer;
use crate::client::Transport;
use crate::stun::{HEADER_LEN, Message};
use crate::turn::channel_data::{ChannelData, is_channel_data};
use crate::turn::server::Event;

/// Inputs queued for the core at most; readers wait when it is full.
const INPUT_QUEUE: usize = 4096;
/// Inputs handled per wake-up before the outputs are sent. Bounded by the core's
/// transmit queue (4096 by default), which one batch cannot fill.
const BATCH: usize = 64;
/// TCP connections served at once; further ones are closed on accept.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Outgoing messages queued per TCP connection; more are dropped (the client is not
/// reading).
const TCP_QUEUE: usize = 256;

/// What TCP connections tell the core's task.
enum Input {
    TcpOpened {
        local: SocketAddr,
        from: SocketAddr,
        reply: mpsc::Sender<Bytes>,
    },
    Tcp {
        local: SocketAddr,
        from: SocketAddr,
        bytes: Bytes,
    },
    TcpClosed {
        local: SocketAddr,
        from: SocketAddr,
    },
}

/// A running server started by [`spawn`].
#[derive(Debug)]
pub struct TurnServerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), DriverError>>,
}

impl TurnServerHandle {
    /// Stops the server (closing every socket and connection) and returns how it
    /// ended.
    ///
    /// # Errors
    /// The error that had stopped it already, or [`DriverError::Closed`] if its task
    /// panicked or was cancelled.
    pub async fn shutdown(self) -> Result<(), DriverError> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Err(DriverError::Closed))
    }

    /// Whether the server stopped by itself (a socket failed).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Runs `core` on a new task over `udp` sockets and `tcp` listeners (the addresses
/// clients use) until [`TurnServerHandle::shutdown`]. Must be called within a tokio
/// runtime.
pub fn spawn(core: TurnServer, udp: Vec<UdpSocket>, tcp: Vec<TcpListener>) -> TurnServerHandle {
    let (stop, rx) = oneshot::channel();
    let task = tokio::spawn(run(core, udp, tcp, async move {
        let _ = rx.await;
    }));
    TurnServerHandle { stop, task }
}

/// Serves `core` until `shutdown` completes or a listening socket fails; dropping the
/// future stops every task it started and closes every socket.
///
/// # Errors
/// [`DriverError::Io`] if a socket fails.
pub async fn run(
    core: TurnServer,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DriverError> {
    run_with(core, udp, tcp, SocketConfig::default(), shutdown).await
}

/// [`run`] for UDP clients only, with `config` for the sockets (batch sizes, GSO,
/// receive buffers), until a socket fails.
///
/// # Errors
/// [`DriverError::Io`] if a socket fails or `config` is invalid.
pub async fn run_batched(
    core: TurnServer,
    udp: Vec<UdpSocket>,
    config: SocketConfig,
) -> Result<(), DriverError> {
    run_with(core, udp, Vec::new(), config, std::future::pending()).await
}

/// The server core with its TCP replies set aside: the runtime sends the UDP ones,
/// the loop hands the TCP ones to their connections.
struct Split {
    core: TurnServer,
    tcp: Vec<Transmit>,
}

impl DatagramCore for Split {
    type Event = Event;
    type Error = crate::Error;

    fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        self.core.accepts(local, from, bytes)
    }

    fn handle_datagram(
        &mut self,
        now: std::time::Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), crate::Error> {
        self.core
            .handle_input(now, local, from, Transport::Udp, bytes)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            match self.core.poll_transmit()? {
                (Transport::Udp, t) => return Some(t),
                (Transport::Tcp, t) => self.tcp.push(t),
            }
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.core.poll_timeout()
    }

    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.core.handle_timeout(now);
    }
}

async fn run_with(
    core: TurnServer,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    config: SocketConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DriverError> {
    let mut sockets = Sockets::new(config)?;
    for sock in udp {
        sockets.add(sock)?;
    }
    // `tx` is held here, so the channel never closes while we run.
    let (tx, mut rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let mut tasks = JoinSet::new();
    for listener in tcp {
        let local = listener.local_addr()?;
        tasks.spawn(accept(listener, local, tx.clone()));
    }
    let mut rt = Runtime::new(
        Split {
            core,
            tcp: Vec::new(),
        },
        sockets,
    );
    let mut conns: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Bytes>> = HashMap::new();
    tokio::pin!(shutdown);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Relay sockets are bound before anything else is sent, so that a request
        // right behind an Allocate finds the allocation complete.
        handle_events(&mut rt);
        rt.flush().await?;
        for t in rt.core_mut().tcp.drain(..) {
            let src = t.src.unwrap_or(t.dst);
            if let Some(reply) = conns.get(&(src, t.dst)) {
                // Full queue: the client is not reading; drop, as UDP would.
                let _ = reply.try_send(t.payload);
            }
        }
        handle_events(&mut rt);
        tokio::select! {
            biased;
            () = &mut shutdown => {
                // Wait for the TCP tasks to end so every socket is closed on return.
                tasks.shutdown().await;
                return Ok(());
            }
            r = rt.step() => r?,
            _ = rx.recv_many(&mut batch, BATCH) => {
                let t = now();
                for input in batch.drain(..) {
                    handle_events(&mut rt);
                    let core = &mut rt.core_mut().core;
                    match input {
                        Input::TcpOpened { local, from, reply } => {
                            conns.insert((local, from), reply);
                        }
                        Input::Tcp { local, from, bytes } => {
                            let _ = core.handle_input(t, local, from, Transport::Tcp, &bytes);
                        }
                        Input::TcpClosed { local, from } => {
                            conns.remove(&(local, from));
                            core.handle_connection_closed(local, from);
                        }
                    }
                }
            }
        }
    }
}

/// Binds and closes relay sockets as the core asks, reporting each bind.
fn handle_events(rt: &mut Runtime<Split>) {
    let (split, sockets) = rt.parts_mut();
    while let Some(event) = split.core.poll_event() {
        match event {
            Event::OpenRelay(addr) => {
                let bound = sockets.bind(addr).is_ok();
                // Only an address no allocation waits for is refused: close it again.
                if split.core.handle_relay_bound(now(), addr, bound).is_err() && bound {
                    sockets.remove(addr);
                }
            }
            Event::CloseRelay(addr) => {
                sockets.remove(addr);
            }
        }
    }
}

async fn accept(listener: TcpListener, local: SocketAddr, tx: mpsc::Sender<Input>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            // Out of file descriptors, typically: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_TCP_CONNECTIONS {
            drop(stream);
            continue;
        }
        conns.spawn(serve_tcp(stream, local, from, tx.clone()));
    }
}

/// The length of the message at the start of `buf` (STUN or padded ChannelData), if
/// its header is there; `Err` if the stream is not TURN.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if is_channel_data(first) {
        return Ok(ChannelData::len_from_prefix(buf, Transport::Tcp));
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    Message::len_from_prefix(buf).map(Some).ok_or(())
}

async fn serve_tcp(
    stream: TcpStream,
    local: SocketAddr,
    from: SocketAddr,
    tx: mpsc::Sender<Input>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (reply_tx, mut reply_rx) = mpsc::channel::<Bytes>(TCP_QUEUE);
    if tx
        .send(Input::TcpOpened {
            local,
            from,
            reply: reply_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = async move {
        while let Some(b) = reply_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    };
    let tx2 = tx.clone();
    let reader = async move {
        let mut buf = BytesMut::with_capacity(8192);
        loop {
            loop {
                match frame_len(&buf) {
                    Ok(Some(len)) if buf.len() >= len => {
                        let bytes = buf.split_to(len).freeze();
                        if tx2.send(Input::Tcp { local, from, bytes }).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => break,
                    Err(()) => return,
                }
            }
            // Room for the next read; a frame is at most 20 + 65,535 bytes, so the
            // buffer never holds more than one partial frame and one read.
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(HEADER_LEN + 8192);
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    let _ = tx.send(Input::TcpClosed { local, from }).await;
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use std::time::Duration;

    use chorus_framing::SeededEntropy;

    use super::*;
    use crate::TurnConfig;
    use crate::stun::{Attribute, Class, Key, Limits, Method, PasswordAlgorithm, TransactionId};
    use crate::turn::server::StaticUsers;

    const T: Duration = Duration::from_secs(10);

    fn core(seed: u64) -> TurnServer {
        let mut cfg = TurnConfig::default();
        // Above Linux's ephemeral range, so other tests' sockets do not collide.
        cfg.relay_ports = 61000..=65535;
        cfg.realm = "example.org".into();
        cfg.allow_loopback_peers = true;
        let mut users = StaticUsers::new("example.org");
        users.add("alice", "secret");
        TurnServer::new(cfg, Box::new(users), Box::new(SeededEntropy::new(seed))).unwrap()
    }

    /// Encodes a request; authenticated when `nonce` is given.
    fn request(method: Method, id: u8, attrs: &[Attribute<'_>], nonce: Option<&str>) -> BytesMut {
        let mut m = Message::new(Class::Request, method, TransactionId::new([id; 12]));
        m.attributes.extend_from_slice(attrs);
        if let Some(n) = nonce {
            m.attributes.push(Attribute::Username("alice"));
            m.attributes.push(Attribute::Realm("example.org"));
            m.attributes.push(Attribute::Nonce(n));
            m.message_integrity = true;
        }
        let key = Key::long_term("alice", "example.org", "secret", PasswordAlgorithm::Md5);
        let mut w = BytesMut::new();
        m.encode(Some(&key), &mut w).unwrap();
        w
    }

    async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
        let mut head = [0u8; 4];
        tokio::time::timeout(T, s.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        let len = if is_channel_data(head[0]) {
            ChannelData::len_from_prefix(&head, Transport::Tcp).unwrap()
        } else {
            Message::len_from_prefix(&head).unwrap()
        };
        let mut rest = vec![0u8; len - 4];
        tokio::time::timeout(T, s.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let mut all = head.to_vec();
        all.extend(rest);
        all
    }

    /// Allocates (600 s) over UDP from a fresh socket; the relayed address.
    async fn allocate_udp(server: SocketAddr) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let alloc = [Attribute::RequestedTransport(17), Attribute::Lifetime(600)];
        let mut nonce = None;
        for id in 1..=2 {
            let req = request(Method::ALLOCATE, id, &alloc, nonce.as_deref());
            sock.send_to(&req, server).await.unwrap();
            let mut buf = vec![0u8; 2048];
            let (n, _) = tokio::time::timeout(T, sock.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let m = Message::decode(&buf[..n], &Limits::default()).unwrap();
            if nonce.is_some() {
                assert_eq!(m.class, Class::Success, "{m:?}");
                return m
                    .find(|a| match a {
                        Attribute::XorRelayedAddress(x) => Some(*x),
                        _ => None,
                    })
                    .unwrap();
            }
            nonce = m.find(|a| match a {
                Attribute::Nonce(x) => Some(x.to_string()),
                _ => None,
            });
        }
        panic!("no nonce in the first answer");
    }

    /// Four consecutive ports of which the first three are held by sockets of ours
    /// (another process, as far as the server can tell) and the last is free.
    fn three_held_one_free() -> (std::net::SocketAddr, Vec<std::net::UdpSocket>) {
        for base in (33_000..34_000u16).step_by(4) {
            let held: Vec<_> = (base..base + 3)
                .filter_map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).ok())
                .collect();
            let free = SocketAddr::from(([127, 0, 0, 1], base + 3));
            if held.len() == 3 && std::net::UdpSocket::bind(free).is_ok() {
                return (free, held);
            }
        }
        panic!("no four consecutive ports in 33000-33999 to test with");
    }

    #[tokio::test]
    async fn a_relay_port_held_by_another_process_is_skipped() {
        let (free, _held) = three_held_one_free();
        let mut cfg = TurnConfig::default();
        cfg.relay_ports = free.port() - 3..=free.port();
        cfg.realm = "example.org".into();
        let mut users = StaticUsers::new("example.org");
        users.add("alice", "secret");
        let core = TurnServer::new(cfg, Box::new(users), Box::new(SeededEntropy::new(7))).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let server = spawn(core, vec![udp], vec![]);
        // Whichever port the pool draws first, the allocation ends on the free one.
        assert_eq!(allocate_udp(addr).await, free);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn relays_over_tcp_with_padded_channel_data_and_stops_on_shutdown() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let server = spawn(core(5), vec![udp], vec![tcp]);
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = peer.local_addr().unwrap();

        let mut s = TcpStream::connect(addr).await.unwrap();
        let alloc = [Attribute::RequestedTransport(17)];
        s.write_all(&request(Method::ALLOCATE, 1, &alloc, None))
            .await
            .unwrap();
        let r = read_frame(&mut s).await;
        let m = Message::decode(&r, &Limits::default()).unwrap();
        let nonce = m
            .find(|a| match a {
                Attribute::Nonce(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap();
        // Allocate and ChannelBind in one write: the driver cuts them apart.
        let mut two = request(Method::ALLOCATE, 2, &alloc, Some(&nonce));
        two.extend_from_slice(&request(
            Method::CHANNEL_BIND,
            3,
            &[
                Attribute::ChannelNumber(0x4000),
                Attribute::XorPeerAddress(peer_addr),
            ],
            Some(&nonce),
        ));
        s.write_all(&two).await.unwrap();
        let r = read_frame(&mut s).await;
        let m = Message::decode(&r, &Limits::default()).unwrap();
        assert_eq!(m.class, Class::Success, "{m:?}");
        let relayed = m
            .find(|a| match a {
                Attribute::XorRelayedAddress(x) => Some(*x),
                _ => None,
            })
            .unwrap();
        let r = read_frame(&mut s).await;
        assert_eq!(
            Message::decode(&r, &Limits::default()).unwrap().class,
            Class::Success
        );

        // Client -> peer: padded ChannelData of 5 bytes.
        s.write_all(b"\x40\x00\x00\x05hello\0\0\0").await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(T, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], relayed));
        // Peer -> client: padded ChannelData.
        peer.send_to(b"world!", relayed).await.unwrap();
        assert_eq!(read_frame(&mut s).await, b"\x40\x00\x00\x06world!\0\0");

        server.shutdown().await.unwrap();
        // The relay socket is closed with the server: its port can be bound again.
        assert!(UdpSocket::bind(relayed).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_allocation_closes_its_relay_socket() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let server = spawn(core(6), vec![udp], vec![]);
        let relayed = allocate_udp(addr).await;
        // Bound by the driver while the allocation lives ...
        assert!(UdpSocket::bind(relayed).await.is_err());
        // ... and released once it expires (600 s on the paused clock).
        tokio::time::sleep(Duration::from_secs(602)).await;
        let mut rebound = None;
        for _ in 0..100 {
            if let Ok(s) = UdpSocket::bind(relayed).await {
                rebound = Some(s);
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(rebound.is_some(), "relay socket still open after expiry");
        assert!(!server.is_finished());
        server.shutdown().await.unwrap();
    }

    #[test]
    fn frames_are_cut_by_stun_and_channel_data_lengths() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00]), Ok(None));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(frame_len(&[0xc0, 0x01, 0x00, 0x08]), Err(()));
    }
}
