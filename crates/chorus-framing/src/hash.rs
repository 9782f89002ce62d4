//! A hasher for maps keyed by 32-bit identifiers (SSRCs), which SRTP and the SFU look
//! up once per packet.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a `u32` key with one multiplication and a fold. SipHash's resistance to
/// flooding buys nothing where it is used: a key enters a map only once a packet
/// authenticated or a caller added it, and every such map has a size cap.
///
/// ```
/// use chorus_framing::U32Map;
///
/// let mut streams: U32Map<&str> = U32Map::default();
/// streams.insert(0x1234_5678, "camera");
/// assert_eq!(streams.get(&0x1234_5678), Some(&"camera"));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct U32Hasher(u64);

impl Hasher for U32Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        let x = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }
}

/// A map keyed by `u32` (an SSRC) with [`U32Hasher`].
pub type U32Map<V> = HashMap<u32, V, BuildHasherDefault<U32Hasher>>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn nearby_keys_spread_over_the_high_and_low_bits() {
        let build = BuildHasherDefault::<U32Hasher>::default();
        let hashes: Vec<u64> = (0..64u32).map(|k| build.hash_one(k)).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 63).collect();
        let high: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 32, "{low:?}");
        assert!(high.len() > 32, "{high:?}");
    }
}
