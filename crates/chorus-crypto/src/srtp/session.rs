//! The SRTP session: one policy's keys, and a context per SSRC holding its rollover
//! counter, replay windows and SRTCP index.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::fmt;

use zeroize::Zeroize;

use super::cipher::{GCM_TAG_LEN, Transform};
use super::header::{self, RTCP_HEADER_LEN, RtpHeader};
use super::kdf::{SessionKeys, StreamKind, check_len};
use super::replay::{ReplayWindow, SRTP_INDEX_LIMIT, estimate_index};
use super::suite::Suite;
use crate::error::{AuthError, DecodeError, Error, Limit, UsageError};
use crate::secret::{Secret, ct_eq};

/// Default [`Policy::replay_window`]: 128 packets.
pub const DEFAULT_REPLAY_WINDOW: usize = 128;
/// Smallest [`Policy::replay_window`]: RFC 3711 §3.3.2 requires at least 64.
pub const MIN_REPLAY_WINDOW: usize = 64;
/// Largest [`Policy::replay_window`]: 32768 packets (4 KiB of bitmap per window).
pub const MAX_REPLAY_WINDOW: usize = 32768;
/// Default [`Policy::max_ssrcs`].
pub const DEFAULT_MAX_SSRCS: usize = 64;
/// Largest [`Policy::max_ssrcs`].
pub const MAX_SSRCS_LIMIT: usize = 65536;
/// The longest RTP or RTCP packet (before protection) a session accepts: 1 MiB, the
/// AES-CM keystream a 16-bit block counter can produce (RFC 3711 §4.1.1).
pub const MAX_PACKET_LEN: usize = 1 << 20;

/// The largest SRTCP index plus one: the index is 31 bits (RFC 3711 §3.4).
const SRTCP_INDEX_LIMIT: u32 = 1 << 31;
/// The E flag: the top bit of the word before the SRTCP tag.
const SRTCP_E_FLAG: u32 = 1 << 31;

/// What an [`SrtpSession`] is keyed with and how it behaves.
///
/// Build one with [`Policy::new`] (master key and salt, the usual case) or
/// [`Policy::from_session_keys`], then adjust the public fields:
///
/// ```
/// use chorus_crypto::srtp::{Policy, Suite};
///
/// let mut policy = Policy::new(Suite::AeadAes128Gcm, &[1; 16], &[2; 12])?;
/// policy.replay_window = 1024;
/// policy.max_ssrcs = 4;
/// # Ok::<(), chorus_crypto::Error>(())
/// ```
///
/// `Debug` shows the settings, never the keys.
#[derive(Clone)]
#[non_exhaustive]
pub struct Policy {
    /// Packets the replay window spans (RFC 3711 §3.3.2), for SRTP and, separately,
    /// SRTCP. Default [`DEFAULT_REPLAY_WINDOW`]; between [`MIN_REPLAY_WINDOW`] and
    /// [`MAX_REPLAY_WINDOW`]. A packet older than the window is rejected as a replay.
    pub replay_window: usize,
    /// The most SSRCs (streams) the session keeps a context for, sending and
    /// receiving together. Default [`DEFAULT_MAX_SSRCS`]; 1 to [`MAX_SSRCS_LIMIT`].
    /// A packet for one more SSRC is rejected with [`Limit::TooManyContexts`];
    /// [`SrtpSession::remove_ssrc`] frees a context.
    pub max_ssrcs: usize,
    /// Whether RTP payloads are encrypted (default `true`); `false` only
    /// authenticates them. Both ends must agree: SRTP carries no flag for it.
    pub encrypt_rtp: bool,
    /// Whether RTCP packets are sent encrypted (default `true`). The E flag tells the
    /// receiver, which accepts either.
    pub encrypt_rtcp: bool,
    /// Whether [`SrtpSession::protect_rtp`] may protect a packet again at an SRTP index
    /// it already used for the SSRC, to retransmit it unchanged under its original
    /// sequence number (libsrtp's `allow_repeat_tx`). Default `false`: a packet at or
    /// below the highest index sent is refused with [`UsageError::IndexReuse`], since
    /// it would reuse the AES-CM keystream or the AES-GCM nonce (RFC 3711 §9.1,
    /// RFC 7714 §8.1).
    ///
    /// When `true`, the session remembers a fingerprint of each of the last
    /// [`replay_window`](Self::replay_window) indices sent per SSRC (the full
    /// HMAC-SHA1 or the GCM tag: 32 bytes per index, allocated when the SSRC sends its
    /// first packet), and accepts a repeated index only if the packet protects to
    /// exactly the bytes sent there before. Other bytes at a sent index are refused
    /// with [`UsageError::RetransmissionMismatch`] and wiped from the buffer; an index
    /// older than the window, or one that was skipped, is [`UsageError::IndexReuse`].
    /// SRTCP never repeats an index: the session assigns them.
    pub allow_repeat_tx: bool,
    keys: PolicyKeys,
}

#[derive(Clone)]
enum PolicyKeys {
    Master {
        suite: Suite,
        key: Secret<32>,
        salt: Secret<14>,
    },
    Session {
        rtp: SessionKeys,
        rtcp: SessionKeys,
    },
}

impl Policy {
    /// A policy with a master key and master salt, from which the session keys are
    /// derived (RFC 3711 §4.3, key derivation rate 0).
    ///
    /// # Errors
    /// [`UsageError::InvalidLength`] if the key is not [`Suite::key_len`] bytes or the
    /// salt not [`Suite::salt_len`] bytes.
    pub fn new(suite: Suite, master_key: &[u8], master_salt: &[u8]) -> Result<Self, Error> {
        check_len(master_key, suite.key_len(), "the suite's key_len() bytes")?;
        check_len(
            master_salt,
            suite.salt_len(),
            "the suite's salt_len() bytes",
        )?;
        let (mut k, mut s) = ([0u8; 32], [0u8; 14]);
        for (d, b) in k.iter_mut().zip(master_key) {
            *d = *b;
        }
        for (d, b) in s.iter_mut().zip(master_salt) {
            *d = *b;
        }
        let keys = PolicyKeys::Master {
            suite,
            key: Secret::new(k),
            salt: Secret::new(s),
        };
        k.zeroize();
        s.zeroize();
        Ok(Self::with_keys(keys))
    }

    /// A policy with session keys that were derived elsewhere (or come from a
    /// published test vector): `rtp` protects SRTP, `rtcp` SRTCP.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if the two are for different suites.
    pub fn from_session_keys(rtp: SessionKeys, rtcp: SessionKeys) -> Result<Self, Error> {
        if rtp.suite() != rtcp.suite() {
            return Err(UsageError::InvalidConfig(
                "RTP and RTCP session keys are for different suites",
            )
            .into());
        }
        Ok(Self::with_keys(PolicyKeys::Session { rtp, rtcp }))
    }

    fn with_keys(keys: PolicyKeys) -> Self {
        Self {
            replay_window: DEFAULT_REPLAY_WINDOW,
            max_ssrcs: DEFAULT_MAX_SSRCS,
            encrypt_rtp: true,
            encrypt_rtcp: true,
            allow_repeat_tx: false,
            keys,
        }
    }

    /// The policy's suite.
    #[must_use]
    pub const fn suite(&self) -> Suite {
        match &self.keys {
            PolicyKeys::Master { suite, .. } => *suite,
            PolicyKeys::Session { rtp, .. } => rtp.suite(),
        }
    }

    fn session_keys(&self) -> Result<(SessionKeys, SessionKeys), Error> {
        match &self.keys {
            PolicyKeys::Master { suite, key, salt } => {
                let key = key.expose().get(..suite.key_len()).unwrap_or_default();
                let salt = salt.expose().get(..suite.salt_len()).unwrap_or_default();
                Ok((
                    SessionKeys::derive(*suite, key, salt, StreamKind::Rtp)?,
                    SessionKeys::derive(*suite, key, salt, StreamKind::Rtcp)?,
                ))
            }
            PolicyKeys::Session { rtp, rtcp } => Ok((rtp.clone(), rtcp.clone())),
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("suite", &self.suite())
            .field("replay_window", &self.replay_window)
            .field("max_ssrcs", &self.max_ssrcs)
            .field("encrypt_rtp", &self.encrypt_rtp)
            .field("encrypt_rtcp", &self.encrypt_rtcp)
            .field("allow_repeat_tx", &self.allow_repeat_tx)
            .finish_non_exhaustive()
    }
}

/// What a sender with [`Policy::allow_repeat_tx`] remembers of one SRTP index it
/// protected: enough to tell an identical retransmission from a new packet.
#[derive(Clone, Copy)]
struct Sent {
    /// The SRTP index; [`Sent::EMPTY`]'s is above every valid one.
    index: u64,
    /// The full HMAC-SHA1 (counter mode) or the GCM tag followed by zeros. Equal
    /// fingerprints at one index mean equal packets: the cipher is deterministic per
    /// index, and a different packet gives a different MAC or tag except with
    /// probability 2^-128 or less.
    fingerprint: [u8; 20],
}

impl Sent {
    const EMPTY: Self = Self {
        index: u64::MAX,
        fingerprint: [0; 20],
    };
}

/// Per-SSRC state (RFC 3711 §3.2.3's "cryptographic context" minus the keys, which
/// the whole session shares).
struct Stream {
    /// Highest SRTP index this session protected for the SSRC. Every index at or below
    /// it counts as used (RFC 3711 §3.3.1: the sender's index only moves forward).
    tx_highest: Option<u64>,
    /// With [`Policy::allow_repeat_tx`]: the last `replay_window` indices sent, index
    /// `i` in slot `i % replay_window`. Empty otherwise and until the first send.
    tx_sent: Vec<Sent>,
    /// ROC of the first packet sent (set by [`SrtpSession::set_roc`], else 0).
    tx_roc: u32,
    /// ROC assumed for the first packet received.
    rx_roc: u32,
    /// Indices received and authenticated; its highest is RFC 3711's ROC || s_l.
    rx: ReplayWindow,
    /// The SRTCP index the next protected packet gets; [`SRTCP_INDEX_LIMIT`] when
    /// exhausted.
    rtcp_tx_next: u32,
    rtcp_rx: ReplayWindow,
}

impl Stream {
    fn new(window: usize) -> Self {
        Self {
            tx_highest: None,
            tx_sent: Vec::new(),
            tx_roc: 0,
            rx_roc: 0,
            rx: ReplayWindow::new(window),
            rtcp_tx_next: 0,
            rtcp_rx: ReplayWindow::new(window),
        }
    }
}

/// Streams by SSRC: their number is capped by [`Policy::max_ssrcs`], and one is
/// created only for a packet that authenticated (or that this side protects).
type Streams = chorus_framing::U32Map<Stream>;

/// An SRTP/SRTCP session (RFC 3711): protects outgoing and unprotects incoming RTP
/// and RTCP packets under one [`Policy`], with a context per SSRC. Performs no I/O.
///
/// Contract:
/// 1. Build it with [`SrtpSession::new`]; an invalid policy is refused there.
/// 2. Hand each outgoing packet to [`protect_rtp`](Self::protect_rtp) /
///    [`protect_rtcp`](Self::protect_rtcp) and each incoming one to
///    [`unprotect_rtp`](Self::unprotect_rtp) / [`unprotect_rtcp`](Self::unprotect_rtcp).
///    They work in place: give the buffer [`Suite::rtp_tag_len`] (or
///    [`Suite::rtcp_overhead`]) bytes of spare capacity and nothing allocates.
/// 3. `Err` means the packet was rejected and the session's state is unchanged; the
///    packet's bytes may have been altered (ring zeroes a GCM payload that failed
///    authentication) and must be dropped. Rejections are the peer's fault
///    ([`Error::Decode`], [`Error::Auth`]) or a bound ([`Error::Limit`]), never a
///    reason to tear the session down.
/// 4. A context is created for an SSRC on the first packet this side protects, or the
///    first one that authenticates; its first received packet fixes the rollover
///    counter at 0 unless [`set_roc`](Self::set_roc) said otherwise.
/// 5. When [`Limit::CounterExhausted`] appears (2^48 SRTP or 2^31 SRTCP packets on
///    one SSRC), re-key: continuing would reuse keystream.
/// 6. The sender's index per SSRC only moves forward (RFC 3711 §3.3.1): protecting
///    at or below the highest index sent is refused with [`UsageError::IndexReuse`]
///    (unless it is an identical retransmission and [`Policy::allow_repeat_tx`] is
///    on), [`set_srtcp_index`](Self::set_srtcp_index) cannot move back, and a
///    context that sent cannot be removed. What the session cannot see is the
///    caller's to avoid: two sessions built from one key would each start at index
///    0, so give every sender its own key (the handshake's
///    [`srtp_policies`](crate::handshake::Established::srtp_policies) does).
///
/// Keys are session-wide; RFC 3711 master key identifiers (MKI) and key derivation
/// rates other than 0 are not supported.
pub struct SrtpSession {
    suite: Suite,
    rtp: Transform,
    rtcp: Transform,
    streams: Streams,
    replay_window: usize,
    max_ssrcs: usize,
    encrypt_rtp: bool,
    encrypt_rtcp: bool,
    allow_repeat_tx: bool,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("suite", &self.suite)
            .field("ssrcs", &self.streams.len())
            .field("replay_window", &self.replay_window)
            .field("max_ssrcs", &self.max_ssrcs)
            .field("allow_repeat_tx", &self.allow_repeat_tx)
            .finish_non_exhaustive()
    }
}

fn invalid_length(len: usize, expected: &'static str) -> Error {
    UsageError::InvalidLength { len, expected }.into()
}

fn too_many(max: usize) -> Error {
    Limit::TooManyContexts { max }.into()
}

fn replay() -> Error {
    AuthError::Replay.into()
}

/// Copies as much of `src` as fits into the start of `dst`.
fn copy_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

fn tag_array(tag: &[u8]) -> [u8; GCM_TAG_LEN] {
    let mut out = [0u8; GCM_TAG_LEN];
    for (d, s) in out.iter_mut().zip(tag) {
        *d = *s;
    }
    out
}

impl SrtpSession {
    /// Derives the session keys and sets up the transforms.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if [`Policy::replay_window`] or
    /// [`Policy::max_ssrcs`] is out of its documented range.
    pub fn new(policy: Policy) -> Result<Self, Error> {
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&policy.replay_window) {
            return Err(UsageError::InvalidConfig("replay_window must be 64..=32768").into());
        }
        if !(1..=MAX_SSRCS_LIMIT).contains(&policy.max_ssrcs) {
            return Err(UsageError::InvalidConfig("max_ssrcs must be 1..=65536").into());
        }
        let suite = policy.suite();
        let (rtp_keys, rtcp_keys) = policy.session_keys()?;
        Ok(Self {
            suite,
            rtp: Transform::new(&rtp_keys, suite.rtp_tag_len())?,
            rtcp: Transform::new(&rtcp_keys, suite.rtcp_tag_len())?,
            streams: Streams::default(),
            replay_window: policy.replay_window,
            max_ssrcs: policy.max_ssrcs,
            encrypt_rtp: policy.encrypt_rtp,
            encrypt_rtcp: policy.encrypt_rtcp,
            allow_repeat_tx: policy.allow_repeat_tx,
        })
    }

    /// The session's suite.
    #[must_use]
    pub const fn suite(&self) -> Suite {
        self.suite
    }

    /// How many SSRC contexts the session holds.
    #[must_use]
    pub fn ssrc_count(&self) -> usize {
        self.streams.len()
    }

    /// Forgets the context of `ssrc`, a stream this session only received (for
    /// example after its RTCP BYE), freeing room under [`Policy::max_ssrcs`]. Returns
    /// whether there was one. Replay protection for that SSRC starts over, so only
    /// forget a stream whose packets can no longer arrive, or re-key.
    ///
    /// # Errors
    /// [`UsageError::WrongState`] if this session has protected an RTP or RTCP packet
    /// for `ssrc`: forgetting the indices it used would let them be used again under
    /// the same keys (RFC 3711 §9.1). To retire a sending SSRC, re-key. The context
    /// is kept.
    pub fn remove_ssrc(&mut self, ssrc: u32) -> Result<bool, Error> {
        if self
            .streams
            .get(&ssrc)
            .is_some_and(|s| s.tx_highest.is_some() || s.rtcp_tx_next > 0)
        {
            return Err(UsageError::WrongState(
                "the session sent on this SSRC: forgetting it would allow index reuse",
            )
            .into());
        }
        Ok(self.streams.remove(&ssrc).is_some())
    }

    /// The highest SRTP index (ROC × 65536 + SEQ) this session has protected for
    /// `ssrc`.
    #[must_use]
    pub fn sent_index(&self, ssrc: u32) -> Option<u64> {
        self.streams.get(&ssrc).and_then(|s| s.tx_highest)
    }

    /// The highest SRTP index this session has authenticated from `ssrc`.
    #[must_use]
    pub fn received_index(&self, ssrc: u32) -> Option<u64> {
        self.streams.get(&ssrc).and_then(|s| s.rx.highest())
    }

    /// Sets the rollover counter of `ssrc`'s first RTP packet in both directions, for
    /// a stream that did not start at ROC 0 (RFC 3711 §3.3.1: a receiver joining late
    /// learns the ROC out of band). Creates the context if needed.
    ///
    /// # Errors
    /// [`UsageError::WrongState`] if RTP packets already went through this SSRC's
    /// context; [`Limit::TooManyContexts`] if there is no room for a new one.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), Error> {
        let stream = self.stream_entry(ssrc)?;
        if stream.tx_highest.is_some() || stream.rx.highest().is_some() {
            return Err(UsageError::WrongState("the SSRC has already carried RTP packets").into());
        }
        stream.tx_roc = roc;
        stream.rx_roc = roc;
        Ok(())
    }

    /// Sets the SRTCP index the next RTCP packet protected for `ssrc` will carry
    /// (RFC 3711 §3.4), for resuming a stream. The index may only move forward:
    /// every index below the one the context would use next was used (or skipped) and
    /// reusing one would reuse the keystream or nonce. Creates the context if needed.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if `next` is 2^31 or more;
    /// [`UsageError::IndexReuse`] if it is below the index the context would use next;
    /// [`Limit::TooManyContexts`] if there is no room for a new context.
    pub fn set_srtcp_index(&mut self, ssrc: u32, next: u32) -> Result<(), Error> {
        if next >= SRTCP_INDEX_LIMIT {
            return Err(UsageError::InvalidConfig("the SRTCP index is 31 bits").into());
        }
        let stream = self.stream_entry(ssrc)?;
        if next < stream.rtcp_tx_next {
            return Err(UsageError::IndexReuse {
                ssrc,
                index: u64::from(next),
            }
            .into());
        }
        stream.rtcp_tx_next = next;
        Ok(())
    }

    fn stream_entry(&mut self, ssrc: u32) -> Result<&mut Stream, Error> {
        if !self.streams.contains_key(&ssrc) && self.streams.len() >= self.max_ssrcs {
            return Err(too_many(self.max_ssrcs));
        }
        let window = self.replay_window;
        Ok(self
            .streams
            .entry(ssrc)
            .or_insert_with(|| Stream::new(window)))
    }

    /// Protects the RTP packet in `packet` in place, appending the tag
    /// ([`Suite::rtp_tag_len`] bytes; reserve them to avoid a reallocation).
    ///
    /// # Errors
    /// [`Error::Decode`] if `packet` is not an RTP packet (RFC 3550 §5.1);
    /// [`UsageError::InvalidLength`] if it is longer than [`MAX_PACKET_LEN`];
    /// [`Limit::CounterExhausted`] when the SRTP index would pass 2^48 - 1;
    /// [`Limit::TooManyContexts`] for an SSRC beyond [`Policy::max_ssrcs`];
    /// [`UsageError::IndexReuse`] for an index at or below the highest this session
    /// sent for the SSRC (RFC 3711 §3.3.1), unless it is an identical retransmission
    /// allowed by [`Policy::allow_repeat_tx`]; [`UsageError::RetransmissionMismatch`]
    /// for a different packet at an index already sent under `allow_repeat_tx`, in
    /// which case the payload was overwritten with zeros. Otherwise `packet` is
    /// unchanged on error.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let len = packet.len();
        packet.resize(len + self.suite.rtp_tag_len(), 0);
        match self.protect_rtp_in_place(packet, len) {
            Ok(n) => {
                packet.truncate(n);
                Ok(())
            }
            Err(e) => {
                packet.truncate(len);
                Err(e)
            }
        }
    }

    /// Like [`protect_rtp`](Self::protect_rtp), on a buffer whose first `len` bytes are
    /// the RTP packet and which has room for the tag after them. Returns the protected
    /// length (`len + rtp_tag_len()`).
    ///
    /// # Errors
    /// As [`protect_rtp`](Self::protect_rtp), and [`UsageError::InvalidLength`] if
    /// `buf` is shorter than `len + rtp_tag_len()`.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let tag_len = self.suite.rtp_tag_len();
        if len > MAX_PACKET_LEN {
            return Err(invalid_length(len, "at most MAX_PACKET_LEN bytes"));
        }
        let out_len = len + tag_len;
        let (packet, rest) = buf
            .split_at_mut_checked(len)
            .ok_or_else(|| invalid_length(len, "len within the buffer"))?;
        let tag_out = rest
            .get_mut(..tag_len)
            .ok_or_else(|| invalid_length(out_len, "room for the tag after the packet"))?;
        let h = header::rtp(packet)?;
        let Self {
            rtp,
            streams,
            encrypt_rtp,
            replay_window,
            max_ssrcs,
            allow_repeat_tx,
            ..
        } = self;
        let repeat_window = allow_repeat_tx.then_some(*replay_window);
        with_stream(streams, *max_ssrcs, *replay_window, h.ssrc, |stream| {
            protect_rtp_with(rtp, *encrypt_rtp, repeat_window, stream, packet, h, tag_out)
        })?;
        Ok(out_len)
    }

    /// Verifies and decrypts the SRTP packet in `packet` in place, removing the tag.
    ///
    /// # Errors
    /// [`Error::Decode`] if it is not an SRTP packet of this suite (too short, not
    /// RTP version 2, longer than [`MAX_PACKET_LEN`] plus the tag);
    /// [`AuthError::BadTag`] if it does not authenticate; [`AuthError::Replay`] if it
    /// was received before or is older than the replay window;
    /// [`Limit::CounterExhausted`] if its index would pass 2^48 - 1;
    /// [`Limit::TooManyContexts`] for an SSRC beyond [`Policy::max_ssrcs`].
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let n = self.unprotect_rtp_in_place(packet)?;
        packet.truncate(n);
        Ok(())
    }

    /// Like [`unprotect_rtp`](Self::unprotect_rtp) on any buffer holding exactly the
    /// SRTP packet; returns the length of the RTP packet now at its start.
    ///
    /// # Errors
    /// As [`unprotect_rtp`](Self::unprotect_rtp).
    pub fn unprotect_rtp_in_place(&mut self, packet: &mut [u8]) -> Result<usize, Error> {
        let tag_len = self.suite.rtp_tag_len();
        let len = packet.len();
        if len > MAX_PACKET_LEN + tag_len {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_PACKET_LEN + tag_len,
            }
            .into());
        }
        let h = header::rtp(packet)?;
        let body_len =
            len.checked_sub(tag_len)
                .filter(|b| *b >= h.len)
                .ok_or(DecodeError::Truncated {
                    offset: h.len,
                    needed: tag_len,
                })?;
        let (body, tag) = packet.split_at_mut(body_len.min(len));
        let Self {
            rtp,
            streams,
            encrypt_rtp,
            replay_window,
            max_ssrcs,
            ..
        } = self;
        with_stream(streams, *max_ssrcs, *replay_window, h.ssrc, |stream| {
            unprotect_rtp_with(rtp, *encrypt_rtp, stream, body, h, tag)
        })?;
        Ok(body_len)
    }

    /// Protects the (compound) RTCP packet in `packet` in place, appending the E
    /// flag, the SRTCP index and the tag ([`Suite::rtcp_overhead`] bytes).
    ///
    /// # Errors
    /// [`Error::Decode`] if `packet` does not start with an RTCP header (8 bytes,
    /// version 2); [`UsageError::InvalidLength`] if longer than [`MAX_PACKET_LEN`];
    /// [`Limit::CounterExhausted`] once 2^31 SRTCP packets were sent for the SSRC;
    /// [`Limit::TooManyContexts`] for an SSRC beyond [`Policy::max_ssrcs`].
    /// `packet` is unchanged on error.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let len = packet.len();
        packet.resize(len + self.suite.rtcp_overhead(), 0);
        match self.protect_rtcp_in_place(packet, len) {
            Ok(n) => {
                packet.truncate(n);
                Ok(())
            }
            Err(e) => {
                packet.truncate(len);
                Err(e)
            }
        }
    }

    /// Like [`protect_rtcp`](Self::protect_rtcp) on a buffer whose first `len` bytes
    /// are the RTCP packet, with room after them; returns the protected length.
    ///
    /// # Errors
    /// As [`protect_rtcp`](Self::protect_rtcp), and [`UsageError::InvalidLength`] if
    /// `buf` is shorter than `len + rtcp_overhead()`.
    pub fn protect_rtcp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let overhead = self.suite.rtcp_overhead();
        if len > MAX_PACKET_LEN {
            return Err(invalid_length(len, "at most MAX_PACKET_LEN bytes"));
        }
        let out_len = len + overhead;
        let buf_len = buf.len();
        let buf = buf
            .get_mut(..out_len)
            .ok_or_else(|| invalid_length(buf_len, "room for the SRTCP trailer after len"))?;
        let ssrc = header::rtcp_ssrc(buf.get(..len).unwrap_or_default())?;
        let Self {
            rtcp,
            streams,
            encrypt_rtcp,
            replay_window,
            max_ssrcs,
            ..
        } = self;
        with_stream(streams, *max_ssrcs, *replay_window, ssrc, |stream| {
            protect_rtcp_with(rtcp, *encrypt_rtcp, stream, buf, len, ssrc)
        })?;
        Ok(out_len)
    }

    /// Verifies and (if its E flag is set) decrypts the SRTCP packet in `packet` in
    /// place, removing the index word and the tag.
    ///
    /// # Errors
    /// [`Error::Decode`] if too short for an RTCP header plus the SRTCP trailer, not
    /// version 2, or too long; [`AuthError::BadTag`]; [`AuthError::Replay`] (each
    /// SSRC's SRTCP indices have their own window); [`Limit::TooManyContexts`].
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let n = self.unprotect_rtcp_in_place(packet)?;
        packet.truncate(n);
        Ok(())
    }

    /// Like [`unprotect_rtcp`](Self::unprotect_rtcp) on any buffer holding exactly the
    /// SRTCP packet; returns the length of the RTCP packet now at its start.
    ///
    /// # Errors
    /// As [`unprotect_rtcp`](Self::unprotect_rtcp).
    pub fn unprotect_rtcp_in_place(&mut self, packet: &mut [u8]) -> Result<usize, Error> {
        let overhead = self.suite.rtcp_overhead();
        let len = packet.len();
        if len > MAX_PACKET_LEN + overhead {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_PACKET_LEN + overhead,
            }
            .into());
        }
        let ssrc = header::rtcp_ssrc(packet)?;
        let plain_len = len
            .checked_sub(overhead)
            .filter(|p| *p >= RTCP_HEADER_LEN)
            .ok_or(DecodeError::Truncated {
                offset: RTCP_HEADER_LEN,
                needed: overhead,
            })?;
        let Self {
            rtcp,
            streams,
            replay_window,
            max_ssrcs,
            ..
        } = self;
        with_stream(streams, *max_ssrcs, *replay_window, ssrc, |stream| {
            unprotect_rtcp_with(rtcp, stream, packet, plain_len, ssrc)
        })?;
        Ok(plain_len)
    }
}

/// Runs `f` on the context of `ssrc`, creating one if there is room. A new context is
/// kept only if `f` succeeds, so a forged packet cannot claim an SSRC slot.
fn with_stream<R>(
    streams: &mut Streams,
    max_ssrcs: usize,
    replay_window: usize,
    ssrc: u32,
    f: impl FnOnce(&mut Stream) -> Result<R, Error>,
) -> Result<R, Error> {
    if let Some(stream) = streams.get_mut(&ssrc) {
        return f(stream);
    }
    if streams.len() >= max_ssrcs {
        return Err(too_many(max_ssrcs));
    }
    let mut stream = Stream::new(replay_window);
    let out = f(&mut stream)?;
    streams.insert(ssrc, stream);
    Ok(out)
}

/// RFC 3711 §3.3 (counter mode) and RFC 7714 §8.2 (GCM): protect one RTP packet.
/// State changes only after everything that can fail has passed.
///
/// The index must be new (RFC 3711 §3.3.1: the sender's ROC and SEQ only move
/// forward; §9.1 and RFC 7714 §8.1: one index, one keystream or nonce). An index at or
/// below the highest sent is refused, except that with `repeat_window`
/// ([`Policy::allow_repeat_tx`], its window) a remembered index may be protected
/// again if the result is bit for bit what was sent, as libsrtp's `allow_repeat_tx`
/// permits; a different packet there is wiped from the buffer and refused.
#[inline]
fn protect_rtp_with(
    t: &Transform,
    encrypt: bool,
    repeat_window: Option<usize>,
    stream: &mut Stream,
    packet: &mut [u8],
    h: RtpHeader,
    tag_out: &mut [u8],
) -> Result<(), Error> {
    let reuse = |index: u64| -> Error {
        UsageError::IndexReuse {
            ssrc: h.ssrc,
            index,
        }
        .into()
    };
    // `None`: the estimate falls before index 0, i.e. before the stream's first packet.
    let index = estimate_index(stream.tx_highest, stream.tx_roc, h.seq)
        .ok_or_else(|| reuse(u64::from(h.seq)))?;
    if index >= SRTP_INDEX_LIMIT {
        return Err(Limit::CounterExhausted.into());
    }
    let repeat = stream.tx_highest.is_some_and(|hi| index <= hi);
    // A repeat is checked against what was sent at that index; refused up front if
    // repeats are off or nothing is remembered for it.
    let sent = match (repeat, repeat_window) {
        (false, _) => None,
        (true, None) => return Err(reuse(index)),
        (true, Some(window)) => {
            let slot = slot_of(&stream.tx_sent, window, index)
                .filter(|s| s.index == index)
                .ok_or_else(|| reuse(index))?;
            Some(slot.fingerprint)
        }
    };
    let roc = (index >> 16) as u32;
    let fingerprint = match t {
        Transform::CmHmac(cm) => {
            if encrypt {
                let payload = packet.get_mut(h.len..).unwrap_or_default();
                cm.crypt(h.ssrc, index, payload);
            }
            cm.write_tag(packet, &roc.to_be_bytes(), tag_out)
        }
        Transform::Gcm(g) => {
            let nonce = g.rtp_nonce(h.ssrc, roc, h.seq);
            let tag = if encrypt {
                let (hdr, payload) = packet.split_at_mut(h.len.min(packet.len()));
                g.seal(nonce, hdr, payload)?
            } else {
                g.seal(nonce, packet, &mut [])?
            };
            copy_into(tag_out, &tag);
            let mut fingerprint = [0u8; 20];
            copy_into(&mut fingerprint, &tag);
            fingerprint
        }
    };
    if let Some(sent) = sent {
        if ct_eq(&sent, &fingerprint) {
            // The identical packet again: the same bytes as before leave, nothing new
            // is revealed and the state stays as it is.
            return Ok(());
        }
        // Different bytes under a used index: the buffer now holds a second
        // ciphertext and tag under one keystream or nonce. Wipe both before refusing.
        packet.get_mut(h.len..).unwrap_or_default().fill(0);
        tag_out.fill(0);
        return Err(UsageError::RetransmissionMismatch {
            ssrc: h.ssrc,
            index,
        }
        .into());
    }
    if let Some(window) = repeat_window {
        if stream.tx_sent.is_empty() {
            stream.tx_sent = vec![Sent::EMPTY; window];
        }
        if let Some(slot) = slot_of_mut(&mut stream.tx_sent, window, index) {
            *slot = Sent { index, fingerprint };
        }
    }
    stream.tx_highest = Some(index);
    Ok(())
}

/// The slot of `index` in a sender's history of `window` entries.
fn slot_of(sent: &[Sent], window: usize, index: u64) -> Option<&Sent> {
    sent.get(slot_index(window, index))
}

fn slot_of_mut(sent: &mut [Sent], window: usize, index: u64) -> Option<&mut Sent> {
    sent.get_mut(slot_index(window, index))
}

/// `index % window`; the window is at most [`MAX_REPLAY_WINDOW`], so it fits.
fn slot_index(window: usize, index: u64) -> usize {
    (index % window.max(1) as u64) as usize
}

/// RFC 3711 §3.3 steps 1–6 in reverse, or RFC 7714 §8.2: authenticate then decrypt
/// `body` (header and payload; the tag was split off).
#[inline]
fn unprotect_rtp_with(
    t: &Transform,
    encrypt: bool,
    stream: &mut Stream,
    body: &mut [u8],
    h: RtpHeader,
    tag: &[u8],
) -> Result<(), Error> {
    let index = estimate_index(stream.rx.highest(), stream.rx_roc, h.seq).ok_or_else(replay)?;
    if index >= SRTP_INDEX_LIMIT {
        return Err(Limit::CounterExhausted.into());
    }
    stream.rx.check(index).map_err(|_| replay())?;
    let roc = (index >> 16) as u32;
    match t {
        Transform::CmHmac(cm) => {
            cm.verify(body, &roc.to_be_bytes(), tag)?;
            if encrypt {
                cm.crypt(h.ssrc, index, body.get_mut(h.len..).unwrap_or_default());
            }
        }
        Transform::Gcm(g) => {
            let nonce = g.rtp_nonce(h.ssrc, roc, h.seq);
            if encrypt {
                let (hdr, payload) = body.split_at_mut(h.len.min(body.len()));
                g.open(nonce, hdr, tag_array(tag), payload)?;
            } else {
                g.open(nonce, body, tag_array(tag), &mut [])?;
            }
        }
    }
    stream.rx.accept(index);
    Ok(())
}

/// RFC 3711 §3.4 (counter mode: `RTCP || E+index || tag`) and RFC 7714 §9
/// (GCM: `header || cipher+tag || E+index`). `buf` is exactly the output length.
#[inline]
fn protect_rtcp_with(
    t: &Transform,
    encrypt: bool,
    stream: &mut Stream,
    buf: &mut [u8],
    len: usize,
    ssrc: u32,
) -> Result<(), Error> {
    let index = stream.rtcp_tx_next;
    if index >= SRTCP_INDEX_LIMIT {
        return Err(Limit::CounterExhausted.into());
    }
    let word = if encrypt { SRTCP_E_FLAG | index } else { index }.to_be_bytes();
    let (packet, trailer) = buf.split_at_mut(len.min(buf.len()));
    match t {
        Transform::CmHmac(cm) => {
            if encrypt {
                let payload = packet.get_mut(RTCP_HEADER_LEN..).unwrap_or_default();
                cm.crypt(ssrc, u64::from(index), payload);
            }
            let (word_out, tag_out) = trailer.split_at_mut(4.min(trailer.len()));
            word_out.copy_from_slice(&word);
            cm.write_tag(packet, &word, tag_out);
        }
        Transform::Gcm(g) => {
            let nonce = g.rtcp_nonce(ssrc, index);
            let tag = if encrypt {
                let (hdr, payload) = packet.split_at_mut(RTCP_HEADER_LEN.min(packet.len()));
                let mut aad = [0u8; RTCP_HEADER_LEN + 4];
                let (aad_hdr, aad_word) = aad.split_at_mut(RTCP_HEADER_LEN);
                aad_hdr.copy_from_slice(hdr);
                aad_word.copy_from_slice(&word);
                g.seal(nonce, &aad, payload)?
            } else {
                // RFC 7714 §9.3: the AAD is the whole packet followed by the ESRTCP
                // word. Put the word right after the packet, seal, then move it
                // behind the tag.
                copy_into(trailer, &word);
                let aad = buf.get(..len + 4).unwrap_or_default();
                g.seal(nonce, aad, &mut [])?
            };
            let trailer = buf.get_mut(len..).unwrap_or_default();
            let (tag_out, word_out) = trailer.split_at_mut(GCM_TAG_LEN.min(trailer.len()));
            copy_into(tag_out, &tag);
            copy_into(word_out, &word);
        }
    }
    stream.rtcp_tx_next = index + 1;
    Ok(())
}

/// The inverse of [`protect_rtcp_with`]; `plain_len` is the RTCP packet's length.
#[inline]
fn unprotect_rtcp_with(
    t: &Transform,
    stream: &mut Stream,
    packet: &mut [u8],
    plain_len: usize,
    ssrc: u32,
) -> Result<(), Error> {
    let len = packet.len();
    let word_at = match t {
        Transform::CmHmac(cm) => len.saturating_sub(cm.tag_len() + 4),
        Transform::Gcm(_) => len.saturating_sub(4),
    };
    let word = packet
        .get(word_at..word_at + 4)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .ok_or(DecodeError::Truncated {
            offset: word_at,
            needed: 4,
        })?;
    let word_value = u32::from_be_bytes(word);
    let encrypted = word_value & SRTCP_E_FLAG != 0;
    let index = word_value & !SRTCP_E_FLAG;
    stream
        .rtcp_rx
        .check(u64::from(index))
        .map_err(|_| replay())?;
    match t {
        Transform::CmHmac(cm) => {
            let (authenticated, tag) = packet.split_at_mut((word_at + 4).min(len));
            cm.verify(authenticated, &[], tag)?;
            if encrypted {
                let payload = authenticated
                    .get_mut(RTCP_HEADER_LEN..plain_len)
                    .unwrap_or_default();
                cm.crypt(ssrc, u64::from(index), payload);
            }
        }
        Transform::Gcm(g) => {
            let nonce = g.rtcp_nonce(ssrc, index);
            let tag = tag_array(packet.get(plain_len..).unwrap_or_default());
            if encrypted {
                let front = packet.get_mut(..plain_len).unwrap_or_default();
                let (hdr, payload) = front.split_at_mut(RTCP_HEADER_LEN.min(front.len()));
                let mut aad = [0u8; RTCP_HEADER_LEN + 4];
                let (aad_hdr, aad_word) = aad.split_at_mut(RTCP_HEADER_LEN);
                aad_hdr.copy_from_slice(hdr);
                aad_word.copy_from_slice(&word);
                // The cipher is the payload plus the tag, which ring takes separately.
                g.open(nonce, &aad, tag, payload)?;
            } else {
                // RFC 7714 §9.3: AAD = packet || ESRTCP word. The tag is copied out,
                // so the word can be moved over it to make the AAD contiguous.
                copy_into(packet.get_mut(plain_len..).unwrap_or_default(), &word);
                let aad = packet.get(..plain_len + 4).unwrap_or_default();
                g.open(nonce, aad, tag, &mut [])?;
            }
        }
    }
    stream.rtcp_rx.accept(u64::from(index));
    Ok(())
}
