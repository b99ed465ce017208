//! The HTTP part of a report: what the `http` scenario measured on the HTTP side (requests,
//! their latency and failures, SSE events), beside the message accounting every message
//! scenario shares.
//!
//! Place in the data flow: `scenario::http` fills an [`HttpStats`] from its HTTP tasks'
//! results and puts it in [`super::Report::http`]; the message counts, loss and
//! publish-to-deliver latency stay in [`super::MessageStats`], so a script reads an HTTP run
//! and an MQTT run the same way.

use super::lat_line;
use crate::latency::LatencySummary;
use serde::Serialize;
use std::fmt::Write;

/// Results of the HTTP side of an `http` run.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct HttpStats {
    /// publish, batch or sse.
    pub mode: String,
    /// The gateway's HTTP listener.
    pub url: String,
    /// HTTP connections (publish, batch) or SSE streams (sse).
    pub connections: u64,
    /// Messages per publish request (1 unless batch).
    pub messages_per_request: u32,
    /// Publish requests sent (warm-up included).
    pub requests: u64,
    /// Of those, stamped inside the measurement window.
    pub requests_in_window: u64,
    /// Publish requests per second over the window.
    pub requests_per_sec: f64,
    /// Requests answered with a status other than 200, or with a per-message error in a
    /// batch answer.
    pub failed_requests: u64,
    /// Those failures by HTTP status: (status, count).
    pub failed_statuses: Vec<(u16, u64)>,
    /// The first failure's explanation from the gateway, if any.
    pub first_failure: Option<String>,
    /// Requests sent but never answered (timeout, or the connection broke).
    pub unanswered: u64,
    /// Sum of the `matched` counts the gateway answered.
    pub matched: u64,
    /// Request → response time, from the intended send time in open loop (so queueing
    /// behind a slow answer shows), from the actual send in closed loop.
    pub request_latency: LatencySummary,
    /// Request → response time from the actual send (the gateway's service time).
    pub request_service: LatencySummary,
    /// SSE events received over all streams (sse).
    pub sse_events: u64,
    /// SSE comment lines (the gateway's heartbeats).
    pub sse_heartbeats: u64,
    /// SSE events whose data was not a message of ours (bad JSON or payload).
    pub sse_bad_events: u64,
}

impl HttpStats {
    /// Appends the text lines of the HTTP part.
    pub fn write_text(&self, o: &mut String) {
        let unit = if self.mode == "sse" {
            "streams"
        } else {
            "connections"
        };
        let per_request = if self.mode == "batch" {
            format!(", {} msg/request", self.messages_per_request)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  http             {}{per_request}, {} {unit} → {}",
            self.mode, self.connections, self.url
        );
        if self.mode == "sse" {
            let _ = writeln!(
                o,
                "  sse              events {}  heartbeats {}  bad events {}",
                self.sse_events, self.sse_heartbeats, self.sse_bad_events
            );
            return;
        }
        let _ = writeln!(
            o,
            "  requests         sent {} ({:.0} req/s in the window)  failed {}  unanswered {}  matched {}",
            self.requests,
            self.requests_per_sec,
            self.failed_requests,
            self.unanswered,
            self.matched
        );
        for (status, n) in &self.failed_statuses {
            let _ = writeln!(o, "  failed           {n} × HTTP {status}");
        }
        if let Some(f) = &self.first_failure {
            let _ = writeln!(o, "  first failure    {f}");
        }
        lat_line(o, "request", &self.request_latency);
        lat_line(o, "request service", &self.request_service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_the_mode_and_its_figures() {
        let mut o = String::new();
        HttpStats {
            mode: "batch".into(),
            url: "http://127.0.0.1:8080".into(),
            connections: 4,
            messages_per_request: 10,
            requests: 500,
            requests_per_sec: 100.0,
            failed_requests: 2,
            failed_statuses: vec![(413, 2)],
            first_failure: Some("payload_too_large: body".into()),
            matched: 4_980,
            ..HttpStats::default()
        }
        .write_text(&mut o);
        assert!(o.contains("batch, 10 msg/request, 4 connections"), "{o}");
        assert!(
            o.contains("sent 500 (100 req/s in the window)  failed 2"),
            "{o}"
        );
        assert!(o.contains("2 × HTTP 413"), "{o}");
        assert!(o.contains("request service"), "{o}");

        let mut o = String::new();
        HttpStats {
            mode: "sse".into(),
            connections: 3,
            sse_events: 30,
            sse_heartbeats: 1,
            ..HttpStats::default()
        }
        .write_text(&mut o);
        assert!(o.contains("sse, 3 streams"), "{o}");
        assert!(o.contains("events 30  heartbeats 1  bad events 0"), "{o}");
        assert!(!o.contains("requests"), "{o}");
    }
}
