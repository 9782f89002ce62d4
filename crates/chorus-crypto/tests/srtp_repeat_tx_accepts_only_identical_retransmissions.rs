//! `Policy::allow_repeat_tx` (libsrtp's option of that name): off by default, an
//! identical retransmission at a used index is refused like any reuse; on, it is
//! protected again to exactly the bytes sent the first time, which a receiver then
//! drops as a replay. Only the last `replay_window` indices are remembered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_crypto::{AuthError, Error, UsageError};

const SSRC: u32 = 0x0bad_cafe;

fn policy(suite: Suite) -> Policy {
    Policy::new(
        suite,
        &vec![0x33; suite.key_len()],
        &vec![0x44; suite.salt_len()],
    )
    .unwrap()
}

fn session(suite: Suite, allow_repeat_tx: bool) -> SrtpSession {
    let mut p = policy(suite);
    p.allow_repeat_tx = allow_repeat_tx;
    SrtpSession::new(p).unwrap()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    p
}

#[test]
fn repeats_are_off_by_default() {
    assert!(!policy(Suite::AeadAes128Gcm).allow_repeat_tx);
    for suite in Suite::ALL {
        let mut tx = session(suite, false);
        tx.protect_rtp(&mut rtp(3)).unwrap();
        let mut again = rtp(3);
        assert_eq!(
            tx.protect_rtp(&mut again),
            Err(Error::Usage(UsageError::IndexReuse {
                ssrc: SSRC,
                index: 3
            })),
            "{suite}"
        );
        assert_eq!(again, rtp(3));
    }
}

#[test]
fn an_identical_retransmission_is_accepted_when_enabled() {
    for suite in Suite::ALL {
        let mut tx = session(suite, true);
        let mut rx = SrtpSession::new(policy(suite)).unwrap();
        let mut wire = Vec::new();
        for seq in 0..5 {
            let mut p = rtp(seq);
            tx.protect_rtp(&mut p).unwrap();
            wire.push(p);
        }
        // Packets 1 and 4 again: the same bytes leave, and the index stays at 4.
        for seq in [1u16, 4] {
            let mut again = rtp(seq);
            tx.protect_rtp(&mut again).unwrap();
            assert_eq!(again, wire[usize::from(seq)], "{suite}");
        }
        assert_eq!(tx.sent_index(SSRC), Some(4));
        // The receiver takes the first copy and drops the second as a replay.
        let mut first = wire[1].clone();
        rx.unprotect_rtp(&mut first).unwrap();
        assert_eq!(first, rtp(1));
        let mut second = wire[1].clone();
        assert_eq!(
            rx.unprotect_rtp(&mut second),
            Err(Error::Auth(AuthError::Replay))
        );
        // Sending goes on after the repeats.
        let mut next = rtp(5);
        tx.protect_rtp(&mut next).unwrap();
        rx.unprotect_rtp(&mut next).unwrap();
    }
}

#[test]
fn a_repeat_older_than_the_window_or_of_a_skipped_index_is_refused() {
    for suite in [Suite::AesCm128HmacSha1_32, Suite::AeadAes128Gcm] {
        let mut tx = session(suite, true);
        for seq in (0..200).filter(|s| *s != 150) {
            tx.protect_rtp(&mut rtp(seq)).unwrap();
        }
        // The window is 128 indices, 72..=199 (199 took the slot of 71); 150 was skipped.
        for seq in [0u16, 71, 150] {
            let mut p = rtp(seq);
            assert_eq!(
                tx.protect_rtp(&mut p),
                Err(Error::Usage(UsageError::IndexReuse {
                    ssrc: SSRC,
                    index: u64::from(seq)
                })),
                "{suite} seq {seq}"
            );
            assert_eq!(p, rtp(seq));
        }
        tx.protect_rtp(&mut rtp(72)).unwrap();
    }
}
