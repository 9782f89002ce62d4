//! The thin tokio drivers (feature `tokio`): sockets and timers around the sans-IO
//! cores, and no protocol logic.
//!
//! - [`run_client`] drives a [`Client`] over one UDP socket until every transaction
//!   has an outcome; [`run_discovery`] drives a [`Discovery`] to its report (and, when
//!   UDP is blocked, tries TCP with [`probe_tcp`]); [`run_lifetime`] drives a
//!   [`LifetimeProbe`] over its two sockets.
//! - [`run_server`] drives a [`Server`] over its UDP sockets (one per address of
//!   [`Server::addresses`]) and TCP listeners: the UDP sockets through
//!   chorus-framing's runtime's batched [`Sockets`], TCP messages from reader tasks over a
//!   bounded channel.
//!
//! Every loop here is chorus-framing's runtime's [`Runtime`] (one error type, one clock, one
//! rule for ICMP errors), with what the core needs besides datagrams around it.
//! - [`turn_server`] drives a TURN server core over UDP and TCP, with its relay sockets;
//!   [`turn_client`] drives a TURN client allocation behind a handle; [`ice`] drives an
//!   ICE agent over host sockets, a relay and a signalling channel.

pub mod ice;

use std::net::SocketAddr;

use bytes::Bytes;
use chorus_framing::runtime::{Runtime, SocketConfig, Sockets, now, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Client, Event, Transport};
use crate::discovery::{Classic, Discovery, Lifetime, LifetimeProbe, Report};
use crate::server::Server;
use crate::stun::{HEADER_LEN, Message};

pub mod turn_client;
pub mod turn_server;

/// Every driver's error: the one of chorus-framing's runtime.
pub use chorus_framing::runtime::DriverError;

/// A set holding the caller's sockets, for an endpoint's few datagrams.
fn borrowed<'a>(socks: &[&'a UdpSocket]) -> Result<Sockets<&'a UdpSocket>, DriverError> {
    let mut set = Sockets::new(SocketConfig::endpoint())?;
    for s in socks {
        set.add(*s)?;
    }
    Ok(set)
}

/// Runs `core`'s outstanding transactions over `sock` until each has succeeded, failed
/// or timed out, and returns the outcomes in the order they happened.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails.
pub async fn run_client(core: &mut Client, sock: &UdpSocket) -> Result<Vec<Event>, DriverError> {
    let mut rt = Runtime::new(core, borrowed(&[sock])?);
    let mut events = Vec::new();
    loop {
        rt.flush().await?;
        events.extend(std::iter::from_fn(|| rt.core_mut().poll_event()));
        if rt.core().pending() == 0 {
            return Ok(events);
        }
        rt.step().await?;
    }
}

/// Runs an RFC 5780 discovery over `sock` (bound to the `local` address the core was
/// given) until it has a report. When UDP turns out to be blocked, the server is tried
/// over TCP ([`probe_tcp`]) and [`Report::tcp_mapped`] says what it saw.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails.
pub async fn run_discovery(core: &mut Discovery, sock: &UdpSocket) -> Result<Report, DriverError> {
    let server = core.server();
    let mut rt = Runtime::new(core, borrowed(&[sock])?);
    loop {
        rt.flush().await?;
        if let Some(mut report) = rt.core().report() {
            if report.classic == Classic::UdpBlocked {
                report.tcp_mapped = probe_tcp(server, TCP_PROBE_TIMEOUT).await.ok().flatten();
            }
            return Ok(report);
        }
        rt.step().await?;
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
    // Each transmit names its socket (X or Y) in `src`.
    let mut rt = Runtime::new(core, borrowed(&[x, y])?);
    loop {
        rt.flush().await?;
        if let Some(result) = rt.core().result() {
            return Ok(result);
        }
        rt.step().await?;
    }
}

/// A STUN message read from a TCP connection, and where its replies go.
struct TcpInput {
    local: SocketAddr,
    from: SocketAddr,
    bytes: Bytes,
    reply: mpsc::Sender<Bytes>,
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
    core: Server,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
) -> Result<(), DriverError> {
    let mut sockets = Sockets::new(SocketConfig::default())?;
    for sock in udp {
        sockets.add(sock)?;
    }
    let (tx, mut rx) = mpsc::channel::<TcpInput>(1024);
    let mut tasks = JoinSet::new();
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
    let has_udp = !sockets.is_empty();
    let mut rt = Runtime::new(core, sockets);
    loop {
        rt.flush().await?;
        let deadline = rt.core().poll_timeout();
        tokio::select! {
            r = rt.step(), if has_udp => r?,
            () = wait_until(deadline), if !has_udp => rt.core_mut().handle_timeout(now()),
            input = rx.recv() => {
                let Some(TcpInput { local, from, bytes, reply }) = input else {
                    if has_udp {
                        // No TCP listener (or every one failed): UDP goes on.
                        return rt.run().await;
                    }
                    return Err(DriverError::Closed);
                };
                let core = rt.core_mut();
                let _ = core.handle_input(now(), local, from, Transport::Tcp, &bytes);
                // The answer goes back on the stream it came from.
                while let Some(t) = core.poll_transmit() {
                    // Full queue: the peer is not reading; drop rather than buffer.
                    let _ = reply.try_send(t.payload);
                }
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
    tx: mpsc::Sender<TcpInput>,
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
            let input = TcpInput {
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
