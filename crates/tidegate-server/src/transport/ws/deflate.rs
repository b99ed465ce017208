//! permessage-deflate's data path (RFC 7692 section 7.2): inflating a client's compressed
//! messages and compressing ours, with raw DEFLATE from `flate2` on `miniz_oxide` (no C).
//!
//! Place in the data flow: [`super::frame::FrameReader`] hands the unmasked payload of a
//! compressed message to [`Deflate::push`] and marks its end with [`Deflate::end_message`];
//! [`super::WsStream::poll_read`] then pulls the MQTT bytes out with [`Deflate::inflate`],
//! straight into the connection's read buffer. On the way out
//! [`Deflate::write_compressed`] turns one write into one compressed frame when that pays.
//!
//! **Memory.** What a connection keeps between messages is this struct (about 100 bytes,
//! boxed, only when the extension was negotiated) plus, when the client keeps its compression
//! context, the last 2^`client_max_window_bits` bytes it sent (1 KiB at most, see
//! [`super::negotiate`]). Everything else is per message or per thread:
//! - the decompressor (~43 KiB in miniz) exists while a compressed message is being received
//!   and goes back to a one-slot cache of the worker thread when it is complete. A message
//!   whose client kept its context starts from a fresh decompressor primed with the kept
//!   bytes as a stored DEFLATE block, whose output is thrown away: the same window state, at a
//!   fraction of the memory. A client that stops in the middle of a compressed message pins
//!   its decompressor, as one that stops in the middle of a packet pins its read buffer.
//! - the compressor (a few hundred KiB in miniz) and its output buffer belong to the worker
//!   thread: with `server_no_context_takeover` (always in our response) each message is
//!   compressed from an empty window, so any compressor will do.
//!
//! **Bounds.** A compressed message's inflated size is checked while it inflates, in chunks no
//! larger than the caller's read buffer: past `max_message` (`limits.max_packet_size`) the
//! connection is closed with 1009 before more is produced, so a small "zip bomb" costs at most
//! one read buffer. Data that does not inflate closes it with 1007.

use super::frame::{FrameError, close_code, opcode, write_frame_with};
use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;
use std::fmt;

use super::negotiate::DeflateParams;

/// The bytes a sync flush ends with; stripped from sent messages and appended to received
/// ones (section 7.2.1 and 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// Writes shorter than this go uncompressed: a PUBACK or PINGRESP cannot shrink, and the
/// compressor's fixed cost would dominate.
pub(crate) const MIN_COMPRESS: usize = 64;
/// miniz level 1: most of the gain on repetitive MQTT payloads for a fraction of the CPU of
/// the default level, which matters when one publish is compressed once per subscriber.
const LEVEL: u32 = 1;
/// The per-thread compression output buffer is dropped after a message that grew it past this.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;
/// Calls to the compressor for one message before giving up and sending it uncompressed; each
/// call has at least as much room as the last, so a real message needs two or three.
const MAX_COMPRESS_CALLS: usize = 32;

thread_local! {
    /// The worker thread's codecs: shared by all its connections since none keeps a context
    /// across messages (see the module doc).
    static CODECS: RefCell<Codecs> = RefCell::new(Codecs::default());
}

#[derive(Default)]
struct Codecs {
    /// A reset decompressor, ready for the next message of any connection.
    inflate: Option<Decompress>,
    /// The compressor, reset after each message.
    deflate: Option<Compress>,
    /// Compressed output of the message being written.
    scratch: Vec<u8>,
}

/// A decompressor from the thread's cache, or a new one.
fn take_decompressor() -> Decompress {
    CODECS
        .try_with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.inflate.take()))
        .ok()
        .flatten()
        .unwrap_or_else(|| Decompress::new(false))
}

/// Resets `d` and keeps it for the thread's next message, unless the slot is taken.
fn return_decompressor(mut d: Decompress) {
    d.reset(false);
    let _ = CODECS.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.inflate.get_or_insert(d);
        }
    });
}

/// One connection's permessage-deflate state.
pub(crate) struct Deflate {
    params: DeflateParams,
    /// Largest inflated message.
    max_message: u64,
    /// Compressed bytes of the current message not inflated yet; released when empty.
    input: BytesMut,
    /// The current message's decompressor, from its first inflated byte to its end.
    active: Option<Decompress>,
    /// Bytes the current message inflated to so far.
    message_len: u64,
    /// The message's last frame arrived (and [`TAIL`] was appended).
    finished: bool,
    /// The last call filled its output: the decompressor may hold more.
    more: bool,
    /// The last call made no progress: nothing to do until more input comes.
    stalled: bool,
    /// The DEFLATE stream ended (a block with BFINAL): the rest of the message is ignored.
    ended: bool,
    /// The client's last bytes, when it keeps its compression context.
    history: Vec<u8>,
}

impl fmt::Debug for Deflate {
    // Without the bytes: they are a client's payload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .field("pending_input", &self.input.len())
            .field("in_message", &self.active.is_some())
            .field("history", &self.history.len())
            .finish_non_exhaustive()
    }
}

impl Deflate {
    /// The state of a connection that agreed on `params`; inflated messages are bounded by
    /// `max_message` bytes.
    pub(crate) fn new(params: DeflateParams, max_message: u32) -> Deflate {
        Deflate {
            params,
            max_message: u64::from(max_message),
            input: BytesMut::new(),
            active: None,
            message_len: 0,
            finished: false,
            more: false,
            stalled: false,
            ended: false,
            history: Vec::new(),
        }
    }

    /// Unmasked payload of a frame of a compressed message.
    pub(crate) fn push(&mut self, compressed: &[u8]) {
        if !self.ended && !compressed.is_empty() {
            self.input.extend_from_slice(compressed);
            self.stalled = false;
        }
    }

    /// The compressed message's last frame ended.
    pub(crate) fn end_message(&mut self) {
        if !self.ended {
            self.input.extend_from_slice(&TAIL);
            self.stalled = false;
        }
        self.finished = true;
        self.complete_if_done();
    }

    /// Whether [`Deflate::inflate`] has bytes to give before anything read later.
    pub(crate) fn pending(&self) -> bool {
        (!self.input.is_empty() && !self.stalled) || self.more
    }

    /// Inflates what has arrived into `out`; returns how many bytes were written.
    pub(crate) fn inflate(&mut self, out: &mut [u8]) -> Result<usize, FrameError> {
        let mut filled = 0;
        while filled < out.len() && self.pending() {
            let mut d = match self.active.take() {
                Some(d) => d,
                None => self.start_message()?,
            };
            // One byte over the limit is enough to know it is exceeded.
            let allowed = self
                .max_message
                .saturating_sub(self.message_len)
                .saturating_add(1);
            let room = (out.len() - filled).min(usize::try_from(allowed).unwrap_or(usize::MAX));
            let dst = out.get_mut(filled..filled + room).unwrap_or_default();
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d.decompress(&self.input, dst, FlushDecompress::None);
            // Both deltas are bounded by the slices' lengths.
            let used = (d.total_in() - in_before) as usize;
            let made = (d.total_out() - out_before) as usize;
            self.active = Some(d);
            let status = status.map_err(|_| FrameError {
                code: close_code::INVALID_PAYLOAD,
                reason: "compressed message does not inflate",
            })?;
            self.input.advance(used.min(self.input.len()));
            self.message_len += made as u64;
            if self.message_len > self.max_message {
                return Err(FrameError {
                    code: close_code::MESSAGE_TOO_BIG,
                    reason: "compressed message inflates past the maximum packet size",
                });
            }
            self.remember(dst.get(..made).unwrap_or_default());
            filled += made;
            if status == Status::StreamEnd {
                // A final block ends the message's data; only the tail can follow.
                self.ended = true;
                self.input.clear();
                self.more = false;
            } else {
                self.more = made == room;
                self.stalled = used == 0 && made == 0;
            }
        }
        if self.input.is_empty() {
            self.input = BytesMut::new();
        }
        self.complete_if_done();
        Ok(filled)
    }

    /// A decompressor for a new message, holding the client's window when it keeps one.
    fn start_message(&self) -> Result<Decompress, FrameError> {
        let mut d = take_decompressor();
        if !self.history.is_empty() {
            // A stored, non-final block (BFINAL 0, BTYPE 00, padding: one zero byte) carrying
            // the kept bytes; the client's data follows at a byte boundary (it ended its last
            // message with a sync flush, or a final block).
            let len = u16::try_from(self.history.len()).unwrap_or(u16::MAX);
            let [lo, hi] = len.to_le_bytes();
            let header = [0x00, lo, hi, !lo, !hi];
            let primed = prime(&mut d, &header)
                .and_then(|()| prime(&mut d, self.history.get(..usize::from(len))?));
            if primed.is_none() {
                return Err(FrameError {
                    code: close_code::INTERNAL_ERROR,
                    reason: "could not restore the client's compression window",
                });
            }
        }
        Ok(d)
    }

    /// Keeps the client's last bytes for its next message, when it keeps its context.
    fn remember(&mut self, inflated: &[u8]) {
        let Some(bits) = self.params.client_window_bits else {
            return;
        };
        // zlib compresses with a 512-byte window when asked for 256 (RFC 7692 section
        // 7.1.2.2): keep at least that.
        let window = 1usize << bits.clamp(9, 15);
        if inflated.len() >= window {
            self.history.clear();
            self.history
                .extend_from_slice(inflated.get(inflated.len() - window..).unwrap_or_default());
        } else {
            let excess = (self.history.len() + inflated.len()).saturating_sub(window);
            self.history.drain(..excess);
            if self.history.capacity() == 0 {
                self.history.reserve_exact(window);
            }
            self.history.extend_from_slice(inflated);
        }
    }

    /// After the last byte of a message: the decompressor goes back to the thread. Input it
    /// cannot use once the message is complete (a truncated stream) is dropped with it: each
    /// message starts from a fresh decompressor, so nothing broken carries over.
    fn complete_if_done(&mut self) {
        if self.finished && (self.input.is_empty() || self.stalled) && !self.more {
            if let Some(d) = self.active.take() {
                return_decompressor(d);
            }
            self.input = BytesMut::new();
            self.message_len = 0;
            self.finished = false;
            self.stalled = false;
            self.ended = false;
        }
    }

    /// Appends `payload` as one compressed binary frame (RSV1 set) when that makes it smaller;
    /// returns false, appending nothing, when it should go uncompressed.
    pub(crate) fn write_compressed(&self, out: &mut BytesMut, payload: &[u8]) -> bool {
        if payload.len() < MIN_COMPRESS {
            return false;
        }
        // Without context takeover nothing refers further back than the message's start, so
        // a message no longer than the window the client allows cannot exceed it.
        if self
            .params
            .server_window_bits
            .is_some_and(|bits| payload.len() > 1usize << bits)
        {
            return false;
        }
        CODECS
            .try_with(|codecs| {
                let Ok(mut codecs) = codecs.try_borrow_mut() else {
                    return false;
                };
                let Codecs {
                    deflate, scratch, ..
                } = &mut *codecs;
                let compress =
                    deflate.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
                scratch.clear();
                let done = compress_sync(compress, payload, scratch);
                compress.reset();
                let body = match scratch.strip_suffix(&TAIL) {
                    Some(body) if done && body.len() < payload.len() => body,
                    _ => return false,
                };
                write_frame_with(out, 0x80 | 0x40 | opcode::BINARY, body);
                if scratch.capacity() > MAX_KEPT_SCRATCH {
                    *scratch = Vec::new();
                }
                true
            })
            .unwrap_or(false)
    }
}

/// Feeds `input` to `d`, throwing its output away; `None` when it will not take it.
fn prime(d: &mut Decompress, input: &[u8]) -> Option<()> {
    let mut sink = [0u8; 512];
    let mut pos = 0;
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        d.decompress(input.get(pos..)?, &mut sink, FlushDecompress::None)
            .ok()?;
        let used = (d.total_in() - in_before) as usize;
        let made = (d.total_out() - out_before) as usize;
        pos += used;
        if pos >= input.len() && made < sink.len() {
            return Some(());
        }
        if used == 0 && made == 0 {
            return None;
        }
    }
}

/// Compresses all of `input` into `out` and ends with a sync flush; false on failure.
fn compress_sync(compress: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> bool {
    out.reserve(input.len() / 2 + 64);
    let mut consumed = 0;
    for _ in 0..MAX_COMPRESS_CALLS {
        let before = compress.total_in();
        let rest = input.get(consumed..).unwrap_or_default();
        if compress
            .compress_vec(rest, out, FlushCompress::Sync)
            .is_err()
        {
            return false;
        }
        consumed += (compress.total_in() - before) as usize;
        // Room left after a sync flush means the flush is complete.
        if consumed >= input.len() && out.len() < out.capacity() {
            return true;
        }
        out.reserve(out.capacity().max(256));
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a client's compressor sends for `messages`: each one sync-flushed, tail stripped;
    /// with `takeover` one compressor (and window) for all of them.
    pub(crate) fn client_compress(messages: &[&[u8]], takeover: bool) -> Vec<Vec<u8>> {
        let mut c = Compress::new(Compression::default(), false);
        messages
            .iter()
            .map(|m| {
                if !takeover {
                    c.reset();
                }
                let mut out = Vec::new();
                assert!(compress_sync(&mut c, m, &mut out));
                assert!(out.ends_with(&TAIL));
                out.truncate(out.len() - 4);
                out
            })
            .collect()
    }

    fn inflate_all(deflate: &mut Deflate, chunk: usize) -> Result<Vec<u8>, FrameError> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; chunk];
        while deflate.pending() {
            let n = deflate.inflate(&mut buf)?;
            all.extend_from_slice(&buf[..n]);
        }
        Ok(all)
    }

    fn params(client: Option<u8>) -> DeflateParams {
        DeflateParams {
            client_window_bits: client,
            server_window_bits: None,
        }
    }

    fn telemetry(i: usize) -> Vec<u8> {
        format!(
            "{{\"device\":\"sensor-{i:04}\",\"temperature\":{},\"humidity\":{},\"status\":\"ok\"}}",
            20 + i % 7,
            40 + i % 13
        )
        .into_bytes()
    }

    #[test]
    fn messages_inflate_in_pieces_and_buffers_are_released() {
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{} ", i % 977).into_bytes())
            .collect();
        let [compressed]: [Vec<u8>; 1] = client_compress(&[&text], false).try_into().unwrap();
        for (piece, out) in [
            (1, 7),
            (100, 1000),
            (4096, 64 * 1024),
            (compressed.len(), 1),
        ] {
            let mut d = Deflate::new(params(None), 1 << 20);
            let mut got = Vec::new();
            for chunk in compressed.chunks(piece) {
                d.push(chunk);
                got.extend(inflate_all(&mut d, out).unwrap());
            }
            d.end_message();
            got.extend(inflate_all(&mut d, out).unwrap());
            assert_eq!(got, text, "pieces of {piece}, reads of {out}");
            assert!(d.active.is_none() && d.input.capacity() == 0, "{d:?}");
            assert!(d.history.is_empty());
        }
    }

    #[test]
    fn context_takeover_keeps_only_the_window() {
        // The client window a real client gets (10 bits) and zlib's smallest (9). miniz cannot
        // be told a window size, so the messages stay within the window together: no
        // distance can then exceed it. (tests/node runs zlib with a real 10-bit window.)
        for bits in [9, 10] {
            let mut messages: Vec<Vec<u8>> = Vec::new();
            for i in 0.. {
                let next = telemetry(i);
                if messages.iter().map(Vec::len).sum::<usize>() + next.len() > 1 << bits {
                    break;
                }
                messages.push(next);
            }
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let with = client_compress(&refs, true);
            let without = client_compress(&refs, false);
            let sum = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>();
            assert!(
                sum(&with) * 3 < sum(&without) * 2,
                "takeover pays: {} vs {}",
                sum(&with),
                sum(&without)
            );
            let mut d = Deflate::new(params(Some(bits)), 1 << 20);
            for (message, compressed) in messages.iter().zip(&with) {
                d.push(compressed);
                d.end_message();
                assert_eq!(&inflate_all(&mut d, 50).unwrap(), message);
                assert!(d.active.is_none(), "no decompressor between messages");
                assert!(d.history.len() <= 1 << bits);
            }
        }
        // Without the window, a message that refers to the last one does not inflate.
        let messages = [telemetry(0), telemetry(1)];
        let with = client_compress(&[&messages[0], &messages[1]], true);
        let mut d = Deflate::new(params(None), 1 << 20);
        d.push(&with[0]);
        d.end_message();
        inflate_all(&mut d, 100).unwrap();
        d.push(&with[1]);
        d.end_message();
        let second = inflate_all(&mut d, 100);
        assert!(
            second.as_ref().map_or(true, |got| got != &messages[1]),
            "a takeover message needs the previous window"
        );
    }

    #[test]
    fn a_final_block_ends_the_message() {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(256);
        c.compress_vec(
            b"finished early, finished early",
            &mut out,
            FlushCompress::Finish,
        )
        .unwrap();
        let mut d = Deflate::new(params(Some(10)), 1024);
        d.push(&out);
        d.end_message();
        assert_eq!(
            inflate_all(&mut d, 8).unwrap(),
            b"finished early, finished early"
        );
        // The next message is a new stream, with the window of the last.
        let next = client_compress(&[b"after"], false);
        d.push(&next[0]);
        d.end_message();
        assert_eq!(inflate_all(&mut d, 8).unwrap(), b"after");
    }

    #[test]
    fn zip_bomb_stops_at_the_limit_with_1009() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = client_compress(&[&zeros], false).remove(0);
        assert!(bomb.len() < 16 * 1024, "{} bytes", bomb.len());
        let mut d = Deflate::new(params(None), 64 * 1024);
        d.push(&bomb);
        d.end_message();
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0;
        let err = loop {
            assert!(d.pending(), "stopped after {total} bytes without an error");
            match d.inflate(&mut buf) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.code, 1009);
        assert!(total <= 64 * 1024, "{total}");
        // Exactly at the limit is fine.
        let exact = client_compress(&[&zeros[..1000]], false).remove(0);
        let mut d = Deflate::new(params(None), 1000);
        d.push(&exact);
        d.end_message();
        assert_eq!(inflate_all(&mut d, 300).unwrap().len(), 1000);
    }

    #[test]
    fn garbage_closes_with_1007() {
        let mut d = Deflate::new(params(None), 1024);
        // BTYPE 11 is reserved.
        d.push(&[0xFF, 0xFF, 0xFF]);
        d.end_message();
        assert_eq!(inflate_all(&mut d, 64).unwrap_err().code, 1007);
    }

    #[test]
    fn writes_compress_only_when_it_pays() {
        let d = Deflate::new(params(None), 1024);
        let mut out = BytesMut::new();
        assert!(!d.write_compressed(&mut out, &[0x40, 2, 0, 1]), "PUBACK");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..200)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        assert!(!d.write_compressed(&mut out, &random), "incompressible");
        assert!(out.is_empty());
        let payload = telemetry(1).repeat(4);
        assert!(d.write_compressed(&mut out, &payload));
        assert_eq!(out[0], 0xC2, "FIN, RSV1, binary");
        let len = usize::from(out[1]);
        assert!(len < 126, "one-byte length");
        assert_eq!(out.len(), 2 + len);
        assert!(len < payload.len() / 2);
        // A client inflates it on its own (no takeover) after appending the tail.
        let mut body = out[2..].to_vec();
        body.extend_from_slice(&TAIL);
        let mut inflater = Decompress::new(false);
        let mut plain = Vec::with_capacity(payload.len() + 16);
        inflater
            .decompress_vec(&body, &mut plain, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(plain, payload);
        // Twice the same bytes give the same frame: nothing carried over.
        let mut again = BytesMut::new();
        assert!(d.write_compressed(&mut again, &payload));
        assert_eq!(again, out);
        // A client window of 2^8 bytes: longer messages go uncompressed.
        let small = Deflate::new(
            DeflateParams {
                client_window_bits: None,
                server_window_bits: Some(8),
            },
            1024,
        );
        assert!(!small.write_compressed(&mut BytesMut::new(), &payload));
        assert!(small.write_compressed(&mut BytesMut::new(), &payload[..256]));
    }
}
