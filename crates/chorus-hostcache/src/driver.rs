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

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chorus_framing::Redacted;
use chorus_framing::runtime::{Runtime, SocketConfig, Sockets, now};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

#[cfg(doc)]
use crate::bootstrap::Unreachable;
use crate::bootstrap::{AttemptId, Bootstrap, Event, Outcome, Transport};
#[cfg(doc)]
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

/// Why the driver stopped: chorus-framing's runtime's, as for every Chorus driver. No super
/// node answering is [`DriverError::Core`] with an [`Unreachable`] report (downcast
/// it); the core refusing to start is `Core` with the crate's [`Error`].
pub use chorus_framing::runtime::DriverError;

/// Runs `core` to completion over `socket`: probes `cached` (best first) and then the
/// bootstrap `list`, falling back to TCP, in rounds, as the core decides.
///
/// # Errors
/// [`DriverError::Core`] with the [`Unreachable`] report after the last round, or the
/// core's [`Error`] if it refused to start; [`DriverError::Io`] if the socket fails to
/// send or receive (ICMP errors about one candidate are that candidate's failure).
pub async fn bootstrap(
    mut core: Bootstrap,
    socket: &UdpSocket,
    cached: Vec<SocketAddr>,
    list: Vec<SocketAddr>,
) -> Result<Connected, DriverError> {
    core.start(now(), cached, list).map_err(DriverError::core)?;
    let mut sockets = Sockets::new(SocketConfig::endpoint())?;
    sockets.add(socket)?;
    let mut rt = Runtime::new(core, sockets);
    let mut connects: JoinSet<(AttemptId, io::Result<TcpStream>)> = JoinSet::new();
    let mut handles: HashMap<AttemptId, AbortHandle> = HashMap::new();
    let mut streams: HashMap<AttemptId, TcpStream> = HashMap::new();
    let mut attempts = Vec::new();
    loop {
        // An unroutable candidate is that candidate's failure, not ours.
        rt.flush().await?;
        while let Some(e) = rt.core_mut().poll_event() {
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
                    tracing::info!(
                        node = %Redacted(addr),
                        ?transport,
                        ms = rtt.as_millis(),
                        "bootstrap reached a super node"
                    );
                    connects.abort_all();
                    return Ok(Connected {
                        addr,
                        transport,
                        rtt,
                        tcp: attempt.and_then(|a| streams.remove(&a)),
                        attempts,
                    });
                }
                Event::Failed(u) => {
                    tracing::warn!(
                        rounds = u.rounds,
                        tried = u.tried.len(),
                        "no super node reachable"
                    );
                    return Err(DriverError::core(u));
                }
            }
        }
        tokio::select! {
            r = rt.step() => r?,
            Some(joined) = connects.join_next(), if !connects.is_empty() => {
                if let Ok((attempt, result)) = joined {
                    handles.remove(&attempt);
                    let ok = result.is_ok();
                    if let Ok(stream) = result {
                        streams.insert(attempt, stream);
                    }
                    if rt.core_mut().handle_tcp_result(now(), attempt, ok).is_err() {
                        streams.remove(&attempt);
                    }
                }
            }
        }
    }
}
