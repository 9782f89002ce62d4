//! Positions in the index: node ids, record keys and the XOR metric.
//!
//! Nodes and records share one 256-bit space. A node's position is
//! [`NodeId::from_public_key`](chorus_crypto::cert::NodeId::from_public_key) of its
//! certified key, so no node chooses where it sits; a presence record lives at
//! [`user_key`] of its username; a search word at [`word_key`].

use chorus_crypto::cert::NodeId;
use ring::digest;

/// Domain separation for presence record keys.
const USER_CONTEXT: &[u8] = b"chorus presence v1\0";
/// Domain separation for display-name word keys.
const WORD_CONTEXT: &[u8] = b"chorus search word v1\0";

fn hash(context: &[u8], data: &[u8]) -> NodeId {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(context);
    ctx.update(data);
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    NodeId(id)
}

/// Where the presence record of `username` is stored.
///
/// ```
/// use chorus_index::id::user_key;
/// assert_eq!(user_key("alice"), user_key("alice"));
/// assert_ne!(user_key("alice"), user_key("bob"));
/// ```
#[must_use]
pub fn user_key(username: &str) -> NodeId {
    hash(USER_CONTEXT, username.as_bytes())
}

/// Where the search entries for a display-name word are stored. Words are compared
/// in lowercase.
#[must_use]
pub fn word_key(word: &str) -> NodeId {
    hash(WORD_CONTEXT, word.to_lowercase().as_bytes())
}

/// The XOR distance between two ids, as a big-endian 256-bit number.
#[must_use]
pub fn distance(a: &NodeId, b: &NodeId) -> [u8; 32] {
    let mut d = [0u8; 32];
    for ((d, x), y) in d.iter_mut().zip(a.0).zip(b.0) {
        *d = x ^ y;
    }
    d
}

/// The number of leading bits `a` and `b` share (256 when equal).
#[must_use]
pub fn common_prefix_len(a: &NodeId, b: &NodeId) -> usize {
    let mut n = 0;
    for (x, y) in a.0.iter().zip(b.0.iter()) {
        let z = x ^ y;
        if z == 0 {
            n += 8;
        } else {
            return n + z.leading_zeros() as usize;
        }
    }
    n
}

/// Whether `a` is strictly closer to `target` than `b` is.
#[must_use]
pub fn closer(target: &NodeId, a: &NodeId, b: &NodeId) -> bool {
    distance(target, a) < distance(target, b)
}

/// A random id that shares exactly `prefix` leading bits with `base` (for refreshing
/// the bucket at that depth). `random` supplies the free bits.
#[must_use]
pub fn random_in_bucket(base: &NodeId, prefix: usize, random: [u8; 32]) -> NodeId {
    let prefix = prefix.min(255);
    let mut out = random;
    for (i, (o, b)) in out.iter_mut().zip(base.0).enumerate() {
        let lo = i * 8;
        // Bits of this byte that must equal base, and the one that must differ.
        let keep = prefix.saturating_sub(lo).min(8);
        let keep_mask: u8 = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *o = (b & keep_mask) | (*o & !keep_mask);
        if (lo..lo + 8).contains(&prefix) {
            let flip = 0x80u8 >> (prefix - lo);
            *o = (*o & !flip) | (!b & flip);
        }
    }
    NodeId(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_length_counts_shared_leading_bits() {
        let a = NodeId([0; 32]);
        let mut b = NodeId([0; 32]);
        assert_eq!(common_prefix_len(&a, &b), 256);
        b.0[0] = 0x80;
        assert_eq!(common_prefix_len(&a, &b), 0);
        b.0[0] = 0;
        b.0[2] = 0x01;
        assert_eq!(common_prefix_len(&a, &b), 23);
    }

    #[test]
    fn keys_are_domain_separated() {
        assert_ne!(user_key("alice"), word_key("alice"));
        assert_eq!(word_key("Alice"), word_key("alice"));
    }

    proptest! {
        #[test]
        fn random_in_bucket_lands_in_that_bucket(base in any::<[u8; 32]>(), r in any::<[u8; 32]>(), p in 0usize..256) {
            let base = NodeId(base);
            let id = random_in_bucket(&base, p, r);
            prop_assert_eq!(common_prefix_len(&base, &id), p);
        }

        #[test]
        fn xor_metric_is_symmetric_and_zero_on_self(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, b) = (NodeId(a), NodeId(b));
            prop_assert_eq!(distance(&a, &b), distance(&b, &a));
            prop_assert_eq!(distance(&a, &a), [0u8; 32]);
        }
    }
}
