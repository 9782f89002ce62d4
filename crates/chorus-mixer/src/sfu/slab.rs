//! A slab: values in slots that never move, addressed by generation-checked keys, so
//! that a key stays valid until its value is removed and a key of a removed value
//! never reaches the value that reuses its slot.
//!
//! Iteration follows a separate order list, not the slots: insertion order, where a
//! removal moves the last entry of the list into the gap (as `Vec::swap_remove`
//! did when the SFU kept its streams, endpoints and links in `Vec`s). The SFU's
//! outputs follow that order (which receiver is re-selected first, which control
//! message goes out first), so keeping it keeps its behaviour. Only the moved
//! entry's position is updated; no other value moves.

use chorus_framing::U32Map;

/// A handle to a value in a [`Slab`]: its slot and the slot's generation when the
/// value was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    /// Where the slot is in the iteration order (meaningless while empty).
    position: u32,
    value: Option<T>,
}

/// Values addressed by [`Key`]s (module docs).
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// The occupied slots, in iteration order.
    order: Vec<u32>,
    /// Empty slots, reused last freed first.
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            order: Vec::new(),
            free: Vec::new(),
        }
    }
}

/// Slot numbers are bounded by the SFU's configured maximums, far below `u32::MAX`.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<T> Slab<T> {
    /// Number of values.
    pub(crate) const fn len(&self) -> usize {
        self.order.len()
    }

    /// Stores `value` at the end of the iteration order; its key stays valid until
    /// it is removed.
    pub(crate) fn insert(&mut self, value: T) -> Key {
        let position = to_u32(self.order.len());
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    position,
                    value: None,
                });
                to_u32(self.slots.len() - 1)
            }
        };
        let slot = self
            .slots
            .get_mut(index as usize)
            .filter(|s| s.value.is_none());
        // The free list only holds empty slots, and a pushed slot is empty.
        #[allow(clippy::expect_used)]
        let slot = slot.expect("a free slot");
        slot.value = Some(value);
        slot.position = position;
        self.order.push(index);
        Key {
            index,
            generation: slot.generation,
        }
    }

    /// Takes the value of `key` out; the last value in the iteration order takes
    /// its place there, and its slot's next value gets a new generation.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?;
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        let position = slot.position;
        self.order.swap_remove(position as usize);
        if let Some(&moved) = self.order.get(position as usize)
            && let Some(m) = self.slots.get_mut(moved as usize)
        {
            m.position = position;
        }
        self.free.push(key.index);
        Some(value)
    }

    /// The value of `key`, if it is still there.
    #[inline]
    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.generation == key.generation)?
            .value
            .as_ref()
    }

    /// The value of `key`, if it is still there.
    #[inline]
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?
            .value
            .as_mut()
    }

    /// Where `key`'s value is in the iteration order.
    pub(crate) fn position(&self, key: Key) -> Option<usize> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.generation == key.generation && s.value.is_some())
            .map(|s| s.position as usize)
    }

    /// The values and their keys, in iteration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &T)> + '_ {
        self.order.iter().filter_map(|&index| {
            let s = self.slots.get(index as usize)?;
            let key = Key {
                index,
                generation: s.generation,
            };
            s.value.as_ref().map(|v| (key, v))
        })
    }

    /// The values, in iteration order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The keys, in iteration order (collected, so that the slab can change while
    /// the caller walks them).
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.iter().map(|(k, _)| k).collect()
    }

    /// Calls `f` on every value, in iteration order.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        for &index in &self.order {
            if let Some(v) = self
                .slots
                .get_mut(index as usize)
                .and_then(|s| s.value.as_mut())
            {
                f(v);
            }
        }
    }
}

/// Values named by a `u32` id (a participant or link id) in a [`Slab`], with the
/// index from id to key.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    slab: Slab<T>,
    keys: U32Map<Key>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            slab: Slab::default(),
            keys: U32Map::default(),
        }
    }
}

impl<T> Registry<T> {
    /// Number of values.
    pub(crate) const fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether `id` is present.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    /// Stores `value` under `id` (which the caller checked is absent).
    pub(crate) fn insert(&mut self, id: u32, value: T) {
        let key = self.slab.insert(value);
        self.keys.insert(id, key);
    }

    /// Takes `id`'s value out.
    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        self.slab.remove(self.keys.remove(&id)?)
    }

    /// `id`'s value.
    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.slab.get(*self.keys.get(&id)?)
    }

    /// `id`'s value.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slab.get_mut(*self.keys.get(&id)?)
    }

    /// The values, in the slab's iteration order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.slab.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(s: &Slab<char>) -> String {
        s.values().collect()
    }

    #[test]
    fn a_removal_moves_no_other_value() {
        let mut s = Slab::default();
        let a = s.insert('a');
        let b = s.insert('b');
        let c = s.insert('c');
        assert_eq!(s.remove(a), Some('a'));
        assert_eq!(s.get(b), Some(&'b'));
        assert_eq!(s.get(c), Some(&'c'));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn iteration_keeps_the_swap_remove_order() {
        let mut s = Slab::default();
        let keys: Vec<_> = "abcd".chars().map(|c| s.insert(c)).collect();
        s.remove(keys[0]);
        // As Vec::swap_remove(0) on "abcd".
        assert_eq!(values(&s), "dbc");
        assert_eq!(s.position(keys[3]), Some(0));
        let e = s.insert('e');
        assert_eq!(values(&s), "dbce");
        assert_eq!(s.position(e), Some(3));
        s.remove(e);
        assert_eq!(values(&s), "dbc");
        assert_eq!(s.position(keys[0]), None);
    }

    #[test]
    fn a_stale_key_does_not_reach_the_value_reusing_its_slot() {
        let mut s = Slab::default();
        let a = s.insert('x');
        s.remove(a);
        let b = s.insert('y');
        assert_ne!(a, b);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get_mut(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&'y'));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_registry_finds_values_by_id() {
        let mut r = Registry::default();
        r.insert(7, 'a');
        r.insert(9, 'b');
        assert!(r.contains(7));
        assert_eq!(r.get(9), Some(&'b'));
        assert_eq!(r.remove(7), Some('a'));
        assert_eq!(r.get(7), None);
        assert_eq!(r.remove(7), None);
        assert_eq!(r.len(), 1);
        *r.get_mut(9).unwrap() = 'c';
        assert_eq!(r.values().collect::<String>(), "c");
    }

    #[test]
    fn keys_and_values_agree() {
        let mut s = Slab::default();
        let keys: Vec<_> = "abcde".chars().map(|c| s.insert(c)).collect();
        s.remove(keys[2]);
        s.for_each_mut(|v| *v = v.to_ascii_uppercase());
        let got: Vec<_> = s.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(
            got,
            vec![
                (keys[0], 'A'),
                (keys[1], 'B'),
                (keys[4], 'E'),
                (keys[3], 'D')
            ]
        );
        assert_eq!(s.keys(), vec![keys[0], keys[1], keys[4], keys[3]]);
    }
}
