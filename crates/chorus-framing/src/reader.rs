//! A bounds-checked cursor over peer-supplied bytes.
//!
//! Every parser in Chorus reads untrusted input through [`Reader`]: each read either
//! returns the bytes it asked for or a [`DecodeError::Truncated`] naming the offset and
//! the number of bytes that were missing. Nothing indexes a peer's buffer directly.

use crate::error::DecodeError;

/// A cursor over a byte slice that never reads past its end.
///
/// ```
/// use chorus_framing::Reader;
///
/// let mut r = Reader::new(&[0x01, 0x02, 0x03, 0x04, 0x05]);
/// assert_eq!(r.u8()?, 0x01);
/// assert_eq!(r.u16()?, 0x0203);
/// assert_eq!(r.consumed(), 3);
/// assert!(r.u32().is_err()); // only two bytes remain
/// assert_eq!(r.rest(), &[0x04, 0x05]);
/// # Ok::<(), chorus_framing::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `bytes`.
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            consumed: 0,
        }
    }

    /// Takes the next `n` bytes.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if fewer than `n` bytes remain; the reader is unchanged.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated {
                offset: self.consumed,
                needed: n,
            })?;
        self.rest = tail;
        self.consumed += n;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if fewer than `N` bytes remain; the reader is unchanged.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated {
                offset: self.consumed,
                needed: N,
            })?;
        self.rest = tail;
        self.consumed += N;
        Ok(*head)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of input.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array::<1>().map(|[b]| b)
    }

    /// Reads a big-endian (network order) `u16`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if fewer than 2 bytes remain.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Reads a big-endian `u32`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if fewer than 4 bytes remain.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Reads a big-endian `u64`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if fewer than 8 bytes remain.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Skips `n` bytes.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if fewer than `n` bytes remain; the reader is unchanged.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(drop)
    }

    /// The bytes not yet read, without consuming them.
    #[must_use]
    pub const fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Consumes and returns every remaining byte.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let rest = core::mem::take(&mut self.rest);
        self.consumed += rest.len();
        rest
    }

    /// How many bytes remain.
    #[must_use]
    pub const fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether every byte has been read.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// How many bytes have been read so far: the offset of the next byte in the input.
    #[must_use]
    pub const fn consumed(&self) -> usize {
        self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn truncated_reads_name_offset_and_need_and_leave_reader_unchanged() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(
            r.u32(),
            Err(DecodeError::Truncated {
                offset: 2,
                needed: 4
            })
        );
        assert_eq!(
            r.u64().unwrap_err(),
            DecodeError::Truncated {
                offset: 2,
                needed: 8
            }
        );
        assert_eq!(
            r.take(2).unwrap_err(),
            DecodeError::Truncated {
                offset: 2,
                needed: 2
            }
        );
        assert_eq!(
            r.skip(5).unwrap_err(),
            DecodeError::Truncated {
                offset: 2,
                needed: 5
            }
        );
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u8(), Ok(3));
        assert!(r.is_empty());
        assert_eq!(
            r.u8(),
            Err(DecodeError::Truncated {
                offset: 3,
                needed: 1
            })
        );
    }

    #[test]
    fn reads_are_big_endian() {
        let bytes = [0, 0, 0, 0, 0, 0, 1, 2, 0xff, 0xfe, 0xfd, 0xfc];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u64(), Ok(0x0102));
        assert_eq!(r.u32(), Ok(0xfffe_fdfc));
        assert_eq!(r.consumed(), 12);
    }

    #[test]
    fn take_rest_consumes_everything() {
        let mut r = Reader::new(&[9, 8, 7]);
        r.skip(1).unwrap();
        assert_eq!(r.take_rest(), &[8, 7]);
        assert_eq!(r.consumed(), 3);
        assert!(r.take_rest().is_empty());
    }

    proptest! {
        #[test]
        fn consumed_plus_remaining_is_always_the_input_length(
            bytes in vec(any::<u8>(), 0..64),
            ops in vec(0u8..6, 0..32),
        ) {
            let mut r = Reader::new(&bytes);
            for op in ops {
                let _ = match op {
                    0 => r.u8().map(drop),
                    1 => r.u16().map(drop),
                    2 => r.u32().map(drop),
                    3 => r.u64().map(drop),
                    4 => r.take(3).map(drop),
                    _ => r.array::<5>().map(drop),
                };
                prop_assert_eq!(r.consumed() + r.remaining(), bytes.len());
                prop_assert_eq!(r.rest(), &bytes[r.consumed()..]);
            }
        }
    }
}
