//! The one tokio runtime of Chorus (feature `runtime`): every sans-IO datagram core
//! ([`DatagramCore`]) runs on it, whatever crate it comes from.
//!
//! - [`Sockets`]: a set of UDP sockets read and written in batches (`recvmmsg`,
//!   `sendmmsg`, UDP GSO and optionally GRO on Linux; one `recvfrom`/`sendto` per
//!   datagram on the portable path), with readiness tracked per socket.
//! - [`Runtime`]: one core on one socket set, the only run loop: [`Runtime::run`] for
//!   a server, [`Runtime::drive`] for a core an application commands over bounded
//!   channels, [`Runtime::step`] inside an adapter's own `select!`.
//! - One [`DriverError`], one clock ([`now`], [`wait_until`]), one ICMP rule
//!   ([`is_peer_error`]); peer addresses in its logs go through
//!   [`Redacted`](crate::Redacted).
//!
//! Each protocol crate's `driver` module is a thin adapter over this: typed commands
//! and events, and whatever else its core asks of the system (a TCP connect, a relay
//! socket).
//!
//! ```
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//! use std::time::Instant;
//!
//! use chorus_framing::{DatagramCore, Transmit};
//! use chorus_framing::runtime::{Runtime, SocketConfig};
//! use tokio::net::UdpSocket;
//!
//! /// Answers every datagram with its length.
//! #[derive(Default)]
//! struct Length(Vec<Transmit>);
//!
//! impl DatagramCore for Length {
//!     type Event = Infallible;
//!     type Error = Infallible;
//!     fn accepts(&self, _: SocketAddr, _: SocketAddr, _: &[u8]) -> bool {
//!         true
//!     }
//!     fn handle_datagram(
//!         &mut self,
//!         _: Instant,
//!         local: SocketAddr,
//!         from: SocketAddr,
//!         bytes: &[u8],
//!     ) -> Result<(), Infallible> {
//!         let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
//!         self.0.push(Transmit::new(from, len.to_be_bytes().to_vec()).with_src(local));
//!         Ok(())
//!     }
//!     fn poll_transmit(&mut self) -> Option<Transmit> {
//!         self.0.pop()
//!     }
//!     fn poll_event(&mut self) -> Option<Infallible> {
//!         None
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> {
//!         None
//!     }
//!     fn handle_timeout(&mut self, _: Instant) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let socket = UdpSocket::bind("127.0.0.1:0").await?;
//! let server = socket.local_addr()?;
//! let mut runtime = Runtime::on_socket(Length::default(), socket, SocketConfig::default())?;
//! let serving = tokio::spawn(async move { runtime.run().await });
//!
//! let client = UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"hello", server).await?;
//! let mut reply = [0u8; 4];
//! let (n, from) = client.recv_from(&mut reply).await?;
//! assert_eq!((n, from, u32::from_be_bytes(reply)), (4, server, 5));
//! serving.abort();
//! # Ok(())
//! # }
//! ```
mod error;
mod run;
pub mod sockets;

use std::time::Instant;

pub use crate::DatagramCore;
pub use error::{DriverError, is_peer_error};
pub use run::{Flow, Runtime};
pub use sockets::{MAX_BATCH, SocketConfig, SocketStats, Sockets};

/// The drivers' clock: tokio's, so `#[tokio::test(start_paused = true)]` runs a core
/// in virtual time.
#[must_use]
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Waits until `deadline` (tokio's clock), or forever for `None`: the branch of an
/// adapter's `select!` that fires a core's timer.
pub async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
