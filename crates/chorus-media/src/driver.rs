//! The thin tokio driver of a call leg (feature `tokio`): one task owns one
//! [`Session`] and its UDP socket; the application gives it PCM frames on one
//! channel and reads decoded frames from another. No protocol logic lives here.
//!
//! Loop:
//! 1. Drain the session's datagrams to the peer, its decoded frames to the output
//!    channel (with `try_send`: a slow reader loses frames, counted in
//!    [`DriverReport::pcm_dropped`], rather than stall the network), and its events.
//! 2. Wait for the first of: a datagram (only the peer's address is accepted), a PCM
//!    frame from the application (encoded and sent at once: the application's
//!    capture clock paces the sender), or the session's timeout.
//! 3. When the input channel closes, queue an RTCP BYE, keep playing out for
//!    [`DriverConfig::linger`] so the peer's last frames come out, then return.
//!
//! Time comes from tokio's clock, so `#[tokio::test(start_paused = true)]` runs a
//! whole call in virtual time.

use core::time::Duration;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::session::{Event, Session, SessionStats};

/// Why the driver stopped early.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverError {
    /// A socket operation failed.
    Io(std::io::Error),
    /// The session refused a frame from the application (wrong length).
    Session(crate::Error),
}

impl core::fmt::Display for DriverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Session(e) => write!(f, "session error: {e}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Session(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for DriverError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Driver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// How long to keep playing out after the input channel closed. Default 300 ms.
    pub linger: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(300),
        }
    }
}

/// What a finished call leg reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct DriverReport {
    /// The session's final statistics.
    pub stats: SessionStats,
    /// Decoded frames the output channel had no room for.
    pub pcm_dropped: u64,
    /// Whether the peer said BYE.
    pub remote_bye: bool,
}

/// UDP errors that say nothing about our socket: an ICMP "port unreachable" from a
/// peer that is gone is a lost datagram, not a reason to stop (Windows reports it on
/// the next call as `ConnectionReset` even on unconnected sockets, Linux as
/// `ConnectionRefused` on connected ones). Anything else is returned.
fn transient(e: std::io::Error) -> Result<(), DriverError> {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => Ok(()),
        _ => Err(e.into()),
    }
}

/// tokio's clock, so a paused test runtime controls driver time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn wait_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs `session` over `sock` with `peer` until `pcm_in` closes (plus the linger).
pub async fn run(
    mut session: Session,
    sock: UdpSocket,
    peer: SocketAddr,
    config: DriverConfig,
    mut pcm_in: mpsc::Receiver<Vec<i16>>,
    pcm_out: mpsc::Sender<Vec<i16>>,
) -> Result<DriverReport, DriverError> {
    let mut buf = vec![0u8; 2048];
    let mut report = DriverReport {
        stats: SessionStats::default(),
        pcm_dropped: 0,
        remote_bye: false,
    };
    let mut end: Option<Instant> = None;
    loop {
        while let Some(d) = session.poll_transmit() {
            if let Err(e) = sock.send_to(&d, peer).await {
                transient(e)?;
            }
        }
        while let Some(frame) = session.poll_pcm() {
            if pcm_out.try_send(frame).is_err() {
                report.pcm_dropped += 1;
            }
        }
        while let Some(e) = session.poll_event() {
            match e {
                Event::RemoteBye => report.remote_bye = true,
            }
        }
        if end.is_some_and(|e| now() >= e) {
            break;
        }
        let deadline = [session.poll_timeout(), end].into_iter().flatten().min();
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(got) => got,
                    Err(e) => {
                        transient(e)?;
                        continue;
                    }
                };
                if from == peer {
                    // A rejected datagram changes nothing (counted in the stats).
                    let _ = session.handle_input(now(), buf.get(..n).unwrap_or(&[]));
                }
            }
            frame = pcm_in.recv(), if end.is_none() => match frame {
                Some(pcm) => session.send_frame(now(), &pcm).map_err(DriverError::Session)?,
                None => {
                    session.close();
                    end = Some(now() + config.linger);
                }
            },
            () = wait_until(deadline) => session.handle_timeout(now()),
        }
    }
    report.stats = session.stats();
    Ok(report)
}
