//! Cutting a TURN-over-TCP byte stream into messages (RFC 8656 §12.5, RFC 8489 §6.2.2):
//! STUN messages (first two bits 0b00, length from the header) and ChannelData (0b01,
//! padded to a multiple of four over TCP) follow each other with no other framing.

use bytes::{Buf, Bytes, BytesMut};

use crate::client::Transport;
use crate::error::DecodeError;
use crate::stun::{Limits, Message};
use crate::turn::channel_data::{self, ChannelData};

/// The longest ChannelData message over TCP: header, 65,535 bytes, padding.
const MAX_CHANNEL_DATA: usize = (channel_data::HEADER_LEN + u16::MAX as usize + 3) & !3;

/// Splits a TCP byte stream from a TURN server into whole messages, each to be passed
/// to [`super::Client::handle_input`].
///
/// Buffering is bounded: [`Deframer::push`] takes at most [`Deframer::space`] bytes,
/// which is never less than one whole message once [`Deframer::next_message`] has
/// returned `Ok(None)`, so a reader loop always makes progress:
///
/// ```
/// use chorus_nat::stun::Limits;
/// use chorus_nat::turn::client::Deframer;
///
/// let mut stream = Deframer::new(&Limits::default());
/// let mut input: &[u8] = b"\x40\x00\x00\x05hello\0\0\0\x40\x01\x00\x01x";
/// let mut messages = Vec::new();
/// while !input.is_empty() {
///     let taken = stream.push(input);
///     input = &input[taken..];
///     while let Some(m) = stream.next_message()? {
///         messages.push(m);
///     }
/// }
/// assert_eq!(messages.len(), 1); // the second one still lacks its padding
/// assert_eq!(&messages[0][..], b"\x40\x00\x00\x05hello\0\0\0");
/// # Ok::<(), chorus_nat::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct Deframer {
    buf: BytesMut,
    max_stun: usize,
    capacity: usize,
}

impl Deframer {
    /// A de-framer accepting STUN messages up to `limits.max_len` bytes and any
    /// ChannelData message.
    #[must_use]
    pub fn new(limits: &Limits) -> Self {
        let capacity = MAX_CHANNEL_DATA.max(limits.max_len);
        Self {
            buf: BytesMut::new(),
            max_stun: limits.max_len,
            capacity,
        }
    }

    /// How many more bytes [`Deframer::push`] accepts now.
    #[must_use]
    pub fn space(&self) -> usize {
        self.capacity - self.buf.len()
    }

    /// Appends as much of `input` as fits and returns how many bytes were taken.
    pub fn push(&mut self, input: &[u8]) -> usize {
        let n = input.len().min(self.space());
        self.buf.extend_from_slice(input.get(..n).unwrap_or(&[]));
        n
    }

    /// Bytes buffered but not yet returned.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// The stream is corrupt (neither STUN nor ChannelData, or a STUN message longer
    /// than the limit); the connection should be closed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let len = if channel_data::is_channel_data(first) {
            ChannelData::len_from_prefix(&self.buf, Transport::Tcp)
        } else if first & 0xC0 == 0 {
            match Message::len_from_prefix(&self.buf) {
                Some(len) if len > self.max_stun => {
                    return Err(DecodeError::TooLong {
                        len,
                        max: self.max_stun,
                    });
                }
                other => other,
            }
        } else {
            return Err(DecodeError::NotStun);
        };
        match len {
            Some(len) if self.buf.len() >= len => {
                let msg = self.buf.split_to(len).freeze();
                if self.buf.is_empty() {
                    // Let the allocation shrink back instead of holding a 64 KiB peak.
                    self.buf = BytesMut::new();
                }
                Ok(Some(msg))
            }
            _ => Ok(None),
        }
    }

    /// Drops everything buffered (after an error, before reconnecting).
    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
    }
}
