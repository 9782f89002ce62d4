//! The STUN server (RFC 8489 §6.3) with RFC 5780 NAT behaviour discovery, as a sans-IO
//! core.
//!
//! Given a second IP address and a second port, the server has four addresses
//! (primary/alternate IP × primary/alternate port) and answers CHANGE-REQUEST from the
//! one asked for, with OTHER-ADDRESS and RESPONSE-ORIGIN set (RFC 5780 §6). Without
//! them it answers CHANGE-REQUEST with 420, as a plain RFC 8489 server does.
//!
//! Anti-amplification: responses carry only what the request needs (no SOFTWARE unless
//! configured, no reason phrases beyond the standard short ones); PADDING in a response
//! never makes it larger than its request; RESPONSE-PORT together with PADDING is
//! refused (400); malformed requests other than unknown attributes get no answer at
//! all; every source IP is held to a token-bucket rate.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;
use chorus_framing::Transmit;

use crate::client::Transport;
use crate::error::{DecodeError, Error, Limit, UsageError, Violation};
use crate::rate::RateTable;
use crate::stun::{Attribute, Class, Header, Limits, Message, Method, UnknownList, types};

/// Per-source request rate: a token bucket keyed by source IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained requests per second per source IP. Default 50; at least 1.
    pub per_second: u32,
    /// Burst size (bucket capacity). Default 100; at least 1.
    pub burst: u32,
    /// Sources tracked at most. When the table is full, idle sources are purged (at
    /// most once per second); if it is still full the new source is refused
    /// ([`Limit::Sources`]). Default 10,000; at least 1.
    pub max_sources: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 100,
            max_sources: 10_000,
        }
    }
}

/// Server configuration; validated by [`Server::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The primary address, as clients reach it. Default 0.0.0.0:3478. With RFC 5780
    /// enabled it must be a specific IP (it is advertised in OTHER-ADDRESS).
    pub primary: SocketAddr,
    /// The alternate IP address (RFC 5780). Default none.
    pub alternate_ip: Option<IpAddr>,
    /// The alternate port (RFC 5780). Default none.
    pub alternate_port: Option<u16>,
    /// SOFTWARE to put in responses. Default none (smaller responses).
    pub software: Option<String>,
    /// Also send MAPPED-ADDRESS, for clients written to RFC 3489. Default false.
    pub mapped_address: bool,
    /// Per-source rate limit; `None` disables it. Default [`RateLimit::default`].
    pub rate_limit: Option<RateLimit>,
    /// Decode limits for requests.
    pub limits: Limits,
    /// Responses queued at most before new requests are dropped. Default 1024.
    pub max_queued: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            primary: SocketAddr::from(([0, 0, 0, 0], 3478)),
            alternate_ip: None,
            alternate_port: None,
            software: None,
            mapped_address: false,
            rate_limit: Some(RateLimit::default()),
            limits: Limits::default(),
            max_queued: 1024,
        }
    }
}

/// Counters, for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Success responses sent.
    pub responses: u64,
    /// Error responses sent.
    pub errors: u64,
    /// Datagrams dropped (malformed, rate-limited, not requests).
    pub dropped: u64,
}

/// A STUN Binding server (RFC 8489 §6.3, RFC 5780 §6). Performs no I/O.
///
/// The run loop:
/// 1. Give every received datagram to [`Server::handle_input`] with the local address
///    it arrived on; `Err` means it was dropped (the reason is for logs).
/// 2. Drain [`Server::poll_transmit`]: send each payload to `dst` from the socket bound
///    to `src` (one of [`Server::addresses`]).
/// 3. Call [`Server::handle_timeout`] at [`Server::poll_timeout`] (idle rate-limit
///    entries are purged there).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    rate: Option<RateTable>,
    transmits: VecDeque<Transmit>,
    /// Responses are encoded here and split off, so that sending one allocates nothing:
    /// once every payload handed out has been dropped, `reserve` reuses the buffer.
    arena: BytesMut,
    /// The attribute list of the last response, kept for its allocation.
    scratch: Vec<Attribute<'static>>,
    stats: Stats,
}

impl Server {
    /// A server.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a value outside its documented bounds.
    pub fn new(config: ServerConfig) -> Result<Self, Error> {
        if let Some(r) = &config.rate_limit
            && (r.per_second == 0 || r.burst == 0 || r.max_sources == 0)
        {
            return Err(UsageError::InvalidConfig("rate limit values must be at least 1").into());
        }
        if config.alternate_ip.is_some() != config.alternate_port.is_some() {
            return Err(UsageError::InvalidConfig(
                "RFC 5780 needs both alternate_ip and alternate_port",
            )
            .into());
        }
        if let (Some(ip), Some(port)) = (config.alternate_ip, config.alternate_port) {
            if config.primary.ip().is_unspecified()
                || ip == config.primary.ip()
                || ip.is_ipv4() != config.primary.is_ipv4()
            {
                return Err(UsageError::InvalidConfig(
                    "RFC 5780 needs a specific primary IP and a different alternate IP of the same family",
                )
                .into());
            }
            if port == config.primary.port() {
                return Err(
                    UsageError::InvalidConfig("alternate_port equals the primary port").into(),
                );
            }
        }
        if config.max_queued == 0 {
            return Err(UsageError::InvalidConfig("max_queued is 0").into());
        }
        let rate = config.rate_limit.clone().map(RateTable::new);
        Ok(Self {
            config,
            rate,
            transmits: VecDeque::new(),
            arena: BytesMut::new(),
            scratch: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Whether RFC 5780 behaviour discovery is enabled.
    #[must_use]
    pub fn is_rfc5780(&self) -> bool {
        self.config.alternate_ip.is_some()
    }

    /// The local addresses the driver must listen on: the primary, and with RFC 5780
    /// the other three.
    #[must_use]
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let p = self.config.primary;
        match (self.config.alternate_ip, self.config.alternate_port) {
            (Some(ip), Some(port)) => vec![
                p,
                SocketAddr::new(p.ip(), port),
                SocketAddr::new(ip, p.port()),
                SocketAddr::new(ip, port),
            ],
            _ => vec![p],
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The address that differs from `local` in IP, port or both (RFC 5780 §6).
    fn swap(&self, local: SocketAddr, ip: bool, port: bool) -> Option<SocketAddr> {
        let (alt_ip, alt_port) = (self.config.alternate_ip?, self.config.alternate_port?);
        let p = self.config.primary;
        let other_ip = if local.ip() == p.ip() { alt_ip } else { p.ip() };
        let other_port = if local.port() == p.port() {
            alt_port
        } else {
            p.port()
        };
        Some(SocketAddr::new(
            if ip { other_ip } else { local.ip() },
            if port { other_port } else { local.port() },
        ))
    }

    /// One received message: `local` is the address it arrived on, `from` its source.
    ///
    /// # Errors
    /// Why the message got no answer (the server answers what deserves an answer and
    /// drops the rest): rate limits, malformed input, a non-request.
    pub fn handle_input(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let result = self.respond(now, local, from, transport, bytes);
        if result.is_err() {
            self.stats.dropped += 1;
        }
        result
    }

    fn respond(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if let Some(rate) = &mut self.rate {
            rate.allow(now, from.ip())?;
        }
        if self.transmits.len() >= self.config.max_queued {
            return Err(Limit::Transactions(self.transmits.len()).into());
        }
        let header = Header::decode(bytes)?;
        if header.class != Class::Request {
            return Err(Violation::UnexpectedClass.into());
        }
        let request = match Message::decode(bytes, &self.config.limits) {
            Ok(m) => m,
            Err(DecodeError::UnknownRequiredAttributes(list)) => {
                // RFC 8489 §6.3.1: 420 with UNKNOWN-ATTRIBUTES.
                let mut raw = [0u8; 16];
                for (slot, t) in raw.chunks_exact_mut(2).zip(list.as_slice()) {
                    slot.copy_from_slice(&t.to_be_bytes());
                }
                let listed = raw.get(..list.as_slice().len() * 2).unwrap_or(&[]);
                let unknown = UnknownList::from_wire(listed)?;
                return self.error(
                    &header,
                    local,
                    from,
                    420,
                    "Unknown Attribute",
                    Some(unknown),
                    false,
                );
            }
            Err(e) => return Err(e.into()),
        };
        if request.method != Method::BINDING {
            return self.error(
                &header,
                local,
                from,
                400,
                "Bad Request",
                None,
                request.fingerprint,
            );
        }
        let mut change = None;
        let mut response_port = None;
        let mut padding = None;
        for a in &request.attributes {
            match a {
                Attribute::ChangeRequest { ip, port } => change = Some((*ip, *port)),
                Attribute::ResponsePort(p) => response_port = Some(*p),
                Attribute::Padding(p) => padding = Some(p.len()),
                _ => {}
            }
        }
        let rfc5780 = self.is_rfc5780();
        if change.is_some() && !rfc5780 {
            // Not a discovery server: CHANGE-REQUEST is an attribute we do not serve.
            let mut raw = [0u8; 2];
            raw.copy_from_slice(&types::CHANGE_REQUEST.to_be_bytes());
            let unknown = UnknownList::from_wire(&raw)?;
            return self.error(
                &header,
                local,
                from,
                420,
                "Unknown Attribute",
                Some(unknown),
                request.fingerprint,
            );
        }
        // RFC 5780 §6.1: CHANGE-REQUEST and RESPONSE-PORT apply to UDP only; over TCP
        // the response must use the connection. PADDING with RESPONSE-PORT would let a
        // request aim large responses at another port: refused.
        if transport == Transport::Tcp
            && (change.is_some_and(|(i, p)| i || p) || response_port.is_some())
            || (padding.is_some() && response_port.is_some())
        {
            return self.error(
                &header,
                local,
                from,
                400,
                "Bad Request",
                None,
                request.fingerprint,
            );
        }
        let src = match change {
            Some((ip, port)) if ip || port => self.swap(local, ip, port).unwrap_or(local),
            _ => local,
        };
        let dst = response_port.map_or(from, |p| SocketAddr::new(from.ip(), p));
        let mut response = Message::new(Class::Success, Method::BINDING, header.transaction_id);
        response.attributes = reuse(std::mem::take(&mut self.scratch));
        response.attributes.push(Attribute::XorMappedAddress(from));
        if self.config.mapped_address {
            response.attributes.push(Attribute::MappedAddress(from));
        }
        if rfc5780 {
            response.attributes.push(Attribute::ResponseOrigin(src));
            if let Some(other) = self.swap(local, true, true) {
                response.attributes.push(Attribute::OtherAddress(other));
            }
        }
        if let Some(s) = &self.config.software {
            response.attributes.push(Attribute::Software(s));
        }
        response.fingerprint = request.fingerprint;
        // RFC 5780 §7.6: echo PADDING, but never beyond the request's own size.
        const ZEROS: [u8; 1500] = [0; 1500];
        if let Some(want) = padding {
            let room = bytes.len().saturating_sub(response.encoded_len() + 4);
            let len = want.min(room).min(ZEROS.len()) & !3;
            if len > 0 {
                response
                    .attributes
                    .push(Attribute::Padding(ZEROS.get(..len).unwrap_or(&[])));
            }
        }
        let payload = encode_into(&mut self.arena, &response)?;
        self.scratch = reuse(response.attributes);
        self.transmits
            .push_back(Transmit::new(dst, payload).with_src(src));
        self.stats.responses += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn error(
        &mut self,
        header: &Header,
        local: SocketAddr,
        from: SocketAddr,
        code: u16,
        reason: &str,
        unknown: Option<UnknownList<'_>>,
        fingerprint: bool,
    ) -> Result<(), Error> {
        let mut m = Message::new(Class::Error, header.method, header.transaction_id);
        m.attributes.push(Attribute::ErrorCode { code, reason });
        if let Some(list) = unknown {
            m.attributes.push(Attribute::UnknownAttributes(list));
        }
        m.fingerprint = fingerprint;
        let payload = encode_into(&mut self.arena, &m)?;
        self.transmits
            .push_back(Transmit::new(from, payload).with_src(local));
        self.stats.errors += 1;
        Ok(())
    }

    /// Purges idle rate-limit entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = self.poll_timeout().is_some_and(|t| t <= now);
        if let Some(rate) = &mut self.rate
            && due
        {
            rate.purge(now);
        }
    }

    /// The next response to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Server::handle_timeout`] should run next: a purge every 10 s while
    /// sources are tracked.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rate.as_ref()?.next_purge()
    }
}

/// Bytes reserved at once for encoding responses.
const ARENA_CHUNK: usize = 16 * 1024;

/// Encodes `m` at the end of `arena` and splits it off: no allocation while earlier
/// payloads have been dropped (or the chunk still has room).
fn encode_into(arena: &mut BytesMut, m: &Message<'_>) -> Result<bytes::Bytes, Error> {
    let len = m.encoded_len();
    if arena.capacity() < len {
        arena.reserve(len.max(ARENA_CHUNK));
    }
    m.encode(None, arena)?;
    Ok(arena.split().freeze())
}

/// An empty attribute list of any lifetime that keeps `v`'s allocation (the standard
/// library collects a `Vec` into itself in place when the element layout is the same).
#[allow(clippy::unnecessary_filter_map)] // `filter` could not change the lifetime
fn reuse<'b>(mut v: Vec<Attribute<'_>>) -> Vec<Attribute<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// The STUN server (RFC 8489 Binding, RFC 5780 behaviour discovery) behind one port:
/// it takes STUN messages of the Binding method only, so that behind a
/// [`chorus_framing::Mux`] registered before a TURN server it leaves Allocate,
/// Refresh and the rest to the TURN server (alone on a port, it still answers
/// those with 400 when a driver hands them to it anyway).
impl chorus_framing::DatagramCore for Server {
    type Event = std::convert::Infallible;
    type Error = Error;

    fn accepts(&self, _: SocketAddr, _: SocketAddr, bytes: &[u8]) -> bool {
        chorus_framing::classify(bytes) == chorus_framing::PacketKind::Stun
            && Header::decode(bytes).is_ok_and(|h| h.method == Method::BINDING)
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.handle_input(now, local, from, Transport::Udp, bytes)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Self::poll_transmit(self)
    }

    fn poll_event(&mut self) -> Option<std::convert::Infallible> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
}

#[cfg(test)]
mod tests;
