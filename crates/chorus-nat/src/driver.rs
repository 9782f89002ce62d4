//! The thin tokio drivers (feature `tokio`): sockets and timers around the sans-IO
//! cores, and no protocol logic.
//!
//! - [`run_client`] drives a [`Client`] over one UDP socket until every transaction
//!   has an outcome; [`run_discovery`] drives a [`Discovery`] to its report (and, when
//!   UDP is blocked, tries TCP with [`probe_tcp`]); [`run_lifetime`] drives a
//!   [`LifetimeProbe`] over its two sockets.
//! - [`run_server`] drives a [`Server`] over its UDP sockets (one per address of
//!   [`Server::addresses`]) and TCP listeners. One task owns the core; reader tasks
//!   forward datagrams and TCP messages to it over a bounded channel.
//! - [`turn_server`] drives a TURN server core over UDP and TCP, with its relay sockets;
//!   [`turn_client`] drives a TURN client allocation behind a handle; [`ice`] drives an
//!   ICE agent over host sockets, a relay and a signalling channel.

pub mod ice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Client, Event, Transport};
use crate::discovery::{Classic, Discovery, Lifetime, LifetimeProbe, Report};
use crate::server::Server;
use crate::stun::{HEADER_LEN, Message};

#[cfg(target_os = "linux")]
pub mod batch;
pub mod turn_client;
pub mod turn_server;

/// What can stop a driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverError {
    /// A socket operation failed.
    Io(std::io::Error),
    /// Every input source closed.
    Closed,
}

impl core::fmt::Display for DriverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Closed => f.write_str("all inputs closed"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Closed => None,
        }
    }
}

impl From<std::io::Error> for DriverError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// tokio's clock, so `#[tokio::test(start_paused = true)]` controls driver time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn wait_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs `core`'s outstanding transactions over `sock` until each has succeeded, failed
/// or timed out, and returns the outcomes in the order they happened.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails.
pub async fn run_client(core: &mut Client, sock: &UdpSocket) -> Result<Vec<Event>, DriverError> {
    let mut buf = vec![0u8; 2048];
    let mut events = Vec::new();
    loop {
        while let Some(t) = core.poll_transmit() {
            sock.send_to(&t.payload, t.dst).await?;
        }
        while let Some(e) = core.poll_event() {
            events.push(e);
        }
        if core.pending() == 0 {
            return Ok(events);
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                // A datagram that is not ours is dropped; the error is for logs only.
                let _ = core.handle_input(now(), from, buf.get(..n).unwrap_or(&[]));
            }
            () = wait_until(deadline) => core.handle_timeout(now()),
        }
    }
}

/// Runs an RFC 5780 discovery over `sock` (bound to the `local` address the core was
/// given) until it has a report. When UDP turns out to be blocked, the server is tried
/// over TCP ([`probe_tcp`]) and [`Report::tcp_mapped`] says what it saw.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails.
pub async fn run_discovery(core: &mut Discovery, sock: &UdpSocket) -> Result<Report, DriverError> {
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(t) = core.poll_transmit() {
            sock.send_to(&t.payload, t.dst).await?;
        }
        if let Some(mut report) = core.report() {
            if report.classic == Classic::UdpBlocked {
                report.tcp_mapped = probe_tcp(core.server(), TCP_PROBE_TIMEOUT)
                    .await
                    .ok()
                    .flatten();
            }
            return Ok(report);
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                let _ = core.handle_input(now(), from, buf.get(..n).unwrap_or(&[]));
            }
            () = wait_until(deadline) => core.handle_timeout(now()),
        }
    }
}

/// How long [`run_discovery`]'s TCP reachability probe may take.
const TCP_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// TCP reachability (for hosts whose UDP is blocked): connects to `server` and sends
/// one Binding request over the stream (RFC 8489 §6.2.2). `Ok(Some(mapped))` when the
/// server answered, `Ok(None)` when it could not be reached or did not answer within
/// `timeout`.
///
/// # Errors
/// [`DriverError::Io`] only for local failures (no entropy is not one: it uses the
/// system's).
pub async fn probe_tcp(
    server: SocketAddr,
    timeout: std::time::Duration,
) -> Result<Option<SocketAddr>, DriverError> {
    let attempt = async {
        let mut client = Client::new(
            crate::client::ClientConfig::default(),
            Box::new(chorus_crypto::SystemEntropy::new()),
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let id = client
            .start_request(
                now(),
                server,
                Transport::Tcp,
                crate::stun::Method::BINDING,
                &[],
                None,
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut stream = TcpStream::connect(server).await?;
        while let Some(t) = client.poll_transmit() {
            stream.write_all(&t.payload).await?;
        }
        let mut head = [0u8; HEADER_LEN];
        stream.read_exact(&mut head).await?;
        let len = Message::len_from_prefix(&head)
            .filter(|&l| l <= MAX_TCP_MESSAGE)
            .ok_or_else(|| std::io::Error::other("not a STUN response"))?;
        let mut msg = vec![0u8; len];
        msg[..HEADER_LEN].copy_from_slice(&head);
        stream.read_exact(&mut msg[HEADER_LEN..]).await?;
        let _ = client.handle_input(now(), server, &msg);
        Ok::<_, std::io::Error>(match client.poll_event() {
            Some(Event::Response(r)) if r.id == id && r.error_code.is_none() => r.mapped,
            _ => None,
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(mapped)) => Ok(mapped),
        // Refused, reset, closed, or silent: not reachable over TCP.
        Ok(Err(_)) | Err(_) => Ok(None),
    }
}

/// Runs an RFC 5780 §4.6 binding lifetime probe over its two sockets, `x` and `y`
/// (bound to the addresses the core was given), until it has a result. This takes
/// minutes against a real NAT: the probe waits out the binding's idle time.
///
/// # Errors
/// [`DriverError::Io`] if a socket fails.
pub async fn run_lifetime(
    core: &mut LifetimeProbe,
    x: &UdpSocket,
    y: &UdpSocket,
) -> Result<Lifetime, DriverError> {
    let (mut bx, mut by) = (vec![0u8; 2048], vec![0u8; 2048]);
    let y_addr = y.local_addr()?;
    loop {
        while let Some(t) = core.poll_transmit() {
            let sock = if t.src == Some(y_addr) { y } else { x };
            sock.send_to(&t.payload, t.dst).await?;
        }
        if let Some(result) = core.result() {
            return Ok(result);
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = x.recv_from(&mut bx) => {
                let (n, from) = r?;
                let _ = core.handle_input(now(), from, bx.get(..n).unwrap_or(&[]));
            }
            r = y.recv_from(&mut by) => {
                let (n, from) = r?;
                let _ = core.handle_input(now(), from, by.get(..n).unwrap_or(&[]));
            }
            () = wait_until(deadline) => core.handle_timeout(now()),
        }
    }
}

enum Input {
    Udp {
        local: SocketAddr,
        from: SocketAddr,
        bytes: Bytes,
    },
    Tcp {
        local: SocketAddr,
        from: SocketAddr,
        bytes: Bytes,
        reply: mpsc::Sender<Bytes>,
    },
}

/// Longest STUN message accepted over TCP before the connection is closed.
const MAX_TCP_MESSAGE: usize = 4096;

/// Serves `core` on `udp` sockets and `tcp` listeners until a socket fails. Dropping
/// (or aborting) the future stops every task it started.
///
/// Each response leaves from the UDP socket bound to its `src` (the RFC 5780 address
/// the core chose), falling back to the socket the request arrived on.
///
/// # Errors
/// [`DriverError::Io`] if sending fails, [`DriverError::Closed`] if every reader ended.
pub async fn run_server(
    mut core: Server,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
) -> Result<(), DriverError> {
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    let mut tasks = JoinSet::new();
    let mut sockets = Vec::new();
    for sock in udp {
        let sock = Arc::new(sock);
        let local = sock.local_addr()?;
        sockets.push((local, sock.clone()));
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let bytes = Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
                if tx.send(Input::Udp { local, from, bytes }).await.is_err() {
                    break;
                }
            }
        });
    }
    for listener in tcp {
        let tx = tx.clone();
        let local = listener.local_addr()?;
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, from)) = listener.accept().await {
                conns.spawn(serve_tcp(stream, local, from, tx.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
    }
    drop(tx);
    loop {
        let deadline = core.poll_timeout();
        let input = tokio::select! {
            i = rx.recv() => i,
            () = wait_until(deadline) => { core.handle_timeout(now()); continue; }
        };
        let Some(input) = input else {
            return Err(DriverError::Closed);
        };
        let (local, reply) = match input {
            Input::Udp { local, from, bytes } => {
                let _ = core.handle_input(now(), local, from, Transport::Udp, &bytes);
                (local, None)
            }
            Input::Tcp {
                local,
                from,
                bytes,
                reply,
            } => {
                let _ = core.handle_input(now(), local, from, Transport::Tcp, &bytes);
                (local, Some(reply))
            }
        };
        while let Some(t) = core.poll_transmit() {
            if let Some(reply) = &reply {
                // Full queue: the peer is not reading; drop rather than buffer.
                let _ = reply.try_send(t.payload);
                continue;
            }
            let src = t.src.unwrap_or(local);
            let sock = sockets
                .iter()
                .find(|(a, _)| *a == src)
                .or_else(|| sockets.iter().find(|(a, _)| *a == local))
                .map(|(_, s)| s.clone());
            if let Some(sock) = sock {
                // A send error for one peer (unreachable, buffer full) must not stop
                // the server.
                let _ = sock.send_to(&t.payload, t.dst).await;
            }
        }
    }
}

/// One TCP connection: cut STUN messages out of the stream by their length field
/// (RFC 8489 §6.2.2), forward them, write the replies back.
async fn serve_tcp(
    stream: TcpStream,
    local: SocketAddr,
    from: SocketAddr,
    tx: mpsc::Sender<Input>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (reply_tx, mut reply_rx) = mpsc::channel::<Bytes>(16);
    let writer = async move {
        while let Some(b) = reply_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    };
    let reader = async move {
        let mut header = [0u8; HEADER_LEN];
        loop {
            if rd.read_exact(&mut header).await.is_err() {
                break;
            }
            let Some(len) = Message::len_from_prefix(&header).filter(|l| *l <= MAX_TCP_MESSAGE)
            else {
                break;
            };
            let mut msg = vec![0u8; len];
            let (head, body) = msg.split_at_mut(HEADER_LEN.min(len));
            head.copy_from_slice(header.get(..head.len()).unwrap_or(&[]));
            if rd.read_exact(body).await.is_err() {
                break;
            }
            let input = Input::Tcp {
                local,
                from,
                bytes: Bytes::from(msg),
                reply: reply_tx.clone(),
            };
            if tx.send(input).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // as callers outside the crate must
mod tests {
    use chorus_framing::SeededEntropy;

    use super::*;
    use crate::client::ClientConfig;
    use crate::server::ServerConfig;
    use crate::stun::{Attribute, Class, Limits, Method, TransactionId};

    #[tokio::test]
    async fn client_and_server_drivers_agree_over_loopback_udp_and_tcp() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let mut cfg = ServerConfig::default();
        cfg.primary = udp_addr;
        let server = tokio::spawn(run_server(Server::new(cfg).unwrap(), vec![udp], vec![tcp]));

        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut client =
            Client::new(ClientConfig::default(), Box::new(SeededEntropy::new(4))).unwrap();
        client.start_binding(now(), udp_addr).unwrap();
        let events = run_client(&mut client, &sock).await.unwrap();
        match events.as_slice() {
            [Event::Response(r)] => assert_eq!(r.mapped, Some(sock.local_addr().unwrap())),
            other => panic!("{other:?}"),
        }

        let mut stream = TcpStream::connect(tcp_addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let req = Message::new(Class::Request, Method::BINDING, TransactionId::new([8; 12]));
        let mut out = bytes::BytesMut::new();
        req.encode(None, &mut out).unwrap();
        // Two requests in one write: the driver cuts them apart by length.
        let mut two = out.to_vec();
        two.extend_from_slice(&out);
        stream.write_all(&two).await.unwrap();
        for _ in 0..2 {
            let mut resp = vec![0u8; 32];
            stream.read_exact(&mut resp).await.unwrap();
            let m = Message::decode(&resp, &Limits::default()).unwrap();
            assert_eq!(m.attributes, vec![Attribute::XorMappedAddress(local)]);
        }
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn client_driver_times_out_on_the_paused_clock() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut client =
            Client::new(ClientConfig::default(), Box::new(SeededEntropy::new(5))).unwrap();
        let id = client
            .start_binding(now(), silent.local_addr().unwrap())
            .unwrap();
        let start = tokio::time::Instant::now();
        let events = run_client(&mut client, &sock).await.unwrap();
        assert!(matches!(events.as_slice(), [Event::TimedOut { id: i, .. }] if *i == id));
        assert_eq!(start.elapsed().as_millis(), 39_500);
        let mut buf = [0u8; 64];
        let mut received = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            silent.recv_from(&mut buf),
        )
        .await
        {
            received += 1;
        }
        assert_eq!(received, 7, "Rc = 7 requests");
        assert!(DriverError::Closed.to_string().contains("closed"));
    }
}
