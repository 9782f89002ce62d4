//! The SRTCP index (RFC 3711 §3.4) is assigned by the session and only moves forward:
//! `set_srtcp_index` cannot move it back onto used indices, and the context holding it
//! cannot be forgotten. Every suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_crypto::{Error, UsageError};

const SSRC: u32 = 0x5eed_0001;

fn session(suite: Suite) -> SrtpSession {
    let mut p = Policy::new(
        suite,
        &vec![0x55; suite.key_len()],
        &vec![0x66; suite.salt_len()],
    )
    .unwrap();
    // Repeats are an SRTP option; SRTCP ignores it.
    p.allow_repeat_tx = true;
    SrtpSession::new(p).unwrap()
}

fn rtcp() -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&SSRC.to_be_bytes());
    p
}

/// The SRTCP index a protected packet carries (the E flag cleared).
fn index_of(suite: Suite, packet: &[u8]) -> u32 {
    let at = if suite.is_aead() {
        packet.len() - 4
    } else {
        packet.len() - suite.rtcp_overhead()
    };
    u32::from_be_bytes(packet[at..at + 4].try_into().unwrap()) & 0x7fff_ffff
}

#[test]
fn srtcp_indices_never_repeat_and_cannot_move_back() {
    for suite in Suite::ALL {
        let mut tx = session(suite);
        let mut sent = Vec::new();
        for _ in 0..3 {
            let mut p = rtcp();
            tx.protect_rtcp(&mut p).unwrap();
            sent.push(index_of(suite, &p));
        }
        assert_eq!(sent, [0, 1, 2], "{suite}");
        for used in [0, 2] {
            assert_eq!(
                tx.set_srtcp_index(SSRC, used),
                Err(Error::Usage(UsageError::IndexReuse {
                    ssrc: SSRC,
                    index: u64::from(used)
                })),
                "{suite}"
            );
        }
        // The next index, or a jump forward, is fine.
        tx.set_srtcp_index(SSRC, 3).unwrap();
        tx.set_srtcp_index(SSRC, 10).unwrap();
        assert!(matches!(
            tx.set_srtcp_index(SSRC, 9),
            Err(Error::Usage(UsageError::IndexReuse { .. }))
        ));
        // Forgetting the context would start the index at 0 again: refused.
        assert!(matches!(
            tx.remove_ssrc(SSRC),
            Err(Error::Usage(UsageError::WrongState(_)))
        ));
        let mut p = rtcp();
        tx.protect_rtcp(&mut p).unwrap();
        assert_eq!(index_of(suite, &p), 10, "{suite}");
    }
}
