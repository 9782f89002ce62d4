//! A tokio driver for the TURN client core ([`TurnClient`]): one task owns the core and
//! the UDP socket or TCP stream to the server; a [`TurnHandle`] talks to it over
//! bounded channels.
//!
//! ```no_run
//! use chorus_nat::client::Transport;
//! use chorus_nat::driver::turn_client::TurnHandle;
//! use chorus_nat::TurnClientConfig;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), chorus_nat::driver::turn_client::TurnError> {
//! let server = "192.0.2.1:3478".parse().expect("address");
//! let config = TurnClientConfig::new(server, Transport::Udp, "alice", "secret");
//! let mut turn = TurnHandle::connect(config).await?;
//! println!("relayed at {:?}", turn.relayed());
//! let peer = "198.51.100.7:5000".parse().expect("address");
//! turn.create_permission(std::net::IpAddr::from([198, 51, 100, 7])).await?;
//! turn.bind_channel(peer).await?;
//! turn.send_to(peer, b"hello").await?;
//! let (from, data) = turn.recv_from().await?;
//! # let _ = (from, data);
//! turn.close().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use chorus_framing::{Entropy, Redacted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use chorus_framing::runtime::{DriverError, Runtime, SocketConfig, Sockets, now, wait_until};

/// Peer IPs an ICE relay channel ([`TurnHandle::into_relay_channel`]) creates
/// permissions for, at most.
pub const MAX_RELAY_PEERS: usize = 64;
use crate::client::Transport;
use crate::turn::client::{Deframer, Event};
use crate::{TurnClient, TurnClientConfig};

/// Received datagrams queued for [`TurnHandle::recv_from`]; beyond, data is dropped
/// (as a full socket buffer would) so that a slow reader never stalls refreshes.
const DATA_QUEUE: usize = 256;
/// Commands queued for the task.
const COMMAND_QUEUE: usize = 64;

/// What can go wrong with a driven TURN client.
#[derive(Debug)]
#[non_exhaustive]
pub enum TurnError {
    /// The socket or stream failed.
    Io(std::io::Error),
    /// The core refused the command (no permission, a full table, ...).
    Core(crate::Error),
    /// The server refused (or never answered) an Allocate, CreatePermission or
    /// ChannelBind.
    Failed {
        /// ERROR-CODE's code, or `None` for a timeout.
        code: Option<u16>,
        /// The reason.
        reason: String,
    },
    /// The allocation ended: a refresh failed, it expired, or the stream closed.
    Lost {
        /// ERROR-CODE's code, if the server sent one.
        code: Option<u16>,
        /// The reason.
        reason: String,
    },
    /// The driver task has ended (after [`TurnHandle::close`] or a loss).
    Closed,
}

impl core::fmt::Display for TurnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Core(e) => write!(f, "{e}"),
            Self::Failed { code, reason } => match code {
                Some(c) => write!(f, "TURN server refused: {c} {reason}"),
                None => write!(f, "TURN request failed: {reason}"),
            },
            Self::Lost { code, reason } => match code {
                Some(c) => write!(f, "TURN allocation lost: {c} {reason}"),
                None => write!(f, "TURN allocation lost: {reason}"),
            },
            Self::Closed => f.write_str("TURN driver closed"),
        }
    }
}

impl std::error::Error for TurnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Core(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for TurnError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<crate::Error> for TurnError {
    fn from(e: crate::Error) -> Self {
        Self::Core(e)
    }
}

type Reply<T> = oneshot::Sender<Result<T, TurnError>>;

enum Command {
    Permission(IpAddr, Reply<()>),
    Channel(SocketAddr, Reply<u16>),
    Send(SocketAddr, Bytes, Reply<()>),
    Close(Reply<()>),
}

/// What the Allocate granted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Granted {
    relayed: Vec<SocketAddr>,
    mapped: Option<SocketAddr>,
    reservation_token: Option<[u8; 8]>,
}

/// A TURN allocation driven by a background task. Dropping the handle closes the
/// allocation (the task sends the Refresh with lifetime 0 and ends).
#[derive(Debug)]
pub struct TurnHandle {
    cmds: mpsc::Sender<Command>,
    data: mpsc::Receiver<(SocketAddr, Bytes)>,
    granted: Granted,
    via_tcp: bool,
    task: JoinHandle<Result<(), TurnError>>,
}

impl TurnHandle {
    /// Connects to `config.server` (a new UDP socket on the unspecified address of the
    /// server's family, or a TCP connection), allocates with the system's entropy, and
    /// returns once the allocation exists.
    ///
    /// # Errors
    /// [`TurnError::Io`], [`TurnError::Core`] for an invalid configuration, or
    /// [`TurnError::Failed`] when the server refused the allocation.
    pub async fn connect(config: TurnClientConfig) -> Result<Self, TurnError> {
        Self::connect_with(config, Box::new(chorus_crypto::SystemEntropy::new())).await
    }

    /// As [`TurnHandle::connect`], with the given entropy source.
    ///
    /// # Errors
    /// As [`TurnHandle::connect`].
    pub async fn connect_with(
        config: TurnClientConfig,
        entropy: Box<dyn Entropy>,
    ) -> Result<Self, TurnError> {
        let server = config.server;
        let link = match config.transport {
            Transport::Udp => {
                let any: SocketAddr = if server.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                Link::Udp(UdpSocket::bind(any).await?)
            }
            Transport::Tcp => Link::Tcp(TcpStream::connect(server).await?),
        };
        Self::start(config, entropy, link).await
    }

    /// As [`TurnHandle::connect_with`], over a UDP socket the caller bound (for
    /// example the host candidate's socket of an ICE agent; it must not be read
    /// elsewhere meanwhile). `config.transport` must be UDP.
    ///
    /// # Errors
    /// As [`TurnHandle::connect`].
    pub async fn connect_udp(
        config: TurnClientConfig,
        entropy: Box<dyn Entropy>,
        socket: UdpSocket,
    ) -> Result<Self, TurnError> {
        if config.transport != Transport::Udp {
            let e = crate::UsageError::InvalidConfig("connect_udp needs Transport::Udp");
            return Err(TurnError::Core(e.into()));
        }
        Self::start(config, entropy, Link::Udp(socket)).await
    }

    /// As [`TurnHandle::connect_with`], over a TCP connection to the server that the
    /// caller opened (from a chosen address or network). `config.transport` must be
    /// TCP.
    ///
    /// # Errors
    /// As [`TurnHandle::connect`].
    pub async fn connect_tcp(
        config: TurnClientConfig,
        entropy: Box<dyn Entropy>,
        stream: TcpStream,
    ) -> Result<Self, TurnError> {
        if config.transport != Transport::Tcp {
            let e = crate::UsageError::InvalidConfig("connect_tcp needs Transport::Tcp");
            return Err(TurnError::Core(e.into()));
        }
        Self::start(config, entropy, Link::Tcp(stream)).await
    }

    async fn start(
        config: TurnClientConfig,
        entropy: Box<dyn Entropy>,
        link: Link,
    ) -> Result<Self, TurnError> {
        let via_tcp = config.transport == Transport::Tcp;
        let mut core = TurnClient::new(config, entropy)?;
        core.allocate(now())?;
        let io = match link {
            Link::Udp(socket) => {
                Io::udp(core, socket).map_err(|e| TurnError::Io(std::io::Error::other(e)))?
            }
            Link::Tcp(stream) => Io::tcp(core, stream),
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run(io, cmd_rx, data_tx, ready_tx));
        let granted = match ready_rx.await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(match task.await {
                    Ok(Err(e)) => e,
                    _ => TurnError::Closed,
                });
            }
        };
        Ok(Self {
            cmds: cmd_tx,
            data: data_rx,
            granted,
            via_tcp,
            task,
        })
    }

    /// The relayed transport addresses (one, or two for a dual-stack allocation).
    #[must_use]
    pub fn relayed(&self) -> &[SocketAddr] {
        &self.granted.relayed
    }

    /// The server-reflexive address the server saw.
    #[must_use]
    pub const fn mapped(&self) -> Option<SocketAddr> {
        self.granted.mapped
    }

    /// The RESERVATION-TOKEN for the odd port, when EVEN-PORT reserved one.
    #[must_use]
    pub const fn reservation_token(&self) -> Option<[u8; 8]> {
        self.granted.reservation_token
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, TurnError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| TurnError::Closed)?;
        rx.await.map_err(|_| TurnError::Closed)?
    }

    /// Installs a permission for `ip` (kept refreshed) and waits for the server.
    ///
    /// # Errors
    /// [`TurnError::Failed`] if the server refused, [`TurnError::Core`] for a full
    /// table, [`TurnError::Closed`].
    pub async fn create_permission(&self, ip: IpAddr) -> Result<(), TurnError> {
        self.call(|r| Command::Permission(ip, r)).await
    }

    /// Binds a channel to `peer` (kept refreshed, with its permission) and waits for
    /// the server; returns the channel number. Data to `peer` then goes as ChannelData.
    ///
    /// # Errors
    /// As [`TurnHandle::create_permission`].
    pub async fn bind_channel(&self, peer: SocketAddr) -> Result<u16, TurnError> {
        self.call(|r| Command::Channel(peer, r)).await
    }

    /// Sends `data` to `peer` through the relay (ChannelData on a bound channel, else a
    /// Send indication). Needs a permission for `peer`'s IP.
    ///
    /// # Errors
    /// [`TurnError::Core`] (no permission, data too long), [`TurnError::Io`],
    /// [`TurnError::Closed`].
    pub async fn send_to(&self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnError> {
        let data = Bytes::copy_from_slice(data);
        self.call(|r| Command::Send(peer, data, r)).await
    }

    /// The next datagram a peer sent to the relayed address.
    ///
    /// # Errors
    /// [`TurnError::Closed`] once the allocation is gone and the queue is empty.
    pub async fn recv_from(&mut self) -> Result<(SocketAddr, Bytes), TurnError> {
        self.data.recv().await.ok_or(TurnError::Closed)
    }

    /// Turns the allocation into the relayed candidate of an ICE agent
    /// ([`super::ice::connect`]): a task forwards what the agent sends from the relayed
    /// address through the relay, creating the permission for each new peer IP first
    /// (at most [`MAX_RELAY_PEERS`]; further peers are dropped), and hands what peers
    /// send to the relayed address back to the agent. The allocation lives as long as
    /// the returned channel's ends do.
    ///
    /// # Errors
    /// [`TurnError::Closed`] if the allocation has no relayed address.
    pub fn into_relay_channel(mut self) -> Result<super::ice::RelayChannel, TurnError> {
        let relayed = *self.granted.relayed.first().ok_or(TurnError::Closed)?;
        let related = self.granted.mapped.unwrap_or(relayed);
        let via_tcp = self.via_tcp;
        let (to_relay, mut outbound) = mpsc::channel::<(SocketAddr, Bytes)>(DATA_QUEUE);
        let (inbound, from_relay) = mpsc::channel(DATA_QUEUE);
        tokio::spawn(async move {
            let mut permitted = std::collections::HashSet::new();
            loop {
                tokio::select! {
                    r = self.recv_from() => match r {
                        // A full agent queue drops the datagram, as a socket would.
                        Ok(d) => { let _ = inbound.try_send(d); }
                        Err(_) => break,
                    },
                    out = outbound.recv() => {
                        let Some((peer, data)) = out else { break };
                        if !permitted.contains(&peer.ip()) {
                            if permitted.len() >= MAX_RELAY_PEERS
                                || self.create_permission(peer.ip()).await.is_err()
                            {
                                continue;
                            }
                            permitted.insert(peer.ip());
                        }
                        let _ = self.send_to(peer, &data).await;
                    }
                }
            }
            let _ = self.close().await;
        });
        Ok(super::ice::RelayChannel {
            relayed,
            related,
            via_tcp,
            to_relay,
            from_relay,
        })
    }

    /// Deletes the allocation (Refresh with lifetime 0) and waits for the task to end.
    ///
    /// # Errors
    /// [`TurnError::Io`] if sending failed; an allocation that was already lost is
    /// reported as [`TurnError::Lost`].
    pub async fn close(self) -> Result<(), TurnError> {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        match self.task.await {
            Ok(result) => result,
            Err(_) => Err(TurnError::Closed),
        }
    }
}

/// The connection to the server a handle starts with.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The core and its way to the server: a UDP socket on chorus-framing's runtime's
/// [`Runtime`], or a TCP stream (messages cut out by the core's [`Deframer`]).
// One per task, built once and never moved: the sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Io {
    Udp(Runtime<TurnClient>),
    Tcp {
        core: TurnClient,
        rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        stream: Deframer,
        buf: Vec<u8>,
    },
}

/// How a transport step ended, when not with input for the core.
enum Stop {
    /// The server closed the TCP stream, or it stopped being a STUN/TURN stream.
    Lost(&'static str),
    /// The socket or stream failed.
    Io(std::io::Error),
}

impl From<DriverError> for Stop {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Io(e) => Self::Io(e),
            other => Self::Io(std::io::Error::other(other)),
        }
    }
}

impl Io {
    fn udp(core: TurnClient, socket: UdpSocket) -> Result<Self, DriverError> {
        let mut sockets = Sockets::new(SocketConfig::endpoint())?;
        sockets.add(socket)?;
        Ok(Self::Udp(Runtime::new(core, sockets)))
    }

    fn tcp(core: TurnClient, s: TcpStream) -> Self {
        let (rd, wr) = s.into_split();
        Self::Tcp {
            core,
            rd,
            wr,
            stream: Deframer::new(&crate::stun::Limits::default()),
            buf: vec![0; 4096],
        }
    }

    fn core(&mut self) -> &mut TurnClient {
        match self {
            Self::Udp(rt) => rt.core_mut(),
            Self::Tcp { core, .. } => core,
        }
    }

    /// Sends what the core queued to the server.
    async fn flush(&mut self) -> Result<(), Stop> {
        match self {
            Self::Udp(rt) => {
                rt.flush().await?;
            }
            Self::Tcp { core, wr, .. } => {
                while let Some(t) = core.poll_transmit() {
                    wr.write_all(&t.payload).await.map_err(Stop::Io)?;
                }
            }
        }
        Ok(())
    }

    /// Waits for the server's next datagram or bytes, or the core's deadline, and
    /// hands it to the core. Cancel-safe: the runtime's step is, `read` is, and bytes
    /// read are pushed into the de-framer before returning.
    async fn step(&mut self, server: SocketAddr) -> Result<(), Stop> {
        match self {
            Self::Udp(rt) => rt.step().await.map_err(Stop::from),
            Self::Tcp {
                core,
                rd,
                stream,
                buf,
                ..
            } => {
                let deadline = core.poll_timeout();
                // Read only what the de-framer can take, so nothing waits outside it.
                let want = stream.space().min(buf.len());
                let chunk = buf.get_mut(..want).unwrap_or(&mut []);
                tokio::select! {
                    r = rd.read(chunk) => {
                        let n = r.map_err(Stop::Io)?;
                        if n == 0 {
                            return Err(Stop::Lost("the server closed the TCP connection"));
                        }
                        stream.push(chunk.get(..n).unwrap_or(&[]));
                        loop {
                            match stream.next_message() {
                                Ok(Some(m)) => {
                                    let _ = core.handle_input(now(), server, &m);
                                }
                                Ok(None) => return Ok(()),
                                Err(_) => return Err(Stop::Lost("corrupt TCP stream")),
                            }
                        }
                    }
                    () = wait_until(deadline) => {
                        core.handle_timeout(now());
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Waiters for outcomes the core reports as events, keyed like the core's tables (so
/// bounded by them).
#[derive(Default)]
struct Waiters {
    permissions: HashMap<IpAddr, Vec<Reply<()>>>,
    channels: HashMap<SocketAddr, Vec<Reply<u16>>>,
    close: Option<Reply<()>>,
}

impl Waiters {
    fn fail_all(&mut self, make: impl Fn() -> TurnError) {
        for r in self.permissions.drain().flat_map(|(_, v)| v) {
            let _ = r.send(Err(make()));
        }
        for r in self.channels.drain().flat_map(|(_, v)| v) {
            let _ = r.send(Err(make()));
        }
    }
}

/// The task: one core, one socket or stream, no protocol logic.
async fn run(
    mut io: Io,
    mut cmds: mpsc::Receiver<Command>,
    data: mpsc::Sender<(SocketAddr, Bytes)>,
    ready: oneshot::Sender<Result<Granted, TurnError>>,
) -> Result<(), TurnError> {
    let server = io.core().config().server;
    let mut ready = Some(ready);
    let mut waiters = Waiters::default();
    let mut handle_gone = false;
    loop {
        let flushed = io.flush().await;
        if let Err(stop) = flushed {
            return Err(stopped(stop, &mut waiters, &mut ready));
        }
        while let Some(e) = io.core().poll_event() {
            match e {
                Event::Allocated {
                    relayed,
                    mapped,
                    reservation_token,
                    ..
                } => {
                    tracing::info!(
                        server = %Redacted(server),
                        relayed = ?relayed.iter().map(|a| Redacted(*a)).collect::<Vec<_>>(),
                        "TURN allocation granted"
                    );
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(Granted {
                            relayed,
                            mapped,
                            reservation_token,
                        }));
                    }
                }
                Event::AllocationFailed { code, reason } => {
                    tracing::warn!(server = %Redacted(server), ?code, %reason, "TURN allocation refused");
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(TurnError::Failed { code, reason }));
                    }
                    return Err(TurnError::Closed);
                }
                Event::Lost { code, reason } => {
                    tracing::warn!(server = %Redacted(server), ?code, %reason, "TURN allocation lost");
                    waiters.fail_all(|| TurnError::Closed);
                    if let Some(r) = waiters.close.take() {
                        let _ = r.send(Ok(()));
                    }
                    return Err(TurnError::Lost { code, reason });
                }
                Event::Closed => {
                    waiters.fail_all(|| TurnError::Closed);
                    if let Some(r) = waiters.close.take() {
                        let _ = r.send(Ok(()));
                    }
                    return Ok(());
                }
                Event::PermissionCreated { ip } => {
                    for r in waiters.permissions.remove(&ip).unwrap_or_default() {
                        let _ = r.send(Ok(()));
                    }
                }
                Event::PermissionFailed { ip, code } => {
                    for r in waiters.permissions.remove(&ip).unwrap_or_default() {
                        let _ = r.send(Err(TurnError::Failed {
                            code,
                            reason: "CreatePermission failed".to_owned(),
                        }));
                    }
                }
                Event::ChannelBound { peer, channel } => {
                    for r in waiters.channels.remove(&peer).unwrap_or_default() {
                        let _ = r.send(Ok(channel));
                    }
                }
                Event::ChannelFailed { peer, code, .. } => {
                    for r in waiters.channels.remove(&peer).unwrap_or_default() {
                        let _ = r.send(Err(TurnError::Failed {
                            code,
                            reason: "ChannelBind failed".to_owned(),
                        }));
                    }
                }
                Event::Data { peer, data: bytes } => {
                    // Full queue: the reader is behind; drop like a socket buffer.
                    let _ = data.try_send((peer, bytes));
                }
                Event::Refreshed { .. } => {}
            }
        }
        tokio::select! {
            r = io.step(server) => {
                if let Err(stop) = r {
                    return Err(stopped(stop, &mut waiters, &mut ready));
                }
            }
            cmd = cmds.recv(), if !handle_gone => {
                let now = now();
                let core = io.core();
                match cmd {
                    Some(Command::Permission(ip, reply)) => match core.permission(ip) {
                        Some(true) => { let _ = reply.send(Ok(())); }
                        Some(false) => waiters.permissions.entry(ip).or_default().push(reply),
                        None => match core.create_permission(now, ip) {
                            Ok(()) => waiters.permissions.entry(ip).or_default().push(reply),
                            Err(e) => { let _ = reply.send(Err(e.into())); }
                        },
                    },
                    Some(Command::Channel(peer, reply)) => match core.channel(peer) {
                        Some((n, true)) => { let _ = reply.send(Ok(n)); }
                        Some((_, false)) => waiters.channels.entry(peer).or_default().push(reply),
                        None => match core.bind_channel(now, peer) {
                            Ok(_) => waiters.channels.entry(peer).or_default().push(reply),
                            Err(e) => { let _ = reply.send(Err(e.into())); }
                        },
                    },
                    Some(Command::Send(peer, bytes, reply)) => {
                        let _ = reply.send(core.send(peer, &bytes).map_err(Into::into));
                    }
                    Some(Command::Close(reply)) => {
                        waiters.close = Some(reply);
                        // On error the core has reported Closed; the loop ends there.
                        let _ = core.close(now);
                    }
                    None => {
                        // The handle was dropped: close the allocation and end.
                        handle_gone = true;
                        let _ = core.close(now);
                    }
                }
            },
        }
    }
}

fn lost(reason: &str, waiters: &mut Waiters) -> TurnError {
    tracing::warn!(%reason, "TURN allocation lost");
    waiters.fail_all(|| TurnError::Closed);
    if let Some(r) = waiters.close.take() {
        let _ = r.send(Ok(()));
    }
    TurnError::Lost {
        code: None,
        reason: reason.to_owned(),
    }
}

/// The error a transport failure ends the task with (the waiters learn it first).
fn stopped(
    stop: Stop,
    waiters: &mut Waiters,
    ready: &mut Option<oneshot::Sender<Result<Granted, TurnError>>>,
) -> TurnError {
    match stop {
        Stop::Lost(reason) => lost(reason, waiters),
        Stop::Io(e) => {
            waiters.fail_all(|| TurnError::Closed);
            if let Some(r) = ready.take() {
                let _ = r.send(Err(TurnError::Io(e)));
                return TurnError::Closed;
            }
            e.into()
        }
    }
}
#[cfg(test)]
mod tests;
