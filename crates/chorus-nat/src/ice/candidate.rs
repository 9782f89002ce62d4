//! ICE candidates (RFC 8445 §5.1), their priorities and foundations, and the text form
//! exchanged over signalling: SDP-style attribute lines (RFC 8839 §5.1, §5.4).
//!
//! ```text
//! a=ice-ufrag:8hhY
//! a=ice-pwd:asd88fgpdd777uzjYhagZg
//! a=candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host
//! a=candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998
//! a=end-of-candidates
//! ```
//!
//! The parser treats its input as hostile: the text, each line, each token and the
//! number of candidates are bounded, numbers are range-checked, addresses must be IP
//! literals (no FQDN or mDNS names, so parsing never resolves anything), and the
//! first problem is reported as [`DecodeError::BadCandidate`].
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use crate::error::{DecodeError, Error, Limit};

/// Longest foundation (RFC 8839 §5.1: `1*32ice-char`).
pub const MAX_FOUNDATION: usize = 32;
/// Longest ufrag or password accepted (RFC 8839 §5.4: at most 256 characters).
pub const MAX_CREDENTIAL: usize = 256;
/// Longest line accepted by [`Description::parse`].
pub const MAX_LINE: usize = 512;
/// Most `name value` extension pairs accepted on one candidate line (skipped, except
/// `relay-transport`).
pub const MAX_EXTENSIONS: usize = 8;

/// The candidate types of RFC 8445 §5.1.1, with their recommended type preferences
/// (§5.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    /// An address on a local interface.
    Host,
    /// The address a NAT gave us, learned from a STUN server.
    ServerReflexive,
    /// An address learned from a connectivity check (RFC 8445 §7.2.5.3.1, §7.3.1.3).
    PeerReflexive,
    /// An address on a TURN server (RFC 8656) that relays for us.
    Relayed,
}

impl CandidateKind {
    /// RFC 8445 §5.1.2.2: host 126, peer-reflexive 110, server-reflexive 100, relayed 0.
    #[must_use]
    pub const fn type_preference(self) -> u32 {
        match self {
            Self::Host => 126,
            Self::PeerReflexive => 110,
            Self::ServerReflexive => 100,
            Self::Relayed => 0,
        }
    }

    /// The `typ` token of RFC 8839 §5.1.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ServerReflexive => "srflx",
            Self::PeerReflexive => "prflx",
            Self::Relayed => "relay",
        }
    }

    fn parse(s: &str) -> Result<Self, DecodeError> {
        match s {
            "host" => Ok(Self::Host),
            "srflx" => Ok(Self::ServerReflexive),
            "prflx" => Ok(Self::PeerReflexive),
            "relay" => Ok(Self::Relayed),
            _ => Err(DecodeError::BadCandidate("unknown candidate type")),
        }
    }
}

/// RFC 8445 §5.1.2.1: `2^24 * type preference + 2^8 * local preference + (256 -
/// component id)`; the component is always 1 here.
#[must_use]
pub const fn priority(kind: CandidateKind, local_preference: u16) -> u32 {
    (kind.type_preference() << 24) | ((local_preference as u32) << 8) | (256 - 1)
}

/// RFC 8445 §6.1.2.3: `2^32*MIN(G,D) + 2*MAX(G,D) + (G>D?1:0)`, where G is the
/// controlling agent's candidate priority and D the controlled agent's. Priorities
/// are at most `2^31 - 1` (§5.1.2.1); larger inputs are clamped to it.
#[must_use]
pub fn pair_priority(controlling: u32, controlled: u32) -> u64 {
    let clamp = |p: u32| u64::from(p.min(MAX_PRIORITY));
    let (g, d) = (clamp(controlling), clamp(controlled));
    (g.min(d) << 32) + 2 * g.max(d) + u64::from(g > d)
}

/// The largest candidate priority (RFC 8445 §5.1.2: `2^31 - 1`).
pub const MAX_PRIORITY: u32 = 0x7fff_ffff;

/// A foundation (RFC 8445 §5.1.1.3): up to 32 `ice-char`s, equal for candidates of the
/// same type, base IP, STUN/TURN server and transport.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Foundation {
    bytes: [u8; MAX_FOUNDATION],
    len: u8,
}

impl Foundation {
    /// A foundation from text.
    ///
    /// # Errors
    /// [`DecodeError::BadCandidate`] unless it is 1 to 32 `ice-char`s.
    pub fn new(s: &str) -> Result<Self, DecodeError> {
        if s.is_empty() || s.len() > MAX_FOUNDATION || !s.bytes().all(is_ice_char) {
            return Err(DecodeError::BadCandidate("foundation is not 1*32ice-char"));
        }
        let mut bytes = [0u8; MAX_FOUNDATION];
        if let Some(dst) = bytes.get_mut(..s.len()) {
            dst.copy_from_slice(s.as_bytes());
        }
        Ok(Self {
            bytes,
            len: s.len() as u8,
        })
    }

    /// A foundation from a number (decimal digits).
    #[must_use]
    pub fn from_number(n: u32) -> Self {
        let mut s = String::with_capacity(10);
        let _ = write!(s, "{n}");
        // Decimal digits of a u32 are 1 to 10 ice-chars.
        Self::new(&s).unwrap_or(Self {
            bytes: [b'0'; MAX_FOUNDATION],
            len: 1,
        })
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        let b = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        core::str::from_utf8(b).unwrap_or("0")
    }
}

impl fmt::Debug for Foundation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Foundation({})", self.as_str())
    }
}

impl fmt::Display for Foundation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One candidate (RFC 8445 §5.1) of the single UDP component this implementation
/// negotiates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Its type.
    pub kind: CandidateKind,
    /// The transport address a peer sends to.
    pub addr: SocketAddr,
    /// Where checks leave from (RFC 8445 §5.1.1.1-§5.1.1.2): the host address for
    /// host, server- and peer-reflexive candidates; the relayed address itself for a
    /// relayed one. Not signalled: a remote candidate's base is its `addr`.
    pub base: SocketAddr,
    /// `raddr`/`rport` (RFC 8839 §5.1): the base of a reflexive candidate, the local
    /// address of a TURN client for a relayed one.
    pub related: Option<SocketAddr>,
    /// RFC 8445 §5.1.2.
    pub priority: u32,
    /// RFC 8445 §5.1.1.3.
    pub foundation: Foundation,
    /// For a relayed candidate: the TURN allocation runs over TCP (or TLS), so data
    /// through it is "relayed over TCP". Signalled as the extension
    /// `relay-transport tcp`.
    pub via_tcp: bool,
}

impl Candidate {
    /// Writes the `candidate:` attribute value of RFC 8839 §5.1 (without `a=`).
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(96);
        let _ = write!(
            s,
            "candidate:{} 1 UDP {} {} {} typ {}",
            self.foundation,
            self.priority,
            self.addr.ip(),
            self.addr.port(),
            self.kind.as_str()
        );
        if let Some(r) = self.related {
            let _ = write!(s, " raddr {} rport {}", r.ip(), r.port());
        }
        if self.via_tcp {
            s.push_str(" relay-transport tcp");
        }
        s
    }

    /// Parses a `candidate:` attribute value (RFC 8839 §5.1), with or without a leading
    /// `a=`. The result's `base` is its `addr`.
    ///
    /// Returns `Ok(None)` for a well-formed candidate this agent does not use: another
    /// component than 1 or another transport than UDP (RFC 8839 §5.1: ignored).
    ///
    /// # Errors
    /// [`DecodeError::BadCandidate`] naming the first problem.
    pub fn parse(line: &str) -> Result<Option<Self>, DecodeError> {
        let bad = DecodeError::BadCandidate;
        if line.len() > MAX_LINE {
            return Err(bad("line too long"));
        }
        let line = line.strip_prefix("a=").unwrap_or(line);
        let rest = line
            .strip_prefix("candidate:")
            .ok_or(bad("not a candidate attribute"))?;
        let mut t = rest.split(' ');
        let mut next = |what: &'static str| t.next().filter(|s| !s.is_empty()).ok_or(bad(what));
        let foundation = Foundation::new(next("missing foundation")?)?;
        let component: u16 = number(next("missing component id")?, 3, "bad component id")?;
        if !(1..=256).contains(&component) {
            return Err(bad("component id outside 1..=256"));
        }
        let transport = next("missing transport")?;
        if !transport.bytes().all(is_token_char) {
            return Err(bad("bad transport"));
        }
        let priority: u32 = number(next("missing priority")?, 10, "bad priority")?;
        if !(1..=MAX_PRIORITY).contains(&priority) {
            return Err(bad("priority outside 1..=2^31-1"));
        }
        let addr_ip = ip(next("missing connection address")?)?;
        let port: u16 = number(next("missing port")?, 5, "bad port")?;
        if next("missing typ")? != "typ" {
            return Err(bad("missing typ"));
        }
        let kind = CandidateKind::parse(next("missing candidate type")?)?;
        let (mut raddr, mut rport, mut via_tcp, mut extensions) = (None, None, false, 0usize);
        loop {
            let name = match t.next() {
                None => break,
                Some("") => return Err(bad("empty token")),
                Some(name) => name,
            };
            let value = t
                .next()
                .filter(|s| !s.is_empty())
                .ok_or(bad("extension without value"))?;
            match name {
                "raddr" if raddr.is_none() && extensions == 0 => raddr = Some(ip(value)?),
                "rport" if raddr.is_some() && rport.is_none() && extensions == 0 => {
                    rport = Some(number::<u16>(value, 5, "bad rport")?);
                }
                _ => {
                    extensions += 1;
                    if extensions > MAX_EXTENSIONS {
                        return Err(bad("too many extensions"));
                    }
                    if !name.bytes().all(is_token_char) || !value.bytes().all(is_vchar) {
                        return Err(bad("bad extension"));
                    }
                    if name == "relay-transport" {
                        via_tcp =
                            value.eq_ignore_ascii_case("tcp") || value.eq_ignore_ascii_case("tls");
                    }
                }
            }
        }
        let related = match (raddr, rport) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            (None, None) => None,
            _ => return Err(bad("raddr without rport")),
        };
        if component != 1 || !transport.eq_ignore_ascii_case("udp") {
            return Ok(None);
        }
        let addr = SocketAddr::new(addr_ip, port);
        Ok(Some(Self {
            kind,
            addr,
            base: addr,
            related,
            priority,
            foundation,
            via_tcp: via_tcp && kind == CandidateKind::Relayed,
        }))
    }
}

/// What one signalling message carries: credentials, candidates and the end marker of
/// RFC 8838 (trickle). Every part is optional, so a description can be a whole offer
/// or one trickled candidate.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Description {
    /// `a=ice-ufrag` (RFC 8839 §5.4).
    pub ufrag: Option<String>,
    /// `a=ice-pwd` (RFC 8839 §5.4). Redacted in `Debug`.
    pub pwd: Option<String>,
    /// `a=candidate` lines of component 1 over UDP.
    pub candidates: Vec<Candidate>,
    /// `a=end-of-candidates` (RFC 8840 §9.3): the sender gathered everything.
    pub end_of_candidates: bool,
}

impl fmt::Debug for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Description")
            .field("ufrag", &self.ufrag)
            .field("pwd", &self.pwd.as_ref().map(|_| ".."))
            .field("candidates", &self.candidates)
            .field("end_of_candidates", &self.end_of_candidates)
            .finish()
    }
}

impl Description {
    /// The text form: one `a=` line per item, `\r\n`-terminated.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.ufrag {
            let _ = write!(s, "a=ice-ufrag:{u}\r\n");
        }
        if let Some(p) = &self.pwd {
            let _ = write!(s, "a=ice-pwd:{p}\r\n");
        }
        for c in &self.candidates {
            let _ = write!(s, "a={}\r\n", c.to_line());
        }
        if self.end_of_candidates {
            s.push_str("a=end-of-candidates\r\n");
        }
        s
    }

    /// Parses the text form. Lines end with `\n` or `\r\n`; blank lines and other
    /// attributes are skipped (a description may be embedded in an SDP); candidates
    /// this agent does not use (see [`Candidate::parse`]) are skipped too.
    ///
    /// # Errors
    /// [`DecodeError::BadCandidate`] for malformed text, [`Limit::Candidates`] beyond
    /// `max_candidates` usable candidates, or text longer than `max_candidates *
    /// MAX_LINE + 2 * MAX_LINE`.
    pub fn parse(text: &str, max_candidates: usize) -> Result<Self, Error> {
        let bad = DecodeError::BadCandidate;
        let max_len = max_candidates.saturating_add(2).saturating_mul(MAX_LINE);
        if text.len() > max_len {
            return Err(bad("description too long").into());
        }
        let mut d = Self::default();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.len() > MAX_LINE {
                return Err(bad("line too long").into());
            }
            let line = line.strip_prefix("a=").unwrap_or(line);
            if let Some(u) = line.strip_prefix("ice-ufrag:") {
                // RFC 8839 §5.4: ufrag 4..=256, pwd 22..=256 ice-chars.
                d.ufrag = Some(credential(u, 4, "bad ice-ufrag")?);
            } else if let Some(p) = line.strip_prefix("ice-pwd:") {
                d.pwd = Some(credential(p, 22, "bad ice-pwd")?);
            } else if line == "end-of-candidates" {
                d.end_of_candidates = true;
            } else if line.starts_with("candidate:")
                && let Some(c) = Candidate::parse(line)?
            {
                if d.candidates.len() >= max_candidates {
                    return Err(Limit::Candidates(max_candidates).into());
                }
                d.candidates.push(c);
            }
        }
        Ok(d)
    }
}

fn credential(s: &str, min: usize, what: &'static str) -> Result<String, DecodeError> {
    if (min..=MAX_CREDENTIAL).contains(&s.len()) && s.bytes().all(is_ice_char) {
        Ok(s.to_owned())
    } else {
        Err(DecodeError::BadCandidate(what))
    }
}

/// RFC 8839 §5.1: `ice-char = ALPHA / DIGIT / "+" / "/"`.
pub(crate) const fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// RFC 4566 `token-char` (printable ASCII minus separators).
const fn is_token_char(b: u8) -> bool {
    matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'0'..=b'9' | b'A'..=b'Z'
        | b'^'..=b'~')
}

const fn is_vchar(b: u8) -> bool {
    matches!(b, 0x21..=0x7e)
}

fn number<T: core::str::FromStr>(
    s: &str,
    max_digits: usize,
    what: &'static str,
) -> Result<T, DecodeError> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::BadCandidate(what));
    }
    s.parse().map_err(|_| DecodeError::BadCandidate(what))
}

fn ip(s: &str) -> Result<IpAddr, DecodeError> {
    // Literals only: an FQDN or an mDNS name (RFC 8839 §5.1) would need a resolver.
    if s.len() > 45 {
        return Err(DecodeError::BadCandidate("bad connection address"));
    }
    s.parse()
        .map_err(|_| DecodeError::BadCandidate("bad connection address"))
}
