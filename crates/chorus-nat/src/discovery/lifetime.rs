//! Binding lifetime discovery (RFC 5780 §4.6), as a sans-IO core.
//!
//! Two local sockets, X and Y, on the same host. Each round:
//! 1. X sends a Binding request to the server: the answer names X's mapped port and
//!    (re)starts the NAT's idle timer for that binding.
//! 2. After waiting T, Y sends a Binding request with RESPONSE-PORT set to X's mapped
//!    port. The server answers to Y's public IP at that port, from the address X talked
//!    to, so any filtering lets it through: if the answer arrives, X's binding lived at
//!    least T; if the transaction times out, it expired before T.
//!
//! T doubles from [`LifetimeConfig::first`] until a binding expires (or T passes
//! [`LifetimeConfig::max`]), then a binary search narrows the interval down to
//! [`LifetimeConfig::resolution`]. The server must support RESPONSE-PORT (RFC 5780
//! servers do; the Chorus server does).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_framing::{Entropy, Transmit};

use crate::client::{Client, ClientConfig, Event, Transport};
use crate::error::{Error, UsageError};
use crate::stun::{Attribute, Header, Method, TransactionId};

/// Binding lifetime probe configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifetimeConfig {
    /// The first waiting time. Default 5 s.
    pub first: Duration,
    /// Stop doubling once T exceeds this: the binding lives at least that long. Default
    /// 10 minutes.
    pub max: Duration,
    /// Stop the binary search once the interval is this narrow. Default 5 s.
    pub resolution: Duration,
    /// Transaction settings: as [`super::DiscoveryConfig`]'s.
    pub client: ClientConfig,
}

impl Default for LifetimeConfig {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(5),
            max: Duration::from_secs(600),
            resolution: Duration::from_secs(5),
            client: super::DiscoveryConfig::default().client,
        }
    }
}

/// What the probe learned about the NAT's idle timeout for UDP bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lifetime {
    /// The longest idle time after which a binding was seen alive (zero if never).
    pub at_least: Duration,
    /// The shortest idle time after which a binding was seen expired; `None` when no
    /// binding expired up to [`LifetimeConfig::max`].
    pub expired_by: Option<Duration>,
    /// Whether the server stopped answering X's own requests (then the bounds are what
    /// was learned so far).
    pub server_lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// X asks for (and so refreshes) its binding.
    Refresh(TransactionId),
    /// Idle until the check.
    Waiting {
        until: Instant,
        mapped_port: u16,
    },
    /// Y's request with RESPONSE-PORT is outstanding.
    Check(TransactionId),
    Done,
}

/// RFC 5780 §4.6 binding lifetime discovery. Performs no I/O.
///
/// Drive it like [`super::Discovery`], with two sockets: each
/// [`LifetimeProbe::poll_transmit`] names the socket to send from in `src` (X or Y),
/// and datagrams received on either socket go to [`LifetimeProbe::handle_input`].
#[derive(Debug)]
pub struct LifetimeProbe {
    client: Client,
    x: SocketAddr,
    y: SocketAddr,
    server: SocketAddr,
    config: LifetimeConfig,
    state: State,
    wait: Duration,
    alive: Duration,
    dead: Option<Duration>,
    /// Which socket the latest transactions belong to (at most two).
    senders: Vec<(TransactionId, SocketAddr)>,
    result: Option<Lifetime>,
    /// Whether [`LifetimeProbe::poll_event`] has given the result.
    reported: bool,
}

impl LifetimeProbe {
    /// Starts the probe: X's first request is ready in [`LifetimeProbe::poll_transmit`].
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for zero durations, `first > max`, equal or
    /// mixed-family sockets; the entropy source failing.
    pub fn new(
        config: LifetimeConfig,
        now: Instant,
        (x, y): (SocketAddr, SocketAddr),
        server: SocketAddr,
        entropy: Box<dyn Entropy>,
    ) -> Result<Self, Error> {
        if config.first.is_zero() || config.resolution.is_zero() || config.first > config.max {
            return Err(UsageError::InvalidConfig("lifetime durations").into());
        }
        if x == y || x.is_ipv4() != server.is_ipv4() || y.is_ipv4() != server.is_ipv4() {
            return Err(UsageError::InvalidConfig("lifetime probe sockets").into());
        }
        let client = Client::new(config.client.clone(), entropy)?;
        let mut probe = Self {
            client,
            x,
            y,
            server,
            wait: config.first,
            config,
            state: State::Done,
            alive: Duration::ZERO,
            dead: None,
            senders: Vec::with_capacity(2),
            result: None,
            reported: false,
        };
        probe.refresh(now)?;
        Ok(probe)
    }

    /// The result, once the search has ended.
    #[must_use]
    pub fn result(&self) -> Option<Lifetime> {
        self.result
    }

    /// The result as an event, once, when the search has ended (the same value
    /// [`LifetimeProbe::result`] keeps returning).
    pub fn poll_event(&mut self) -> Option<Lifetime> {
        if self.reported {
            return None;
        }
        self.reported = self.result.is_some();
        self.result
    }

    /// Whether `bytes` are a response to one of the probe's transactions.
    #[must_use]
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        self.client.accepts(bytes)
    }

    /// One datagram received on X or Y.
    ///
    /// # Errors
    /// Rejected, as [`Client::handle_input`].
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.client.handle_input(now, from, bytes)?;
        self.advance(now)
    }

    /// Timers: retransmissions, the idle wait, unanswered checks.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Waiting { until, mapped_port } = self.state
            && now >= until
        {
            // Only entropy can fail here; the probe then ends with what it has.
            if self.check(now, mapped_port).is_err() {
                self.finish(true);
            }
        }
        self.client.handle_timeout(now);
        if self.advance(now).is_err() {
            self.finish(true);
        }
    }

    /// The next datagram, with `src` naming the socket (X or Y) to send it from.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.client.poll_transmit()?;
        let id = Header::decode(&t.payload).ok().map(|h| h.transaction_id);
        let src = self
            .senders
            .iter()
            .find(|(tid, _)| Some(*tid) == id)
            .map_or(self.x, |(_, s)| *s);
        Some(t.with_src(src))
    }

    /// When [`LifetimeProbe::handle_timeout`] should next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wait = match self.state {
            State::Waiting { until, .. } => Some(until),
            _ => None,
        };
        match (wait, self.client.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn start(
        &mut self,
        now: Instant,
        src: SocketAddr,
        attrs: &[Attribute<'_>],
    ) -> Result<TransactionId, Error> {
        let id = self.client.start_request(
            now,
            self.server,
            Transport::Udp,
            Method::BINDING,
            attrs,
            None,
        )?;
        // One transaction is outstanding at a time; the previous one is kept only for
        // its late retransmissions' sake.
        if self.senders.len() >= 2 {
            self.senders.remove(0);
        }
        self.senders.push((id, src));
        Ok(id)
    }

    fn refresh(&mut self, now: Instant) -> Result<(), Error> {
        let id = self.start(now, self.x, &[])?;
        self.state = State::Refresh(id);
        Ok(())
    }

    fn check(&mut self, now: Instant, mapped_port: u16) -> Result<(), Error> {
        // RFC 5780 §4.6: from Y, the answer to go to X's mapped port.
        let id = self.start(now, self.y, &[Attribute::ResponsePort(mapped_port)])?;
        self.state = State::Check(id);
        Ok(())
    }

    fn advance(&mut self, now: Instant) -> Result<(), Error> {
        while let Some(event) = self.client.poll_event() {
            let (id, answered) = match &event {
                Event::Response(r) => (r.id, r.error_code.is_none().then_some(r.mapped)),
                Event::TimedOut { id, .. } => (*id, None),
            };
            match self.state {
                State::Refresh(want) if want == id => match answered.flatten() {
                    Some(mapped) => {
                        self.state = State::Waiting {
                            until: now + self.wait,
                            mapped_port: mapped.port(),
                        };
                    }
                    None => self.finish(true),
                },
                State::Check(want) if want == id => {
                    if answered.is_some() {
                        self.alive = self.alive.max(self.wait);
                    } else {
                        self.dead = Some(self.dead.map_or(self.wait, |d| d.min(self.wait)));
                    }
                    if self.next_wait() {
                        self.refresh(now)?;
                    } else {
                        self.finish(false);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Chooses the next T; `false` when the search is over.
    fn next_wait(&mut self) -> bool {
        match self.dead {
            None => {
                if self.wait >= self.config.max {
                    return false;
                }
                self.wait = (self.wait * 2).min(self.config.max);
                true
            }
            Some(dead) => {
                if dead.saturating_sub(self.alive) <= self.config.resolution {
                    return false;
                }
                self.wait = self.alive + (dead - self.alive) / 2;
                true
            }
        }
    }

    fn finish(&mut self, server_lost: bool) {
        self.state = State::Done;
        self.result = Some(Lifetime {
            at_least: self.alive,
            expired_by: self.dead,
            server_lost,
        });
    }
}

// The binding lifetime probe as a datagram core over its two sockets; its one event
// is the result.
chorus_framing::datagram_core! {
    impl for LifetimeProbe {
        type Event = Lifetime;
        type Error = Error;
        fn accepts(&self, _local, _from, bytes) {
            Self::accepts(self, bytes)
        }
        fn handle_datagram(&mut self, now, _local, from, bytes) {
            self.handle_input(now, from, bytes)
        }
    }
}
