//! The login authority's certificates, the super nodes' Global Index on loopback, and
//! the clients' presence records: published, found by name, found by search.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chorus::crypto::SystemEntropy;
use chorus::crypto::cert::{Authority, Certificate, CertificateRequest, Role, TrustStore};
use chorus::crypto::identity::{IdentityKeyPair, KeySize};
use chorus::index::driver::{Command, DriverEvent, drive};
use chorus::index::node::{Config, Event, LookupOutcome, Node, NodeIdentity};
use chorus::index::record::{CertVerifier, NatClass, PresenceRecord, Verifier, unix_secs};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::{DemoError, Report};

/// How long any one index operation may take on loopback before the demo gives up.
const STEP_LIMIT: Duration = Duration::from_secs(20);

/// The login authority: it certifies super nodes and users (the login server of a
/// real deployment; here in process).
pub(crate) struct LoginAuthority {
    authority: Authority,
    trust: Arc<TrustStore>,
    serial: u64,
    rng: SystemEntropy,
}

impl LoginAuthority {
    pub(crate) fn new() -> Result<Self, DemoError> {
        let mut rng = SystemEntropy::new();
        let authority = Authority::new(IdentityKeyPair::generate(KeySize::Rsa2048, &mut rng)?);
        let mut trust = TrustStore::new();
        trust.add_authority(authority.public_key().clone());
        Ok(Self {
            authority,
            trust: Arc::new(trust),
            serial: 0,
            rng,
        })
    }

    pub(crate) fn trust(&self) -> Arc<TrustStore> {
        self.trust.clone()
    }

    /// A new key pair and its certificate for `name` in `role`, valid for a day.
    pub(crate) fn enroll(
        &mut self,
        name: &str,
        role: Role,
    ) -> Result<(IdentityKeyPair, Certificate), DemoError> {
        let key = IdentityKeyPair::generate(KeySize::Rsa2048, &mut self.rng)?;
        self.serial += 1;
        let wall = SystemTime::now();
        let cert = self.authority.issue(&CertificateRequest {
            username: name.into(),
            public_key: key.public_key().clone(),
            role,
            serial: self.serial,
            not_before: wall - Duration::from_secs(60),
            not_after: wall + Duration::from_secs(86_400),
        })?;
        Ok((key, cert))
    }
}

/// The super nodes' index nodes, each on its own loopback UDP socket and task.
pub(crate) struct Index {
    addrs: Vec<SocketAddr>,
    commands: Vec<mpsc::Sender<Command>>,
    events: mpsc::Receiver<(usize, DriverEvent)>,
}

impl Index {
    /// Starts `count` super nodes; each joins through the first.
    pub(crate) async fn start(
        login: &mut LoginAuthority,
        count: usize,
        report: &mut Report,
    ) -> Result<Self, DemoError> {
        let verifier: Arc<dyn Verifier> = Arc::new(CertVerifier::new(login.trust()));
        let mut config = Config::default();
        config.request_timeout = Duration::from_secs(2);
        config.stall_timeout = Duration::from_millis(500);
        // Every node sends from 127.0.0.1: per-IP rate limits would pool them all.
        config.rate_limit = 100_000.0;
        config.rate_burst = 100_000.0;
        let (event_tx, events) = mpsc::channel(1024);
        let mut index = Self {
            addrs: Vec::new(),
            commands: Vec::new(),
            events,
        };
        for i in 0..count {
            let (key, cert) = login.enroll(&format!("sn-{i}"), Role::SuperNode)?;
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            index.addrs.push(sock.local_addr()?);
            let node = Node::new(
                config.clone(),
                NodeIdentity {
                    cert: Bytes::from(cert.to_bytes()),
                    key: Arc::new(key),
                },
                verifier.clone(),
                Box::new(SystemEntropy::new()),
                tokio::time::Instant::now().into_std(),
                SystemTime::now(),
            )?;
            let (cmd_tx, cmd_rx) = mpsc::channel(16);
            let (tx, mut rx) = mpsc::channel(64);
            tokio::spawn(drive(node, sock, cmd_rx, tx));
            let all = event_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if all.send((i, e)).await.is_err() {
                        break;
                    }
                }
            });
            index.commands.push(cmd_tx);
        }
        for i in 1..count {
            index
                .command(i, Command::Bootstrap(vec![index.addrs[0]]))
                .await?;
            let contacts = index
                .wait(i, |e| match e {
                    Event::Bootstrapped { contacts } => Some(Ok(*contacts)),
                    Event::BootstrapFailed => Some(Err(())),
                    _ => None,
                })
                .await?
                .map_err(|()| DemoError::Step(format!("super node {i} could not join")))?;
            report.line(format!(
                "super node sn-{i} at {} joined the index ({contacts} contacts)",
                index.addrs[i]
            ));
        }
        Ok(index)
    }

    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    async fn command(&self, node: usize, command: Command) -> Result<(), DemoError> {
        self.commands[node]
            .send(command)
            .await
            .map_err(|_| DemoError::Step(format!("super node {node} stopped")))
    }

    /// The next event of `node` that `pick` accepts; other nodes' events and other
    /// kinds are skipped.
    async fn wait<T>(
        &mut self,
        node: usize,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, DemoError> {
        tokio::time::timeout(STEP_LIMIT, async {
            loop {
                match self.events.recv().await {
                    Some((i, DriverEvent::Node(e))) if i == node => {
                        if let Some(t) = pick(&e) {
                            return Ok(t);
                        }
                    }
                    Some((i, DriverEvent::Refused { .. })) if i == node => {
                        return Err(DemoError::Step(format!("super node {node} refused")));
                    }
                    Some(_) => {}
                    None => return Err(DemoError::Step("the index stopped".into())),
                }
            }
        })
        .await
        .map_err(|_| DemoError::Step(format!("super node {node} did not answer in time")))?
    }

    /// Publishes `record` through super node `node`; the replicas that stored it.
    pub(crate) async fn publish(
        &mut self,
        node: usize,
        record: PresenceRecord,
    ) -> Result<usize, DemoError> {
        self.command(node, Command::Publish(Box::new(record)))
            .await?;
        self.wait(node, |e| match e {
            Event::Published { replicas, .. } => Some(*replicas),
            _ => None,
        })
        .await
    }

    /// Looks `username` up from super node `node`.
    pub(crate) async fn find(
        &mut self,
        node: usize,
        username: &str,
    ) -> Result<LookupOutcome, DemoError> {
        self.command(node, Command::FindUser(username.into()))
            .await?;
        self.lookup(node).await
    }

    /// Searches display names for `words` from super node `node`.
    pub(crate) async fn search(
        &mut self,
        node: usize,
        words: &str,
    ) -> Result<LookupOutcome, DemoError> {
        self.command(node, Command::Search(words.into())).await?;
        self.lookup(node).await
    }

    async fn lookup(&mut self, node: usize) -> Result<LookupOutcome, DemoError> {
        self.wait(node, |e| match e {
            Event::Lookup(o) => Some((**o).clone()),
            _ => None,
        })
        .await
    }

    /// Every super node leaves the index gracefully.
    pub(crate) async fn leave(&self) {
        for c in &self.commands {
            let _ = c.send(Command::Leave).await;
        }
    }
}

/// A signed presence record for a user logged in at super node `super_node`,
/// reachable at `candidates`.
pub(crate) fn presence(
    username: &str,
    display_name: &str,
    key: &IdentityKeyPair,
    cert: &Certificate,
    super_node: SocketAddr,
    candidates: Vec<SocketAddr>,
    nat_class: NatClass,
) -> Result<PresenceRecord, DemoError> {
    let now = unix_secs(SystemTime::now());
    let mut record = PresenceRecord {
        username: username.into(),
        display_name: display_name.into(),
        user_cert: Bytes::from(cert.to_bytes()),
        super_nodes: vec![super_node],
        candidates,
        nat_class,
        version: 1,
        issued_at: now,
        expires_at: now + 72 * 3600,
        signature: Bytes::new(),
    };
    record.sign(key)?;
    Ok(record)
}
