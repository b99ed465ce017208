//! `http --mode publish|batch`: REST publish received by MQTT subscribers.
//!
//! Place in the data flow: [`run`] → N MQTT subscribers connect and subscribe to `prefix/p/i`
//! (as in `pairs`) → N HTTP connections open → one probe request checks the endpoint and the
//! token before anything is timed → every HTTP publisher task ([`super::publisher`]) starts at
//! one instant, each POSTing to its own topic → warm-up → measured window → publishers stop →
//! deliveries drain → subscribers stop → stream accounting against each publisher's sent
//! count → [`Report`] with `messages` (publish → MQTT delivery) and `http` (requests).
//!
//! `--rate` counts messages: a batch run sends `--rate / --batch-size` requests per second,
//! spread evenly over the connections.

use super::publisher::{self, HttpPublisherPlan, HttpPublisherResult, HttpRecorders, judge};
use super::{HttpSide, ScenarioError, token_hint};
use crate::cli::{HttpArgs, HttpMode};
use crate::http_client::HttpConn;
use crate::http_client::body::BodyWriter;
use crate::latency::LatencySummary;
use crate::pacing::Pacer;
use crate::report::{GeneratorStats, HttpStats, MessageStats, Report};
use crate::scenario::RunEnv;
use crate::scenario::live::{Live, Recorders};
use crate::scenario::messaging::start_ticker;
use crate::scenario::topology::{Shape, Topology};
use crate::scenario::traffic::{self, SubscriberShared, Timing};
use std::sync::Arc;
use tokio::sync::watch;

/// Runs the publish or batch mode.
pub async fn run(args: &HttpArgs) -> Result<Report, ScenarioError> {
    let m_args = &args.msg;
    let env = RunEnv::new(&m_args.common).await?;
    let side = HttpSide::new(args).await?;
    let n = m_args.common.connections;
    let topo = Topology::build(Shape::Pairs, n, &env.topic_prefix);
    let batch = args.mode == HttpMode::Batch;
    let per_request = args.messages_per_request();
    let mut warnings = Vec::new();
    let broker_before = env.broker.and_then(|b| b.sample(&mut warnings));

    let subs = traffic::open_subscribers(&env, &topo, m_args).await?;
    let mut conns = side.open_many(n, "http publisher").await?;
    if let Some(first) = conns.first_mut() {
        probe(first, batch, &format!("{}/probe", env.topic_prefix), args).await?;
    }
    let broker_connected = env.broker.and_then(|b| b.sample(&mut warnings));

    let clock = env.clock;
    let timing = Timing::new(clock, m_args.tick, m_args.warmup, m_args.duration);
    let live = Arc::new(Live::default());
    let rec = Arc::new(Recorders::default());
    let http_rec = Arc::new(HttpRecorders::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ticker, _ticker_guard) = start_ticker(m_args.rate, clock, m_args.tick, &mut warnings);
    // HTTP publishers are paced by their answers in closed loop: no delivery feedback.
    let shared = SubscriberShared {
        timing,
        clock,
        live: live.clone(),
        rec: rec.clone(),
        feedback: None,
    };
    let sub_tasks = traffic::spawn_subscribers(&topo.subscribers, subs, &shared, &stop_rx);
    let mut pub_tasks = Vec::with_capacity(conns.len());
    for (spec, conn) in topo.publishers.iter().zip(conns) {
        let plan = HttpPublisherPlan {
            id: spec.id,
            topic: spec.topic.clone(),
            batch,
            per_request,
            qos: m_args.qos.as_u8(),
            payload: m_args.payload,
            // Requests of K messages: each connection sends one every n·K/rate seconds,
            // offset by id·K/rate, so the merged requests are evenly spaced at K/rate.
            pacer: Pacer::new(
                timing.start_ns,
                m_args.rate,
                n.saturating_mul(per_request),
                spec.id.saturating_mul(per_request),
            ),
            ticker: ticker.clone(),
            timing,
            request_timeout: args.request_timeout,
            clock,
            live: live.clone(),
            rec: rec.clone(),
            http_rec: http_rec.clone(),
        };
        pub_tasks.push(tokio::spawn(publisher::run(conn, plan)));
    }

    let progress = traffic::spawn_rate_progress(env.quiet, live.clone(), stop_rx.clone());
    let window = traffic::measure_window(&env, &timing, &mut warnings).await;
    let mut results = Vec::with_capacity(pub_tasks.len());
    for t in pub_tasks {
        results.push(t.await.unwrap_or_else(|e| HttpPublisherResult {
            error: Some(format!("http publisher task failed: {e}")),
            ..HttpPublisherResult::default()
        }));
    }
    let sent: Vec<u64> = results.iter().map(|r| r.sent).collect();
    let expected = topo.expected_deliveries(&sent);
    traffic::drain(&live, expected, m_args.drain).await;
    let _ = stop_tx.send(true);
    let sub_results = traffic::join_subscribers(sub_tasks, &mut warnings).await;
    let _ = progress.await;

    let mut m = MessageStats {
        qos: m_args.qos.as_u8(),
        payload_bytes: m_args.payload,
        rate_target: m_args.rate,
        window: 1,
        publishers: u64::from(n),
        subscribers: topo.subscribers.len() as u64,
        warmup_seconds: m_args.warmup.as_secs_f64(),
        duration_seconds: m_args.duration.as_secs_f64(),
        expected_deliveries: expected,
        latency: Recorders::snapshot(&rec.latency).summary(),
        latency_from_write: Recorders::snapshot(&rec.from_write).summary(),
        send_lag: Recorders::snapshot(&rec.send_lag).summary(),
        ..MessageStats::default()
    };
    let mut h = HttpStats {
        mode: args.mode.name().into(),
        url: side.target.to_string(),
        connections: u64::from(n),
        messages_per_request: per_request,
        request_latency: Recorders::snapshot(&http_rec.request).summary(),
        request_service: Recorders::snapshot(&http_rec.service).summary(),
        ..HttpStats::default()
    };
    add_publisher_results(&mut m, &mut h, &results);
    traffic::add_subscriber_results(&mut m, &sub_results, &sent, "subscriber");
    traffic::finish_rates(
        &mut m,
        m_args.qos,
        m_args.rate,
        m_args.duration,
        &mut warnings,
    );
    h.requests_per_sec = h.requests_in_window as f64 / m_args.duration.as_secs_f64();
    if h.failed_requests > 0 {
        warnings.push(format!(
            "{} requests failed ({} messages refused); first: {}",
            h.failed_requests,
            m.rejected,
            h.first_failure.as_deref().unwrap_or("?")
        ));
    }
    if h.request_latency == LatencySummary::default() {
        warnings.push("no request was answered inside the measured window".into());
    }

    let connections = u64::from(n) + topo.subscribers.len() as u64;
    window.stamp(&mut m);
    let generator = GeneratorStats::new(&[window.cpu_ns], window.wall, m_args.common.threads);
    let broker = traffic::broker_stats(
        &env,
        broker_before,
        broker_connected,
        &window,
        connections,
        m.sent_in_window.max(m.delivered_in_window),
    );
    Ok(Report {
        scenario: "http".into(),
        target: env.target.to_string(),
        protocol: env.protocol_name().to_string(),
        connections,
        generator,
        broker,
        messages: Some(m),
        conn: None,
        storm: None,
        http: Some(h),
        warnings,
    })
}

/// Adds the HTTP publishers' results to the message and HTTP statistics.
pub fn add_publisher_results(
    m: &mut MessageStats,
    h: &mut HttpStats,
    results: &[HttpPublisherResult],
) {
    for r in results {
        m.sent += r.sent;
        m.sent_in_window += r.sent_in_window;
        m.rejected += r.rejected;
        m.unacked += r.unanswered_messages;
        m.errors
            .extend(r.error.iter().map(|e| format!("http publisher: {e}")));
        h.requests += r.requests;
        h.requests_in_window += r.requests_in_window;
        h.failed_requests += r.failed_requests;
        h.unanswered += r.unanswered;
        h.matched += r.matched;
        if h.first_failure.is_none() {
            h.first_failure.clone_from(&r.first_failure);
        }
        for (status, count) in &r.statuses {
            match h.failed_statuses.iter_mut().find(|(s, _)| s == status) {
                Some((_, c)) => *c += count,
                None => h.failed_statuses.push((*status, *count)),
            }
        }
    }
    h.failed_statuses.sort_unstable();
}

/// One request before the run, to a topic nobody hears: a wrong token, a missing route or a
/// gateway without the HTTP listener fails here, with the gateway's reason, instead of as a
/// run of failed requests.
async fn probe(
    conn: &mut HttpConn,
    batch: bool,
    topic: &str,
    args: &HttpArgs,
) -> Result<(), ScenarioError> {
    let mut body = BodyWriter::new();
    let path = if batch {
        body.start_batch();
        body.push(topic, b"probe", 0, false);
        body.finish_batch();
        "/v1/publish/batch"
    } else {
        body.single(topic, b"probe", 0, false);
        "/v1/publish"
    };
    let what = format!("probe request POST {path}");
    let (status, answer) =
        tokio::time::timeout(args.request_timeout, conn.post_json(path, body.to_bytes()))
            .await
            .map_err(|_| ScenarioError::Failed(format!("{what}: no answer")))?
            .map_err(|source| ScenarioError::Http {
                what: what.clone(),
                source,
            })?;
    match judge(status, &answer, batch, 1).failure {
        None => Ok(()),
        Some((code, why)) => Err(ScenarioError::Failed(format!(
            "{what} to {}: HTTP {code}: {why}{}",
            args.http_url,
            token_hint(code)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn publisher_results_add_up() {
        let a = HttpPublisherResult {
            requests: 10,
            requests_in_window: 8,
            sent: 100,
            sent_in_window: 80,
            failed_requests: 1,
            rejected: 10,
            statuses: BTreeMap::from([(413, 1)]),
            first_failure: Some("payload_too_large: x".into()),
            matched: 90,
            ..HttpPublisherResult::default()
        };
        let b = HttpPublisherResult {
            requests: 5,
            requests_in_window: 5,
            sent: 50,
            sent_in_window: 50,
            failed_requests: 2,
            rejected: 20,
            statuses: BTreeMap::from([(413, 1), (429, 1)]),
            unanswered: 1,
            unanswered_messages: 10,
            error: Some("timed out".into()),
            ..HttpPublisherResult::default()
        };
        let (mut m, mut h) = (MessageStats::default(), HttpStats::default());
        add_publisher_results(&mut m, &mut h, &[a, b]);
        assert_eq!(
            (m.sent, m.sent_in_window, m.rejected, m.unacked),
            (150, 130, 30, 10)
        );
        assert_eq!(m.errors, vec!["http publisher: timed out".to_string()]);
        assert_eq!(
            (h.requests, h.requests_in_window, h.failed_requests),
            (15, 13, 3)
        );
        assert_eq!((h.unanswered, h.matched), (1, 90));
        assert_eq!(h.failed_statuses, vec![(413, 2), (429, 1)]);
        assert_eq!(h.first_failure.as_deref(), Some("payload_too_large: x"));
    }
}
