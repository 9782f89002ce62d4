//! Randomness as an input.
//!
//! Sans-IO cores never reach for a global random number generator: transaction ids,
//! nonces, connection ids and jitter come from an [`Entropy`] the caller passes in.
//! Production code passes a cryptographically secure source (chorus-crypto wraps
//! ring's `SystemRandom`); tests and simulations pass a [`SeededEntropy`] so that every
//! run is reproducible.

use core::fmt;

/// A source of unpredictable bytes.
pub trait Entropy: Send {
    /// Fills `dest` entirely with random bytes.
    ///
    /// # Errors
    /// [`EntropyError`] if the source cannot produce bytes (for example the operating
    /// system's generator failed). `dest` may then hold partial output and must not be
    /// used.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError>;

    /// A random `u64`.
    ///
    /// # Errors
    /// As [`Entropy::fill`].
    fn u64(&mut self) -> Result<u64, EntropyError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A random `u32`.
    ///
    /// # Errors
    /// As [`Entropy::fill`].
    fn u32(&mut self) -> Result<u32, EntropyError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

impl<E: Entropy + ?Sized> Entropy for Box<E> {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        (**self).fill(dest)
    }
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        (**self).fill(dest)
    }
}

/// The entropy source failed to produce bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("entropy source failed")
    }
}

impl std::error::Error for EntropyError {}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast, deterministic generator
/// for simulations (loss draws, jitter, seeding other generators). **Not secure**:
/// its output is predictable from a few values; secrets come from an [`Entropy`].
///
/// ```
/// use chorus_framing::SplitMix64;
///
/// let mut rng = SplitMix64::new(7);
/// let lost = (0..1000).filter(|_| rng.chance(0.1)).count();
/// assert!((50..150).contains(&lost));
/// assert_eq!(SplitMix64::new(7).next_u64(), SplitMix64::new(7).next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "53 bits are exact")]
        let x = (self.next_u64() >> 11) as f64;
        x / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Deterministic pseudo-random bytes from a 64-bit seed (xoshiro256**, seeded through
/// [`SplitMix64`]). **Not secure**: for tests and simulations only, which is why it exists
/// only under `cfg(test)` or the `sim` feature.
///
/// ```
/// use chorus_framing::{Entropy, SeededEntropy};
///
/// let (mut a, mut b) = (SeededEntropy::new(7), SeededEntropy::new(7));
/// assert_eq!(a.u64()?, b.u64()?); // same seed, same stream
/// # Ok::<(), chorus_framing::EntropyError>(())
/// ```
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Clone)]
pub struct SeededEntropy {
    s: [u64; 4],
}

#[cfg(any(test, feature = "sim"))]
impl SeededEntropy {
    /// A generator whose whole output is determined by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        let mut next = || sm.next_u64();
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 pseudo-random bits. Infallible, unlike [`Entropy::u64`].
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.s;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }
}

#[cfg(any(test, feature = "sim"))]
impl Entropy for SeededEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in dest.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(word.get(..chunk.len()).unwrap_or(&word));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_is_reproducible_and_seed_dependent() {
        let mut a = SeededEntropy::new(1);
        let mut b = SeededEntropy::new(1);
        let mut c = SeededEntropy::new(2);
        let (mut x, mut y, mut z) = ([0u8; 37], [0u8; 37], [0u8; 37]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(x, [0u8; 37]);
    }

    #[test]
    fn boxed_and_borrowed_sources_delegate() {
        let mut boxed: Box<dyn Entropy> = Box::new(SeededEntropy::new(3));
        let mut plain = SeededEntropy::new(3);
        assert_eq!(boxed.u64(), plain.u64());
        fn draw(mut source: impl Entropy) -> Result<u32, EntropyError> {
            source.u32()
        }
        assert_eq!(boxed.u32(), draw(&mut plain));
    }

    #[test]
    fn output_bits_are_balanced() {
        // A broken generator (stuck bits, short cycle) fails this; xoshiro passes easily.
        let mut e = SeededEntropy::new(42);
        let ones: u32 = (0..1000).map(|_| e.next_u64().count_ones()).sum();
        assert!((30_000..34_000).contains(&ones), "{ones} of 64000 bits set");
    }
}
