//! One UDP port for everything: demultiplexing and the Chorus datagram header.
//!
//! A Chorus peer receives STUN, TURN ChannelData, SRTP/SRTCP and its own control
//! datagrams on a single port. [`classify`] routes a datagram by its first byte, as
//! RFC 7983 §7 (updated by RFC 9443 §3) prescribes, and tells RTP from RTCP by the
//! payload-type byte as RFC 5761 §4 does. Chorus datagrams use first-byte values 8..=15,
//! inside the range 4..=15 that RFC 7983 leaves unassigned, so they can never be
//! mistaken for any of the standard protocols (`docs/wire-format.md`, "Datagram").
//!
//! ```text
//!  0       1       2       3       4               8                              16
//! +-------+-------+-------+-------+---------------+-------------------------------+-----
//! |0b1vvv | type  | flags |  rsv  | connection id |        sequence number        | payload
//! +-------+-------+-------+-------+---------------+-------------------------------+-----
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, Error, UsageError};
use crate::reader::Reader;

/// The Chorus datagram version this implementation speaks.
pub const DATAGRAM_VERSION: u8 = 1;
/// Length of the Chorus datagram header in bytes.
pub const DATAGRAM_HEADER_LEN: usize = 16;
/// The largest UDP payload without IPv6 jumbograms: 65,535 minus the 8-byte UDP
/// header (IPv6; over IPv4 the IP header leaves 65,507).
pub const MAX_DATAGRAM_LEN: usize = 65_527;
/// The largest payload after a Chorus datagram header.
pub const MAX_DATAGRAM_PAYLOAD_LEN: usize = MAX_DATAGRAM_LEN - DATAGRAM_HEADER_LEN;

/// First-byte marker of Chorus datagrams: bit 3 set, version in the low three bits.
const CHORUS_MARKER: u8 = 0b0000_1000;

/// Which protocol a datagram arriving on the shared port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// STUN or TURN control message (first byte 0..=3).
    Stun,
    /// ZRTP (first byte 16..=19); Chorus does not speak it.
    Zrtp,
    /// DTLS record (first byte 20..=63); Chorus does not speak it.
    Dtls,
    /// TURN ChannelData (first byte 64..=79, RFC 8656 §12.4).
    ChannelData,
    /// RTP or SRTP (first byte 128..=191, payload type outside 64..=95).
    Rtp,
    /// RTCP or SRTCP (first byte 128..=191, packet type 192..=223: RFC 5761 §4).
    Rtcp,
    /// QUIC (first byte 80..=127 or 192..=255, RFC 9443); Chorus does not speak it.
    Quic,
    /// A Chorus datagram (first byte 8..=15).
    Chorus,
    /// Empty, or a first byte no protocol claims (4..=7).
    Unknown,
}

/// Routes a datagram received on the shared port by its first byte (RFC 7983 §7,
/// RFC 9443 §3) and, in the RTP range, its second (RFC 5761 §4).
///
/// This only routes: the handler for the returned kind still validates the whole
/// datagram. Runs in constant time on at most two bytes.
///
/// ```
/// use chorus_framing::{classify, PacketKind};
///
/// assert_eq!(classify(&[0x00, 0x01, 0x00, 0x00]), PacketKind::Stun); // Binding request
/// assert_eq!(classify(&[0x80, 0x6f]), PacketKind::Rtp); // RTP, payload type 111
/// assert_eq!(classify(&[0x80, 0xc8]), PacketKind::Rtcp); // RTCP sender report
/// assert_eq!(classify(&[0x40, 0x00]), PacketKind::ChannelData);
/// assert_eq!(classify(&[]), PacketKind::Unknown);
/// ```
#[must_use]
pub fn classify(bytes: &[u8]) -> PacketKind {
    let Some((&first, rest)) = bytes.split_first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 => PacketKind::Stun,
        4..=7 => PacketKind::Unknown,
        8..=15 => PacketKind::Chorus,
        16..=19 => PacketKind::Zrtp,
        20..=63 => PacketKind::Dtls,
        64..=79 => PacketKind::ChannelData,
        80..=127 | 192..=255 => PacketKind::Quic,
        128..=191 => match rest.first() {
            // RFC 5761 §4: RTCP packet types 192..=223 occupy RTP payload types 64..=95
            // once the marker bit is masked off.
            Some(second) if (64..=95).contains(&(second & 0x7f)) => PacketKind::Rtcp,
            Some(_) => PacketKind::Rtp,
            None => PacketKind::Unknown,
        },
    }
}

/// What a Chorus datagram carries. The byte values are the wire registry of
/// `docs/wire-format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DatagramType {
    /// Bootstrap probe: "are you a super node?" (host cache bootstrap over UDP).
    Probe = 0x01,
    /// Answer to a `Probe`.
    ProbeReply = 0x02,
    /// Keeps a NAT binding and a connection alive; carries no meaning otherwise.
    Keepalive = 0x03,
    /// Control message in clear: a TLV attribute list.
    Control = 0x04,
    /// AEAD-sealed control message (chorus-crypto); header bytes are associated data.
    Sealed = 0x05,
    /// Global Index (DHT) message (chorus-index).
    Index = 0x06,
    /// The sender closes the connection.
    Close = 0x07,
}

impl DatagramType {
    /// Every datagram type, in wire order.
    pub const ALL: [Self; 7] = [
        Self::Probe,
        Self::ProbeReply,
        Self::Keepalive,
        Self::Control,
        Self::Sealed,
        Self::Index,
        Self::Close,
    ];

    /// The type with wire value `b`, if there is one.
    #[must_use]
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Probe,
            0x02 => Self::ProbeReply,
            0x03 => Self::Keepalive,
            0x04 => Self::Control,
            0x05 => Self::Sealed,
            0x06 => Self::Index,
            0x07 => Self::Close,
            _ => return None,
        })
    }

    /// The flag bits this type may carry.
    #[must_use]
    pub const fn allowed_flags(self) -> u8 {
        match self {
            Self::Control | Self::Sealed | Self::Index => DatagramHeader::FLAG_ACK_REQUESTED,
            _ => 0,
        }
    }
}

/// The 16-byte header of a Chorus datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramHeader {
    /// What the datagram carries.
    pub datagram_type: DatagramType,
    /// Flag bits (see [`DatagramHeader::FLAG_ACK_REQUESTED`]).
    pub flags: u8,
    /// The receiver's id for this conversation, chosen by the receiver, so that one
    /// socket can route datagrams to many connections whatever address they come from.
    pub connection_id: u32,
    /// The sender's packet counter on this connection: unique per packet, used for
    /// replay detection and as the AEAD nonce of sealed datagrams.
    pub sequence: u64,
}

impl DatagramHeader {
    /// Flag: the sender asks the receiver to acknowledge this datagram (allowed on
    /// `Control`, `Sealed` and `Index`).
    pub const FLAG_ACK_REQUESTED: u8 = 0x01;

    /// A header with no flags.
    #[must_use]
    pub const fn new(datagram_type: DatagramType, connection_id: u32, sequence: u64) -> Self {
        Self {
            datagram_type,
            flags: 0,
            connection_id,
            sequence,
        }
    }

    /// Decodes a header from the front of `bytes`, returning it and the payload that
    /// follows (borrowed from `bytes`).
    ///
    /// # Errors
    /// [`DecodeError::NotChorus`] if [`classify`] would not route `bytes` to Chorus;
    /// [`DecodeError::TooLong`] beyond [`MAX_DATAGRAM_LEN`] (no UDP datagram is that
    /// long, and what is decoded must re-encode); [`DecodeError::Truncated`] for a
    /// short header; then, in wire order,
    /// [`DecodeError::UnknownVersion`], [`DecodeError::UnknownDatagramType`],
    /// [`DecodeError::UnknownFlags`], [`DecodeError::ReservedNotZero`].
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        if classify(bytes) != PacketKind::Chorus {
            return Err(DecodeError::NotChorus);
        }
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_DATAGRAM_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let [marker, ty, flags, reserved] = r.array::<4>()?;
        let connection_id = r.u32()?;
        let sequence = r.u64()?;
        let version = marker & !CHORUS_MARKER;
        if version != DATAGRAM_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let datagram_type =
            DatagramType::from_u8(ty).ok_or(DecodeError::UnknownDatagramType(ty))?;
        let undefined = flags & !datagram_type.allowed_flags();
        if undefined != 0 {
            return Err(DecodeError::UnknownFlags(undefined));
        }
        if reserved != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        let header = Self {
            datagram_type,
            flags,
            connection_id,
            sequence,
        };
        Ok((header, r.rest()))
    }

    /// Writes the 16 header bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(CHORUS_MARKER | DATAGRAM_VERSION);
        dst.put_u8(self.datagram_type as u8);
        dst.put_u8(self.flags);
        dst.put_u8(0);
        dst.put_u32(self.connection_id);
        dst.put_u64(self.sequence);
    }

    /// Whether the sender asked for an acknowledgement.
    #[must_use]
    pub const fn ack_requested(&self) -> bool {
        self.flags & Self::FLAG_ACK_REQUESTED != 0
    }
}

/// A Chorus datagram whose payload shares the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Datagram {
    /// The header.
    pub header: DatagramHeader,
    /// Everything after the header.
    pub payload: Bytes,
}

impl Datagram {
    /// A datagram of `header` and `payload`.
    pub fn new(header: DatagramHeader, payload: impl Into<Bytes>) -> Self {
        Self {
            header,
            payload: payload.into(),
        }
    }

    /// Decodes a whole received datagram; the payload is a slice of `bytes`, not a copy.
    ///
    /// # Errors
    /// As [`DatagramHeader::decode`].
    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        let (header, payload) = DatagramHeader::decode(bytes)?;
        Ok(Self {
            header,
            payload: bytes.slice_ref(payload),
        })
    }

    /// Bytes [`Datagram::encode`] writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        DATAGRAM_HEADER_LEN + self.payload.len()
    }

    /// Appends the datagram to `dst`, writing exactly [`Datagram::encoded_len`] bytes.
    ///
    /// # Errors
    /// [`UsageError::PayloadTooLarge`] if the result would not fit in one UDP datagram;
    /// [`UsageError::InvalidFrame`] if the header carries flags its type does not allow.
    /// Nothing is written then.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let len = self.payload.len();
        if len > MAX_DATAGRAM_PAYLOAD_LEN {
            return Err(UsageError::PayloadTooLarge {
                len,
                max: MAX_DATAGRAM_PAYLOAD_LEN,
            }
            .into());
        }
        let undefined = self.header.flags & !self.header.datagram_type.allowed_flags();
        if undefined != 0 {
            return Err(UsageError::InvalidFrame(DecodeError::UnknownFlags(undefined)).into());
        }
        dst.reserve(self.encoded_len());
        self.header.encode(dst);
        dst.put_slice(&self.payload);
        Ok(())
    }

    /// The datagram as one buffer, ready for a [`crate::Transmit`].
    ///
    /// # Errors
    /// As [`Datagram::encode`].
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Datagram {
        let mut header =
            DatagramHeader::new(DatagramType::Control, 0xdead_beef, 0x0102_0304_0506_0708);
        header.flags = DatagramHeader::FLAG_ACK_REQUESTED;
        Datagram::new(header, &b"attrs"[..])
    }

    #[test]
    fn header_layout_matches_the_wire_format_document() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(
            &bytes[..],
            &[
                0x09, 0x04, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, b'a', b't',
                b't', b'r', b's'
            ]
        );
        assert_eq!(classify(&bytes), PacketKind::Chorus);
    }

    #[test]
    fn every_type_round_trips_and_payload_is_not_copied() {
        for ty in DatagramType::ALL {
            let d = Datagram::new(DatagramHeader::new(ty, 5, 6), vec![1u8; 40]);
            let bytes = d.to_bytes().unwrap();
            let back = Datagram::decode(&bytes).unwrap();
            assert_eq!(back, d);
            assert_eq!(back.payload.as_ptr(), bytes[DATAGRAM_HEADER_LEN..].as_ptr());
            assert_eq!(DatagramType::from_u8(ty as u8), Some(ty));
        }
        assert!(sample().header.ack_requested());
    }

    #[test]
    fn classify_covers_every_first_byte_per_rfc_7983_and_9443() {
        for b in 0u8..=255 {
            let kind = classify(&[b, 0]);
            let expected = match b {
                0..=3 => PacketKind::Stun,
                8..=15 => PacketKind::Chorus,
                16..=19 => PacketKind::Zrtp,
                20..=63 => PacketKind::Dtls,
                64..=79 => PacketKind::ChannelData,
                128..=191 => PacketKind::Rtp,
                4..=7 => PacketKind::Unknown,
                _ => PacketKind::Quic,
            };
            assert_eq!(kind, expected, "first byte {b}");
        }
    }

    #[test]
    fn rtcp_packet_types_are_told_from_rtp_payload_types() {
        // RFC 5761 §4: SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206.
        for pt in 192u8..=223 {
            assert_eq!(classify(&[0x81, pt]), PacketKind::Rtcp, "packet type {pt}");
        }
        for pt in (0u8..64).chain(96..128) {
            assert_eq!(classify(&[0x80, pt]), PacketKind::Rtp, "payload type {pt}");
            assert_eq!(classify(&[0x80, pt | 0x80]), PacketKind::Rtp, "marker set");
        }
        assert_eq!(classify(&[0x80]), PacketKind::Unknown);
    }

    #[test]
    fn foreign_packets_are_not_chorus() {
        assert_eq!(
            DatagramHeader::decode(&[0x00, 0x01, 0, 0]).unwrap_err(),
            DecodeError::NotChorus
        );
        assert_eq!(
            DatagramHeader::decode(&[]).unwrap_err(),
            DecodeError::NotChorus
        );
    }

    #[test]
    fn each_header_rule_has_its_own_error() {
        let good = sample().to_bytes().unwrap().to_vec();
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            DatagramHeader::decode(&b).map(|_| ()).unwrap_err()
        };
        assert_eq!(with(0, 0x0a), DecodeError::UnknownVersion(2));
        assert_eq!(with(0, 0x08), DecodeError::UnknownVersion(0));
        assert_eq!(with(1, 0x00), DecodeError::UnknownDatagramType(0));
        assert_eq!(with(1, 0x99), DecodeError::UnknownDatagramType(0x99));
        assert_eq!(with(2, 0x03), DecodeError::UnknownFlags(0x02));
        assert_eq!(with(3, 0x01), DecodeError::ReservedNotZero);
        let mut keepalive_with_ack = good.clone();
        keepalive_with_ack[1] = DatagramType::Keepalive as u8;
        assert_eq!(
            DatagramHeader::decode(&keepalive_with_ack).unwrap_err(),
            DecodeError::UnknownFlags(1)
        );
    }

    #[test]
    fn every_strict_prefix_of_a_header_is_truncated() {
        let good = sample().to_bytes().unwrap();
        for n in 1..DATAGRAM_HEADER_LEN {
            assert!(
                matches!(
                    DatagramHeader::decode(&good[..n]),
                    Err(DecodeError::Truncated { .. })
                ),
                "prefix {n}"
            );
        }
        assert!(DatagramHeader::decode(&good[..DATAGRAM_HEADER_LEN]).is_ok());
    }

    #[test]
    fn the_largest_udp_datagram_round_trips_and_one_byte_more_is_too_long() {
        // Found by review of the fuzz oracle: decode accepted what encode refused.
        let max = Datagram::new(
            DatagramHeader::new(DatagramType::Control, 1, 1),
            vec![0u8; MAX_DATAGRAM_PAYLOAD_LEN],
        );
        let bytes = max.to_bytes().unwrap();
        assert_eq!(bytes.len(), MAX_DATAGRAM_LEN);
        assert_eq!(Datagram::decode(&bytes).unwrap(), max);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            Datagram::decode(&Bytes::from(longer)).unwrap_err(),
            DecodeError::TooLong {
                len: MAX_DATAGRAM_LEN + 1,
                max: MAX_DATAGRAM_LEN
            }
        );
    }

    #[test]
    fn encode_refuses_oversize_payloads_and_undefined_flags() {
        let big = Datagram::new(
            DatagramHeader::new(DatagramType::Control, 1, 1),
            vec![0u8; MAX_DATAGRAM_PAYLOAD_LEN + 1],
        );
        assert_eq!(
            big.to_bytes(),
            Err(Error::Usage(UsageError::PayloadTooLarge {
                len: MAX_DATAGRAM_PAYLOAD_LEN + 1,
                max: MAX_DATAGRAM_PAYLOAD_LEN
            }))
        );
        let mut header = DatagramHeader::new(DatagramType::Probe, 1, 1);
        header.flags = DatagramHeader::FLAG_ACK_REQUESTED;
        let mut out = BytesMut::new();
        assert_eq!(
            Datagram::new(header, Bytes::new()).encode(&mut out),
            Err(Error::Usage(UsageError::InvalidFrame(
                DecodeError::UnknownFlags(1)
            )))
        );
        assert!(out.is_empty());
    }
}
