//! The thin tokio driver (feature `tokio`): one task owns one [`Node`] and its UDP
//! socket; the application talks to it over bounded channels. No protocol logic
//! lives here.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run(node: chorus_index::node::Node) -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_index::driver::{drive, Command};
//! use tokio::net::UdpSocket;
//! use tokio::sync::mpsc;
//!
//! let socket = UdpSocket::bind("127.0.0.1:0").await?;
//! let (cmd_tx, cmd_rx) = mpsc::channel(16);
//! let (event_tx, mut events) = mpsc::channel(64);
//! tokio::spawn(drive(node, socket, cmd_rx, event_tx));
//! cmd_tx.send(Command::Bootstrap(vec!["192.0.2.1:33033".parse()?])).await?;
//! cmd_tx.send(Command::FindUser("alice".into())).await?;
//! while let Some(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(())
//! # }
//! ```

use core::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use chorus_crypto::cert::NodeId;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::node::{Event, Node};
use crate::record::PresenceRecord;

/// What the application asks the node to do. Lookups, searches and publications end
/// with an [`Event`]; a command the node refuses outright (too many lookups running, an
/// invalid or stale record) is dropped without one, so applications put a deadline on
/// what they wait for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// [`Node::bootstrap`] through these super nodes.
    Bootstrap(Vec<SocketAddr>),
    /// [`Node::find_user`].
    FindUser(String),
    /// [`Node::find_node`].
    FindNode(NodeId),
    /// [`Node::search`].
    Search(String),
    /// [`Node::publish`].
    Publish(Box<PresenceRecord>),
    /// [`Node::withdraw`].
    Withdraw(String),
    /// [`Node::leave`], send what it queued, and stop the driver.
    Leave,
}

/// Why the driver stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverError {
    /// The socket failed.
    Io(io::Error),
    /// The application dropped the event receiver.
    Closed,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "index socket: {e}"),
            Self::Closed => f.write_str("index event receiver closed"),
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

impl From<io::Error> for DriverError {
    fn from(e: io::Error) -> Self {
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

async fn flush(
    core: &mut Node,
    sock: &UdpSocket,
    events: &mpsc::Sender<Event>,
) -> Result<(), DriverError> {
    while let Some(t) = core.poll_transmit() {
        // A datagram the kernel refuses (unreachable peer) is a lost datagram: the
        // core's timeouts handle it.
        let _ = sock.send_to(&t.payload, t.dst).await;
    }
    while let Some(e) = core.poll_event() {
        events.send(e).await.map_err(|_| DriverError::Closed)?;
    }
    Ok(())
}

/// Runs `core` on `sock` until [`Command::Leave`], the command channel closes (the
/// node then leaves too), or an error.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails, [`DriverError::Closed`] if the event
/// receiver is dropped.
pub async fn drive(
    mut core: Node,
    sock: UdpSocket,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) -> Result<(), DriverError> {
    let mut buf = vec![0u8; 65_536];
    loop {
        flush(&mut core, &sock, &events).await?;
        let deadline = core.poll_timeout();
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    // ICMP port unreachable surfaces here on some systems: not fatal.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                    Err(e) => return Err(e.into()),
                };
                if let Some(bytes) = buf.get(..n) {
                    // Rejected datagrams leave the core unchanged; nothing to do.
                    let _ = core.handle_input(now(), from, bytes);
                }
            }
            cmd = cmds.recv() => {
                let now = now();
                match cmd {
                    Some(Command::Bootstrap(seeds)) => { let _ = core.bootstrap(now, &seeds); }
                    Some(Command::FindUser(name)) => { let _ = core.find_user(now, &name); }
                    Some(Command::FindNode(target)) => { let _ = core.find_node(now, target); }
                    Some(Command::Search(query)) => { let _ = core.search(now, &query); }
                    Some(Command::Publish(record)) => { let _ = core.publish(now, *record); }
                    Some(Command::Withdraw(name)) => core.withdraw(&name),
                    Some(Command::Leave) | None => {
                        core.leave(now);
                        flush(&mut core, &sock, &events).await?;
                        return Ok(());
                    }
                }
            }
            () = wait_until(deadline) => core.handle_timeout(now()),
        }
    }
}
