//! A sender's SRTP index only moves forward (RFC 3711 §3.3.1): an index below the
//! highest it protected for the SSRC is refused even if it was never sent (it may have
//! been, by a session that cannot tell), across a rollover too, and the context that
//! remembers the highest index cannot be forgotten.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_crypto::{Error, UsageError};

const SSRC: u32 = 0xdead_beef;

fn session(suite: Suite, allow_repeat_tx: bool) -> SrtpSession {
    let mut p = Policy::new(
        suite,
        &vec![0x11; suite.key_len()],
        &vec![0x22; suite.salt_len()],
    )
    .unwrap();
    p.allow_repeat_tx = allow_repeat_tx;
    SrtpSession::new(p).unwrap()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(b"twenty bytes of data");
    p
}

fn reuse(index: u64) -> Result<(), Error> {
    Err(Error::Usage(UsageError::IndexReuse { ssrc: SSRC, index }))
}

#[test]
fn an_index_below_the_highest_sent_is_refused() {
    for suite in Suite::ALL {
        for allow_repeat_tx in [false, true] {
            let mut tx = session(suite, allow_repeat_tx);
            for seq in [10, 12] {
                tx.protect_rtp(&mut rtp(seq)).unwrap();
            }
            // 11 was skipped, 5 and 0 never sent: all below the highest.
            for seq in [11, 5, 0] {
                let mut p = rtp(seq);
                assert_eq!(tx.protect_rtp(&mut p), reuse(u64::from(seq)), "{suite}");
                assert_eq!(p, rtp(seq));
            }
            assert_eq!(tx.sent_index(SSRC), Some(12));
            tx.protect_rtp(&mut rtp(13)).unwrap();
        }
    }
}

#[test]
fn an_index_below_the_highest_is_refused_across_a_rollover() {
    let mut tx = session(Suite::AeadAes128Gcm, false);
    tx.protect_rtp(&mut rtp(0xfffe)).unwrap();
    tx.protect_rtp(&mut rtp(0x0001)).unwrap(); // ROC 1
    assert_eq!(tx.sent_index(SSRC), Some(0x1_0001));
    // SEQ 0xffff now estimates to ROC 0: index 0xffff, below the highest.
    assert_eq!(tx.protect_rtp(&mut rtp(0xffff)), reuse(0xffff));
    assert_eq!(tx.protect_rtp(&mut rtp(0x0001)), reuse(0x1_0001));
    tx.protect_rtp(&mut rtp(0x0002)).unwrap();
}

#[test]
fn a_sending_context_cannot_be_forgotten() {
    let mut tx = session(Suite::AeadAes256Gcm, false);
    tx.protect_rtp(&mut rtp(1)).unwrap();
    assert!(matches!(
        tx.remove_ssrc(SSRC),
        Err(Error::Usage(UsageError::WrongState(_)))
    ));
    // The context, and with it the highest index, is still there.
    assert_eq!(tx.protect_rtp(&mut rtp(1)), reuse(1));
    assert_eq!(tx.ssrc_count(), 1);
}
