//! The permessage-deflate negotiation (RFC 7692 sections 5 and 7.1): which offer of a client's
//! `Sec-WebSocket-Extensions` headers is accepted, with which parameters, and the response
//! header that says so.
//!
//! Place in the data flow: called by [`super::handshake`] while it answers the upgrade; the
//! [`DeflateParams`] it returns configure [`super::deflate::Deflate`] for the connection's life.
//!
//! The choices, all made for memory (an idle WebSocket connection is budgeted at < 8 KiB, and
//! a miniz context with a 32 KiB window costs 40–300 KiB):
//! - `server_no_context_takeover` is always in the response, offered or not (section 7.1.1.1
//!   lets the server add it): every message we send is compressed on its own, so one
//!   compressor per worker thread serves every connection and none is kept per connection.
//! - The client's direction keeps its context only when the client offered
//!   `client_max_window_bits` (every browser, Node's `ws` and Python's `websockets` do) and not
//!   `client_no_context_takeover`. The response then caps its window at
//!   [`CLIENT_WINDOW_BITS`] (section 7.1.2.2 lets the server pick a smaller value), so what is
//!   kept between messages is the last 1 KiB of the client's data, not a decompressor. A
//!   client that did not offer the parameter would use a 32 KiB window we cannot shrink: the
//!   response gives it `client_no_context_takeover` instead (section 7.1.1.2 lets the server
//!   add it).
//! - `server_max_window_bits=N` in an offer is honoured, not declined: with no context
//!   takeover a message of at most 2^N bytes cannot refer further back than 2^N, so only
//!   messages up to that size are compressed, and larger ones go uncompressed (a message may
//!   always be sent without compression).
//!
//! An offer with an unknown or repeated parameter, or a value out of range, is declined
//! (section 7.1 says "MUST decline") and the next one is tried; a header that does not parse
//! as an extension list gets no extension at all. Neither fails the upgrade: the client then
//! sends uncompressed frames.

use std::fmt::Write as _;

/// The extension's name in `Sec-WebSocket-Extensions`.
const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The largest client window we let a client keep context with: 2^10 bytes of its data stay
/// with the connection between messages. Small MQTT messages gain most from the previous
/// message or two (topic names, JSON keys), which fit in it.
pub(crate) const CLIENT_WINDOW_BITS: u8 = 10;

/// What was agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeflateParams {
    /// The client compresses with context takeover and a window of 2^bits bytes; `None`:
    /// `client_no_context_takeover`, each of its messages inflates on its own.
    pub(crate) client_window_bits: Option<u8>,
    /// The client asked us to use at most a 2^bits window (`server_max_window_bits`); `None`:
    /// not limited (2^15).
    pub(crate) server_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub(crate) fn response(&self) -> String {
        let mut value = format!("{PERMESSAGE_DEFLATE}; server_no_context_takeover");
        // Writing to a String cannot fail.
        if let Some(bits) = self.server_window_bits {
            let _ = write!(value, "; server_max_window_bits={bits}");
        }
        match self.client_window_bits {
            Some(bits) => {
                let _ = write!(value, "; client_max_window_bits={bits}");
            }
            None => value.push_str("; client_no_context_takeover"),
        }
        value
    }
}

/// Picks the first acceptable permessage-deflate offer among the values of every
/// `Sec-WebSocket-Extensions` header of the request, in order.
pub(crate) fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<DeflateParams> {
    let mut extensions = Vec::new();
    for value in headers {
        // A header we cannot read is no offer we can trust: no extension.
        extensions.extend(parse_extensions(value)?);
    }
    extensions
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|e| accept_offer(&e.params))
}

/// The parameters of one offer, or `None` when it must be declined (section 7.1).
fn accept_offer(params: &[(String, Option<String>)]) -> Option<DeflateParams> {
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits = None;
    let mut client_max_window_bits: Option<Option<u8>> = None;
    for (i, (name, value)) in params.iter().enumerate() {
        let repeated = params
            .iter()
            .take(i)
            .any(|(earlier, _)| earlier.eq_ignore_ascii_case(name));
        if repeated {
            return None;
        }
        match name.to_ascii_lowercase().as_str() {
            // We never keep our compression context, asked to or not.
            "server_no_context_takeover" if value.is_none() => {}
            "client_no_context_takeover" if value.is_none() => client_no_context_takeover = true,
            "server_max_window_bits" => {
                server_max_window_bits = Some(window_bits(value.as_deref()?)?);
            }
            "client_max_window_bits" => {
                client_max_window_bits = Some(match value.as_deref() {
                    None => None,
                    Some(value) => Some(window_bits(value)?),
                });
            }
            _ => return None,
        }
    }
    let client_window_bits = match client_max_window_bits {
        Some(offered) if !client_no_context_takeover => {
            Some(offered.unwrap_or(15).min(CLIENT_WINDOW_BITS))
        }
        _ => None,
    };
    Some(DeflateParams {
        client_window_bits,
        server_window_bits: server_max_window_bits,
    })
}

/// A window size value: a decimal 8 to 15 without leading zeros (section 7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    let canonical = value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0');
    (canonical && (8..=15).contains(&bits)).then_some(bits)
}

/// One element of an extension list: a name and its parameters, values unquoted.
#[derive(Debug, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Parses a `Sec-WebSocket-Extensions` value (RFC 6455 section 9.1): `1#extension`, each
/// `token *( ";" token [ "=" ( token | quoted-string ) ] )`. Empty list elements are skipped as
/// RFC 9110 section 5.6.1 asks. `None` on any syntax error.
fn parse_extensions(value: &str) -> Option<Vec<Extension>> {
    let mut p = Cursor {
        bytes: value.as_bytes(),
        pos: 0,
    };
    let mut extensions = Vec::new();
    loop {
        p.skip_ows();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ows();
            if p.peek() != Some(b';') {
                break;
            }
            p.pos += 1;
            p.skip_ows();
            let param = p.token()?;
            p.skip_ows();
            let value = if p.peek() == Some(b'=') {
                p.pos += 1;
                p.skip_ows();
                Some(if p.peek() == Some(b'"') {
                    p.quoted()?
                } else {
                    p.token()?
                })
            } else {
                None
            };
            params.push((param, value));
        }
        extensions.push(Extension { name, params });
        p.skip_ows();
        match p.peek() {
            None => break,
            Some(b',') => p.pos += 1,
            Some(_) => return None,
        }
    }
    Some(extensions)
}

/// A position in a header value.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// A non-empty RFC 9110 token.
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        let token = self.bytes.get(start..self.pos)?;
        if token.is_empty() {
            return None;
        }
        // tchars are ASCII.
        std::str::from_utf8(token).ok().map(str::to_owned)
    }

    /// A quoted-string, unescaped.
    fn quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let byte = self.peek()?;
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    out.push(self.peek()?);
                    self.pos += 1;
                }
                b'\t' | b' '..=b'~' => out.push(byte),
                _ => return None,
            }
        }
        String::from_utf8(out).ok()
    }
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(client: Option<u8>, server: Option<u8>) -> Option<DeflateParams> {
        Some(DeflateParams {
            client_window_bits: client,
            server_window_bits: server,
        })
    }

    #[test]
    fn offers_of_real_clients() {
        // Chrome, Firefox, Node's ws, Python's websockets.
        assert_eq!(
            negotiate(["permessage-deflate; client_max_window_bits"]),
            params(Some(10), None)
        );
        // No client_max_window_bits: its 32 KiB window cannot be shrunk, so no takeover.
        assert_eq!(negotiate(["permessage-deflate"]), params(None, None));
        // Safari and some libraries ask for both directions without takeover.
        assert_eq!(
            negotiate([
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
            ]),
            params(None, None)
        );
        assert_eq!(negotiate(["x-webkit-deflate-frame"]), None);
        assert_eq!(negotiate(std::iter::empty::<&str>()), None);
    }

    #[test]
    fn window_bits_are_honoured() {
        for (offer, expected) in [
            (
                "permessage-deflate; client_max_window_bits=9",
                params(Some(9), None),
            ),
            (
                "permessage-deflate; client_max_window_bits=15",
                params(Some(10), None),
            ),
            (
                "permessage-deflate; client_max_window_bits=\"12\"",
                params(Some(10), None),
            ),
            (
                "permessage-deflate; client_max_window_bits=8; client_no_context_takeover",
                params(None, None),
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                params(None, Some(10)),
            ),
            (
                "PerMessage-Deflate ; Server_Max_Window_Bits = 8 ; client_max_window_bits",
                params(Some(10), Some(8)),
            ),
        ] {
            assert_eq!(negotiate([offer]), expected, "{offer}");
        }
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate; server_max_window_bits=12");
            assert_eq!(
                negotiate([with_fallback.as_str()]),
                params(None, Some(12)),
                "{with_fallback}"
            );
        }
        // The first acceptable offer wins, across header lines too.
        assert_eq!(
            negotiate([
                "foo; a=\"x, y; z\"",
                "permessage-deflate; client_max_window_bits=9, permessage-deflate"
            ]),
            params(Some(9), None)
        );
    }

    #[test]
    fn unparsable_headers_give_no_extension() {
        for bad in [
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate;",
            "permessage-deflate; =10",
            "permessage-deflate client_max_window_bits",
            "permessage-deflate; a=\"\u{7f}\"",
            "permessage deflate",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
        }
        // One bad line spoils the request, even with a good line before it.
        assert_eq!(negotiate(["permessage-deflate", "@@"]), None);
    }

    #[test]
    fn extension_lists_parse() {
        let parsed = parse_extensions(" , a; b=1 ;c=\"q\\\"x\"\t,, d ,").unwrap();
        assert_eq!(
            parsed,
            [
                Extension {
                    name: "a".into(),
                    params: vec![
                        ("b".into(), Some("1".into())),
                        ("c".into(), Some("q\"x".into()))
                    ],
                },
                Extension {
                    name: "d".into(),
                    params: vec![],
                },
            ]
        );
        assert_eq!(parse_extensions("").unwrap(), []);
    }

    #[test]
    fn response_headers() {
        assert_eq!(
            params(None, None).unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            params(Some(10), Some(9)).unwrap().response(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
             client_max_window_bits=10"
        );
    }
}
