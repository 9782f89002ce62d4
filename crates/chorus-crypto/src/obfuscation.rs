//! Optional datagram obfuscation: **obfuscation, not security.**
//!
//! **This module provides no confidentiality, no integrity and no authentication.
//! RC4 is broken, the obfuscation key is assumed to be known to anyone who looks
//! (it ships with every client or is agreed in the clear), and the key can be
//! recovered from traffic. All it does is hide protocol fingerprints.** Its only
//! job is to make packets that are *already* protected by the real encryption (SRTP,
//! the sealed signalling frames) look like uniformly random bytes to a middlebox that
//! classifies traffic by fixed header patterns, as Skype's UDP layer did. It is off by
//! default; nothing in Chorus depends on it for security, and nothing may.
//!
//! # Wire format
//!
//! ```text
//!  0               8
//! +---------------+-------------------------------------------------
//! |  IV (8 bytes) |  payload XOR RC4-drop[3072](K_p) keystream
//! +---------------+-------------------------------------------------
//!
//! K_p = SHA-256("chorus obfuscation v1" || len(K) as one byte || K || IV)
//! ```
//!
//! - `K` is the shared obfuscation key, [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes. It
//!   is a network-wide constant configured on both ends (the handshake cannot supply
//!   it: the handshake itself is what most needs its fingerprint hidden). Treat it as
//!   public.
//! - The IV is [`IV_LEN`] fresh random bytes per packet from the caller's
//!   [`Entropy`], so each packet is keyed differently and two packets with the same
//!   payload look unrelated. With 64-bit IVs a repeat is expected only after about
//!   2³² packets under one key; a repeat reveals the XOR of two payloads that are
//!   ciphertexts already, which is harmless.
//! - The per-packet RC4 key `K_p` is a SHA-256 hash, so packet keys are unrelated
//!   rather than the `IV || key` concatenation whose related keys broke WEP.
//! - The first [`KEYSTREAM_DROP`] (3072) keystream bytes of every packet key are
//!   discarded (RC4-drop\[3072\]): the early keystream carries the strongest known
//!   biases (Mantin–Shamir's second byte, Fluhrer–McGrew, the key-correlated first
//!   bytes), which would make the output distinguishable from random and so become a
//!   fingerprint of their own. 3072 is Mironov's conservative figure (RFC 4345 uses
//!   1536 for SSH); it dominates the cost of obfuscating a small packet, which the
//!   `obfuscation` benchmark measures.
//!
//! Lengths are not hidden: an obfuscated packet is exactly [`OVERHEAD`] bytes longer
//! than its payload. An obfuscated datagram cannot be told apart from noise, so RFC
//! 7983 demultiplexing (`chorus_framing::classify`) cannot route it: a socket
//! obfuscates either everything it sends or nothing, configured alike on both ends.
//!
//! There is nothing to authenticate at this layer, so [`Obfuscator::deobfuscate`]
//! accepts any input of at least [`IV_LEN`] bytes and returns what are, for garbage
//! input, more garbage bytes; the SRTP or AEAD layer underneath rejects them.
//!
//! ```
//! use bytes::BytesMut;
//! use chorus_crypto::SystemEntropy;
//! use chorus_crypto::obfuscation::{OVERHEAD, Obfuscator};
//!
//! // Both ends are configured with the same (public) obfuscation key.
//! let key = b"chorus example obfuscation key!!";
//! let (alice, bob) = (Obfuscator::new(key)?, Obfuscator::new(key)?);
//! let srtp_packet = [0x80, 0x6f, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
//!
//! let mut wire = BytesMut::new();
//! alice.obfuscate(&mut SystemEntropy::new(), &srtp_packet, &mut wire)?;
//! assert_eq!(wire.len(), srtp_packet.len() + OVERHEAD);
//! assert_ne!(wire[OVERHEAD..], srtp_packet); // the RTP header pattern is gone
//!
//! let mut received = BytesMut::new();
//! bob.deobfuscate(&wire, &mut received)?;
//! assert_eq!(received[..], srtp_packet);
//! # Ok::<(), chorus_crypto::Error>(())
//! ```
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

use bytes::BytesMut;
use chorus_framing::{Entropy, Reader};
use rc4::{KeyInit, Rc4, StreamCipher};
use ring::digest;

use crate::error::{Error, UsageError};
use crate::secret::SecretVec;

/// Length of the random IV that starts every obfuscated packet.
pub const IV_LEN: usize = 8;
/// Bytes an obfuscated packet is longer than its payload (the IV).
pub const OVERHEAD: usize = IV_LEN;
/// Shortest obfuscation key [`Obfuscator::new`] accepts, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Longest obfuscation key [`Obfuscator::new`] accepts, in bytes.
pub const MAX_KEY_LEN: usize = 32;
/// Keystream bytes discarded after keying RC4 for each packet (RC4-drop\[3072\]).
pub const KEYSTREAM_DROP: usize = 3072;

/// Domain separation for the per-packet key hash; bump the version to change the
/// format.
const LABEL: &[u8] = b"chorus obfuscation v1";

/// Obfuscates and deobfuscates datagrams with a shared key. **Obfuscation, not
/// security**: see the [module documentation](self).
///
/// Holds only the key, so one `Obfuscator` serves any number of packets, peers and
/// threads (`&self` methods). The key is zeroized on drop and never shown by `Debug`,
/// as a matter of hygiene rather than because it protects anything. (Neither ring's
/// digest state nor the `rc4` cipher state, both dropped after each packet, is wiped.)
#[derive(Clone)]
pub struct Obfuscator {
    key: SecretVec,
}

impl Obfuscator {
    /// An obfuscator for `key`, which both ends must share.
    ///
    /// # Errors
    /// [`UsageError::InvalidLength`] unless `key` is [`MIN_KEY_LEN`] to
    /// [`MAX_KEY_LEN`] bytes long.
    pub fn new(key: &[u8]) -> Result<Self, Error> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(UsageError::InvalidLength {
                len: key.len(),
                expected: "an obfuscation key of 16 to 32 bytes",
            }
            .into());
        }
        Ok(Self {
            key: SecretVec::new(key.to_vec()),
        })
    }

    /// Appends `packet`, obfuscated under a fresh IV from `entropy`, to `out`:
    /// exactly `packet.len() + OVERHEAD` bytes.
    ///
    /// Pass a secure source ([`crate::SystemEntropy`]) in production: predictable IVs
    /// would make packets under one IV recognisable.
    ///
    /// # Errors
    /// [`Error::Entropy`] if `entropy` fails; `out` is then unchanged.
    pub fn obfuscate(
        &self,
        entropy: &mut dyn Entropy,
        packet: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        let mut iv = [0u8; IV_LEN];
        entropy.fill(&mut iv)?;
        self.obfuscate_with_iv(&iv, packet, out);
        Ok(())
    }

    /// Appends the payload of the obfuscated `packet` to `out`: exactly
    /// `packet.len() - OVERHEAD` bytes.
    ///
    /// Nothing is authenticated here: any input of at least [`IV_LEN`] bytes yields
    /// some payload, and it is the layer underneath (SRTP, sealed frames) that rejects
    /// a packet that was not obfuscated with the same key.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`](crate::DecodeError::Truncated) if `packet` is shorter
    /// than the IV; `out` is then unchanged.
    pub fn deobfuscate(&self, packet: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        let mut r = Reader::new(packet);
        let iv = r.array::<IV_LEN>()?;
        let start = out.len();
        out.extend_from_slice(r.take_rest());
        self.keystream(&iv).apply_keystream(tail(out, start));
        Ok(())
    }

    /// The obfuscation of `packet` under `iv`, appended to `out`.
    fn obfuscate_with_iv(&self, iv: &[u8; IV_LEN], packet: &[u8], out: &mut BytesMut) {
        out.reserve(OVERHEAD + packet.len());
        out.extend_from_slice(iv);
        let start = out.len();
        out.extend_from_slice(packet);
        self.keystream(iv).apply_keystream(tail(out, start));
    }

    /// RC4 keyed for the packet with this IV, its first [`KEYSTREAM_DROP`] bytes
    /// already discarded.
    #[allow(clippy::expect_used)]
    fn keystream(&self, iv: &[u8; IV_LEN]) -> Rc4 {
        let key = self.key.expose();
        let mut h = digest::Context::new(&digest::SHA256);
        h.update(LABEL);
        // `new` bounds the key to MAX_KEY_LEN (32) bytes, so its length fits a byte.
        h.update(&[key.len() as u8]);
        h.update(key);
        h.update(iv);
        let packet_key = h.finish();
        // A SHA-256 digest is 32 bytes, inside RC4's 1..=256-byte key range.
        let mut rc4 = Rc4::new_from_slice(packet_key.as_ref()).expect("a 32-byte RC4 key");
        let mut discard = [0u8; KEYSTREAM_DROP];
        rc4.write_keystream(&mut discard);
        rc4
    }
}

/// `buf[start..]`, where the caller has just appended from `start`.
#[allow(clippy::indexing_slicing)]
fn tail(buf: &mut BytesMut, start: usize) -> &mut [u8] {
    // `start` is the length `buf` had before bytes were appended, so it is in bounds.
    &mut buf[start..]
}

impl fmt::Debug for Obfuscator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Obfuscator { key: .. }")
    }
}

/// The key [`fuzz_deobfuscate`] uses: any fixed key exercises the same code.
#[cfg(any(test, feature = "_fuzz"))]
const FUZZ_KEY: [u8; MIN_KEY_LEN] = *b"chorus fuzz key!";

/// Fuzz entry point with a round-trip oracle (STYLE.md §10): deobfuscates `data`
/// and checks that only a too-short input is rejected and that obfuscating the result
/// under the same IV gives back `data` byte for byte.
///
/// # Panics
/// When an oracle finds a bug.
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
#[allow(clippy::expect_used, clippy::panic)]
pub fn fuzz_deobfuscate(data: &[u8]) {
    let obfuscator = Obfuscator::new(&FUZZ_KEY).expect("FUZZ_KEY has a valid length");
    let mut payload = BytesMut::new();
    match obfuscator.deobfuscate(data, &mut payload) {
        Err(e) => {
            assert!(data.len() < IV_LEN, "rejected a {}-byte input", data.len());
            assert!(
                matches!(e, Error::Decode(crate::DecodeError::Truncated { .. })),
                "{e:?}"
            );
            assert!(payload.is_empty(), "a rejected input wrote output");
        }
        Ok(()) => {
            let Some((iv, _)) = data.split_first_chunk::<IV_LEN>() else {
                panic!("accepted a {}-byte input", data.len());
            };
            assert_eq!(payload.len() + OVERHEAD, data.len());
            let mut again = BytesMut::new();
            obfuscator.obfuscate_with_iv(iv, &payload, &mut again);
            assert_eq!(&again[..], data, "obfuscation is not the inverse");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    use crate::DecodeError;

    fn obfuscator() -> Obfuscator {
        Obfuscator::new(&[0x42; 24]).unwrap()
    }

    #[test]
    fn keys_outside_16_to_32_bytes_are_rejected() {
        for len in [0, 1, 15, 33, 64] {
            assert!(
                matches!(
                    Obfuscator::new(&vec![1; len]),
                    Err(Error::Usage(UsageError::InvalidLength { len: l, .. })) if l == len
                ),
                "{len}"
            );
        }
        for len in [16, 20, 32] {
            assert!(Obfuscator::new(&vec![1; len]).is_ok(), "{len}");
        }
    }

    #[test]
    fn packets_shorter_than_the_iv_are_truncated_and_leave_out_unchanged() {
        let mut out = BytesMut::from(&b"kept"[..]);
        for len in 0..IV_LEN {
            assert_eq!(
                obfuscator().deobfuscate(&vec![0; len], &mut out),
                Err(Error::Decode(DecodeError::Truncated {
                    offset: 0,
                    needed: IV_LEN
                }))
            );
        }
        assert_eq!(&out[..], b"kept");
    }

    #[test]
    fn output_is_appended_after_existing_bytes() {
        let o = obfuscator();
        let mut wire = BytesMut::from(&b"head"[..]);
        o.obfuscate_with_iv(&[7; IV_LEN], b"payload", &mut wire);
        assert_eq!(&wire[..4], b"head");
        assert_eq!(&wire[4..4 + IV_LEN], &[7; IV_LEN]);
        let mut plain = BytesMut::from(&b"x"[..]);
        o.deobfuscate(&wire[4..], &mut plain).unwrap();
        assert_eq!(&plain[..], b"xpayload");
    }

    #[test]
    fn the_keystream_skips_the_first_3072_bytes() {
        // Keystream for a zero payload = what RC4 keyed with K_p emits after 3072 bytes.
        let o = obfuscator();
        let iv = [9; IV_LEN];
        let mut wire = BytesMut::new();
        o.obfuscate_with_iv(&iv, &[0; 32], &mut wire);

        let mut h = digest::Context::new(&digest::SHA256);
        h.update(b"chorus obfuscation v1");
        h.update(&[24]);
        h.update(&[0x42; 24]);
        h.update(&iv);
        let mut rc4 = Rc4::new_from_slice(h.finish().as_ref()).unwrap();
        let mut ks = vec![0u8; KEYSTREAM_DROP + 32];
        rc4.write_keystream(&mut ks);
        assert_eq!(&wire[IV_LEN..], &ks[KEYSTREAM_DROP..]);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let shown = format!("{:?}", Obfuscator::new(&[0xab; 16]).unwrap());
        assert_eq!(shown, "Obfuscator { key: .. }");
    }

    proptest! {
        #[test]
        fn fuzz_deobfuscate_holds_for_arbitrary_bytes(data in vec(any::<u8>(), 0..2048)) {
            fuzz_deobfuscate(&data);
        }

        #[test]
        fn round_trips_any_payload_under_any_iv(
            payload in vec(any::<u8>(), 0..1500),
            iv in any::<[u8; IV_LEN]>(),
        ) {
            let o = obfuscator();
            let mut wire = BytesMut::new();
            o.obfuscate_with_iv(&iv, &payload, &mut wire);
            prop_assert_eq!(wire.len(), payload.len() + OVERHEAD);
            let mut plain = BytesMut::new();
            o.deobfuscate(&wire, &mut plain).unwrap();
            prop_assert_eq!(&plain[..], &payload[..]);
        }
    }
}
