//! Production randomness: the operating system's generator, as an [`Entropy`].

use chorus_framing::{Entropy, EntropyError};
use ring::rand::{SecureRandom, SystemRandom};

/// The operating system's cryptographically secure generator (ring's `SystemRandom`).
///
/// This is the [`Entropy`] production code passes to every sans-IO core; tests pass a
/// seeded one instead.
///
/// ```
/// use chorus_crypto::SystemEntropy;
/// use chorus_framing::Entropy;
///
/// let mut rng = SystemEntropy::new();
/// let mut nonce = [0u8; 12];
/// rng.fill(&mut nonce)?;
/// # Ok::<(), chorus_framing::EntropyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SystemEntropy {
    rng: SystemRandom,
}

impl SystemEntropy {
    /// A handle to the system generator.
    #[must_use]
    pub fn new() -> Self {
        Self {
            rng: SystemRandom::new(),
        }
    }
}

impl Default for SystemEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        self.rng.fill(dest).map_err(|_| EntropyError)
    }
}

/// Adapts an [`Entropy`] to the `rand_core` traits the `rsa` crate asks for.
pub(crate) struct RandCore<'a>(pub(crate) &'a mut dyn Entropy);

impl rsa::rand_core::TryRng for RandCore<'_> {
    type Error = EntropyError;

    fn try_next_u32(&mut self) -> Result<u32, EntropyError> {
        self.0.u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, EntropyError> {
        self.0.u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), EntropyError> {
        self.0.fill(dst)
    }
}

/// Key generation must only ever be fed a secure source in production; the trait
/// cannot tell, so the public constructors that take an `Entropy` document it.
impl rsa::rand_core::TryCryptoRng for RandCore<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_entropy_produces_distinct_output() {
        let mut rng = SystemEntropy::new();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        rng.fill(&mut a).unwrap();
        rng.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
