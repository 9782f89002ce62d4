//! Replay protection (RFC 3711 §3.3.2) and rollover-counter estimation (RFC 3711
//! §3.3.1, Appendix A).
//!
//! The window is a ring of bits indexed by `index mod W` (W: the configured size
//! rounded up to a multiple of 64). Bits for indices that fall out of the window are
//! cleared as the highest index advances, so every bit in the ring always describes an
//! index inside `(highest - W, highest]`. A check is O(1); an advance by `d` is
//! O(min(d, W)) and is 1 bit for in-order traffic.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

/// The largest SRTP packet index plus one: indices are 48 bits (RFC 3711 §3.3.1).
pub(crate) const SRTP_INDEX_LIMIT: u64 = 1 << 48;

/// A sliding window of accepted indices.
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    highest: Option<u64>,
    size: u64,
    bits: Box<[u64]>,
}

/// Why an index was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Already accepted.
    Duplicate,
    /// Older than the window reaches.
    TooOld,
}

impl ReplayWindow {
    /// A window of `size` packets (at least 1).
    pub(crate) fn new(size: usize) -> Self {
        let words = size.max(1).div_ceil(64);
        Self {
            highest: None,
            size: size.max(1) as u64,
            bits: vec![0u64; words].into_boxed_slice(),
        }
    }

    /// The highest index accepted so far.
    pub(crate) const fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn ring_bits(&self) -> u64 {
        (self.bits.len() as u64) * 64
    }

    fn locate(&self, index: u64) -> (usize, u64) {
        let pos = index % self.ring_bits();
        ((pos / 64) as usize, 1u64 << (pos % 64))
    }

    fn bit(&self, index: u64) -> bool {
        let (word, mask) = self.locate(index);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }

    fn set(&mut self, index: u64, on: bool) {
        let (word, mask) = self.locate(index);
        if let Some(w) = self.bits.get_mut(word) {
            if on {
                *w |= mask;
            } else {
                *w &= !mask;
            }
        }
    }

    /// Whether `index` may be accepted. Does not change the window.
    #[inline]
    pub(crate) fn check(&self, index: u64) -> Result<(), Refusal> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        if highest - index >= self.size {
            return Err(Refusal::TooOld);
        }
        if self.bit(index) {
            Err(Refusal::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `index` as accepted. Call only after [`Self::check`] passed and the
    /// packet authenticated.
    #[inline]
    pub(crate) fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => {}
            Some(highest) if index - highest < self.ring_bits() => {
                // Clear the bits of the indices the window slides over.
                let mut i = highest + 1;
                while i < index {
                    self.set(i, false);
                    i += 1;
                }
                self.highest = Some(index);
            }
            _ => {
                self.bits.fill(0);
                self.highest = Some(index);
            }
        }
        self.set(index, true);
    }
}

/// RFC 3711 Appendix A: the index of a packet with sequence number `seq`, given the
/// highest index seen so far (`None` before the first packet, which then takes
/// `roc_hint` as its rollover counter). Returns `None` if the estimate falls before
/// index 0. The result may exceed 2^48 - 1; callers check [`SRTP_INDEX_LIMIT`].
#[inline]
pub(crate) fn estimate_index(highest: Option<u64>, roc_hint: u32, seq: u16) -> Option<u64> {
    let Some(highest) = highest else {
        return Some((u64::from(roc_hint) << 16) | u64::from(seq));
    };
    let roc = highest >> 16;
    let s_l = highest & 0xffff;
    let seq = u64::from(seq);
    let v = if s_l < 0x8000 {
        if seq > s_l + 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_new_indices_and_refuses_duplicates_and_old_ones() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.check(1000), Ok(()));
        w.accept(1000);
        assert_eq!(w.check(1000), Err(Refusal::Duplicate));
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(Refusal::Duplicate));
        assert_eq!(w.check(1000 - 127), Ok(()));
        assert_eq!(w.check(1000 - 128), Err(Refusal::TooOld));
        w.accept(1200);
        assert_eq!(w.check(1000), Err(Refusal::TooOld));
        assert_eq!(w.check(1100), Ok(()));
        w.accept(1_000_000);
        assert_eq!(w.check(1200), Err(Refusal::TooOld));
        assert_eq!(w.check(1_000_000 - 1), Ok(()));
        assert_eq!(w.highest(), Some(1_000_000));
    }

    #[test]
    fn window_size_is_exact_even_when_not_a_multiple_of_64() {
        let mut w = ReplayWindow::new(100);
        w.accept(500);
        assert_eq!(w.check(401), Ok(()));
        assert_eq!(w.check(400), Err(Refusal::TooOld));
    }

    #[test]
    fn estimation_follows_appendix_a() {
        // First packet: the hint.
        assert_eq!(estimate_index(None, 3, 7), Some((3 << 16) | 7));
        // In order.
        assert_eq!(estimate_index(Some(10), 0, 11), Some(11));
        // Wrap forward 0xffff -> 0.
        assert_eq!(estimate_index(Some(0xffff), 0, 0), Some(0x1_0000));
        // A late packet from before the wrap.
        assert_eq!(estimate_index(Some(0x1_0002), 0, 0xfffe), Some(0xfffe));
        // Before the start of the stream.
        assert_eq!(estimate_index(Some(5), 0, 0xfff0), None);
    }

    proptest! {
        #[test]
        fn estimation_recovers_any_index_within_half_the_sequence_space(
            highest in 0x8000u64..(1u64 << 40),
            delta in -0x7fffi64..0x7fff,
        ) {
            let index = highest.checked_add_signed(delta).unwrap();
            let seq = (index & 0xffff) as u16;
            prop_assert_eq!(estimate_index(Some(highest), 0, seq), Some(index));
        }

        #[test]
        fn window_agrees_with_a_set_model(
            size in 1usize..300,
            ops in proptest::collection::vec(0u64..2000, 1..200),
        ) {
            let mut w = ReplayWindow::new(size);
            let mut seen = std::collections::BTreeSet::new();
            for i in ops {
                let highest = seen.iter().next_back().copied();
                let expected = match highest {
                    Some(h) if i <= h && h - i >= size as u64 => Err(Refusal::TooOld),
                    _ if seen.contains(&i) => Err(Refusal::Duplicate),
                    _ => Ok(()),
                };
                prop_assert_eq!(w.check(i), expected);
                if expected.is_ok() {
                    w.accept(i);
                    seen.insert(i);
                }
            }
        }
    }
}
