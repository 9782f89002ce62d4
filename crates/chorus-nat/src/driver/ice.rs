//! The tokio driver of an ICE [`Agent`]: its host UDP sockets, an optional relay, the
//! signalling channel and the timers, and no protocol logic.
//!
//! [`connect`] binds nothing itself: it takes bound host sockets (each becomes a host
//! candidate), an optional [`RelayChannel`] (a TURN allocation's relayed address and a
//! pair of channels to it) and a [`Signalling`] pair of channels carrying
//! [`Description`] text to and from the peer. It returns a [`Connection`] once a pair
//! is selected. From then on a background task keeps serving the agent (answering the
//! peer's checks, which it may still need to complete its own side, consent, trickled
//! candidates, re-nominations); the connection sends and receives application data on
//! the selected pair through it.
//!
//! ```no_run
//! # use chorus_nat::driver::ice::Signalling;
//! # #[allow(dead_code)]
//! # async fn example(sig: Signalling) -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_nat::driver::ice::connect;
//! use chorus_nat::ice::{Agent, IceConfig};
//!
//! let entropy = Box::new(chorus_crypto::SystemEntropy::new());
//! let agent = Agent::new(IceConfig::default(), entropy)?;
//! let socket = tokio::net::UdpSocket::bind("192.0.2.1:0").await?;
//! let mut conn = connect(agent, vec![socket], None, sig).await?;
//! println!("connected via {:?}", conn.kind());
//! conn.send(bytes::Bytes::from_static(b"hello")).await?;
//! let reply = conn.recv().await?;
//! # let _ = reply; Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;
use chorus_framing::runtime::{DriverError, Runtime, SocketConfig, Sockets, now, wait_until};
use chorus_framing::{DatagramCore, Redacted, Transmit};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ice::{Agent, Candidate, Description, Event, FailReason, PathKind};

/// A relayed address owned by a TURN client (or any relay): the driver sends
/// datagrams whose source is `relayed` through `to_relay`, and feeds what arrives on
/// `from_relay` to the agent as received on `relayed`.
#[derive(Debug)]
pub struct RelayChannel {
    /// The relayed transport address (XOR-RELAYED-ADDRESS of the allocation).
    pub relayed: SocketAddr,
    /// The TURN client's own address, signalled as the candidate's `raddr`.
    pub related: SocketAddr,
    /// The allocation runs over TCP or TLS (reported as [`PathKind::RelayedTcp`]).
    pub via_tcp: bool,
    /// `(peer, datagram)` for the relay to send from `relayed`.
    pub to_relay: mpsc::Sender<(SocketAddr, Bytes)>,
    /// `(peer, datagram)` the relay received on `relayed`.
    pub from_relay: mpsc::Receiver<(SocketAddr, Bytes)>,
}

/// The signalling path to the peer: [`Description`] text (one message may be a whole
/// description or one trickled candidate) in both directions.
#[derive(Debug)]
pub struct Signalling {
    /// To the peer.
    pub tx: mpsc::Sender<String>,
    /// From the peer.
    pub rx: mpsc::Receiver<String>,
}

/// Why the driver stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum IceError {
    /// A socket could not be used (for example an unspecified address).
    Io(std::io::Error),
    /// The agent refused a call (too many candidates, a bad configuration).
    Agent(crate::Error),
    /// ICE failed.
    Failed(FailReason),
    /// Every input closed (sockets, relay and signalling).
    Closed,
}

impl core::fmt::Display for IceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Agent(e) => write!(f, "ICE agent error: {e}"),
            Self::Failed(r) => write!(f, "ICE failed: {r}"),
            Self::Closed => f.write_str("all inputs closed"),
        }
    }
}

impl std::error::Error for IceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Agent(e) => Some(e),
            Self::Failed(_) | Self::Closed => None,
        }
    }
}

impl From<std::io::Error> for IceError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DriverError> for IceError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Io(e) => Self::Io(e),
            DriverError::Core(e) => Self::Io(std::io::Error::other(e)),
            _ => Self::Closed,
        }
    }
}

impl From<crate::Error> for IceError {
    fn from(e: crate::Error) -> Self {
        Self::Agent(e)
    }
}

/// Datagrams buffered between the socket readers and the agent's task.
/// Longest signalling message read.
const MAX_SIGNAL: usize = 64 * 1024;
/// Most candidates parsed from one signalling message (the agent applies its own cap).
const MAX_SIGNAL_CANDIDATES: usize = 64;

/// Application datagrams buffered in each direction between a [`Connection`] and its
/// agent's task; received ones beyond it are dropped, as a full socket buffer would.
const DATA_QUEUE: usize = 256;

type Selection = (Candidate, Candidate, PathKind);

/// A selected pair, with the agent's task behind it. Dropping it stops that task and
/// the socket readers.
#[derive(Debug)]
pub struct Connection {
    selected: watch::Receiver<Selection>,
    outgoing: mpsc::Sender<Bytes>,
    incoming: mpsc::Receiver<Bytes>,
    task: JoinHandle<IceError>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The agent and everything it talks through.
/// The agent, with the application's datagrams queued before its own and those from
/// the relayed candidate set aside for the relay: the runtime sends the rest from the
/// host sockets.
#[derive(Debug)]
struct Relayed {
    agent: Agent,
    /// The relayed candidate's address, if there is a relay.
    relayed: Option<SocketAddr>,
    /// Application data on the selected pair ([`Agent::send`]).
    app: VecDeque<Transmit>,
    /// Datagrams for the relay to send from `relayed`.
    to_relay: Vec<Transmit>,
}

impl DatagramCore for Relayed {
    type Event = Event;
    type Error = crate::Error;

    fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        self.agent.accepts(local, from, bytes)
    }

    fn handle_datagram(
        &mut self,
        now: std::time::Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), crate::Error> {
        self.agent.handle_input(now, local, from, bytes)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            let t = match self.app.pop_front() {
                Some(t) => t,
                None => self.agent.poll_transmit()?,
            };
            if self.relayed.is_some() && t.src == self.relayed {
                self.to_relay.push(t);
            } else {
                return Some(t);
            }
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.agent.poll_event()
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.agent.poll_timeout()
    }

    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.agent.handle_timeout(now);
    }
}

#[derive(Debug)]
struct Runner {
    rt: Runtime<Relayed>,
    to_relay: Option<mpsc::Sender<(SocketAddr, Bytes)>>,
    from_relay: Option<mpsc::Receiver<(SocketAddr, Bytes)>>,
    outgoing: Option<mpsc::Receiver<Bytes>>,
    signalling: Signalling,
    signalling_open: bool,
    data: VecDeque<Bytes>,
}

/// Runs `agent` over `sockets` (each bound to a specific address, which becomes a
/// host candidate), `relay` (a relayed candidate) and `signalling` until a pair is
/// selected. Sends the local description first, then trickles server-reflexive
/// candidates and `end-of-candidates` as gathering produces them.
///
/// # Errors
/// [`IceError::Failed`] when ICE fails, [`IceError::Agent`] if a candidate is refused,
/// [`IceError::Io`] for a socket without a usable local address, [`IceError::Closed`]
/// if every input closed.
pub async fn connect(
    mut agent: Agent,
    sockets: Vec<UdpSocket>,
    relay: Option<RelayChannel>,
    signalling: Signalling,
) -> Result<Connection, IceError> {
    let mut set = Sockets::new(SocketConfig::endpoint())?;
    for sock in sockets {
        let local = set.add(sock)?;
        agent.add_host_candidate(local)?;
    }
    let (relayed, to_relay, from_relay) = match relay {
        Some(r) => {
            agent.add_relayed_candidate(r.relayed, r.related, r.via_tcp)?;
            (Some(r.relayed), Some(r.to_relay), Some(r.from_relay))
        }
        None => (None, None, None),
    };
    agent.start_gathering(now())?;
    let mut desc = agent.local_description();
    // `end-of-candidates` travels as its own message once gathering says so.
    desc.end_of_candidates = false;
    signalling
        .tx
        .send(desc.encode())
        .await
        .map_err(|_| IceError::Closed)?;
    let core = Relayed {
        agent,
        relayed,
        app: VecDeque::new(),
        to_relay: Vec::new(),
    };
    let mut runner = Runner {
        rt: Runtime::new(core, set),
        to_relay,
        from_relay,
        outgoing: None,
        signalling,
        signalling_open: true,
        data: VecDeque::new(),
    };
    let selected = loop {
        if let Some(selected) = runner.step().await? {
            break selected;
        }
    };
    let (out_tx, out_rx) = mpsc::channel(DATA_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(DATA_QUEUE);
    let (sel_tx, sel_rx) = watch::channel(selected);
    runner.outgoing = Some(out_rx);
    let task = tokio::spawn(async move {
        loop {
            match runner.step().await {
                Ok(Some(selected)) => {
                    // The controlling peer nominated another pair.
                    let _ = sel_tx.send(selected);
                }
                Ok(None) => {}
                Err(e) => return e,
            }
            while let Some(d) = runner.data.pop_front() {
                let _ = in_tx.try_send(d);
            }
        }
    });
    Ok(Connection {
        selected: sel_rx,
        outgoing: out_tx,
        incoming: in_rx,
        task,
    })
}

impl Connection {
    /// The local candidate of the selected pair (the latest, if the controlling peer
    /// nominated another).
    #[must_use]
    pub fn local(&self) -> Candidate {
        self.selected.borrow().0.clone()
    }

    /// The remote candidate of the selected pair.
    #[must_use]
    pub fn remote(&self) -> Candidate {
        self.selected.borrow().1.clone()
    }

    /// Which kind of path is selected.
    #[must_use]
    pub fn kind(&self) -> PathKind {
        self.selected.borrow().2
    }

    /// Sends one datagram on the selected pair (through the relay for a relayed local
    /// candidate).
    ///
    /// # Errors
    /// Why the agent's task ended, if it has.
    pub async fn send(&mut self, data: Bytes) -> Result<(), IceError> {
        if self.outgoing.send(data).await.is_err() {
            return Err(self.ended().await);
        }
        Ok(())
    }

    /// The next datagram received on the selected pair.
    ///
    /// # Errors
    /// [`IceError::Failed`] when consent expired, [`IceError::Closed`] when every input
    /// closed.
    pub async fn recv(&mut self) -> Result<Bytes, IceError> {
        match self.incoming.recv().await {
            Some(d) => Ok(d),
            None => Err(self.ended().await),
        }
    }

    /// The agent's task has ended: why.
    async fn ended(&mut self) -> IceError {
        match (&mut self.task).await {
            Ok(e) => e,
            Err(_) => IceError::Closed,
        }
    }
}

/// The next item of an optional receiver; pending forever when there is none.
async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Runner {
    /// Sends what the agent queued: from the host sockets, or through the relay.
    async fn flush(&mut self) -> Result<(), IceError> {
        // Send errors (an unreachable destination) are a lost datagram to ICE.
        self.rt.flush().await?;
        for t in self.rt.core_mut().to_relay.drain(..) {
            if let Some(relay) = &self.to_relay {
                // A full or closed relay drops the datagram, as a network would.
                let _ = relay.try_send((t.dst, t.payload));
            }
        }
        Ok(())
    }

    /// Flushes the agent, then handles one input, signalling message or timer. Returns
    /// the selection when the agent reports one.
    async fn step(&mut self) -> Result<Option<(Candidate, Candidate, PathKind)>, IceError> {
        self.flush().await?;
        let mut selected = None;
        while let Some(e) = self.rt.core_mut().agent.poll_event() {
            let signal = match e {
                Event::LocalCandidate(c) => Some(Description {
                    candidates: vec![c],
                    ..Description::default()
                }),
                Event::GatheringComplete => Some(Description {
                    end_of_candidates: true,
                    ..Description::default()
                }),
                Event::Connected {
                    local,
                    remote,
                    kind,
                } => {
                    tracing::info!(
                        ?kind,
                        local = %Redacted(local.addr),
                        remote = %Redacted(remote.addr),
                        "ICE pair selected"
                    );
                    selected = Some((local, remote, kind));
                    None
                }
                Event::Data(d) => {
                    self.data.push_back(d);
                    None
                }
                Event::Failed(r) => {
                    tracing::warn!(reason = %r, "ICE failed");
                    return Err(IceError::Failed(r));
                }
                _ => None,
            };
            if let Some(d) = signal {
                // The peer may have stopped listening after connecting: not an error. A
                // full channel makes ICE wait for the signalling path.
                let _ = self.signalling.tx.send(d.encode()).await;
            }
        }
        if selected.is_some() || !self.data.is_empty() {
            return Ok(selected);
        }
        let relayed = self.rt.core().relayed;
        // A relay-only agent has no socket for the runtime to wait on: its timers
        // are waited for here.
        let hosts = !self.rt.sockets().is_empty();
        let deadline = self.rt.core().poll_timeout();
        tokio::select! {
            r = self.rt.step(), if hosts => r?,
            () = wait_until(deadline), if !hosts => self.rt.core_mut().handle_timeout(now()),
            Some((from, bytes)) = recv_some(&mut self.from_relay) => {
                if let Some(local) = relayed {
                    // A rejected datagram changes nothing; it is not ours.
                    let _ = self.rt.core_mut().agent.handle_input(now(), local, from, &bytes);
                }
            }
            Some(d) = recv_some(&mut self.outgoing) => {
                let core = self.rt.core_mut();
                let t = core.agent.send(d).map_err(IceError::Agent)?;
                core.app.push_back(t);
            }
            s = self.signalling.rx.recv(), if self.signalling_open => match s {
                Some(text) if text.len() <= MAX_SIGNAL => {
                    if let Ok(d) = Description::parse(&text, MAX_SIGNAL_CANDIDATES) {
                        // Hostile or excess candidates are refused by the agent.
                        let _ = self.rt.core_mut().agent.apply_remote_description(now(), &d);
                    }
                }
                Some(_) => {}
                None => self.signalling_open = false,
            },
        }
        Ok(None)
    }
}
