//! The incremental decoder and the encoder. (Skeleton: the signatures are the contract the core
//! and server crates are written against.)

use crate::{DecodeError, EncodeError, Packet, ProtocolVersion};
use bytes::BytesMut;

/// Decodes packets from the front of a byte buffer, one at a time.
///
/// Before the version is known (a fresh server-side connection) the only packet accepted is
/// CONNECT; decoding it fixes the version for the rest of the connection. Clients create it with
/// [`Decoder::with_version`].
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A server-side decoder awaiting CONNECT. `max_packet_size` bounds the whole packet
    /// (fixed header included), checked before the body is buffered.
    pub fn new(max_packet_size: u32) -> Decoder {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// A decoder for a known version (client side, or tests).
    pub fn with_version(version: ProtocolVersion, max_packet_size: u32) -> Decoder {
        Decoder {
            version: Some(version),
            max_packet_size,
        }
    }

    /// The protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Changes the maximum packet size (e.g. from the client's CONNECT property).
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max;
    }

    /// Decodes one packet from the front of `buf`, removing its bytes. `Ok(None)` means the
    /// buffer holds an incomplete packet: nothing is consumed, read more and call again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let _ = buf;
        Err(DecodeError::Malformed("decoder not yet implemented"))
    }
}

/// Appends the encoding of `packet` for `version` to `buf`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    Err(EncodeError::Invalid("encoder not yet implemented"))
}

/// The number of bytes [`encode`] would append (fixed header included), used to honour a
/// peer's Maximum Packet Size without encoding first.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    0
}
