//! The thin tokio driver of the bootstrap procedure (feature `tokio`): it owns the UDP
//! socket, does the TCP connects the core asks for, and keeps the clock. No protocol
//! logic lives here.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_crypto::SystemEntropy;
//! use chorus_hostcache::bootstrap::{probe_reply, Bootstrap, BootstrapConfig, Transport};
//! use chorus_hostcache::driver::bootstrap;
//! use tokio::net::UdpSocket;
//!
//! // A super node on loopback that answers probes.
//! let node = UdpSocket::bind("127.0.0.1:0").await?;
//! let node_addr = node.local_addr()?;
//! tokio::spawn(async move {
//!     let mut buf = [0u8; 64];
//!     while let Ok((n, from)) = node.recv_from(&mut buf).await {
//!         if let Some(reply) = probe_reply(&buf[..n]) {
//!             let _ = node.send_to(&reply, from).await;
//!         }
//!     }
//! });
//!
//! let core = Bootstrap::new(BootstrapConfig::default(), Box::new(SystemEntropy::new()))?;
//! let socket = UdpSocket::bind("127.0.0.1:0").await?;
//! let report = bootstrap(core, &socket, vec![node_addr], vec![]).await?;
//! assert_eq!((report.addr, report.transport), (node_addr, Transport::Udp));
//! # Ok(())
//! # }
//! ```

use core::fmt;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

use crate::bootstrap::{AttemptId, Bootstrap, Event, Outcome, Transport, Unreachable};
use crate::error::Error;

/// What a successful bootstrap produced.
#[derive(Debug)]
pub struct Connected {
    /// The super node that answered.
    pub addr: SocketAddr,
    /// How.
    pub transport: Transport,
    /// The round-trip or connect time.
    pub rtt: Duration,
    /// The TCP connection, when it was reached over TCP.
    pub tcp: Option<TcpStream>,
    /// Every attempt's outcome, in order, for the host cache.
    pub attempts: Vec<(SocketAddr, Transport, Outcome)>,
}

/// Why the driver stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverError {
    /// No super node answered in any round.
    Unreachable(Unreachable),
    /// The core refused to start.
    Core(Error),
    /// The UDP socket failed.
    Io(io::Error),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(u) => write!(f, "{u}"),
            Self::Core(e) => write!(f, "bootstrap: {e}"),
            Self::Io(e) => write!(f, "bootstrap socket: {e}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreachable(u) => Some(u),
            Self::Core(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

/// Runs `core` to completion over `socket`: probes `cached` (best first) and then the
/// bootstrap `list`, falling back to TCP, in rounds, as the core decides.
///
/// # Errors
/// [`DriverError::Unreachable`] after the last round; [`DriverError::Io`] if the
/// socket fails to send or receive (ICMP "port unreachable" errors are ignored).
pub async fn bootstrap(
    mut core: Bootstrap,
    socket: &UdpSocket,
    cached: Vec<SocketAddr>,
    list: Vec<SocketAddr>,
) -> Result<Connected, DriverError> {
    core.start(now(), cached, list).map_err(DriverError::Core)?;
    let mut buf = vec![0u8; 2048];
    let mut connects: JoinSet<(AttemptId, io::Result<TcpStream>)> = JoinSet::new();
    let mut handles: HashMap<AttemptId, AbortHandle> = HashMap::new();
    let mut streams: HashMap<AttemptId, TcpStream> = HashMap::new();
    let mut attempts = Vec::new();
    loop {
        while let Some(t) = core.poll_transmit() {
            if let Err(e) = socket.send_to(&t.payload, t.dst).await {
                // An unroutable candidate is that candidate's failure, not ours.
                if !is_per_peer(&e) {
                    return Err(DriverError::Io(e));
                }
            }
        }
        while let Some(e) = core.poll_event() {
            match e {
                Event::ConnectTcp { attempt, addr } => {
                    let h =
                        connects.spawn(async move { (attempt, TcpStream::connect(addr).await) });
                    handles.insert(attempt, h);
                }
                Event::CancelTcp { attempt } => {
                    if let Some(h) = handles.remove(&attempt) {
                        h.abort();
                    }
                    streams.remove(&attempt);
                }
                Event::Attempted {
                    addr,
                    transport,
                    outcome,
                } => attempts.push((addr, transport, outcome)),
                Event::Connected {
                    addr,
                    transport,
                    attempt,
                    rtt,
                } => {
                    connects.abort_all();
                    return Ok(Connected {
                        addr,
                        transport,
                        rtt,
                        tcp: attempt.and_then(|a| streams.remove(&a)),
                        attempts,
                    });
                }
                Event::Failed(u) => return Err(DriverError::Unreachable(u)),
            }
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    // A stray or forged datagram is dropped; the core's state is unchanged.
                    let _ = core.handle_input(now(), from, buf.get(..n).unwrap_or_default());
                }
                Err(e) if is_per_peer(&e) => {}
                Err(e) => return Err(DriverError::Io(e)),
            },
            Some(joined) = connects.join_next(), if !connects.is_empty() => {
                if let Ok((attempt, result)) = joined {
                    handles.remove(&attempt);
                    let ok = result.is_ok();
                    if let Ok(stream) = result {
                        streams.insert(attempt, stream);
                    }
                    if core.handle_tcp_result(now(), attempt, ok).is_err() {
                        streams.remove(&attempt);
                    }
                }
            }
            () = wait_until(deadline) => core.handle_timeout(now()),
        }
    }
}

/// Errors that concern one destination (ICMP feedback), not the socket.
fn is_per_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
    )
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
