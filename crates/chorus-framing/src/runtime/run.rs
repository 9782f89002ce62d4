//! The run loop, written once: [`Runtime`] owns a core and its sockets and keeps the
//! contract's invariants (chorus-framing's `sansio` module docs).

use std::borrow::Borrow;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Instant;

use crate::DatagramCore;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::runtime::{DriverError, SocketConfig, Sockets, now};

/// What [`Runtime::drive`]'s command handler tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow<E> {
    /// Go on.
    Continue,
    /// Send this event after what the core has queued (its transmits and events).
    Emit(E),
    /// Send what the core has queued, then return.
    Stop,
}

/// One core driven over one set of sockets: the only run loop in Chorus.
///
/// - [`Runtime::flush`] sends every transmit the core queued ([`Sockets::flush`]:
///   `sendmmsg` batches and GSO runs on Linux).
/// - [`Runtime::step`] waits for the first of a readable socket and the core's
///   deadline, and hands it to the core. It is cancel-safe, so an adapter with inputs
///   of its own (an application's commands, audio frames, TCP streams) puts it in a
///   `tokio::select!` next to them.
/// - [`Runtime::run`] is `flush` and `step` forever, for a server core with no events;
///   [`Runtime::drive`] adds the bounded command and event channels an application
///   talks to a core through.
///
/// The core's clock is tokio's ([`now`]), so a test on a paused runtime runs the core
/// in virtual time. The timer is one `Sleep`, moved only when the core's deadline
/// changes.
#[derive(Debug)]
pub struct Runtime<C, S = UdpSocket> {
    core: C,
    sockets: Sockets<S>,
    /// Built on first use (a `Sleep` needs the runtime's timer).
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline `timer` is set to; `None`: not armed.
    armed: Option<Instant>,
}

impl<C: DatagramCore> Runtime<C, UdpSocket> {
    /// `core` on its own new socket set holding `socket`.
    ///
    /// # Errors
    /// [`DriverError::Io`] if `config` is out of bounds or the socket has no local
    /// address.
    pub fn on_socket(
        core: C,
        socket: UdpSocket,
        config: SocketConfig,
    ) -> Result<Self, DriverError> {
        let mut sockets = Sockets::new(config)?;
        sockets.add(socket)?;
        Ok(Self::new(core, sockets))
    }
}

impl<C: DatagramCore, S: Borrow<UdpSocket>> Runtime<C, S> {
    /// `core` on `sockets`.
    pub fn new(core: C, sockets: Sockets<S>) -> Self {
        Self {
            core,
            sockets,
            timer: None,
            armed: None,
        }
    }

    /// The core.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// The core, for its own API (a command from the application). Drain what it
    /// queues with [`Runtime::flush`] and its events before waiting again.
    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    /// The sockets.
    pub fn sockets(&self) -> &Sockets<S> {
        &self.sockets
    }

    /// The sockets, to add or remove one (a TURN relay's) while running.
    pub fn sockets_mut(&mut self) -> &mut Sockets<S> {
        &mut self.sockets
    }

    /// The core and the sockets at once: for an adapter that does what its core asks
    /// of the sockets (a TURN server's "open a relay socket", then "it is open").
    pub fn parts_mut(&mut self) -> (&mut C, &mut Sockets<S>) {
        (&mut self.core, &mut self.sockets)
    }

    /// The core and the sockets, when the run is over.
    pub fn into_parts(self) -> (C, Sockets<S>) {
        (self.core, self.sockets)
    }

    /// Sends everything the core queued; returns how many datagrams the kernel took.
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails (a peer's ICMP error is not a failure).
    pub async fn flush(&mut self) -> Result<usize, DriverError> {
        self.sockets.flush(&mut self.core).await
    }

    /// Waits for the first of a readable socket and the core's deadline, then reads
    /// the socket into the core or runs its timers. Cancel-safe: cancelled, it has
    /// taken nothing from a socket or the core.
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails, [`DriverError::Closed`] if there is none.
    pub async fn step(&mut self) -> Result<(), DriverError> {
        let deadline = self.core.poll_timeout();
        if deadline.is_some_and(|t| t <= now()) {
            self.core.handle_timeout(now());
            return Ok(());
        }
        if deadline != self.armed {
            if let Some(t) = deadline {
                match &mut self.timer {
                    Some(timer) => timer.as_mut().reset(t.into()),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(t.into()))),
                }
            }
            self.armed = deadline;
        }
        let timer = self.timer.as_mut().filter(|_| self.armed.is_some());
        tokio::select! {
            biased;
            r = self.sockets.readable() => r?,
            () = async { if let Some(t) = timer { t.await } }, if self.armed.is_some() => {
                self.armed = None;
                self.core.handle_timeout(now());
                return Ok(());
            }
        }
        self.sockets.recv_ready(&mut self.core)?;
        Ok(())
    }

    /// Sends the core's events on `events` (waiting while the channel is full).
    ///
    /// # Errors
    /// [`DriverError::Closed`] if the receiver was dropped.
    pub async fn emit<E: From<C::Event>>(
        &mut self,
        events: &mpsc::Sender<E>,
    ) -> Result<(), DriverError> {
        while let Some(e) = self.core.poll_event() {
            events
                .send(e.into())
                .await
                .map_err(|_| DriverError::Closed)?;
        }
        Ok(())
    }

    /// The run loop of a core an application talks to: its events go to `events`
    /// (converted into the application's event type `E`), and each command from
    /// `commands` is handed to `apply` with the current time, between inputs. Returns
    /// when `apply` says [`Flow::Stop`] or every command sender is dropped, after
    /// sending what the core queued.
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails, [`DriverError::Closed`] if the event
    /// receiver is dropped while the core has an event.
    pub async fn drive<Cmd, E: From<C::Event>>(
        &mut self,
        mut commands: mpsc::Receiver<Cmd>,
        events: &mpsc::Sender<E>,
        mut apply: impl FnMut(&mut C, Instant, Cmd) -> Flow<E>,
    ) -> Result<(), DriverError> {
        loop {
            self.flush().await?;
            self.emit(events).await?;
            tokio::select! {
                r = self.step() => r?,
                cmd = commands.recv() => {
                    let flow = match cmd {
                        Some(cmd) => apply(&mut self.core, now(), cmd),
                        None => Flow::Stop,
                    };
                    if matches!(flow, Flow::Continue) {
                        continue;
                    }
                    self.flush().await?;
                    self.emit(events).await?;
                    match flow {
                        Flow::Emit(e) => events.send(e).await.map_err(|_| DriverError::Closed)?,
                        _ => return Ok(()),
                    }
                }
            }
        }
    }
}

impl<C: DatagramCore<Event = Infallible>, S: Borrow<UdpSocket>> Runtime<C, S> {
    /// Serves the core until a socket fails: a server with nothing to report.
    /// Dropping the future stops it.
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails, [`DriverError::Closed`] if there is none.
    pub async fn run(&mut self) -> Result<(), DriverError> {
        loop {
            self.flush().await?;
            self.step().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use crate::Transmit;

    use super::*;

    /// Reports each datagram's length, and after a command "ping PEER in D" sends
    /// `ping` to PEER at that time.
    #[derive(Default)]
    struct Pinger {
        out: Vec<Transmit>,
        events: Vec<usize>,
        ping: Option<(Instant, SocketAddr)>,
    }

    impl DatagramCore for Pinger {
        type Event = usize;
        type Error = Infallible;
        fn accepts(&self, _: SocketAddr, _: SocketAddr, _: &[u8]) -> bool {
            true
        }
        fn handle_datagram(
            &mut self,
            _: Instant,
            _: SocketAddr,
            _: SocketAddr,
            bytes: &[u8],
        ) -> Result<(), Infallible> {
            self.events.push(bytes.len());
            Ok(())
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.out.pop()
        }
        fn poll_event(&mut self) -> Option<usize> {
            self.events.pop()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.ping.map(|(t, _)| t)
        }
        fn handle_timeout(&mut self, now: Instant) {
            if let Some((t, peer)) = self.ping
                && now >= t
            {
                self.out.push(Transmit::new(peer, &b"ping"[..]));
                self.ping = None;
            }
        }
    }

    #[derive(Debug, PartialEq)]
    enum AppEvent {
        Got(usize),
        Refused(&'static str),
    }

    impl From<usize> for AppEvent {
        fn from(n: usize) -> Self {
            Self::Got(n)
        }
    }

    enum Cmd {
        Ping(SocketAddr, Duration),
        Bad,
        Quit,
    }

    #[tokio::test(start_paused = true)]
    async fn drive_applies_commands_fires_timers_and_sends_events_in_order() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rt =
            Runtime::on_socket(Pinger::default(), socket, SocketConfig::default()).unwrap();
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (event_tx, mut events) = mpsc::channel(4);
        let driver = tokio::spawn(async move {
            let r = rt
                .drive(cmd_rx, &event_tx, |core, now, cmd| match cmd {
                    Cmd::Ping(to, after) => {
                        core.ping = Some((now + after, to));
                        Flow::Continue
                    }
                    Cmd::Bad => Flow::Emit(AppEvent::Refused("bad")),
                    Cmd::Quit => Flow::Stop,
                })
                .await;
            (r, rt)
        });
        let start = tokio::time::Instant::now();
        cmd_tx
            .send(Cmd::Ping(
                peer.local_addr().unwrap(),
                Duration::from_secs(3),
            ))
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], addr));
        // The core's timer, on the paused clock: exactly when it was due.
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        peer.send_to(b"12345", addr).await.unwrap();
        assert_eq!(events.recv().await, Some(AppEvent::Got(5)));
        cmd_tx.send(Cmd::Bad).await.unwrap();
        assert_eq!(events.recv().await, Some(AppEvent::Refused("bad")));
        cmd_tx.send(Cmd::Quit).await.unwrap();
        let (r, rt) = driver.await.unwrap();
        r.unwrap();
        assert_eq!(rt.sockets().stats().received, 1);
    }

    #[tokio::test]
    async fn a_closed_command_channel_ends_the_drive_and_a_dropped_receiver_is_closed() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut rt =
            Runtime::on_socket(Pinger::default(), socket, SocketConfig::default()).unwrap();
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>(1);
        let (event_tx, events) = mpsc::channel::<AppEvent>(1);
        drop(cmd_tx);
        rt.drive(cmd_rx, &event_tx, |_, _, _| Flow::Continue)
            .await
            .unwrap();
        // An event with nobody to take it stops the driver.
        drop(events);
        let (_keep, cmd_rx) = mpsc::channel::<Cmd>(1);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"x", addr).await.unwrap();
        let r = rt.drive(cmd_rx, &event_tx, |_, _, _| Flow::Continue).await;
        assert!(matches!(r, Err(DriverError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn a_borrowed_socket_serves_a_borrowed_core_and_stays_the_callers() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut core = Pinger::default();
        {
            let mut sockets = Sockets::new(SocketConfig::default()).unwrap();
            sockets.add(&socket).unwrap();
            let mut rt = Runtime::new(&mut core, sockets);
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(b"abc", addr).await.unwrap();
            rt.step().await.unwrap();
        }
        assert_eq!(core.events, vec![3]);
        // Still the caller's, and still registered with tokio.
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"again", addr).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(socket.recv_from(&mut buf).await.unwrap().0, 5);
    }
}
