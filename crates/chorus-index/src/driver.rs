//! The thin tokio driver (feature `tokio`): one task owns one [`Node`] and its UDP
//! socket on chorus-framing's runtime's [`Runtime`]; the application talks to it over bounded
//! channels of typed commands and events. No protocol logic lives here.
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

use std::net::SocketAddr;
use std::time::Instant;

use chorus_crypto::cert::NodeId;
use chorus_framing::runtime::{Flow, Runtime, SocketConfig, now};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::Error;
use crate::message::MAX_MESSAGE_LEN;
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

impl From<Event> for DriverEvent {
    fn from(e: Event) -> Self {
        Self::Node(e)
    }
}

/// Why the driver stopped: chorus-framing's runtime's, as for every Chorus driver.
pub use chorus_framing::runtime::DriverError;

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

/// Runs `core` on `sock` (chorus-framing's runtime's [`Runtime`], batched I/O on Linux) until
/// [`Command::Leave`], the command channel closes (the node then leaves too), or an
/// error. Node events and refused commands go to `events`.
///
/// # Errors
/// [`DriverError::Io`] if the socket fails, [`DriverError::Closed`] if the event
/// receiver is dropped.
pub async fn drive(
    core: Node,
    sock: UdpSocket,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<DriverEvent>,
) -> Result<(), DriverError> {
    let mut config = SocketConfig::default();
    // A whole message in one buffer: a longer datagram is not the index's.
    config.max_datagram = MAX_MESSAGE_LEN + 1;
    config.batch = 16;
    let mut rt = Runtime::on_socket(core, sock, config)?;
    rt.drive(cmds, &events, |core, now, command| {
        if command == Command::Leave {
            return Flow::Stop;
        }
        match apply(core, now, &command) {
            Ok(()) => Flow::Continue,
            // After what the core queued before refusing.
            Err(error) => Flow::Emit(DriverEvent::Refused { command, error }),
        }
    })
    .await?;
    rt.core_mut().leave(now());
    rt.flush().await?;
    rt.emit(&events).await
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
