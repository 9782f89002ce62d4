//! ChannelData messages (RFC 8656 §12.4): the 4-byte-header framing that carries
//! application data between a TURN client and server once a channel is bound.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Channel Number        |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! /                       Application Data                        /
//! +-------------------------------+
//! ```
//!
//! Over UDP the padding to a multiple of four is optional and the datagram may be
//! longer than `4 + Length` (RFC 8656 §12.5); over TCP the padding is mandatory, since
//! the next message starts at the next 4-byte boundary. Decoding borrows the data.

use bytes::{BufMut, BytesMut};

use crate::client::Transport;
use crate::error::DecodeError;

/// Header size.
pub const HEADER_LEN: usize = 4;
/// The lowest valid channel number (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// The highest valid channel number (RFC 8656 §12: 0x4000 through 0x4FFF).
pub const MAX_CHANNEL: u16 = 0x4FFF;

/// Whether `n` is a channel number a client may bind (RFC 8656 §12).
#[must_use]
pub const fn is_valid_channel(n: u16) -> bool {
    n >= MIN_CHANNEL && n <= MAX_CHANNEL
}

/// Whether the first byte of a datagram or stream chunk starts a ChannelData message
/// (first two bits 0b01, RFC 8656 §12 and RFC 7983), rather than STUN (0b00).
#[must_use]
pub const fn is_channel_data(first: u8) -> bool {
    first & 0xC0 == 0x40
}

/// A decoded ChannelData message, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number, in 0x4000..=0x4FFF.
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Decodes a message at the start of `bytes`. Returns the message and the number of
    /// bytes it occupies: for [`Transport::Tcp`] that includes the padding to the next
    /// multiple of four; for UDP it is the whole input (trailing bytes are padding or
    /// ignored, RFC 8656 §12.5).
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when the input is shorter than the header, the
    /// length, or (TCP) the padding; [`DecodeError::NotStun`] when the channel number
    /// is outside 0x4000..=0x4FFF (RFC 8656 §12.4: such messages are discarded).
    pub fn decode(bytes: &'a [u8], transport: Transport) -> Result<(Self, usize), DecodeError> {
        let header = bytes
            .first_chunk::<HEADER_LEN>()
            .ok_or(DecodeError::Truncated {
                offset: 0,
                needed: HEADER_LEN,
            })?;
        let channel = u16::from_be_bytes([header[0], header[1]]);
        if !is_valid_channel(channel) {
            return Err(DecodeError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let end = HEADER_LEN + len;
        let data = bytes.get(HEADER_LEN..end).ok_or(DecodeError::Truncated {
            offset: HEADER_LEN,
            needed: len,
        })?;
        let consumed = match transport {
            Transport::Udp => bytes.len(),
            Transport::Tcp => {
                let padded = (end + 3) & !3;
                if bytes.len() < padded {
                    return Err(DecodeError::Truncated {
                        offset: end,
                        needed: padded - end,
                    });
                }
                padded
            }
        };
        Ok((Self { channel, data }, consumed))
    }

    /// The total length of the message starting with `prefix` (header plus data, plus
    /// padding for TCP), once the 4-byte header is available: what a stream reader
    /// needs to know how much to buffer. `None` if fewer than four bytes are given.
    #[must_use]
    pub fn len_from_prefix(prefix: &[u8], transport: Transport) -> Option<usize> {
        let header = prefix.first_chunk::<HEADER_LEN>()?;
        let end = HEADER_LEN + usize::from(u16::from_be_bytes([header[2], header[3]]));
        Some(match transport {
            Transport::Udp => end,
            Transport::Tcp => (end + 3) & !3,
        })
    }

    /// Bytes [`Self::encode`] writes: the header, the data and, for TCP, the padding.
    #[must_use]
    pub fn encoded_len(&self, transport: Transport) -> usize {
        let end = HEADER_LEN + self.data.len();
        match transport {
            Transport::Udp => end,
            Transport::Tcp => (end + 3) & !3,
        }
    }

    /// Appends the message to `dst`. Padding is written for TCP only (RFC 8656 §12.5:
    /// over UDP it "need not" be, and leaving it out saves up to three bytes).
    ///
    /// # Errors
    /// `Err(len)` when the data does not fit the 16-bit length field, or the channel
    /// number is out of range; nothing is written then.
    pub fn encode(&self, transport: Transport, dst: &mut BytesMut) -> Result<(), usize> {
        let len = u16::try_from(self.data.len()).map_err(|_| self.data.len())?;
        if !is_valid_channel(self.channel) {
            return Err(self.data.len());
        }
        let total = self.encoded_len(transport);
        dst.reserve(total);
        dst.put_u16(self.channel);
        dst.put_u16(len);
        dst.put_slice(self.data);
        dst.put_bytes(0, total - HEADER_LEN - self.data.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn encodes_the_rfc_layout_and_pads_only_over_tcp() {
        let msg = ChannelData {
            channel: 0x4001,
            data: b"hello",
        };
        let mut udp = BytesMut::new();
        msg.encode(Transport::Udp, &mut udp).unwrap();
        assert_eq!(&udp[..], b"\x40\x01\x00\x05hello");
        let mut tcp = BytesMut::new();
        msg.encode(Transport::Tcp, &mut tcp).unwrap();
        assert_eq!(&tcp[..], b"\x40\x01\x00\x05hello\0\0\0");
        assert_eq!(ChannelData::decode(&udp, Transport::Udp), Ok((msg, 9)));
        assert_eq!(ChannelData::decode(&tcp, Transport::Tcp), Ok((msg, 12)));
        // A UDP datagram may carry the padding anyway.
        assert_eq!(ChannelData::decode(&tcp, Transport::Udp), Ok((msg, 12)));
    }

    #[test]
    fn rejects_out_of_range_channels_truncation_and_missing_tcp_padding() {
        assert_eq!(
            ChannelData::decode(b"\x3f\xff\x00\x00", Transport::Udp),
            Err(DecodeError::NotStun)
        );
        assert_eq!(
            ChannelData::decode(b"\x50\x00\x00\x00", Transport::Udp),
            Err(DecodeError::NotStun)
        );
        assert!(matches!(
            ChannelData::decode(b"\x40\x00\x00", Transport::Udp),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            ChannelData::decode(b"\x40\x00\x00\x05abcd", Transport::Udp),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            ChannelData::decode(b"\x40\x00\x00\x05abcde", Transport::Tcp),
            Err(DecodeError::Truncated { .. })
        ));
        let bad = ChannelData {
            channel: 0x3000,
            data: b"",
        };
        assert!(bad.encode(Transport::Udp, &mut BytesMut::new()).is_err());
        let big = vec![0u8; 65_536];
        let too_long = ChannelData {
            channel: 0x4000,
            data: &big,
        };
        assert_eq!(
            too_long.encode(Transport::Udp, &mut BytesMut::new()),
            Err(65_536)
        );
    }

    #[test]
    fn tells_channel_data_from_stun_by_the_first_two_bits() {
        assert!(is_channel_data(0x40));
        assert!(is_channel_data(0x7f));
        assert!(!is_channel_data(0x00));
        assert!(!is_channel_data(0x80));
    }

    proptest! {
        #[test]
        fn round_trips_and_stream_lengths_agree(
            channel in MIN_CHANNEL..=MAX_CHANNEL,
            data in proptest::collection::vec(any::<u8>(), 0..300),
            tcp in any::<bool>(),
        ) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let msg = ChannelData { channel, data: &data };
            let mut out = BytesMut::new();
            msg.encode(transport, &mut out).unwrap();
            prop_assert_eq!(out.len(), msg.encoded_len(transport));
            prop_assert_eq!(ChannelData::len_from_prefix(&out, transport), Some(out.len()));
            let (back, used) = ChannelData::decode(&out, transport).unwrap();
            prop_assert_eq!(back, msg);
            prop_assert_eq!(used, out.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_overrun(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            tcp in any::<bool>(),
        ) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            if let Ok((msg, used)) = ChannelData::decode(&bytes, transport) {
                prop_assert!(used <= bytes.len());
                prop_assert!(HEADER_LEN + msg.data.len() <= used);
            }
        }
    }
}
