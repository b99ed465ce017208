//! WebSocket frames as a client sees them (RFC 6455 section 5): the server's frames decoded in
//! place, ours encoded masked.
//!
//! Place in the data flow: inside [`super::WsIo`]: bytes read from the socket land in the
//! caller's buffer and [`FrameReader::decode`] strips the frame headers there, moving the
//! payload down over them, so a delivery reaches the MQTT decoder without a copy into a buffer
//! of our own; [`write_frame`] appends one masked frame to the connection's output buffer.
//!
//! A load generator talks to the broker under test, so the rules checked are the ones that
//! would make a measurement wrong if broken: a masked or text frame, reserved bits (no
//! extension is negotiated) and unknown opcodes end the connection. Continuation frames are
//! more bytes of the stream, as MQTT over WebSocket ignores message boundaries.

/// Longest server frame header: 2 bytes and 8 of extended length (no mask).
const MAX_HEADER: usize = 10;
/// Longest control frame payload.
const MAX_CONTROL: u64 = 125;

/// Opcodes.
pub(super) mod opcode {
    /// Continuation of a fragmented message.
    pub(in crate::ws) const CONTINUATION: u8 = 0x0;
    /// Text message (not MQTT).
    pub(in crate::ws) const TEXT: u8 = 0x1;
    /// Binary message.
    pub(in crate::ws) const BINARY: u8 = 0x2;
    /// Close.
    pub(in crate::ws) const CLOSE: u8 = 0x8;
    /// Ping.
    pub(in crate::ws) const PING: u8 = 0x9;
    /// Pong.
    pub(in crate::ws) const PONG: u8 = 0xA;
}

/// A frame the server was not allowed to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket protocol error from the broker: {0}")]
pub struct FrameError(pub &'static str);

/// What the frame being received is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Bytes of the MQTT stream.
    Data,
    /// A control frame; its payload is collected.
    Control(u8),
}

/// The decoding state of the server's frames on one connection.
#[derive(Debug, Default)]
pub(super) struct FrameReader {
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Payload bytes of the current frame still to come; `None` while reading a header.
    payload_left: Option<u64>,
    frame: Option<Frame>,
    /// Payload of the control frame being received (at most 125 bytes).
    control: Vec<u8>,
    /// The server sent a close frame: nothing after it is read.
    pub(super) closed: bool,
}

/// What the connection owes the server after decoding: a pong or the close echo, with its
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) opcode: u8,
    pub(super) payload: Vec<u8>,
}

impl FrameReader {
    /// Decodes `data` in place: afterwards its first `written` bytes (the return value) are the
    /// MQTT bytes it carried. Control frames are answered through `reply`.
    pub(super) fn decode(
        &mut self,
        data: &mut [u8],
        reply: &mut dyn FnMut(Reply),
    ) -> Result<usize, FrameError> {
        let mut read = 0;
        let mut written = 0;
        while read < data.len() && !self.closed {
            let Some(left) = self.payload_left else {
                read += self.take_header(data.get(read..).unwrap_or_default())?;
                if self.payload_left == Some(0) {
                    self.end_frame(reply);
                }
                continue;
            };
            let available = data.len() - read;
            let take = usize::try_from(left).map_or(available, |left| left.min(available));
            match self.frame {
                Some(Frame::Data) => {
                    data.copy_within(read..read + take, written);
                    written += take;
                }
                _ => self
                    .control
                    .extend_from_slice(data.get(read..read + take).unwrap_or_default()),
            }
            read += take;
            // `take` is at most `left`.
            let left = left - take as u64;
            self.payload_left = Some(left);
            if left == 0 {
                self.end_frame(reply);
            }
        }
        Ok(written)
    }

    /// Takes header bytes from `data`; returns how many were used.
    fn take_header(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        let have = usize::from(self.header_len);
        let need = header_len(self.header.get(..have).unwrap_or_default());
        let take = (need - have).min(data.len());
        if let (Some(dst), Some(src)) = (self.header.get_mut(have..have + take), data.get(..take)) {
            dst.copy_from_slice(src);
        }
        // Both at most MAX_HEADER.
        self.header_len = (have + take) as u8;
        let have = usize::from(self.header_len);
        // The length is known from the second byte on: ask again once it is there.
        if have == need && have == header_len(self.header.get(..have).unwrap_or_default()) {
            self.start_frame()?;
        }
        Ok(take)
    }

    /// Interprets a complete header.
    fn start_frame(&mut self) -> Result<(), FrameError> {
        let [b0, b1, ..] = self.header;
        self.header_len = 0;
        if b0 & 0x70 != 0 {
            return Err(FrameError("reserved bits set without an extension"));
        }
        if b1 & 0x80 != 0 {
            return Err(FrameError("masked frame from the server"));
        }
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(bytes)
            }
            n => u64::from(n),
        };
        let op = b0 & 0x0F;
        self.frame = Some(match op {
            opcode::BINARY | opcode::CONTINUATION => Frame::Data,
            opcode::TEXT => return Err(FrameError("text frame (MQTT is carried in binary)")),
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if b0 & 0x80 == 0 || len > MAX_CONTROL {
                    return Err(FrameError("fragmented or oversized control frame"));
                }
                Frame::Control(op)
            }
            _ => return Err(FrameError("unknown opcode")),
        });
        self.payload_left = Some(len);
        Ok(())
    }

    /// A frame's payload is complete.
    fn end_frame(&mut self, reply: &mut dyn FnMut(Reply)) {
        let frame = self.frame.take();
        self.payload_left = None;
        let payload = std::mem::take(&mut self.control);
        match frame {
            Some(Frame::Control(opcode::PING)) => reply(Reply {
                opcode: opcode::PONG,
                payload,
            }),
            Some(Frame::Control(opcode::CLOSE)) => {
                self.closed = true;
                // Echo the status code (RFC 6455 section 5.5.1).
                reply(Reply {
                    opcode: opcode::CLOSE,
                    payload: payload.get(..2).unwrap_or_default().to_vec(),
                });
            }
            _ => {}
        }
    }
}

/// The header length the bytes so far announce (2 until the second byte is known).
fn header_len(header: &[u8]) -> usize {
    match header.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => MAX_HEADER,
        _ => 2,
    }
}

/// Appends one final frame of `opcode` carrying `payload`, masked with `mask` (RFC 6455
/// section 5.3: every client frame is masked).
pub(super) fn write_frame(out: &mut bytes::BytesMut, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.reserve(payload.len() + 14);
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        // Each arm's range makes the cast exact.
        len @ 0..=125 => out.extend_from_slice(&[0x80 | len as u8]),
        len @ 126..=0xFFFF => {
            out.extend_from_slice(&[0x80 | 126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.extend_from_slice(&[0x80 | 127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(out.get_mut(start..).unwrap_or_default(), mask);
}

/// XORs `data` with the repeating `mask`, eight bytes at a time: the generator masks every
/// byte it sends, so this loop is on its hot path.
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask starts over at its first byte.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::BytesMut;

    /// An unmasked server frame.
    pub(in crate::ws) fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | op];
        match payload.len() {
            len @ 0..=125 => out.push(len as u8),
            len @ 126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Decodes `wire` fed in pieces of `step` bytes; returns the MQTT bytes and the replies.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<Reply>), FrameError> {
        let mut reader = FrameReader::default();
        let (mut bytes, mut replies) = (Vec::new(), Vec::new());
        for piece in wire.chunks(step) {
            let mut piece = piece.to_vec();
            let n = reader.decode(&mut piece, &mut |r| replies.push(r))?;
            bytes.extend_from_slice(&piece[..n]);
        }
        Ok((bytes, replies))
    }

    #[test]
    fn frames_split_anywhere_give_the_same_stream_and_replies() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = server_frame(false, opcode::BINARY, b"\x30\x05");
        wire.extend(server_frame(true, opcode::PING, b"hi"));
        wire.extend(server_frame(true, opcode::CONTINUATION, b"a/b"));
        wire.extend(server_frame(true, opcode::BINARY, &big[..300]));
        wire.extend(server_frame(true, opcode::PONG, b""));
        wire.extend(server_frame(true, opcode::BINARY, &big));
        wire.extend(server_frame(true, opcode::BINARY, b""));
        let expected = [&b"\x30\x05a/b"[..], &big[..300], &big].concat();
        for step in [1, 2, 3, 7, 125, 4096, wire.len()] {
            let (bytes, replies) = decode_in_steps(&wire, step).unwrap();
            assert_eq!(bytes, expected, "step {step}");
            assert_eq!(
                replies,
                [Reply {
                    opcode: opcode::PONG,
                    payload: b"hi".to_vec()
                }],
                "step {step}"
            );
        }
    }

    #[test]
    fn close_ends_the_stream_and_is_echoed() {
        let mut wire = server_frame(true, opcode::BINARY, b"\xd0\x00");
        wire.extend(server_frame(true, opcode::CLOSE, &1001u16.to_be_bytes()));
        wire.extend(server_frame(true, opcode::BINARY, b"after the close"));
        let mut reader = FrameReader::default();
        let mut replies = Vec::new();
        let n = reader.decode(&mut wire, &mut |r| replies.push(r)).unwrap();
        assert_eq!(&wire[..n], b"\xd0\x00");
        assert!(reader.closed);
        assert_eq!(replies[0].opcode, opcode::CLOSE);
        assert_eq!(replies[0].payload, 1001u16.to_be_bytes());
    }

    #[test]
    fn frames_a_client_must_refuse() {
        let masked = [0x82, 0x81, 1, 2, 3, 4, 0x55];
        let cases: [(&[u8], &str); 5] = [
            (&masked, "masked"),
            (&server_frame(true, opcode::TEXT, b"{}"), "text"),
            (&[0xC2, 0x00], "reserved"),
            (&[0x83, 0x00], "unknown opcode"),
            (&server_frame(false, opcode::PING, b""), "fragmented"),
        ];
        for (wire, what) in cases {
            let err = decode_in_steps(wire, 1).unwrap_err();
            assert!(err.0.contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn our_frames_are_masked_with_the_right_length_form() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0usize, 1, 7, 8, 9, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut out = BytesMut::new();
            write_frame(&mut out, opcode::BINARY, &payload, mask);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0x80, "masked");
            let (declared, at) = match out[1] & 0x7F {
                126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
                127 => (
                    usize::try_from(u64::from_be_bytes(out[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                n => (usize::from(n), 2),
            };
            assert_eq!(declared, len);
            assert_eq!(out[at..at + 4], mask);
            let unmasked: Vec<u8> = out[at + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload, "len {len}");
        }
    }
}
