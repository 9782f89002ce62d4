//! The thin tokio driver (feature `tokio`): one task owns one [`Node`] and its UDP
//! socket; the application talks to it over bounded channels. No protocol logic
//! lives here.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run(node: chorus_index::node::Node) -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_index::driver::{drive, Command, DriverEvent};
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
//!     match event {
//!         DriverEvent::Node(event) => println!("{event:?}"),
//!         // E.g. too many lookups running: nothing more will come of that command.
//!         DriverEvent::Refused { command, error } => eprintln!("{command:?}: {error}"),
//!         _ => {}
//!     }
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

use crate::Error;
use crate::node::{Event, Node};
use crate::record::PresenceRecord;

/// What the application asks the node to do. Lookups, searches and publications end
/// with an [`Event`]; a command the node refuses outright (too many lookups running, an
/// invalid or stale record, the node has left) comes back as
/// [`DriverEvent::Refused`] instead, in the order the commands were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What the driver reports on its event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverEvent {
    /// Something the node reported.
    Node(Event),
    /// The node refused `command` (nothing more will come of it): `error` says why,
    /// e.g. [`Limit::TooManyLookups`](crate::Limit::TooManyLookups), a record that
    /// does not verify, [`UsageError::Left`](crate::UsageError::Left).
    Refused {
        /// The command, as sent.
        command: Command,
        /// Why the node refused it.
        error: Error,
    },
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
    events: &mpsc::Sender<DriverEvent>,
) -> Result<(), DriverError> {
    while let Some(t) = core.poll_transmit() {
        // A datagram the kernel refuses (unreachable peer) is a lost datagram: the
        // core's timeouts handle it.
        let _ = sock.send_to(&t.payload, t.dst).await;
    }
    while let Some(e) = core.poll_event() {
        events
            .send(DriverEvent::Node(e))
            .await
            .map_err(|_| DriverError::Closed)?;
    }
    Ok(())
}

/// Hands one command (not [`Command::Leave`]) to the core.
fn apply(core: &mut Node, now: Instant, cmd: &Command) -> Result<(), Error> {
    match cmd {
        Command::Bootstrap(seeds) => core.bootstrap(now, seeds),
        Command::FindUser(name) => core.find_user(now, name).map(drop),
        Command::FindNode(target) => core.find_node(now, *target).map(drop),
        Command::Search(query) => core.search(now, query).map(drop),
        Command::Publish(record) => core.publish(now, (**record).clone()).map(drop),
        Command::Withdraw(name) => {
            core.withdraw(name);
            Ok(())
        }
        Command::Leave => Ok(()),
    }
}

/// Runs `core` on `sock` until [`Command::Leave`], the command channel closes (the
/// node then leaves too), or an error. Node events and refused commands go to
/// `events`.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails, [`DriverError::Closed`] if the event
/// receiver is dropped.
pub async fn drive(
    mut core: Node,
    sock: UdpSocket,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<DriverEvent>,
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
                    Some(Command::Leave) | None => {
                        core.leave(now);
                        flush(&mut core, &sock, &events).await?;
                        return Ok(());
                    }
                    Some(command) => {
                        if let Err(error) = apply(&mut core, now, &command) {
                            // What the core queued before refusing goes out first.
                            flush(&mut core, &sock, &events).await?;
                            events
                                .send(DriverEvent::Refused { command, error })
                                .await
                                .map_err(|_| DriverError::Closed)?;
                        }
                    }
                }
            }
            () = wait_until(deadline) => core.handle_timeout(now()),
        }
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use chorus_framing::SeededEntropy;

    use super::*;
    use crate::Limit;
    use crate::message::Contact;
    use crate::node::{Config, NodeIdentity};
    use crate::sim::SimVerifier;

    #[tokio::test(start_paused = true)]
    async fn refused_commands_come_back_as_events() {
        let verifier = Arc::new(SimVerifier::new(1));
        let mut config = Config::default();
        config.max_lookups = 1;
        let mut node = Node::new(
            config,
            NodeIdentity {
                cert: verifier.node_cert(0),
                key: verifier.node_key(0),
            },
            verifier.clone(),
            Box::new(SeededEntropy::new(1)),
            now(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        // A contact that never answers keeps the first lookup running.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let id = SimVerifier::node_id(&verifier.node_cert(1));
        node.add_contact(
            Contact {
                id,
                addr: silent.local_addr().unwrap(),
            },
            now(),
        );
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (event_tx, mut events) = mpsc::channel(8);
        let driver = tokio::spawn(drive(node, sock, cmd_rx, event_tx));

        cmd_tx.send(Command::FindUser("ann".into())).await.unwrap();
        cmd_tx.send(Command::FindUser("ben".into())).await.unwrap();
        let mut unsigned = crate::record::tests::sample();
        unsigned.issued_at = 1_700_000_000;
        unsigned.expires_at = 1_700_003_600;
        cmd_tx
            .send(Command::Publish(Box::new(unsigned.clone())))
            .await
            .unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            DriverEvent::Refused {
                command: Command::FindUser("ben".into()),
                error: Limit::TooManyLookups { max: 1 }.into(),
            }
        );
        assert_eq!(
            events.recv().await.unwrap(),
            DriverEvent::Refused {
                command: Command::Publish(Box::new(unsigned)),
                error: crate::Violation::BadUserCertificate.into(),
            }
        );
        // The first lookup ends normally once its request times out.
        match events.recv().await.unwrap() {
            DriverEvent::Node(Event::Lookup(o)) => assert!(o.record.is_none()),
            e => panic!("{e:?}"),
        }
        // After Leave the driver stops; a closed command channel is the same.
        cmd_tx.send(Command::Leave).await.unwrap();
        driver.await.unwrap().unwrap();
    }
}
