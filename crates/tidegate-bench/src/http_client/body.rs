//! The JSON of the gateway's HTTP API, both ways: publish request bodies built into a reused
//! buffer, publish responses, error bodies, and the messages SSE events carry.
//!
//! Place in the data flow: an HTTP publisher task fills a [`BodyWriter`] with one message
//! (`POST /v1/publish`) or many (`POST /v1/publish/batch`), hands the bytes to
//! [`super::HttpConn::post_json`], and reads the answer with [`parse_publish`] or
//! [`parse_batch`]; an SSE reader parses each event's data with [`SseMessage::parse`].
//!
//! Payloads travel as `payload_base64`: benchmark payloads are binary (the timestamp header),
//! and base64 gives the MQTT subscribers the exact bytes, so their accounting is the same as
//! in the MQTT scenarios.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use std::borrow::Cow;

/// Builds request bodies in a buffer that is reused from one request to the next.
#[derive(Debug, Default)]
pub struct BodyWriter {
    buf: Vec<u8>,
    /// Scratch for base64, kept to avoid an allocation per message.
    b64: String,
    /// Messages written since `start_batch`.
    count: usize,
}

/// Why a body from the gateway could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not the JSON the API promises.
    #[error("unexpected response body: {0}")]
    Malformed(String),
    /// The payload is neither text nor valid base64.
    #[error("bad payload_base64: {0}")]
    Base64(String),
}

impl BodyWriter {
    /// An empty writer.
    pub fn new() -> BodyWriter {
        BodyWriter::default()
    }

    /// Starts a single-message body (`POST /v1/publish`).
    pub fn single(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        self.buf.clear();
        self.count = 0;
        self.message(topic, payload, qos, retain);
    }

    /// Starts a batch body (`POST /v1/publish/batch`); add messages with
    /// [`BodyWriter::push`] and close it with [`BodyWriter::finish_batch`].
    pub fn start_batch(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.buf.extend_from_slice(b"{\"messages\":[");
    }

    /// Adds one message to the batch being built.
    pub fn push(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        if self.count > 0 {
            self.buf.push(b',');
        }
        self.message(topic, payload, qos, retain);
    }

    /// Closes the batch.
    pub fn finish_batch(&mut self) {
        self.buf.extend_from_slice(b"]}");
    }

    /// Messages in the body being built.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The body so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// A copy of the body to hand to the HTTP client (which needs to own it).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.buf)
    }

    fn message(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        self.buf.extend_from_slice(b"{\"topic\":");
        push_json_string(&mut self.buf, topic);
        self.buf.extend_from_slice(b",\"payload_base64\":\"");
        self.b64.clear();
        STANDARD.encode_string(payload, &mut self.b64);
        self.buf.extend_from_slice(self.b64.as_bytes());
        self.buf.extend_from_slice(b"\",\"qos\":");
        self.buf.extend_from_slice(qos.to_string().as_bytes());
        self.buf.extend_from_slice(if retain {
            b",\"retain\":true}"
        } else {
            b",\"retain\":false}"
        });
        self.count += 1;
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            // Multi-byte UTF-8 sequences pass through unchanged: JSON is UTF-8.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[derive(Deserialize)]
struct Matched {
    matched: u64,
}

/// One entry of a batch response: a match count, or the error that message met.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchResult {
    /// Subscribers the message matched, when it was accepted.
    pub matched: Option<u64>,
    /// Why it was refused, when it was.
    pub error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<BatchResult>,
}

/// The inside of an error body `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    #[serde(default)]
    pub code: String,
    /// For people.
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

fn malformed(body: &[u8], e: &serde_json::Error) -> BodyError {
    let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
    BodyError::Malformed(format!("{e} in {shown:?}"))
}

/// The answer to `POST /v1/publish`: how many subscribers matched.
pub fn parse_publish(body: &[u8]) -> Result<u64, BodyError> {
    serde_json::from_slice::<Matched>(body)
        .map(|m| m.matched)
        .map_err(|e| malformed(body, &e))
}

/// The answer to `POST /v1/publish/batch`, one entry per message sent.
pub fn parse_batch(body: &[u8]) -> Result<Vec<BatchResult>, BodyError> {
    serde_json::from_slice::<BatchResponse>(body)
        .map(|b| b.results)
        .map_err(|e| malformed(body, &e))
}

/// A short description of an error response, for the report: `code: message`, or the start
/// of the body when it is not the API's error JSON.
pub fn describe_error(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("{}: {}", e.error.code, e.error.message),
        Err(_) => String::from_utf8_lossy(body).chars().take(120).collect(),
    }
}

/// The JSON `data` of one SSE event: a message as the gateway hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SseMessage<'a> {
    /// Topic name.
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    /// The payload as text, when the gateway sent it so.
    #[serde(borrow, default)]
    pub payload: Option<Cow<'a, str>>,
    /// The payload as base64 otherwise.
    #[serde(borrow, default)]
    pub payload_base64: Option<Cow<'a, str>>,
    /// QoS it was published with.
    #[serde(default)]
    pub qos: u8,
    /// Retain flag.
    #[serde(default)]
    pub retain: bool,
}

impl<'a> SseMessage<'a> {
    /// Parses an event's data.
    pub fn parse(data: &'a str) -> Result<SseMessage<'a>, BodyError> {
        serde_json::from_str(data).map_err(|e| malformed(data.as_bytes(), &e))
    }

    /// The payload's bytes, into `out` (cleared first), whichever form it came in.
    pub fn payload_into(&self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        out.clear();
        match (&self.payload, &self.payload_base64) {
            (Some(text), _) => out.extend_from_slice(text.as_bytes()),
            (None, Some(b64)) => STANDARD
                .decode_vec(b64.as_bytes(), out)
                .map_err(|e| BodyError::Base64(e.to_string()))?,
            (None, None) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn single_body_is_the_documented_json() {
        let mut w = BodyWriter::new();
        w.single("a/b", &[0, 1, 0xff], 1, false);
        let v: Value = serde_json::from_slice(w.as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({"topic": "a/b", "payload_base64": "AAH/", "qos": 1, "retain": false})
        );
        assert_eq!(w.count(), 1);
        // Reuse: the next body replaces the previous one.
        w.single("c", b"", 0, true);
        let v: Value = serde_json::from_slice(w.as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({"topic": "c", "payload_base64": "", "qos": 0, "retain": true})
        );
    }

    #[test]
    fn batch_body_holds_every_message_in_order() {
        let mut w = BodyWriter::new();
        w.start_batch();
        for i in 0..3u8 {
            w.push(&format!("t/{i}"), &[i; 20], 2, false);
        }
        w.finish_batch();
        assert_eq!(w.count(), 3);
        let v: Value = serde_json::from_slice(&w.to_bytes()).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m["topic"], format!("t/{i}"));
            assert_eq!(m["qos"], 2);
            let p = STANDARD
                .decode(m["payload_base64"].as_str().unwrap())
                .unwrap();
            assert_eq!(p, vec![i as u8; 20]);
        }
        w.start_batch();
        w.finish_batch();
        assert_eq!(
            serde_json::from_slice::<Value>(w.as_bytes()).unwrap(),
            json!({"messages": []})
        );
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        let nasty = "q\"b\\s\n\r\t\u{1}é/+";
        let mut out = Vec::new();
        push_json_string(&mut out, nasty);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"q\\\"b\\\\s\\n\\r\\t\\u0001é/+\""
        );
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, nasty);
    }

    #[test]
    fn responses_parse_and_errors_describe_themselves() {
        assert_eq!(parse_publish(br#"{"matched": 3}"#), Ok(3));
        assert!(parse_publish(b"<html>").is_err());
        let r = parse_batch(
            br#"{"results": [{"matched": 1}, {"error": {"code": "invalid_topic", "message": "no"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].matched, Some(1));
        assert_eq!(
            r[1].error.as_ref().map(|e| e.code.as_str()),
            Some("invalid_topic")
        );
        assert!(parse_batch(br#"{"matched": 1}"#).is_err());
        assert_eq!(
            describe_error(br#"{"error": {"code": "unauthorized", "message": "token"}}"#),
            "unauthorized: token"
        );
        assert_eq!(describe_error(b"plain text"), "plain text");
    }

    #[test]
    fn sse_messages_give_back_text_and_base64_payloads() {
        let mut out = Vec::new();
        let m =
            SseMessage::parse(r#"{"topic":"x/1","payload_base64":"AAH/","qos":1,"retain":false}"#)
                .unwrap();
        assert_eq!(m.topic, "x/1");
        assert_eq!(m.qos, 1);
        m.payload_into(&mut out).unwrap();
        assert_eq!(out, vec![0, 1, 0xff]);
        // A binary header that happens to be valid UTF-8 comes as text with JSON escapes.
        let m = SseMessage::parse(r#"{"topic":"x","payload":"\u0000\u0001A","qos":0}"#).unwrap();
        m.payload_into(&mut out).unwrap();
        assert_eq!(out, vec![0, 1, b'A']);
        assert!(!m.retain);
        let bad = SseMessage::parse(r#"{"topic":"x","payload_base64":"!!"}"#).unwrap();
        assert!(bad.payload_into(&mut out).is_err());
        assert!(SseMessage::parse("not json").is_err());
    }
}
