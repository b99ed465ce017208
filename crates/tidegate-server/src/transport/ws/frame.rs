//! WebSocket frames (RFC 6455 section 5), decoded in place.
//!
//! Place in the data flow: inside [`super::WsStream::poll_read`]: raw socket bytes land in the
//! connection's read buffer, [`FrameReader::decode`] strips the frame headers, unmasks the
//! payload and moves it down over the headers, so MQTT bytes reach the decoder without a copy
//! into a buffer of our own. A frame header split across reads waits in a 14-byte array.
//!
//! MQTT over WebSocket (MQTT 5.0 section 6) is a byte stream carried in binary frames: a packet
//! may span frames and a frame may hold several packets, so message boundaries are ignored
//! and a fragmented message is just more bytes. The rules enforced, with the close code sent:
//! - a text frame: 1003 (unsupported data) — MQTT says close the connection;
//! - an unmasked client frame, RSV2 or RSV3, RSV1 without permessage-deflate or on a control
//!   or continuation frame (RFC 7692 section 6), an unknown opcode, a continuation outside a
//!   message or a new message inside one, a fragmented or oversized control frame: 1002
//!   (protocol error).
//!
//! With permessage-deflate, RSV1 on a message's first frame marks it compressed: the payload
//! of its frames goes to [`Deflate::push`] instead of staying in place, and decoding stops
//! after its last frame so that its inflated bytes reach the connection before anything that
//! follows it on the socket.
//!
//! Control frames are answered here: ping with a pong carrying its payload, close with a close
//! echoing its code; pongs are ignored.

use super::deflate::Deflate;
use bytes::{BufMut, BytesMut};

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;
/// Longest control frame payload.
const MAX_CONTROL: u64 = 125;

/// Opcodes.
pub(crate) mod opcode {
    /// Continuation of a fragmented message.
    pub(crate) const CONTINUATION: u8 = 0x0;
    /// Text message.
    pub(crate) const TEXT: u8 = 0x1;
    /// Binary message.
    pub(crate) const BINARY: u8 = 0x2;
    /// Close.
    pub(crate) const CLOSE: u8 = 0x8;
    /// Ping.
    pub(crate) const PING: u8 = 0x9;
    /// Pong.
    pub(crate) const PONG: u8 = 0xA;
}

/// Close codes (RFC 6455 section 7.4.1).
pub(crate) mod close_code {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// Protocol error.
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// Data of a type the endpoint cannot accept (a text frame for MQTT).
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    /// Data inconsistent with its message (a compressed message that does not inflate).
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    /// A message too big to process (one that inflates past the maximum packet size).
    pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server met a condition it cannot go on with.
    pub(crate) const INTERNAL_ERROR: u16 = 1011;
}

/// A frame the peer was not allowed to send; the connection is closed with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket protocol error: {reason} (close code {code})")]
pub(crate) struct FrameError {
    /// The close code sent back.
    pub(crate) code: u16,
    /// What was wrong.
    pub(crate) reason: &'static str,
}

fn error(code: u16, reason: &'static str) -> FrameError {
    FrameError { code, reason }
}

/// What the frame being received is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Bytes of the MQTT stream.
    Data,
    /// Compressed bytes of the MQTT stream (a message that started with RSV1).
    Compressed,
    /// A control frame; its payload is collected.
    Control(u8),
}

/// The decoding state of one connection's incoming frames.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Payload bytes of the current frame still to come; `None` while reading a header.
    payload_left: Option<u64>,
    frame: Option<Frame>,
    mask: [u8; 4],
    mask_pos: u8,
    /// A fragmented binary message is open: continuation frames may follow.
    in_message: bool,
    /// The open (or last) message is compressed.
    compressed: bool,
    /// The frame being received is the last of its message.
    fin: bool,
    /// Payload of the control frame being received (at most 125 bytes; empty, unallocated
    /// otherwise).
    control: Vec<u8>,
    /// A close frame was received: nothing after it is read.
    pub(crate) closed: bool,
}

/// What one [`FrameReader::decode`] call did with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// MQTT bytes now at the start of the data.
    pub(crate) written: usize,
    /// Bytes of the data used; the rest (after a compressed message's end) waits for the
    /// next call, untouched.
    pub(crate) consumed: usize,
}

impl FrameReader {
    /// Decodes `data` in place: afterwards its first `written` bytes are the uncompressed MQTT
    /// bytes it carried; compressed ones went to `deflate` (`Some` once permessage-deflate is
    /// negotiated). Replies to control frames (pong, close) are appended to `replies` unless
    /// `reply_closed` (a close was already sent).
    pub(crate) fn decode(
        &mut self,
        data: &mut [u8],
        mut deflate: Option<&mut Deflate>,
        replies: &mut BytesMut,
        reply_closed: &mut bool,
    ) -> Result<Decoded, FrameError> {
        let mut read = 0;
        let mut written = 0;
        while read < data.len() && !self.closed {
            let Some(left) = self.payload_left else {
                let header = data.get(read..).unwrap_or_default();
                read += self.take_header(header, deflate.is_some())?;
                if self.payload_left == Some(0)
                    && self.end_frame(replies, reply_closed, deflate.as_deref_mut())
                {
                    break;
                }
                continue;
            };
            let available = data.len() - read;
            let take = usize::try_from(left).map_or(available, |left| left.min(available));
            let chunk = data.get_mut(read..read + take).unwrap_or_default();
            for (i, byte) in chunk.iter_mut().enumerate() {
                *byte ^= self.mask[(usize::from(self.mask_pos) + i) % 4];
            }
            match self.frame {
                Some(Frame::Data) => {
                    data.copy_within(read..read + take, written);
                    written += take;
                }
                Some(Frame::Compressed) => {
                    if let Some(deflate) = deflate.as_deref_mut() {
                        deflate.push(chunk);
                    }
                }
                _ => self.control.extend_from_slice(chunk),
            }
            read += take;
            // take <= available fits a u64; the mask position only needs the low two bits.
            self.mask_pos = ((usize::from(self.mask_pos) + take) % 4) as u8;
            let left = left - take as u64;
            self.payload_left = Some(left);
            if left == 0 && self.end_frame(replies, reply_closed, deflate.as_deref_mut()) {
                break;
            }
        }
        Ok(Decoded {
            written,
            consumed: read,
        })
    }

    /// Takes header bytes from `data`; returns how many were used. `deflate`: RSV1 may mark
    /// a compressed message.
    fn take_header(&mut self, data: &[u8], deflate: bool) -> Result<usize, FrameError> {
        let have = usize::from(self.header_len);
        let need = header_len(self.header.get(..have).unwrap_or_default());
        let take = (need - have).min(data.len());
        if let (Some(dst), Some(src)) = (self.header.get_mut(have..have + take), data.get(..take)) {
            dst.copy_from_slice(src);
        }
        // Both at most MAX_HEADER.
        self.header_len = (have + take) as u8;
        let have = usize::from(self.header_len);
        // The length is only known from the second byte on: ask again once it is there.
        if have == need && have == header_len(self.header.get(..have).unwrap_or_default()) {
            self.start_frame(deflate)?;
        }
        Ok(take)
    }

    /// Interprets a complete header.
    fn start_frame(&mut self, deflate: bool) -> Result<(), FrameError> {
        let [b0, b1, ..] = self.header;
        self.header_len = 0;
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 {
            return Err(error(close_code::PROTOCOL_ERROR, "RSV2 or RSV3 set"));
        }
        if rsv1 && !deflate {
            return Err(error(
                close_code::PROTOCOL_ERROR,
                "RSV1 set but permessage-deflate was not negotiated",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(error(
                close_code::PROTOCOL_ERROR,
                "client frame without a mask",
            ));
        }
        let len7 = b1 & 0x7F;
        let (len, mask_at) = match len7 {
            126 => (
                u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                4,
            ),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(error(close_code::PROTOCOL_ERROR, "frame length over 2^63"));
        }
        self.mask
            .copy_from_slice(&self.header[mask_at..mask_at + 4]);
        self.mask_pos = 0;
        let op = b0 & 0x0F;
        self.frame = Some(match op {
            opcode::TEXT => {
                return Err(error(
                    close_code::UNSUPPORTED_DATA,
                    "text frame (MQTT is carried in binary frames)",
                ));
            }
            opcode::BINARY if self.in_message => {
                return Err(error(
                    close_code::PROTOCOL_ERROR,
                    "new message inside a fragmented one",
                ));
            }
            opcode::CONTINUATION if !self.in_message => {
                return Err(error(
                    close_code::PROTOCOL_ERROR,
                    "continuation frame outside a message",
                ));
            }
            opcode::CONTINUATION if rsv1 => {
                return Err(error(
                    close_code::PROTOCOL_ERROR,
                    "RSV1 on a continuation frame",
                ));
            }
            opcode::BINARY | opcode::CONTINUATION => {
                if op == opcode::BINARY {
                    self.compressed = rsv1;
                }
                self.in_message = !fin;
                if self.compressed {
                    Frame::Compressed
                } else {
                    Frame::Data
                }
            }
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if rsv1 {
                    return Err(error(close_code::PROTOCOL_ERROR, "RSV1 on a control frame"));
                }
                if !fin || len > MAX_CONTROL {
                    return Err(error(
                        close_code::PROTOCOL_ERROR,
                        "fragmented or oversized control frame",
                    ));
                }
                Frame::Control(op)
            }
            _ => return Err(error(close_code::PROTOCOL_ERROR, "unknown opcode")),
        });
        self.fin = fin;
        self.payload_left = Some(len);
        Ok(())
    }

    /// A frame's payload is complete (a zero-length frame ends as soon as it starts). Returns
    /// true when it was the last of a compressed message: decoding stops there.
    fn end_frame(
        &mut self,
        replies: &mut BytesMut,
        reply_closed: &mut bool,
        deflate: Option<&mut Deflate>,
    ) -> bool {
        let frame = self.frame.take();
        self.payload_left = None;
        let payload = std::mem::take(&mut self.control);
        match frame {
            Some(Frame::Compressed) if self.fin => {
                if let Some(deflate) = deflate {
                    deflate.end_message();
                }
                return true;
            }
            Some(Frame::Control(opcode::PING)) if !*reply_closed => {
                write_frame(replies, opcode::PONG, &payload);
            }
            Some(Frame::Control(opcode::CLOSE)) => {
                self.closed = true;
                if !*reply_closed {
                    // Echo the status code (RFC 6455 section 5.5.1), or a normal closure.
                    let normal = close_code::NORMAL.to_be_bytes();
                    let code = payload.get(..2).unwrap_or(&normal);
                    write_frame(replies, opcode::CLOSE, code);
                    *reply_closed = true;
                }
            }
            _ => {}
        }
        false
    }
}

/// The length of the header whose first bytes are `start`: 2 until the second byte is known.
fn header_len(start: &[u8]) -> usize {
    let Some(&b1) = start.get(1) else {
        return 2;
    };
    let extended = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// Appends an unmasked server frame with the FIN bit.
pub(crate) fn write_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    write_frame_with(out, 0x80 | opcode, payload);
}

/// Appends an unmasked server frame whose first byte (FIN, RSV bits, opcode) is `first`.
pub(crate) fn write_frame_with(out: &mut BytesMut, first: u8, payload: &[u8]) {
    out.reserve(10 + payload.len());
    out.put_u8(first);
    match payload.len() {
        // Each arm's range makes the casts exact.
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::deflate::tests::client_compress;
    use super::super::negotiate::DeflateParams;
    use super::*;

    /// A masked client frame, as a browser sends it.
    pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    struct Run {
        reader: FrameReader,
        replies: BytesMut,
        closed: bool,
        deflate: Option<Deflate>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                reader: FrameReader::default(),
                replies: BytesMut::new(),
                closed: false,
                deflate: None,
            }
        }

        /// With permessage-deflate negotiated, the client keeping no context.
        fn deflate() -> Run {
            let params = DeflateParams {
                client_window_bits: None,
                server_window_bits: None,
            };
            Run {
                deflate: Some(Deflate::new(params, 1 << 20)),
                ..Run::new()
            }
        }

        /// Feeds `bytes` in pieces of `step`, returns the data bytes out: in place, and
        /// inflated (in reads of 100 bytes) where decoding stopped, as `WsStream` does.
        fn feed(&mut self, bytes: &[u8], step: usize) -> Result<Vec<u8>, FrameError> {
            let mut out = Vec::new();
            for piece in bytes.chunks(step) {
                let mut piece = piece.to_vec();
                let mut at = 0;
                while at < piece.len() && !self.reader.closed {
                    let rest = &mut piece[at..];
                    let decoded = self.reader.decode(
                        rest,
                        self.deflate.as_mut(),
                        &mut self.replies,
                        &mut self.closed,
                    )?;
                    out.extend_from_slice(&rest[..decoded.written]);
                    at += decoded.consumed;
                    if let Some(deflate) = &mut self.deflate {
                        let mut buf = [0u8; 100];
                        while deflate.pending() {
                            let n = deflate.inflate(&mut buf)?;
                            out.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn packets_across_frames_and_frames_across_reads() {
        let mqtt: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let mut wire = client_frame(false, opcode::BINARY, &mqtt[..10], [1, 2, 3, 4]);
        wire.extend(client_frame(
            false,
            opcode::CONTINUATION,
            &mqtt[10..300],
            [9, 8, 7, 6],
        ));
        wire.extend(client_frame(true, opcode::PING, b"hi", [5, 5, 5, 5]));
        wire.extend(client_frame(
            true,
            opcode::CONTINUATION,
            &mqtt[300..],
            [0xAA, 0, 0xBB, 1],
        ));
        wire.extend(client_frame(true, opcode::BINARY, &[], [1, 1, 1, 1]));
        for step in [1, 2, 3, 7, 13, 100, 4096, wire.len()] {
            let mut run = Run::new();
            assert_eq!(run.feed(&wire, step).unwrap(), mqtt, "step {step}");
            let mut pong = BytesMut::new();
            write_frame(&mut pong, opcode::PONG, b"hi");
            assert_eq!(run.replies, pong, "step {step}");
        }
    }

    #[test]
    fn close_is_echoed_and_ends_reading() {
        let mut run = Run::new();
        let mut wire = client_frame(true, opcode::BINARY, b"ab", [1, 2, 3, 4]);
        wire.extend(client_frame(
            true,
            opcode::CLOSE,
            &1001u16.to_be_bytes(),
            [7; 4],
        ));
        wire.extend(client_frame(true, opcode::BINARY, b"after", [1, 2, 3, 4]));
        assert_eq!(run.feed(&wire, wire.len()).unwrap(), b"ab");
        assert!(run.reader.closed && run.closed);
        assert_eq!(&run.replies[..], &[0x88, 2, 0x03, 0xE9]);
        // A close without a code is answered with 1000.
        let mut run = Run::new();
        run.feed(&client_frame(true, opcode::CLOSE, &[], [3; 4]), 100)
            .unwrap();
        assert_eq!(&run.replies[..], &[0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn forbidden_frames_are_errors_with_their_close_code() {
        let cases: [(Vec<u8>, u16); 7] = [
            (client_frame(true, opcode::TEXT, b"{}", [1; 4]), 1003),
            (vec![0x82, 0x02, b'h', b'i'], 1002), // unmasked
            (client_frame(true, 0xC2, b"x", [1; 4]), 1002), // RSV1 (deflate) set
            (client_frame(true, 0x3, b"x", [1; 4]), 1002), // reserved opcode
            (client_frame(true, opcode::CONTINUATION, b"x", [1; 4]), 1002),
            (client_frame(false, opcode::PING, b"x", [1; 4]), 1002),
            (client_frame(true, opcode::PING, &[0; 126], [1; 4]), 1002),
        ];
        for (wire, code) in cases {
            let err = Run::new().feed(&wire, wire.len()).unwrap_err();
            assert_eq!(err.code, code, "{wire:02x?}: {err}");
        }
        let mut nested = client_frame(false, opcode::BINARY, b"a", [1; 4]);
        nested.extend(client_frame(true, opcode::BINARY, b"b", [1; 4]));
        assert_eq!(Run::new().feed(&nested, 64).unwrap_err().code, 1002);
    }

    #[test]
    fn compressed_messages_between_plain_ones_keep_their_order() {
        const RSV1: u8 = 0x40;
        let first: Vec<u8> = b"plain before ".to_vec();
        let big: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("{},", i % 37).into_bytes())
            .collect();
        let small = b"small and compressed".to_vec();
        let last = b" plain after".to_vec();
        let compressed = client_compress(&[&big, &small], false);
        let mut wire = client_frame(true, opcode::BINARY, &first, [1, 2, 3, 4]);
        // One compressed message in three frames with a ping inside, a one-frame compressed
        // message, an empty compressed frame pair, then a plain message.
        let (a, rest) = compressed[0].split_at(5);
        let (b, c) = rest.split_at(rest.len() / 2);
        wire.extend(client_frame(false, RSV1 | opcode::BINARY, a, [7, 0, 7, 0]));
        wire.extend(client_frame(false, opcode::CONTINUATION, b, [1, 9, 1, 9]));
        wire.extend(client_frame(true, opcode::PING, b"in", [3; 4]));
        wire.extend(client_frame(true, opcode::CONTINUATION, c, [0xFE; 4]));
        wire.extend(client_frame(
            true,
            RSV1 | opcode::BINARY,
            &compressed[1],
            [5, 6, 7, 8],
        ));
        wire.extend(client_frame(false, RSV1 | opcode::BINARY, &[], [1; 4]));
        wire.extend(client_frame(true, opcode::CONTINUATION, &[], [1; 4]));
        wire.extend(client_frame(true, opcode::BINARY, &last, [2; 4]));
        let expected = [first, big, small, last].concat();
        for step in [1, 3, 64, 1000, wire.len()] {
            let mut run = Run::deflate();
            assert_eq!(run.feed(&wire, step).unwrap(), expected, "step {step}");
            assert_eq!(&run.replies[..], &[0x8A, 2, b'i', b'n'], "pong");
            let deflate = run.deflate.as_ref().unwrap();
            assert!(!deflate.pending(), "{deflate:?}");
        }
    }

    #[test]
    fn reserved_bits_with_deflate() {
        let cases: [(Vec<u8>, &str); 4] = [
            (
                [
                    client_frame(false, opcode::BINARY, b"x", [1; 4]),
                    client_frame(true, 0x40 | opcode::CONTINUATION, b"y", [1; 4]),
                ]
                .concat(),
                "continuation",
            ),
            (
                client_frame(true, 0x40 | opcode::PING, b"", [1; 4]),
                "control",
            ),
            (
                client_frame(true, 0x20 | opcode::BINARY, b"x", [1; 4]),
                "RSV2",
            ),
            (
                client_frame(true, 0x10 | opcode::BINARY, b"x", [1; 4]),
                "RSV3",
            ),
        ];
        for (wire, what) in cases {
            let err = Run::deflate().feed(&wire, wire.len()).unwrap_err();
            assert_eq!(err.code, 1002, "{what}: {err}");
            assert!(err.reason.contains(what), "{what}: {err}");
        }
        // A compressed text frame is still a text frame.
        let text = client_frame(true, 0x40 | opcode::TEXT, b"x", [1; 4]);
        assert_eq!(Run::deflate().feed(&text, 9).unwrap_err().code, 1003);
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        for (len, header) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let mut out = BytesMut::new();
            write_frame(&mut out, opcode::BINARY, &vec![7; len]);
            assert_eq!(out.len(), header + len, "{len}");
            assert_eq!(out[0], 0x82);
        }
    }
}
