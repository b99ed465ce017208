//! The 16-byte header at the front of every benchmark payload, and the reused buffer payloads
//! are cut from.
//!
//! Place in the data flow: a publisher writes a header ([`PayloadWriter::next`]) into each
//! PUBLISH it encodes; a subscriber reads it back ([`Header::decode`]) to find the stream
//! (publisher id), the position in it (sequence number) and the send time it measures latency
//! from. Big-endian, like the rest of MQTT.
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | send time, ns since the run's [`Clock`](crate::clock::Clock) epoch (the *intended* time in open loop) |
//! | 8..12 | publisher id |
//! | 12..16 | sequence number within that publisher's stream, from 0 |
//! | 16..24 | optional, when the payload has room: the time the message was actually encoded for writing |
//!
//! The optional second stamp separates the generator's own lateness from the broker's: latency
//! from the intended time is the honest end-to-end figure, latency from the write time is
//! closer to what the broker and the network added.

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the header; `--payload` may not be smaller.
pub const HEADER_LEN: usize = 16;
/// Length of the header plus the optional write stamp.
pub const STAMPED_LEN: usize = HEADER_LEN + 8;

/// What a benchmark payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Send time in ns since the run's epoch.
    pub sent_ns: u64,
    /// Which publisher (stream) the message belongs to.
    pub publisher: u32,
    /// Position in that publisher's stream, counting from 0.
    pub seq: u32,
}

impl Header {
    /// The 16 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.sent_ns.to_be_bytes());
        out[8..12].copy_from_slice(&self.publisher.to_be_bytes());
        out[12..16].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Reads the header from the front of a payload; `None` when the payload is shorter than
    /// the header (a message that is not ours, or a broker that truncated it).
    pub fn decode(payload: &[u8]) -> Option<Header> {
        let sent: [u8; 8] = payload.get(0..8)?.try_into().ok()?;
        let publisher: [u8; 4] = payload.get(8..12)?.try_into().ok()?;
        let seq: [u8; 4] = payload.get(12..16)?.try_into().ok()?;
        Some(Header {
            sent_ns: u64::from_be_bytes(sent),
            publisher: u32::from_be_bytes(publisher),
            seq: u32::from_be_bytes(seq),
        })
    }

    /// The optional write stamp (bytes 16..24), if the payload has room for it.
    pub fn decode_written(payload: &[u8]) -> Option<u64> {
        let b: [u8; 8] = payload.get(HEADER_LEN..STAMPED_LEN)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }
}

/// Cuts payloads of one fixed size from a reused buffer.
///
/// The codec's `Publish` holds its payload as [`Bytes`]. Each payload is split off this buffer
/// and frozen; once the encoder has copied it into the write buffer and the `Publish` is
/// dropped, the buffer is the sole owner of its memory again and the next `reserve` reclaims it
/// in place, so steady-state publishing allocates nothing.
#[derive(Debug)]
pub struct PayloadWriter {
    buf: BytesMut,
    size: usize,
}

/// Filler byte after the header: not zero, so a broker that compresses or special-cases zero
/// pages does not get an easy ride.
const FILLER: u8 = 0xA5;

impl PayloadWriter {
    /// A writer of `size`-byte payloads; `size` is raised to [`HEADER_LEN`] if smaller.
    pub fn new(size: usize) -> PayloadWriter {
        let size = size.max(HEADER_LEN);
        PayloadWriter {
            buf: BytesMut::with_capacity(size * 64),
            size,
        }
    }

    /// The payload size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The next payload: `header`, then the write stamp `written_ns` if the size allows,
    /// then filler.
    pub fn next(&mut self, header: &Header, written_ns: u64) -> Bytes {
        self.buf.reserve(self.size);
        self.buf.put_slice(&header.encode());
        let mut used = HEADER_LEN;
        if self.size >= STAMPED_LEN {
            self.buf.put_u64(written_ns);
            used = STAMPED_LEN;
        }
        self.buf.put_bytes(FILLER, self.size - used);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_big_endian() {
        let h = Header {
            sent_ns: 0x0102_0304_0506_0708,
            publisher: 0x0A0B_0C0D,
            seq: 7,
        };
        let b = h.encode();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 0, 0, 0, 7]);
        assert_eq!(Header::decode(&b), Some(h));
    }

    #[test]
    fn short_payload_has_no_header() {
        assert_eq!(Header::decode(&[0u8; 15]), None);
        assert_eq!(Header::decode(&[]), None);
    }

    #[test]
    fn writer_builds_sized_payloads_and_reuses_its_buffer() {
        let mut w = PayloadWriter::new(40);
        let h = Header {
            sent_ns: 99,
            publisher: 3,
            seq: 1,
        };
        let p = w.next(&h, 5);
        assert_eq!(p.len(), 40);
        assert_eq!(Header::decode(&p), Some(h));
        assert_eq!(Header::decode_written(&p), Some(5));
        assert!(p[STAMPED_LEN..].iter().all(|&b| b == FILLER));
        let first_ptr = p.as_ptr();
        drop(p);
        // Cycle through more than the initial capacity: once every payload is dropped the
        // memory is reclaimed, so the pointer comes back to the start of the allocation.
        let mut seen_start_again = false;
        for seq in 0..200 {
            let p = w.next(&Header { seq, ..h }, 5);
            assert_eq!(Header::decode(&p).map(|x| x.seq), Some(seq));
            seen_start_again |= p.as_ptr() == first_ptr;
        }
        assert!(seen_start_again, "the payload buffer was never reclaimed");
    }

    #[test]
    fn writer_never_goes_below_header() {
        let mut w = PayloadWriter::new(3);
        assert_eq!(w.size(), HEADER_LEN);
        let h = Header {
            sent_ns: 1,
            publisher: 2,
            seq: 3,
        };
        let p = w.next(&h, 9);
        assert_eq!(p.len(), HEADER_LEN);
        assert_eq!(Header::decode(&p), Some(h));
        // No room for the write stamp: it is simply absent.
        assert_eq!(Header::decode_written(&p), None);
    }
}
