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
//! The socket and the session's timers are chorus-framing's runtime's [`Runtime`]; time comes
//! from tokio's clock, so `#[tokio::test(start_paused = true)]` runs a whole call in
//! virtual time.

use core::time::Duration;
use std::net::SocketAddr;
use std::time::Instant;

use chorus_framing::runtime::{Runtime, SocketConfig, now, wait_until};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::session::{Event, Session, SessionStats};

/// Why the driver stopped early: chorus-framing's runtime's, as for every Chorus driver. A
/// frame the session refused (wrong length) is [`DriverError::Core`] with the
/// crate's [`Error`](crate::Error).
pub use chorus_framing::runtime::DriverError;

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

/// Runs `session` over `sock` with `peer` until `pcm_in` closes (plus the linger).
pub async fn run(
    mut session: Session,
    sock: UdpSocket,
    peer: SocketAddr,
    config: DriverConfig,
    mut pcm_in: mpsc::Receiver<Vec<i16>>,
    pcm_out: mpsc::Sender<Vec<i16>>,
) -> Result<DriverReport, DriverError> {
    session.set_peer(peer);
    let mut rt = Runtime::on_socket(session, sock, SocketConfig::endpoint())?;
    let mut report = DriverReport {
        stats: SessionStats::default(),
        pcm_dropped: 0,
        remote_bye: false,
    };
    let mut end: Option<Instant> = None;
    loop {
        rt.flush().await?;
        let session = rt.core_mut();
        while let Some(frame) = session.poll_pcm() {
            if pcm_out.try_send(frame).is_err() {
                report.pcm_dropped += 1;
            }
        }
        while let Some(e) = session.poll_event() {
            match e {
                Event::RemoteBye => {
                    tracing::info!("the peer ended the call (RTCP BYE)");
                    report.remote_bye = true;
                }
            }
        }
        if end.is_some_and(|e| now() >= e) {
            break;
        }
        tokio::select! {
            // The peer's datagrams (only its address is accepted) and the session's
            // timers.
            r = rt.step() => r?,
            frame = pcm_in.recv(), if end.is_none() => match frame {
                Some(pcm) => rt.core_mut().send_frame(now(), &pcm).map_err(DriverError::core)?,
                None => {
                    rt.core_mut().close();
                    end = Some(now() + config.linger);
                }
            },
            () = wait_until(end) => {}
        }
    }
    report.stats = rt.core().stats();
    Ok(report)
}
