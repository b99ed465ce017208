//! Wire primitives shared by every packet: the variable byte integer, big-endian integers, MQTT
//! UTF-8 strings and binary data, read by [`Reader`] and written through a [`Sink`].
//!
//! Place in the data flow: the packet files (`packet/*.rs`) and the property codec sit on top of
//! this module; it knows nothing about packets. Decoding reads a frame that the decoder has
//! already split off the connection buffer, so every string or binary field is a zero-copy slice
//! of that frame. Encoding runs each packet's `emit` twice: once into a [`Counter`] (which
//! measures and validates, so nothing is written for a packet that cannot be encoded) and once
//! into a [`Writer`] (which cannot fail and never panics).

use crate::{DecodeError, EncodeError, Utf8, Utf8Error};
use bytes::{BufMut, Bytes, BytesMut};

/// Largest value a variable byte integer can hold (four bytes of seven bits).
pub(crate) const MAX_VAR_INT: u32 = 268_435_455;

/// Number of bytes the variable byte integer encoding of `v` takes (1..=4; values above
/// [`MAX_VAR_INT`] are counted as 4 and refused elsewhere).
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Result of peeking a variable byte integer at the start of a slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes it took.
    Complete(u32, usize),
    /// The slice ends before the last byte of the integer.
    Incomplete,
}

/// Reads a variable byte integer from the front of `b` without consuming anything, so the
/// decoder can size a frame before it is fully buffered. A fourth byte with the continuation
/// bit set is malformed (a fifth byte is never read), and so is a non-minimal encoding
/// ([MQTT-1.5.5-1]), e.g. `0x80 0x00` for zero.
pub(crate) fn peek_var_int(b: &[u8]) -> Result<VarInt, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(VarInt::Incomplete);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::Malformed(
                    "[MQTT-1.5.5-1] variable byte integer not in its shortest form",
                ));
            }
            return Ok(VarInt::Complete(value, i + 1));
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than four bytes",
    ))
}

const PAST_END: DecodeError =
    DecodeError::Malformed("a field runs past the end of the packet (remaining length too short)");

/// A cursor over one frame's body (or a part of it, such as a property block). Reading past
/// `end` is a Malformed Packet: the remaining length did not cover the fields.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `buf`.
    pub(crate) fn new(buf: &'a Bytes) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// True when every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Fails unless every byte was consumed: trailing bytes mean the remaining length announced
    /// more than the packet's fields.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(PAST_END);
        }
        let start = self.pos;
        self.pos += n;
        self.buf.get(start..self.pos).ok_or(PAST_END)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.take(1)?;
        b.first().copied().ok_or(PAST_END)
    }

    /// A big-endian two byte integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        let arr: [u8; 2] = b.try_into().map_err(|_| PAST_END)?;
        Ok(u16::from_be_bytes(arr))
    }

    /// A big-endian four byte integer.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        let arr: [u8; 4] = b.try_into().map_err(|_| PAST_END)?;
        Ok(u32::from_be_bytes(arr))
    }

    /// A variable byte integer inside the body (property length, subscription identifier).
    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        let rest = self.buf.get(self.pos..self.end).ok_or(PAST_END)?;
        match peek_var_int(rest)? {
            VarInt::Complete(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarInt::Incomplete => Err(PAST_END),
        }
    }

    /// The next `n` bytes as a shared slice of the frame (no copy).
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(PAST_END);
        }
        let start = self.pos;
        self.pos += n;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Everything left, as a shared slice (the PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.buf.slice(start..self.end)
    }

    /// Binary data: a two byte length then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// An MQTT UTF-8 string: a two byte length then well-formed UTF-8 without U+0000.
    pub(crate) fn utf8(&mut self) -> Result<Utf8, DecodeError> {
        let b = self.binary()?;
        Utf8::try_from_bytes(b).map_err(utf8_error)
    }

    /// A sub-reader over the next `n` bytes (a property block); this reader skips past them.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        if n > self.remaining() {
            return Err(PAST_END);
        }
        let sub = Reader {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + n,
        };
        self.pos += n;
        Ok(sub)
    }
}

/// Maps a string validation failure to the Malformed Packet it is on the wire.
pub(crate) fn utf8_error(e: Utf8Error) -> DecodeError {
    DecodeError::Malformed(match e {
        Utf8Error::Invalid => "[MQTT-1.5.4-1] string is not well-formed UTF-8",
        Utf8Error::Null => "[MQTT-1.5.4-2] string contains U+0000",
        Utf8Error::TooLong => "string longer than 65535 bytes",
    })
}

/// Where a packet's `emit` sends its fields: a [`Counter`] or a [`Writer`]. Writing the packet
/// once as code and running it through both keeps [`crate::encoded_len`] and
/// [`crate::encode`] in agreement by construction.
pub(crate) trait Sink {
    /// One byte.
    fn u8(&mut self, v: u8);
    /// Big-endian two byte integer.
    fn u16(&mut self, v: u16);
    /// Big-endian four byte integer.
    fn u32(&mut self, v: u32);
    /// Variable byte integer; a value above [`MAX_VAR_INT`] makes the [`Counter`] fail, so the
    /// [`Writer`] never sees one.
    fn var_int(&mut self, v: usize);
    /// Raw bytes.
    fn raw(&mut self, b: &[u8]);
    /// Records that the packet cannot be encoded; only the [`Counter`] acts on it.
    fn fail(&mut self, e: EncodeError);

    /// A condition the packet must satisfy to be encodable.
    fn check(&mut self, ok: bool, why: &'static str) {
        if !ok {
            self.fail(EncodeError::Invalid(why));
        }
    }

    /// An MQTT string (its type guarantees at most 65,535 bytes).
    fn utf8(&mut self, s: &Utf8) {
        self.binary(s.as_bytes());
    }

    /// Binary data with its two byte length; longer than 65,535 bytes fails.
    fn binary(&mut self, b: &[u8]) {
        match u16::try_from(b.len()) {
            Ok(n) => {
                self.u16(n);
                self.raw(b);
            }
            Err(_) => self.fail(EncodeError::FieldTooLong),
        }
    }
}

/// Measures an encoding and remembers the first reason it cannot be done.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    /// Bytes counted so far.
    pub(crate) len: usize,
    /// The first failure, if any.
    pub(crate) error: Option<EncodeError>,
}

impl Counter {
    /// The counted length, or the first failure.
    pub(crate) fn result(self) -> Result<usize, EncodeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.len),
        }
    }
}

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.len += 1;
    }
    fn u16(&mut self, _: u16) {
        self.len += 2;
    }
    fn u32(&mut self, _: u32) {
        self.len += 4;
    }
    fn var_int(&mut self, v: usize) {
        if v > MAX_VAR_INT as usize {
            self.fail(EncodeError::TooLarge(v));
        }
        self.len += var_int_len(v);
    }
    fn raw(&mut self, b: &[u8]) {
        self.len += b.len();
    }
    fn fail(&mut self, e: EncodeError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
    fn binary(&mut self, b: &[u8]) {
        if b.len() > usize::from(u16::MAX) {
            self.fail(EncodeError::FieldTooLong);
        }
        self.len += 2 + b.len();
    }
}

/// Appends to the caller's buffer. Only used after a [`Counter`] pass succeeded and the
/// buffer was reserved, so it never reallocates in practice and has nothing to refuse.
#[derive(Debug)]
pub(crate) struct Writer<'a>(pub(crate) &'a mut BytesMut);

impl Sink for Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.put_u32(v);
    }
    fn var_int(&mut self, v: usize) {
        put_var_int(self.0, v);
    }
    fn raw(&mut self, b: &[u8]) {
        self.0.put_slice(b);
    }
    fn fail(&mut self, _: EncodeError) {}
}

/// Writes a variable byte integer (the counter pass has refused values above
/// [`MAX_VAR_INT`]; a larger one would be written as its low 28 bits, never panic).
pub(crate) fn put_var_int(buf: &mut BytesMut, v: usize) {
    let mut v = v & MAX_VAR_INT as usize;
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of spec section 1.5.5 (v5) / 2.2.3 (3.1.1): the edges of each length.
    const TABLE: [(u32, &[u8]); 8] = [
        (0, &[0x00]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ];

    #[test]
    fn variable_byte_integer_spec_table() {
        for (value, bytes) in TABLE {
            let mut buf = BytesMut::new();
            put_var_int(&mut buf, value as usize);
            assert_eq!(&buf[..], bytes, "encoding {value}");
            assert_eq!(var_int_len(value as usize), bytes.len());
            assert_eq!(
                peek_var_int(bytes),
                Ok(VarInt::Complete(value, bytes.len()))
            );
            // Every strict prefix is incomplete, never an error.
            for cut in 0..bytes.len() {
                assert_eq!(peek_var_int(&bytes[..cut]), Ok(VarInt::Incomplete));
            }
        }
    }

    #[test]
    fn variable_byte_integer_rejects_fifth_byte_and_long_forms() {
        assert!(matches!(
            peek_var_int(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            peek_var_int(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            peek_var_int(&[0x80, 0x00]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            peek_var_int(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn reader_reads_fields_and_refuses_to_run_past_the_end() {
        let frame = Bytes::from_static(&[0x00, 0x03, b'a', b'/', b'b', 0x12, 0x34, 0x00, 0x05]);
        let mut r = Reader::new(&frame);
        assert_eq!(r.utf8().unwrap(), "a/b");
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.remaining(), 2);
        assert!(matches!(r.u32(), Err(DecodeError::Malformed(_))));
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 2);
        assert!(r.finish("trailing").is_err());
        assert!(matches!(r.binary(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn reader_maps_string_errors_to_malformed() {
        let frame = Bytes::from_static(&[0x00, 0x02, b'a', 0x00]);
        assert_eq!(
            Reader::new(&frame).utf8(),
            Err(DecodeError::Malformed(
                "[MQTT-1.5.4-2] string contains U+0000"
            ))
        );
        let frame = Bytes::from_static(&[0x00, 0x02, 0xC3, 0x28]);
        assert_eq!(
            Reader::new(&frame).utf8(),
            Err(DecodeError::Malformed(
                "[MQTT-1.5.4-1] string is not well-formed UTF-8"
            ))
        );
    }

    #[test]
    fn counter_refuses_oversized_fields() {
        let mut c = Counter::default();
        c.binary(&vec![0u8; 65_536]);
        assert_eq!(c.result(), Err(EncodeError::FieldTooLong));
        let mut c = Counter::default();
        c.var_int(MAX_VAR_INT as usize + 1);
        assert!(matches!(c.result(), Err(EncodeError::TooLarge(_))));
    }
}
