//! NAT behaviour discovery (RFC 5780 §4.3 mapping, §4.4 filtering) against an RFC 5780
//! STUN server, as a sans-IO core, reporting the RFC 5780 terms and the classic names.
//!
//! The tests run one after another, filtering first so that the mapping tests (which
//! send to the server's other IP address) cannot open the filter they measure:
//! 1. Test I: Binding to the primary address. No answer: UDP blocked. The answer gives
//!    the mapped address and OTHER-ADDRESS (none: the server cannot do RFC 5780).
//! 2. Filtering test II: CHANGE-REQUEST (IP and port). An answer means
//!    endpoint-independent filtering.
//! 3. Filtering test III: CHANGE-REQUEST (port only). An answer means address-dependent
//!    filtering, silence address-and-port-dependent.
//! 4. Mapping test II: Binding to the other IP, primary port. The same mapped address as
//!    test I means endpoint-independent mapping (skipped when the mapped address is the
//!    local one: no NAT).
//! 5. Mapping test III: Binding to the other IP and port. The same mapped address as
//!    test II means address-dependent mapping, otherwise address-and-port-dependent.
//! 6. Hairpinning (RFC 5780 §4.5), behind a NAT only: a Binding request to the client's
//!    own mapped address. If the NAT loops it back, the request arrives on the client's
//!    own socket and hairpinning is supported; silence means it is not.
//!
//! The binding lifetime (RFC 5780 §4.6) takes minutes and a second socket, so it is a
//! separate probe: [`LifetimeProbe`]. The TCP reachability probe for hosts whose UDP is
//! blocked is the driver's (`driver::probe_tcp`), since it needs a connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_framing::{Entropy, Transmit};

use crate::client::{Client, ClientConfig, Event, Transport};
use crate::error::{Error, UsageError};
use crate::stun::{Attribute, Class, Header, Message, Method, TransactionId};

mod lifetime;
pub use lifetime::{Lifetime, LifetimeConfig, LifetimeProbe};

/// An RFC 5780 mapping or filtering behaviour (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Endpoint-independent.
    EndpointIndependent,
    /// Address-dependent.
    AddressDependent,
    /// Address-and-port-dependent.
    AddressAndPortDependent,
    /// Not determined (UDP blocked, or the server is not an RFC 5780 server).
    Unknown,
}

/// The classic (RFC 3489-era) name of what is in front of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Classic {
    /// No NAT, no filtering.
    OpenInternet,
    /// NAT: endpoint-independent mapping and filtering.
    FullCone,
    /// NAT: endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// NAT: endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// NAT whose mapping depends on the destination.
    Symmetric,
    /// No NAT, but a firewall filtering unsolicited traffic.
    SymmetricUdpFirewall,
    /// No STUN answer at all over UDP.
    UdpBlocked,
    /// The server cannot tell (no OTHER-ADDRESS): only the mapped address is known.
    Unknown,
}

/// The outcome of a discovery run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The server-reflexive address from test I.
    pub mapped: Option<SocketAddr>,
    /// Whether the mapped address differs from the local one.
    pub behind_nat: Option<bool>,
    /// Mapping behaviour (RFC 5780 §4.3).
    pub mapping: Behaviour,
    /// Filtering behaviour (RFC 5780 §4.4).
    pub filtering: Behaviour,
    /// The classic name.
    pub classic: Classic,
    /// Whether the NAT hairpins (RFC 5780 §4.5): `None` when not behind a NAT, when
    /// the test was disabled, or when discovery ended before it.
    pub hairpinning: Option<bool>,
    /// When UDP is blocked: the address the server saw over TCP, if it was reachable.
    /// Filled in by `driver::run_discovery` (the core has no TCP).
    pub tcp_mapped: Option<SocketAddr>,
}

impl Report {
    /// Whether this host may serve as a super node as far as the network goes: never
    /// behind a NAT or a firewall that filters unsolicited traffic (SYSTEM.md: "never if
    /// it is behind NAT, a restrictive firewall"), so only the open Internet qualifies.
    /// Bandwidth and processing power are the node's to judge; the node also caches
    /// the report (chorus-hostcache's `NatInfo`) and refreshes it periodically.
    #[must_use]
    pub fn super_node_eligible(&self) -> bool {
        self.classic == Classic::OpenInternet
    }
}

/// Discovery configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// Transaction settings for each test. Default: RTO 250 ms, 3 sends, final wait
    /// 4 RTOs (each unanswered test costs 2.75 s; RFC 8489's 39.5 s defaults would
    /// make a filtering verdict take minutes).
    pub client: ClientConfig,
    /// Run the hairpinning test (behind a NAT). Default true.
    pub hairpin: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig {
                rto: Duration::from_millis(250),
                max_sends: 3,
                last_wait_multiplier: 4,
                ..ClientConfig::default()
            },
            hairpin: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Test1,
    Filter2,
    Filter3,
    Map2,
    Map3,
    Hairpin(TransactionId),
    Done,
}

/// RFC 5780 NAT behaviour discovery. Performs no I/O.
///
/// The run loop is the client's: drain [`Discovery::poll_transmit`] after every call,
/// feed responses to [`Discovery::handle_input`], call [`Discovery::handle_timeout`] at
/// [`Discovery::poll_timeout`], until [`Discovery::report`] is `Some`. The socket must
/// be the one bound to `local`, and must accept datagrams from any source.
#[derive(Debug)]
pub struct Discovery {
    client: Client,
    local: SocketAddr,
    server: SocketAddr,
    step: Step,
    mapped1: Option<SocketAddr>,
    other: Option<SocketAddr>,
    mapped2: Option<SocketAddr>,
    filtering: Behaviour,
    mapping: Behaviour,
    hairpin_test: bool,
    hairpinning: Option<bool>,
    report: Option<Report>,
    /// Whether [`Discovery::poll_event`] has handed the report out.
    reported: bool,
}

impl Discovery {
    /// Starts discovery from the socket bound to `local` against the RFC 5780 server at
    /// `server`; test I's request is ready in [`Discovery::poll_transmit`].
    ///
    /// # Errors
    /// An invalid configuration, or the entropy source failing.
    pub fn new(
        config: DiscoveryConfig,
        now: Instant,
        local: SocketAddr,
        server: SocketAddr,
        entropy: Box<dyn Entropy>,
    ) -> Result<Self, Error> {
        if local.is_ipv4() != server.is_ipv4() {
            return Err(
                UsageError::InvalidConfig("local and server address families differ").into(),
            );
        }
        let mut client = Client::new(config.client.clone(), entropy)?;
        client.start_binding(now, server)?;
        Ok(Self {
            client,
            local,
            server,
            step: Step::Test1,
            mapped1: None,
            other: None,
            mapped2: None,
            filtering: Behaviour::Unknown,
            mapping: Behaviour::Unknown,
            hairpin_test: config.hairpin,
            hairpinning: None,
            report: None,
            reported: false,
        })
    }

    /// The STUN server under test.
    #[must_use]
    pub const fn server(&self) -> SocketAddr {
        self.server
    }

    /// The result as an event, once, when every test has finished (the same value
    /// [`Discovery::report`] keeps returning).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Report> {
        if self.reported {
            return None;
        }
        self.reported = self.report.is_some();
        self.report
    }

    /// Whether `bytes` are for this discovery: a response to its current test, or its
    /// own hairpinning request looped back by the NAT (for sharing a socket).
    #[must_use]
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        self.client.accepts(bytes)
            || matches!(self.step, Step::Hairpin(id)
                if Header::decode(bytes).is_ok_and(|h| h.transaction_id == id))
    }

    /// The result, once every test has finished.
    #[must_use]
    pub fn report(&self) -> Option<Report> {
        self.report
    }

    /// One received datagram.
    ///
    /// # Errors
    /// Rejected, as [`Client::handle_input`].
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if let Step::Hairpin(id) = self.step
            && Header::decode(bytes).is_ok_and(|h| h.transaction_id == id)
            && Message::decode(bytes, &crate::stun::Limits::default())
                .is_ok_and(|m| m.class == Class::Request && m.method == Method::BINDING)
        {
            // Our own request, looped back by the NAT (RFC 5780 §4.5).
            let _ = self.client.cancel(id);
            self.hairpinning = Some(true);
            self.finish();
            return Ok(());
        }
        self.client.handle_input(now, from, bytes)?;
        self.advance(now)
    }

    /// Timers: retransmissions and unanswered tests.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        // Starting the next test can only fail on entropy; then discovery ends early.
        if self.advance(now).is_err() {
            self.finish();
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.client.poll_transmit()
    }

    /// When [`Discovery::handle_timeout`] should next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    fn send(
        &mut self,
        now: Instant,
        dst: SocketAddr,
        change: Option<(bool, bool)>,
    ) -> Result<TransactionId, Error> {
        let attrs: Vec<Attribute<'_>> = change
            .map(|(ip, port)| Attribute::ChangeRequest { ip, port })
            .into_iter()
            .collect();
        self.client
            .start_request(now, dst, Transport::Udp, Method::BINDING, &attrs, None)
    }

    fn advance(&mut self, now: Instant) -> Result<(), Error> {
        while let Some(event) = self.client.poll_event() {
            let answer = match event {
                Event::Response(r) if r.error_code.is_none() => Some(r),
                _ => None,
            };
            match self.step {
                Step::Test1 => {
                    let Some(r) = answer else {
                        self.finish();
                        continue;
                    };
                    self.mapped1 = r.mapped;
                    self.other = r.other_address;
                    if self.other.is_none() || self.mapped1.is_none() {
                        self.finish();
                        continue;
                    }
                    self.step = Step::Filter2;
                    self.send(now, self.server, Some((true, true)))?;
                }
                Step::Filter2 => {
                    if answer.is_some() {
                        self.filtering = Behaviour::EndpointIndependent;
                        self.start_mapping(now)?;
                    } else {
                        self.step = Step::Filter3;
                        self.send(now, self.server, Some((false, true)))?;
                    }
                }
                Step::Filter3 => {
                    self.filtering = if answer.is_some() {
                        Behaviour::AddressDependent
                    } else {
                        Behaviour::AddressAndPortDependent
                    };
                    self.start_mapping(now)?;
                }
                Step::Map2 => {
                    let Some(m2) = answer.and_then(|r| r.mapped) else {
                        self.finish();
                        continue;
                    };
                    if Some(m2) == self.mapped1 {
                        self.mapping = Behaviour::EndpointIndependent;
                        self.end_mapping(now)?;
                    } else if let Some(other) = self.other {
                        self.mapped2 = Some(m2);
                        self.step = Step::Map3;
                        self.send(now, other, None)?;
                    }
                }
                Step::Map3 => {
                    if let Some(m3) = answer.and_then(|r| r.mapped) {
                        self.mapping = if Some(m3) == self.mapped2 {
                            Behaviour::AddressDependent
                        } else {
                            Behaviour::AddressAndPortDependent
                        };
                    }
                    self.end_mapping(now)?;
                }
                Step::Hairpin(_) => {
                    // Only the request's own timeout lands here: nothing looped back.
                    self.hairpinning = Some(false);
                    self.finish();
                }
                Step::Done => {}
            }
        }
        Ok(())
    }

    fn start_mapping(&mut self, now: Instant) -> Result<(), Error> {
        if self.mapped1 == Some(self.local) {
            // No translation: mapping is trivially endpoint-independent.
            self.mapping = Behaviour::EndpointIndependent;
            self.finish();
            return Ok(());
        }
        let Some(other) = self.other else {
            self.finish();
            return Ok(());
        };
        self.step = Step::Map2;
        self.send(now, SocketAddr::new(other.ip(), self.server.port()), None)?;
        Ok(())
    }

    /// After the mapping tests: the hairpinning test, if behind a NAT and enabled.
    fn end_mapping(&mut self, now: Instant) -> Result<(), Error> {
        match self.mapped1 {
            Some(mapped) if self.hairpin_test && mapped != self.local => {
                let id = self.send(now, mapped, None)?;
                self.step = Step::Hairpin(id);
            }
            _ => self.finish(),
        }
        Ok(())
    }

    fn finish(&mut self) {
        self.step = Step::Done;
        let behind_nat = self.mapped1.map(|m| m != self.local);
        let classic = match (behind_nat, self.other, self.mapping, self.filtering) {
            (None, ..) => Classic::UdpBlocked,
            (Some(_), None, ..) => Classic::Unknown,
            (Some(false), _, _, Behaviour::EndpointIndependent) => Classic::OpenInternet,
            (Some(false), _, _, Behaviour::Unknown) => Classic::Unknown,
            (Some(false), ..) => Classic::SymmetricUdpFirewall,
            (Some(true), _, Behaviour::EndpointIndependent, Behaviour::EndpointIndependent) => {
                Classic::FullCone
            }
            (Some(true), _, Behaviour::EndpointIndependent, Behaviour::AddressDependent) => {
                Classic::RestrictedCone
            }
            (Some(true), _, Behaviour::EndpointIndependent, Behaviour::AddressAndPortDependent) => {
                Classic::PortRestrictedCone
            }
            (
                Some(true),
                _,
                Behaviour::AddressDependent | Behaviour::AddressAndPortDependent,
                _,
            ) => Classic::Symmetric,
            (Some(true), ..) => Classic::Unknown,
        };
        self.report = Some(Report {
            mapped: self.mapped1,
            behind_nat,
            mapping: self.mapping,
            filtering: self.filtering,
            classic,
            hairpinning: self.hairpinning,
            tcp_mapped: None,
        });
    }
}

// NAT behaviour discovery as a datagram core; its one event is the report.
chorus_framing::datagram_core! {
    impl for Discovery {
        type Event = Report;
        type Error = Error;
        fn accepts(&self, _local, _from, bytes) {
            Self::accepts(self, bytes)
        }
        fn handle_datagram(&mut self, now, _local, from, bytes) {
            self.handle_input(now, from, bytes)
        }
    }
}

#[cfg(test)]
mod tests;
