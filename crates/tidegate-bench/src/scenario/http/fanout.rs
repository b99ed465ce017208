//! `http --mode sse`: MQTT publishers fanned out to SSE streams.
//!
//! Place in the data flow: [`run`] → M SSE streams open (`GET /v1/subscribe?filter=prefix/f/+`)
//! → P MQTT publishers connect (`prefix/f/<i>`) → readiness: a probe message on
//! `prefix/f/ready` until every stream has seen it (so no message of the run is published
//! before a stream's subscription is live) → the timed run with the MQTT publisher tasks of
//! the other scenarios ([`crate::scenario::publisher`]) and one [`super::sse_reader`] per
//! stream → drain → stream accounting (P × M streams) → [`Report`].
//!
//! Closed-loop QoS 0 is paced by stream 0's deliveries, as `fanout` is by its subscriber 0.

use super::sse_reader::{self, SseReaderResult, SseStream};
use super::{HttpSide, ScenarioError, token_hint};
use crate::cli::HttpArgs;
use crate::client::Connection;
use crate::http_client::HttpError;
use crate::http_client::target::encode_query_value;
use crate::pacing::Pacer;
use crate::report::{GeneratorStats, HttpStats, MessageStats, Report};
use crate::scenario::RunEnv;
use crate::scenario::live::{Live, Recorders};
use crate::scenario::messaging::start_ticker;
use crate::scenario::publisher::{self, PublisherPlan, PublisherResult, StreamOut};
use crate::scenario::topology::{PublisherSpec, Shape, SubscriberSpec, Topology};
use crate::scenario::traffic::{self, SubscriberShared, Timing};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::{Packet, Publish, PublishProperties, QoS, Utf8};
use tokio::sync::watch;

/// How long a stream is given to show the probe before it is sent again.
const PROBE_WAIT: Duration = Duration::from_millis(200);

/// The topology of an SSE run: `publishers` MQTT publishers on `prefix/f/<i>`, `streams`
/// streams on `prefix/f/+` hearing all of them, stream 0 pacing closed-loop QoS 0.
pub fn sse_topology(publishers: u32, streams: u32, prefix: &str) -> Topology {
    Topology {
        shape: Shape::Fanout,
        publishers: (0..publishers)
            .map(|id| PublisherSpec {
                id,
                topic: format!("{prefix}/f/{id}"),
            })
            .collect(),
        subscribers: (0..streams)
            .map(|id| SubscriberSpec {
                id,
                filter: format!("{prefix}/f/+"),
                hears: 0..publishers,
                paces: id == 0,
            })
            .collect(),
    }
}

/// Runs the sse mode.
pub async fn run(args: &HttpArgs) -> Result<Report, ScenarioError> {
    let m_args = &args.msg;
    let env = RunEnv::new(&m_args.common).await?;
    let side = HttpSide::new(args).await?;
    let m = m_args.common.connections;
    let topo = sse_topology(args.publishers, m, &env.topic_prefix);
    let filter = format!("{}/f/+", env.topic_prefix);
    let probe_topic: Arc<str> = Arc::from(format!("{}/f/ready", env.topic_prefix));
    let mut warnings = Vec::new();
    let broker_before = env.broker.and_then(|b| b.sample(&mut warnings));

    let path = format!("/v1/subscribe?filter={}", encode_query_value(&filter));
    let mut streams = Vec::with_capacity(m as usize);
    for (i, conn) in side
        .open_many(m, "sse stream")
        .await?
        .into_iter()
        .enumerate()
    {
        streams.push(open_stream(conn, &path, args.request_timeout, i).await?);
    }
    let mut pubs = traffic::open_publishers(&env, &topo, m_args).await?;
    if let Some(first) = pubs.first_mut() {
        await_ready(first, &mut streams, &probe_topic, env.connect_timeout).await?;
    }
    let broker_connected = env.broker.and_then(|b| b.sample(&mut warnings));

    let clock = env.clock;
    let timing = Timing::new(clock, m_args.tick, m_args.warmup, m_args.duration);
    let live = Arc::new(Live::default());
    let rec = Arc::new(Recorders::default());
    let feedback = traffic::feedback_for(m_args.rate, m_args.qos, topo.publishers.len());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ticker, _ticker_guard) = start_ticker(m_args.rate, clock, m_args.tick, &mut warnings);
    let shared = SubscriberShared {
        timing,
        clock,
        live: live.clone(),
        rec: rec.clone(),
        feedback: feedback.clone(),
    };
    let readers: Vec<_> = topo
        .subscribers
        .iter()
        .zip(streams)
        .map(|(spec, stream)| {
            tokio::spawn(sse_reader::run(
                stream,
                shared.plan(spec),
                probe_topic.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let publishers = topo.publishers.len() as u32;
    let mut pub_tasks = Vec::with_capacity(pubs.len());
    for (spec, conn) in topo.publishers.iter().zip(pubs) {
        let plan = PublisherPlan {
            streams: vec![StreamOut {
                id: spec.id,
                topic: Utf8::try_from(spec.topic.as_str())
                    .map_err(|e| ScenarioError::Failed(e.to_string()))?,
            }],
            qos: m_args.qos,
            payload: m_args.payload,
            pacer: Pacer::new(timing.start_ns, m_args.rate, publishers, spec.id),
            tick: m_args.tick,
            ticker: ticker.clone(),
            window: m_args.window,
            start_ns: timing.start_ns,
            warmup_end_ns: timing.warmup_end_ns,
            end_ns: timing.end_ns,
            max_messages: None,
            drain: m_args.drain,
            clock,
            live: live.clone(),
            rec: rec.clone(),
            feedback: feedback
                .as_ref()
                .and_then(|f| f.get(spec.id as usize).cloned()),
        };
        pub_tasks.push(tokio::spawn(publisher::run(conn, plan)));
    }

    let progress = traffic::spawn_rate_progress(env.quiet, live.clone(), stop_rx.clone());
    let window = traffic::measure_window(&env, &timing, &mut warnings).await;
    let mut pub_results = Vec::with_capacity(pub_tasks.len());
    for t in pub_tasks {
        pub_results.push(t.await.unwrap_or_else(|e| PublisherResult {
            error: Some(format!("publisher task failed: {e}")),
            ..PublisherResult::default()
        }));
    }
    let sent: Vec<u64> = pub_results.iter().map(|r| r.sent).collect();
    let expected = topo.expected_deliveries(&sent);
    traffic::drain(&live, expected, m_args.drain).await;
    let _ = stop_tx.send(true);
    let mut reader_results: Vec<SseReaderResult> = Vec::with_capacity(readers.len());
    for r in readers {
        match r.await {
            Ok(r) => reader_results.push(r),
            Err(e) => warnings.push(format!("sse reader task failed: {e}")),
        }
    }
    let _ = progress.await;

    let mut msg = MessageStats {
        qos: m_args.qos.as_u8(),
        payload_bytes: m_args.payload,
        rate_target: m_args.rate,
        window: m_args.window,
        publishers: topo.publishers.len() as u64,
        subscribers: u64::from(m),
        warmup_seconds: m_args.warmup.as_secs_f64(),
        duration_seconds: m_args.duration.as_secs_f64(),
        expected_deliveries: expected,
        latency: Recorders::snapshot(&rec.latency).summary(),
        latency_from_write: Recorders::snapshot(&rec.from_write).summary(),
        send_lag: Recorders::snapshot(&rec.send_lag).summary(),
        ..MessageStats::default()
    };
    for r in &pub_results {
        msg.sent += r.sent;
        msg.sent_in_window += r.sent_in_window;
        msg.rejected += r.rejected;
        msg.unacked += r.unacked;
        msg.window_resets += r.window_resets;
        msg.errors
            .extend(r.error.iter().map(|e| format!("publisher: {e}")));
    }
    let mut h = HttpStats {
        mode: args.mode.name().into(),
        url: side.target.to_string(),
        connections: u64::from(m),
        messages_per_request: 1,
        ..HttpStats::default()
    };
    let outcomes: Vec<_> = reader_results
        .into_iter()
        .map(|r| {
            h.sse_events += r.account.events;
            h.sse_heartbeats += r.account.heartbeats;
            h.sse_bad_events += r.account.bad_events;
            (r.account.state, r.error)
        })
        .collect();
    traffic::add_subscriber_results(&mut msg, &outcomes, &sent, "sse stream");
    traffic::finish_rates(
        &mut msg,
        m_args.qos,
        m_args.rate,
        m_args.duration,
        &mut warnings,
    );
    if h.sse_bad_events > 0 {
        warnings.push(format!(
            "{} SSE events were not readable messages",
            h.sse_bad_events
        ));
    }

    let connections = u64::from(m) + topo.publishers.len() as u64;
    window.stamp(&mut msg);
    let generator = GeneratorStats::new(&[window.cpu_ns], window.wall, m_args.common.threads);
    let broker = traffic::broker_stats(
        &env,
        broker_before,
        broker_connected,
        &window,
        connections,
        msg.sent_in_window.max(msg.delivered_in_window),
    );
    Ok(Report {
        scenario: "http".into(),
        target: env.target.to_string(),
        protocol: env.protocol_name().to_string(),
        connections,
        generator,
        broker,
        messages: Some(msg),
        conn: None,
        storm: None,
        http: Some(h),
        warnings,
    })
}

/// Sends the subscribe request on `conn` and keeps the stream.
async fn open_stream(
    mut conn: crate::http_client::HttpConn,
    path: &str,
    timeout: Duration,
    i: usize,
) -> Result<SseStream, ScenarioError> {
    let what = format!("sse stream {i}");
    let resp = tokio::time::timeout(timeout, conn.get_stream(path))
        .await
        .map_err(|_| ScenarioError::Failed(format!("{what}: no answer to GET {path}")))?
        .map_err(|source| match source {
            HttpError::Status { status, .. } => {
                ScenarioError::Failed(format!("{what}: {source}{}", token_hint(status)))
            }
            source => ScenarioError::Http { what, source },
        })?;
    Ok(SseStream::new(conn, resp.into_body()))
}

/// Publishes the probe (QoS 0) on `conn` until every stream has seen it.
async fn await_ready(
    conn: &mut Connection,
    streams: &mut [SseStream],
    probe_topic: &str,
    limit: Duration,
) -> Result<(), ScenarioError> {
    let topic = Utf8::try_from(probe_topic).map_err(|e| ScenarioError::Failed(e.to_string()))?;
    let deadline = Instant::now() + limit;
    let fail = |e: String| ScenarioError::Failed(format!("sse readiness probe: {e}"));
    loop {
        conn.queue(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.clone(),
            packet_id: None,
            payload: Bytes::from_static(b"ready"),
            properties: PublishProperties::default(),
        }))
        .map_err(|e| fail(e.to_string()))?;
        conn.flush().await.map_err(|e| fail(e.to_string()))?;
        for s in streams.iter_mut().filter(|s| !s.ready()) {
            // A stream that has it buffered returns at once; the wait only bounds a stream
            // that did not get it (the probe is QoS 0: it is sent again below).
            let wait = PROBE_WAIT.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            s.wait_for_topic(probe_topic, wait)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        let missing = streams.iter().filter(|s| !s.ready()).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "{missing} of {} streams did not receive a message published on {probe_topic} \
                 within {limit:?}",
                streams.len()
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_hears_every_publisher() {
        let t = sse_topology(2, 3, "x");
        assert_eq!(t.publishers[1].topic, "x/f/1");
        assert!(
            t.subscribers
                .iter()
                .all(|s| s.filter == "x/f/+" && s.hears == (0..2))
        );
        assert_eq!(t.subscribers.iter().filter(|s| s.paces).count(), 1);
        assert_eq!(t.expected_deliveries(&[10, 5]), 45);
        assert_eq!(t.connections(), 5);
    }
}
