//! Helpers for the byte-literal tests at the bottom of each packet file: decode a literal
//! through the real [`Decoder`], encode through the real [`encode`], and check both agree with
//! [`encoded_len`].

use crate::{DecodeError, Decoder, Packet, ProtocolVersion, encode, encoded_len};
use bytes::BytesMut;

/// Decodes exactly one packet from `bytes` with a decoder of `version`; the whole input must be
/// consumed.
pub(crate) fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut d = Decoder::with_version(version, u32::MAX);
    let p = d.decode(&mut buf)?;
    let p = p.expect("test literal is a complete packet");
    assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    Ok(p)
}

/// Encodes `p`, checking [`encoded_len`] matches what was written.
pub(crate) fn encode_vec(p: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, version, &mut buf).expect("encodable test packet");
    assert_eq!(buf.len(), encoded_len(p, version), "encoded_len of {p:?}");
    buf.to_vec()
}

/// `p` encodes to exactly `bytes`, and `bytes` decode to exactly `p`.
pub(crate) fn assert_wire(p: &Packet, version: ProtocolVersion, bytes: &[u8]) {
    assert_eq!(encode_vec(p, version), bytes, "encoding of {p:?}");
    assert_eq!(
        decode(bytes, version).as_ref(),
        Ok(p),
        "decoding of {bytes:02x?}"
    );
}
