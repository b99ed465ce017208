//! The HTTP publisher task: one keep-alive connection POSTing benchmark messages, paced or
//! back to back, and judging each answer.
//!
//! Place in the data flow: `http::rest` opens an [`HttpConn`] per publisher and hands it here
//! with an [`HttpPublisherPlan`]; the task builds each request's body (one message, or a batch)
//! with the same payload header the MQTT publishers write, sends it, reads the answer, and
//! returns an [`HttpPublisherResult`] that tells the stream accounting how many messages its
//! stream owed.
//!
//! The loop, once per request:
//! 1. open loop: wait for the request's intended time (on the run's shared tick when it is
//!    close, see `publisher`), then take it from the [`Pacer`]; a backlog (the previous
//!    answer came late) is sent at once, still stamped with its intended time, so the
//!    latency shows the wait (no coordinated omission); closed loop: the next request as soon
//!    as the previous answer arrived, stamped now;
//! 2. encode the request's messages (sequence numbers `request × K .. request × K + K`);
//! 3. send and wait for the answer (at most `--request-timeout`; a request without answer
//!    ends the task: the connection is in an unknown state);
//! 4. record the request's latency (from the intended time, and from the actual send).

use super::super::live::{Live, Recorders};
use super::super::ticker::Ticker;
use super::super::traffic::Timing;
use crate::clock::Clock;
use crate::http_client::HttpConn;
use crate::http_client::body::{BodyWriter, describe_error, parse_batch, parse_publish};
use crate::latency::LatencyHistogram;
use crate::pacing::Pacer;
use crate::payload::{Header, PayloadWriter};
use hyper::StatusCode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latencies are moved into the shared histograms in batches of this many requests.
const RECORD_BATCH: usize = 256;

/// The request histograms of a run, shared by its HTTP publishers.
#[derive(Debug, Default)]
pub struct HttpRecorders {
    /// Intended send time → answer.
    pub request: Mutex<LatencyHistogram>,
    /// Actual send → answer.
    pub service: Mutex<LatencyHistogram>,
}

/// What one HTTP publisher does.
#[derive(Debug, Clone)]
pub struct HttpPublisherPlan {
    /// Publisher (stream) id written into each payload.
    pub id: u32,
    /// Topic of every message.
    pub topic: String,
    /// `POST /v1/publish/batch` (true) or `POST /v1/publish`.
    pub batch: bool,
    /// Messages per request (1 unless batch).
    pub per_request: u32,
    /// QoS asked for.
    pub qos: u8,
    /// Payload size.
    pub payload: usize,
    /// Open loop: the schedule of requests; `None` for closed loop.
    pub pacer: Option<Pacer>,
    /// Open loop: the run's precise shared tick; without it, tokio's 1 ms timers pace.
    pub ticker: Option<Arc<Ticker>>,
    /// The run's instants.
    pub timing: Timing,
    /// Give up on a request after this long.
    pub request_timeout: Duration,
    /// The run's time base.
    pub clock: Clock,
    /// Progress counters.
    pub live: Arc<Live>,
    /// Message histograms (send lag, per request).
    pub rec: Arc<Recorders>,
    /// Request histograms.
    pub http_rec: Arc<HttpRecorders>,
}

/// What an HTTP publisher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPublisherResult {
    /// Requests sent (warm-up included).
    pub requests: u64,
    /// Of those, stamped inside the measurement window.
    pub requests_in_window: u64,
    /// Messages in the requests sent (the stream's sent count).
    pub sent: u64,
    /// Of those, stamped inside the measurement window.
    pub sent_in_window: u64,
    /// Requests the gateway refused in whole or in part.
    pub failed_requests: u64,
    /// Messages it refused.
    pub rejected: u64,
    /// Failed requests by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// The first failure's explanation.
    pub first_failure: Option<String>,
    /// Requests never answered (0 or 1: the task stops at the first).
    pub unanswered: u64,
    /// Messages in them.
    pub unanswered_messages: u64,
    /// Sum of the answers' `matched`.
    pub matched: u64,
    /// Why the task ended early, if it did.
    pub error: Option<String>,
}

/// What an answer says about the messages of its request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Judged {
    /// Subscribers matched, summed over the accepted messages.
    pub matched: u64,
    /// Messages refused.
    pub refused: u64,
    /// The request failed in whole or in part: its HTTP status and the gateway's reason.
    pub failure: Option<(u16, String)>,
}

/// Reads the answer to a request of `count` messages.
pub fn judge(status: StatusCode, body: &[u8], batch: bool, count: u64) -> Judged {
    if status != StatusCode::OK {
        return Judged {
            matched: 0,
            refused: count,
            failure: Some((status.as_u16(), describe_error(body))),
        };
    }
    let malformed = |why: String| Judged {
        failure: Some((status.as_u16(), why)),
        ..Judged::default()
    };
    if !batch {
        return match parse_publish(body) {
            Ok(matched) => Judged {
                matched,
                ..Judged::default()
            },
            Err(e) => malformed(e.to_string()),
        };
    }
    let results = match parse_batch(body) {
        Ok(r) => r,
        Err(e) => return malformed(e.to_string()),
    };
    if results.len() as u64 != count {
        return malformed(format!(
            "{} results for a batch of {count} messages",
            results.len()
        ));
    }
    let mut j = Judged::default();
    for r in &results {
        match (&r.error, r.matched) {
            (Some(e), _) => {
                j.refused += 1;
                if j.failure.is_none() {
                    j.failure = Some((status.as_u16(), format!("{}: {}", e.code, e.message)));
                }
            }
            (None, Some(m)) => j.matched += m,
            (None, None) => {
                j.refused += 1;
                j.failure
                    .get_or_insert_with(|| (status.as_u16(), "a result without matched".into()));
            }
        }
    }
    j
}

/// Waits until `due_ns`: on the shared tick once it is at most two ticks away (sleeping on a
/// tokio timer before that, so a slow publisher is not woken every tick), else on tokio's timer.
pub async fn wait_until(clock: Clock, ticker: Option<&Ticker>, due_ns: u64) {
    loop {
        let now = clock.now_ns();
        if now >= due_ns {
            return;
        }
        match ticker {
            Some(t) if due_ns - now <= 2 * t.tick_ns() => t.wait().await,
            Some(t) => {
                let early = due_ns - 2 * t.tick_ns();
                tokio::time::sleep_until(clock.instant_at(early).into()).await;
            }
            None => tokio::time::sleep_until(clock.instant_at(due_ns).into()).await,
        }
    }
}

/// Histograms filled locally and moved into the shared ones in batches.
#[derive(Default)]
struct Scratch {
    request: Vec<u64>,
    service: Vec<u64>,
    lag: Vec<u64>,
}

impl Scratch {
    fn flush(&mut self, plan: &HttpPublisherPlan) {
        Recorders::record_batch(&plan.http_rec.request, &mut self.request);
        Recorders::record_batch(&plan.http_rec.service, &mut self.service);
        Recorders::record_batch(&plan.rec.send_lag, &mut self.lag);
    }
}

/// Runs an HTTP publisher to the end of the run.
pub async fn run(mut conn: HttpConn, mut plan: HttpPublisherPlan) -> HttpPublisherResult {
    let mut res = HttpPublisherResult::default();
    let mut payloads = PayloadWriter::new(plan.payload);
    let mut body = BodyWriter::new();
    let mut scratch = Scratch::default();
    let path = if plan.batch {
        "/v1/publish/batch"
    } else {
        "/v1/publish"
    };
    let clock = plan.clock;
    let (warmup_end_ns, end_ns) = (plan.timing.warmup_end_ns, plan.timing.end_ns);
    let n = u64::from(plan.per_request.max(1));
    tokio::time::sleep_until(clock.instant_at(plan.timing.start_ns).into()).await;
    let mut next_closed = 0u64;
    loop {
        let (index, stamp) = match plan.pacer.as_mut() {
            Some(p) => {
                let due = p.next_ns();
                if due >= end_ns {
                    break;
                }
                wait_until(clock, plan.ticker.as_deref(), due).await;
                match p.pop_due(clock.now_ns()) {
                    Some(taken) => taken,
                    None => continue,
                }
            }
            None => {
                let now = clock.now_ns();
                if now >= end_ns {
                    break;
                }
                next_closed += 1;
                (next_closed - 1, now)
            }
        };
        let send_ns = clock.now_ns();
        if plan.batch {
            body.start_batch();
        }
        for j in 0..n {
            let header = Header {
                sent_ns: stamp,
                publisher: plan.id,
                // Wraps after 4 billion messages per stream, far beyond any run.
                seq: (index * n + j) as u32,
            };
            let payload = payloads.next(&header, send_ns);
            if plan.batch {
                body.push(&plan.topic, &payload, plan.qos, false);
            } else {
                body.single(&plan.topic, &payload, plan.qos, false);
            }
        }
        if plan.batch {
            body.finish_batch();
        }
        let in_window = stamp >= warmup_end_ns && stamp < end_ns;
        res.requests += 1;
        res.sent += n;
        if in_window {
            res.requests_in_window += 1;
            res.sent_in_window += n;
        }
        Live::add(&plan.live.sent, n);
        if plan.pacer.is_some() {
            scratch.lag.push(send_ns.saturating_sub(stamp));
        }
        let answer =
            tokio::time::timeout(plan.request_timeout, conn.post_json(path, body.to_bytes())).await;
        let done_ns = clock.now_ns();
        let (status, bytes) = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                res.unanswered += 1;
                res.unanswered_messages += n;
                res.error = Some(e.to_string());
                break;
            }
            Err(_) => {
                res.unanswered += 1;
                res.unanswered_messages += n;
                res.error = Some(format!(
                    "no answer to POST {path} within {:?}",
                    plan.request_timeout
                ));
                break;
            }
        };
        let j = judge(status, &bytes, plan.batch, n);
        res.matched += j.matched;
        res.rejected += j.refused;
        if let Some((code, why)) = j.failure {
            res.failed_requests += 1;
            *res.statuses.entry(code).or_default() += 1;
            res.first_failure.get_or_insert(why);
        }
        if in_window {
            scratch.request.push(done_ns.saturating_sub(stamp));
            scratch.service.push(done_ns.saturating_sub(send_ns));
        }
        if scratch.request.len() >= RECORD_BATCH || scratch.lag.len() >= RECORD_BATCH {
            scratch.flush(&plan);
        }
    }
    scratch.flush(&plan);
    Live::add(&plan.live.publishers_done, 1);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::conn::RequestHead;
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn answers_are_judged_per_message() {
        let ok = judge(StatusCode::OK, br#"{"matched": 2}"#, false, 1);
        assert_eq!(
            ok,
            Judged {
                matched: 2,
                refused: 0,
                failure: None
            }
        );
        let refused = judge(
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":{"code":"payload_too_large","message":"big"}}"#,
            true,
            10,
        );
        assert_eq!(refused.refused, 10);
        assert_eq!(
            refused.failure,
            Some((413, "payload_too_large: big".into()))
        );
        let partial = judge(
            StatusCode::OK,
            br#"{"results":[{"matched":1},{"error":{"code":"invalid_topic","message":"x"}},{"matched":3}]}"#,
            true,
            3,
        );
        assert_eq!(partial.matched, 4);
        assert_eq!(partial.refused, 1);
        assert_eq!(partial.failure, Some((200, "invalid_topic: x".into())));
        let short = judge(StatusCode::OK, br#"{"results":[{"matched":1}]}"#, true, 2);
        assert!(
            short
                .failure
                .is_some_and(|(_, why)| why.contains("1 results for a batch of 2"))
        );
        let garbage = judge(StatusCode::OK, b"ok", false, 1);
        assert_eq!(garbage.refused, 0);
        assert!(garbage.failure.is_some());
    }

    #[tokio::test]
    async fn wait_until_returns_at_once_for_the_past_and_waits_for_the_future() {
        let clock = Clock::start();
        wait_until(clock, None, 0).await;
        let due = clock.now_ns() + 3_000_000;
        wait_until(clock, None, due).await;
        assert!(clock.now_ns() >= due);
        let (ticker, _guard) = Ticker::start(clock, Duration::from_millis(1)).unwrap();
        let due = clock.now_ns() + 5_500_000;
        wait_until(clock, Some(&ticker), due).await;
        assert!(clock.now_ns() >= due);
    }

    /// A fake gateway: answers every publish request with `matched: 1` (or each batch with
    /// one result per message) and hands the decoded payload headers back.
    async fn fake_gateway(listener: TcpListener, batch: bool) -> Vec<Header> {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut headers = Vec::new();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return headers;
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            };
            let head = String::from_utf8(buf[..end].to_vec())
                .unwrap()
                .to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            let body: serde_json::Value =
                serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
            buf.drain(..end + 4 + len);
            let msgs = if batch {
                body["messages"].as_array().unwrap().clone()
            } else {
                vec![body]
            };
            for m in &msgs {
                let p = base64::engine::general_purpose::STANDARD
                    .decode(m["payload_base64"].as_str().unwrap())
                    .unwrap();
                headers.push(Header::decode(&p).unwrap());
            }
            let answer = if batch {
                format!(
                    "{{\"results\":[{}]}}",
                    vec!["{\"matched\":1}"; msgs.len()].join(",")
                )
            } else {
                "{\"matched\":1}".to_string()
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        }
    }

    async fn run_against_fake(batch: bool, rate: u64) -> (HttpPublisherResult, Vec<Header>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(fake_gateway(listener, batch));
        let conn = HttpConn::open(
            addr,
            RequestHead::new(&addr.to_string(), Some("t")).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let clock = Clock::start();
        let timing = Timing::new(
            clock,
            Duration::from_millis(1),
            Duration::from_millis(50),
            Duration::from_millis(200),
        );
        let per_request = if batch { 4 } else { 1 };
        let plan = HttpPublisherPlan {
            id: 7,
            topic: "t/7".into(),
            batch,
            per_request,
            qos: 1,
            payload: 32,
            pacer: Pacer::new(timing.start_ns, rate / u64::from(per_request), 1, 0),
            ticker: None,
            timing,
            request_timeout: Duration::from_secs(5),
            clock,
            live: Arc::new(Live::default()),
            rec: Arc::new(Recorders::default()),
            http_rec: Arc::new(HttpRecorders::default()),
        };
        let http_rec = plan.http_rec.clone();
        let res = run(conn, plan).await;
        let headers = server.await.unwrap();
        assert_eq!(
            Recorders::snapshot(&http_rec.request).len(),
            res.requests_in_window
        );
        (res, headers)
    }

    #[tokio::test]
    async fn open_loop_singles_are_paced_and_numbered() {
        let (res, headers) = run_against_fake(false, 200).await;
        // 250 ms of schedule at 200 requests/s: exactly 50 intended times, 40 of them in the
        // 200 ms window, however late the machine runs them (a backlog is still sent).
        assert_eq!(res.requests, 50, "{res:?}");
        assert_eq!(res.requests_in_window, 40, "{res:?}");
        assert_eq!(res.sent, res.requests);
        assert_eq!(res.matched, res.sent);
        assert_eq!((res.failed_requests, res.unanswered), (0, 0));
        assert_eq!(res.error, None);
        let seqs: Vec<u32> = headers.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, (0..res.sent as u32).collect::<Vec<_>>());
        assert!(headers.iter().all(|h| h.publisher == 7));
        // Intended times 5 ms apart.
        assert_eq!(headers[1].sent_ns - headers[0].sent_ns, 5_000_000);
    }

    #[tokio::test]
    async fn closed_loop_batches_carry_consecutive_sequences() {
        let (res, headers) = run_against_fake(true, 0).await;
        assert!(res.requests > 5, "{res:?}");
        assert_eq!(res.sent, res.requests * 4);
        assert_eq!(res.matched, res.sent);
        let seqs: Vec<u32> = headers.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, (0..res.sent as u32).collect::<Vec<_>>());
        // The four messages of one request share its stamp.
        assert_eq!(headers[0].sent_ns, headers[3].sent_ns);
    }
}
