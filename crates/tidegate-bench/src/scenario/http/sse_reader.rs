//! The SSE reader task: one `GET /v1/subscribe` stream, read until the run stops, every event
//! accounted like an MQTT delivery.
//!
//! Place in the data flow: `http::fanout` opens an [`HttpConn`] per stream, sends the
//! subscribe request, and hands the connection and the response body here; each body frame
//! goes through the [`SseParser`], each event's data through [`SseMessage`], and each payload
//! into the same [`SubscriberState`] the MQTT subscribers use (stream tracking, latency from
//! the payload's stamp, closed-loop feedback).
//!
//! Events on the readiness probe's topic are not messages of the run: they only tell the
//! scenario that this stream's subscription is live, before the timed traffic starts.

use super::super::live::Live;
use super::super::subscriber::{SubscriberPlan, SubscriberState};
use crate::http_client::HttpConn;
use crate::http_client::body::SseMessage;
use crate::http_client::sse::{SseItem, SseParser};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::sync::watch;

/// Longest SSE line accepted: far above any event of the run, small enough that a broken
/// stream cannot grow memory without bound.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// An open event stream: the connection must live as long as its body is read, and the
/// parser carries a partly received event from the readiness phase into the run.
#[derive(Debug)]
pub struct SseStream {
    conn: HttpConn,
    body: Incoming,
    parser: SseParser,
    ready: bool,
}

impl SseStream {
    /// A stream from its connection and the body of a 200 answer.
    pub fn new(conn: HttpConn, body: Incoming) -> SseStream {
        SseStream {
            conn,
            body,
            parser: SseParser::new(MAX_LINE),
            ready: false,
        }
    }

    /// True once an event on the probe topic arrived.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Reads for at most `wait` until an event on `topic` arrives (then [`SseStream::ready`]
    /// turns true). Nothing else is published before the run, so other events are ignored.
    pub async fn wait_for_topic(
        &mut self,
        topic: &str,
        wait: std::time::Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.ready {
            // `frame()` only polls the body: cancelling it at the deadline loses no data.
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Ok(()),
                Ok(None) => return Err("the gateway ended the stream".into()),
                Ok(Some(Err(e))) => return Err(format!("stream broke: {e}")),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let mut seen = false;
            self.parser
                .feed(&data, |item| {
                    if let SseItem::Event(e) = item {
                        seen |= SseMessage::parse(&e.data).is_ok_and(|m| m.topic == topic);
                    }
                })
                .map_err(|e| e.to_string())?;
            self.ready |= seen;
        }
        Ok(())
    }
}

/// The accounting of one stream.
#[derive(Debug)]
pub struct SseAccount {
    /// Message accounting, as for an MQTT subscriber.
    pub state: SubscriberState,
    /// Events received (probes included).
    pub events: u64,
    /// Comment lines (heartbeats).
    pub heartbeats: u64,
    /// Events that were not readable messages.
    pub bad_events: u64,
    /// Readiness probes (not messages of the run).
    pub probes: u64,
    /// New unique deliveries since the last [`SseAccount::take_unique`].
    unique: u64,
    payload: Vec<u8>,
}

impl SseAccount {
    /// Fresh accounting for a stream hearing `plan.hears`.
    pub fn new(plan: &SubscriberPlan) -> SseAccount {
        SseAccount {
            state: SubscriberState::new(plan.hears.clone()),
            events: 0,
            heartbeats: 0,
            bad_events: 0,
            probes: 0,
            unique: 0,
            payload: Vec::new(),
        }
    }

    /// Accounts one parsed item received at `now_ns`.
    pub fn on_item(
        &mut self,
        item: SseItem<'_>,
        now_ns: u64,
        plan: &SubscriberPlan,
        probe_topic: &str,
    ) {
        let event = match item {
            SseItem::Comment(_) => {
                self.heartbeats += 1;
                return;
            }
            SseItem::Event(e) => e,
        };
        self.events += 1;
        let msg = match SseMessage::parse(&event.data) {
            Ok(m) => m,
            Err(_) => {
                self.bad_events += 1;
                return;
            }
        };
        if msg.topic == probe_topic {
            self.probes += 1;
            return;
        }
        if msg.payload_into(&mut self.payload).is_err() {
            self.bad_events += 1;
            return;
        }
        if self.state.on_payload(&self.payload, now_ns, plan) {
            self.unique += 1;
        }
    }

    /// New unique deliveries since the last call.
    pub fn take_unique(&mut self) -> u64 {
        std::mem::take(&mut self.unique)
    }
}

/// What a reader hands back.
#[derive(Debug)]
pub struct SseReaderResult {
    /// The stream's accounting.
    pub account: SseAccount,
    /// Why the stream ended before the run did, if it did.
    pub error: Option<String>,
}

/// Reads a stream until `stop` turns true.
pub async fn run(
    stream: SseStream,
    plan: SubscriberPlan,
    probe_topic: Arc<str>,
    mut stop: watch::Receiver<bool>,
) -> SseReaderResult {
    let SseStream {
        conn,
        mut body,
        mut parser,
        ..
    } = stream;
    let mut acc = SseAccount::new(&plan);
    let mut error = None;
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            biased;
            frame = body.frame() => {
                let data = match frame {
                    None => {
                        error = Some("the gateway ended the stream".to_string());
                        break;
                    }
                    Some(Err(e)) => {
                        error = Some(format!("stream broke: {e}"));
                        break;
                    }
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        // Trailers: nothing to account.
                        Err(_) => continue,
                    },
                };
                let now_ns = plan.clock.now_ns();
                let fed = parser.feed(&data, |item| acc.on_item(item, now_ns, &plan, &probe_topic));
                if let Err(e) = fed {
                    error = Some(e.to_string());
                    break;
                }
                Live::add(&plan.live.delivered, acc.take_unique());
                acc.state.record_latencies(&plan.rec);
            }
            r = stop.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
    // Closing the socket ends the subscription at the gateway.
    drop(body);
    drop(conn);
    SseReaderResult {
        account: acc,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::payload::{Header, PayloadWriter};
    use crate::scenario::live::Recorders;
    use base64::Engine as _;

    fn plan() -> SubscriberPlan {
        SubscriberPlan {
            hears: 0..2,
            warmup_end_ns: 0,
            end_ns: u64::MAX,
            clock: Clock::start(),
            live: Arc::new(Live::default()),
            rec: Arc::new(Recorders::default()),
            feedback: None,
        }
    }

    fn event(id: u32, topic: &str, publisher: u32, seq: u32) -> String {
        let p = PayloadWriter::new(40).next(
            &Header {
                sent_ns: 1_000,
                publisher,
                seq,
            },
            1_100,
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&p);
        format!(
            "id: {id}\nevent: {topic}\ndata: {{\"topic\":\"{topic}\",\"payload_base64\":\"{b64}\",\"qos\":1,\"retain\":false}}\n\n"
        )
    }

    #[test]
    fn events_are_accounted_like_deliveries() {
        let plan = plan();
        let mut acc = SseAccount::new(&plan);
        let mut parser = SseParser::new(1 << 20);
        let mut stream = String::from(": connected\n\n");
        stream += "event: x/ready\ndata: {\"topic\":\"x/ready\",\"payload\":\"ready\",\"qos\":0,\"retain\":false}\n\n";
        stream += &event(1, "x/0", 0, 0);
        stream += &event(2, "x/0", 0, 1);
        stream += &event(3, "x/0", 0, 1); // a duplicate
        stream += &event(4, "x/1", 1, 0);
        stream += "data: not json\n\n";
        // Fed in awkward pieces, as a socket would.
        for piece in stream.as_bytes().chunks(7) {
            parser
                .feed(piece, |item| acc.on_item(item, 5_000, &plan, "x/ready"))
                .unwrap();
        }
        assert_eq!(acc.probes, 1);
        assert_eq!(acc.heartbeats, 1);
        assert_eq!(acc.events, 6);
        assert_eq!(acc.bad_events, 1);
        assert_eq!(acc.take_unique(), 3);
        assert_eq!(acc.take_unique(), 0);
        let stats = acc.state.finish(&[2, 1]);
        assert_eq!((stats[0].1.unique, stats[0].1.duplicates), (2, 1));
        assert_eq!((stats[1].1.unique, stats[1].1.lost), (1, 0));
        acc.state.record_latencies(&plan.rec);
        let lat = Recorders::snapshot(&plan.rec.latency).summary();
        assert_eq!(lat.count, 3);
        assert!((3_990..=4_010).contains(&lat.p50_ns), "{lat:?}");
    }
}
