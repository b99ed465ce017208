//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` format), fed
//! whatever chunks the socket delivers.
//!
//! Place in the data flow: an SSE reader task takes each body frame of `GET /v1/subscribe`
//! and feeds it to [`SseParser::feed`], which calls back with every complete event and every
//! comment (the gateway's heartbeats); the event's `data` is then read as JSON.
//!
//! The rules followed: lines end with CRLF, LF or CR (a CR at the end of one chunk and the LF
//! at the start of the next are one line end); a line starting with `:` is a comment;
//! `field: value` loses one space after the colon; `data` lines accumulate, joined by `\n`;
//! an empty line dispatches the event, unless it has no data; `id` persists across events
//! (the last event id); a UTF-8 byte order mark at the start of the stream is dropped.
//! A line longer than the parser's limit is an error rather than unbounded memory: the peer
//! controls the stream.

use std::borrow::Cow;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The last event id seen on the stream (ids persist across events).
    pub id: Option<String>,
    /// The `event` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data` lines joined by `\n`.
    pub data: String,
}

/// What the parser hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem<'a> {
    /// A complete event.
    Event(&'a SseEvent),
    /// A comment line's text (after the `:`), such as a heartbeat.
    Comment(&'a str),
}

/// A line over the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SSE line longer than {0} bytes")]
pub struct LineTooLong(pub usize);

/// The parser's state between chunks.
#[derive(Debug)]
pub struct SseParser {
    /// An incomplete line carried over from the previous chunk.
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting this one belongs to that line end.
    skip_lf: bool,
    /// Still at the start of the stream (a byte order mark may come).
    at_start: bool,
    /// The event being assembled.
    event: SseEvent,
    /// True once a `data` line was seen for the event being assembled.
    has_data: bool,
    /// The last event id, kept across events.
    last_id: Option<String>,
    /// The `retry` field's last value, milliseconds.
    retry_ms: Option<u64>,
    max_line: usize,
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl SseParser {
    /// A parser refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            skip_lf: false,
            at_start: true,
            event: SseEvent::default(),
            has_data: false,
            last_id: None,
            retry_ms: None,
            max_line,
        }
    }

    /// The reconnection time the server asked for, if it did.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Parses one chunk, calling `on_item` for every event and comment it completes.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        mut on_item: impl FnMut(SseItem<'_>),
    ) -> Result<(), LineTooLong> {
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.line.len() + chunk.len() > self.max_line {
                    return Err(LineTooLong(self.max_line));
                }
                self.line.extend_from_slice(chunk);
                return Ok(());
            };
            let (head, tail) = chunk.split_at(end);
            // `tail` starts with the CR or LF found above.
            let after = match tail {
                [b'\r', b'\n', rest @ ..] => rest,
                [b'\r'] => {
                    self.skip_lf = true;
                    &[]
                }
                [_, rest @ ..] => rest,
                [] => &[],
            };
            if self.line.is_empty() {
                self.check_len(head.len())?;
                self.line_done(head, &mut on_item);
            } else {
                self.check_len(self.line.len() + head.len())?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, &mut on_item);
                line.clear();
                self.line = line;
            }
            chunk = after;
        }
        Ok(())
    }

    fn check_len(&self, n: usize) -> Result<(), LineTooLong> {
        if n > self.max_line {
            Err(LineTooLong(self.max_line))
        } else {
            Ok(())
        }
    }

    fn line_done(&mut self, mut line: &[u8], on_item: &mut impl FnMut(SseItem<'_>)) {
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(on_item);
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            on_item(SseItem::Comment(&String::from_utf8_lossy(comment)));
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let (f, v) = line.split_at(i);
                let v = v.strip_prefix(b":").unwrap_or(v);
                (f, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value: Cow<'_, str> = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            // Unknown fields (and an id with NUL, or a non-numeric retry) are ignored.
            _ => {}
        }
    }

    fn dispatch(&mut self, on_item: &mut impl FnMut(SseItem<'_>)) {
        if self.has_data {
            self.event.id.clone_from(&self.last_id);
            on_item(SseItem::Event(&self.event));
        }
        self.event.event = None;
        self.event.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Event(SseEvent),
        Comment(String),
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Got> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |item| {
                out.push(match item {
                    SseItem::Event(e) => Got::Event(e.clone()),
                    SseItem::Comment(c) => Got::Comment(c.to_owned()),
                })
            })
            .unwrap();
        }
        out
    }

    fn ev(id: Option<&str>, event: Option<&str>, data: &str) -> Got {
        Got::Event(SseEvent {
            id: id.map(str::to_owned),
            event: event.map(str::to_owned),
            data: data.to_owned(),
        })
    }

    const STREAM: &[u8] = b": hello\n\nid: 7\nevent: a/b\ndata: {\"x\":1}\n\n: hb\nevent: c\ndata: line1\ndata:line2\ndata\n\n";

    fn expected() -> Vec<Got> {
        vec![
            Got::Comment(" hello".into()),
            ev(Some("7"), Some("a/b"), "{\"x\":1}"),
            Got::Comment(" hb".into()),
            // The id persists; data lines join with \n; a bare `data` adds an empty line.
            ev(Some("7"), Some("c"), "line1\nline2\n"),
        ]
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        assert_eq!(parse_chunks(&[STREAM]), expected());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(parse_chunks(&[a, b]), expected(), "split at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), expected(), "one byte at a time");
    }

    #[test]
    fn crlf_and_cr_line_ends_including_a_cr_lf_split() {
        let crlf = b"id: 1\r\ndata: a\r\n\r\ndata: b\r\r";
        let want = vec![ev(Some("1"), None, "a"), ev(Some("1"), None, "b")];
        assert_eq!(parse_chunks(&[crlf]), want);
        for cut in 0..=crlf.len() {
            let (a, b) = crlf.split_at(cut);
            assert_eq!(parse_chunks(&[a, b]), want, "split at {cut}");
        }
        // CR at a chunk's end followed by LF: one line end, not an extra empty line.
        assert_eq!(
            parse_chunks(&[b"data: x\r", b"\ndata: y\r\n\r\n"]),
            vec![ev(None, None, "x\ny")]
        );
    }

    #[test]
    fn empty_events_unknown_fields_and_bom() {
        let got = parse_chunks(&[
            "\u{feff}event: lonely\n\nfoo: bar\nretry: 50\ndata:  two spaces\n\n".as_bytes(),
        ]);
        // An event without data is not dispatched (and its type does not leak into the next).
        assert_eq!(got, vec![ev(None, None, " two spaces")]);
        let mut p = SseParser::new(100);
        p.feed(b"retry: 1500\n", |_| {}).unwrap();
        assert_eq!(p.retry_ms(), Some(1500));
        p.feed(b"retry: soon\n", |_| {}).unwrap();
        assert_eq!(p.retry_ms(), Some(1500));
    }

    #[test]
    fn an_unterminated_event_waits_for_its_blank_line() {
        assert_eq!(parse_chunks(&[b"data: partial\n"]), vec![]);
        assert_eq!(
            parse_chunks(&[b"data: partial\n", b"\n"]),
            vec![ev(None, None, "partial")]
        );
    }

    #[test]
    fn long_lines_are_refused_whole_or_split() {
        let mut p = SseParser::new(8);
        assert!(p.feed(b"data: 12345678\n", |_| {}).is_err());
        let mut p = SseParser::new(8);
        p.feed(b"data:", |_| {}).unwrap();
        assert!(p.feed(b" 12345", |_| {}).is_err());
        let mut p = SseParser::new(8);
        p.feed(b"data:", |_| {}).unwrap();
        assert!(p.feed(b"12345\n", |_| {}).is_err());
    }
}
