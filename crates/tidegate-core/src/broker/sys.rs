//! `$SYS/broker/...` statistics, per tenant (issue 7: "`$SYS`-style statistics a client can read
//! are its own tenant's").
//!
//! Place in the data flow: `timer (TimerEvent::SysStats, every BrokerConfig::sys_interval) ->
//! on_sys_timer -> per tenant with a session: figures -> SysTopics (latest values) -> fan_out
//! in that tenant's router -> deliver (online subscribers)`, and `SUBSCRIBE $SYS/... ->
//! replay_retained -> SysTopics::matching`.
//!
//! # Topics
//! Mosquitto's names where one applies, so existing dashboards work:
//! `$SYS/broker/version` ("tidegate version X.Y.Z"), `$SYS/broker/uptime` ("N seconds"),
//! `$SYS/broker/clients/connected`, `$SYS/broker/clients/disconnected`,
//! `$SYS/broker/clients/total` (sessions, online or not), `$SYS/broker/subscriptions/count`,
//! `$SYS/broker/retained messages/count`, `$SYS/broker/messages/received` and
//! `$SYS/broker/messages/sent`; plus Tidegate's own `$SYS/broker/quota/refused` (every quota
//! refusal of the tenant). Every figure is the tenant's own. Differences from Mosquitto, by
//! choice: `messages/received` and `messages/sent` count application messages (PUBLISH in,
//! PUBLISH out, resends excluded), which is what Mosquitto calls `publish/messages/...` —
//! per-packet counts are not kept per tenant; the uptime counts from the first event the
//! broker handled (the restore of a durable broker, else the first socket), the engine having
//! no clock of its own.
//!
//! # Design, and why
//! - **Only on the timer**: nothing is computed or allocated per packet. The timer is armed
//!   when a socket opens (or a durable broker restores sessions) and is re-armed only while a
//!   connection or a session exists, so an idle broker holds no deadline at all.
//! - **Published inside each tenant**, through the tenant's own router with no publisher,
//!   so a `$SYS/#` subscriber of tenant A sees A's figures and nothing of B, and `#` / `+`
//!   never match them (the router's `$` rule). Clients still may not publish under `$SYS`.
//! - **Only changed values are published** (Mosquitto does the same), the uptime changing at
//!   every tick; the version goes out once per tenant.
//! - **Kept outside the retained store, never persisted**: the latest values of each tenant
//!   live in a small [`SysTopics`] list and are replayed to a new `$SYS` subscription next to
//!   the retained messages. So they never reach the store, never count against a tenant's
//!   retained quota nor in `retained messages/count`, and are rebuilt after a restart within
//!   one interval. They are not counted as received messages either (the server made them).
//! - **Online subscribers only**: a figure is a snapshot, soon stale; queueing it for an
//!   offline session (and writing it to the store for a durable one) would only deliver old
//!   numbers. A reconnecting client gets the next values within one interval.

use super::Broker;
use super::tenant::TenantIdx;
use super::timers::{TimerEvent, TimerKey};
use crate::Message;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use tidegate_protocol::{PublishProperties, QoS, Utf8, topic};

/// The version string, as Mosquitto words its own.
const VERSION: &str = concat!("tidegate version ", env!("CARGO_PKG_VERSION"));

/// The latest `$SYS` values of one tenant, replayed to new `$SYS` subscriptions. About ten
/// entries, so a list is smaller and faster than a topic tree.
#[derive(Debug, Default)]
pub(super) struct SysTopics {
    messages: Vec<Arc<Message>>,
}

impl SysTopics {
    /// The current value of `topic`.
    fn get(&self, topic_name: &str) -> Option<&Arc<Message>> {
        self.messages.iter().find(|m| &*m.topic == topic_name)
    }

    /// Replaces (or adds) the value of `msg`'s topic.
    fn set(&mut self, msg: Arc<Message>) {
        match self.messages.iter_mut().find(|m| m.topic == msg.topic) {
            Some(slot) => *slot = msg,
            None => self.messages.push(msg),
        }
    }

    /// Appends the values whose topic matches `filter` (a non-shared filter) to `out`.
    pub(super) fn matching(&self, filter: &str, out: &mut Vec<Arc<Message>>) {
        // Only a filter naming `$SYS` can match a `$SYS` topic: skip the scan for the rest.
        if !filter.starts_with("$SYS") {
            return;
        }
        out.extend(
            self.messages
                .iter()
                .filter(|m| topic::matches(filter, &m.topic))
                .cloned(),
        );
    }

    /// Forgets every value (the tenant's sessions were dropped).
    pub(super) fn clear(&mut self) {
        self.messages = Vec::new();
    }
}

impl Broker {
    /// Records the broker's first event (the start of the uptime) and arms the statistics
    /// timer if it is on and not armed. Called when a socket opens and after a restore.
    pub(super) fn wake_sys(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        if self.sys_timer.is_none() && !self.config.sys_interval.is_zero() {
            self.sys_timer = self.arm(now, self.config.sys_interval, TimerEvent::SysStats);
        }
    }

    /// The statistics timer fired: publish each tenant's figures where it has a session, and
    /// re-arm while anyone (a connection or a session) is left to read them.
    pub(super) fn on_sys_timer(&mut self, now: Instant, key: TimerKey) {
        if self.sys_timer != Some(key) {
            return;
        }
        self.sys_timer = None;
        for idx in 0..self.tenants.len() {
            let idx = TenantIdx(u32::try_from(idx).unwrap_or(u32::MAX));
            if !self.tenant(idx).by_client_id.is_empty() {
                self.publish_sys(now, idx);
            }
        }
        if !self.sessions.is_empty() || !self.conns.is_empty() {
            self.wake_sys(now);
        }
    }

    /// Publishes the figures of tenant `idx` that changed since its last round.
    fn publish_sys(&mut self, now: Instant, idx: TenantIdx) {
        for (name, value) in self.sys_figures(now, idx) {
            let topic = Utf8::from_static(name);
            let sys = &mut self.tenant_mut(idx).sys;
            if sys
                .get(&topic)
                .is_some_and(|m| m.payload == value.as_bytes())
            {
                continue;
            }
            let msg = Arc::new(Message {
                topic,
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: PublishProperties::default(),
                expires_at: None,
                publisher: None,
                // Not a client's message: kept out of the publish-to-deliver latency.
                received: None,
            });
            sys.set(msg.clone());
            self.fan_out(now, idx, &msg, true);
        }
    }

    /// The `$SYS` topics of tenant `idx` and their current values.
    fn sys_figures(&self, now: Instant, idx: TenantIdx) -> [(&'static str, String); 10] {
        let t = self.tenant(idx);
        let uptime = self
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_secs());
        let sessions = t.client_sessions();
        let q = &t.counters.quota;
        let refused = [
            q.connections,
            q.sessions,
            q.subscriptions,
            q.retained_messages,
            q.retained_bytes,
            q.client_rate,
            q.tenant_rate,
            q.queued_messages,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n));
        [
            ("$SYS/broker/version", VERSION.to_owned()),
            ("$SYS/broker/uptime", format!("{uptime} seconds")),
            ("$SYS/broker/clients/connected", t.connections.to_string()),
            (
                "$SYS/broker/clients/disconnected",
                sessions.saturating_sub(t.connections).to_string(),
            ),
            ("$SYS/broker/clients/total", sessions.to_string()),
            (
                "$SYS/broker/subscriptions/count",
                t.router.len().to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                t.retained.len().to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                t.counters.messages_in.to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                t.counters.messages_out.to_string(),
            ),
            ("$SYS/broker/quota/refused", refused.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::BrokerConfig;
    use std::time::Duration;

    fn sys_values(h: &mut H, conn: super::super::ConnId) -> Vec<(String, String)> {
        h.publishes(conn)
            .into_iter()
            .map(|p| {
                (
                    p.topic.to_string(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn every_figure_goes_out_once_then_only_changes() {
        let mut h = H::new();
        let sub = h.join(v5("s"));
        h.subscribe(sub, "$SYS/#", QoS::AtMostOnce);
        h.advance(Duration::from_secs(10));
        let first = sys_values(&mut h, sub);
        let topics: Vec<&str> = first.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics.len(), 10);
        assert!(topics.contains(&"$SYS/broker/version"));
        assert!(first.contains(&("$SYS/broker/uptime".into(), "10 seconds".into())));
        assert!(first.contains(&("$SYS/broker/clients/connected".into(), "1".into())));
        assert!(first.contains(&("$SYS/broker/subscriptions/count".into(), "1".into())));
        // Only the uptime and the sent count (the ten PUBLISH above) changed.
        h.advance(Duration::from_secs(10));
        assert_eq!(
            sys_values(&mut h, sub),
            vec![
                ("$SYS/broker/uptime".into(), "20 seconds".into()),
                ("$SYS/broker/messages/sent".into(), "10".into()),
            ]
        );
    }

    #[test]
    fn the_timer_stops_when_nobody_is_left_and_restarts_on_open() {
        let mut h = H::with(BrokerConfig {
            sys_interval: Duration::from_secs(5),
            ..BrokerConfig::default()
        });
        assert_eq!(h.b.poll_timeout(), None);
        let c = h.join(v5("c"));
        assert_eq!(h.b.poll_timeout(), Some(h.now + Duration::from_secs(5)));
        h.drop_conn(c);
        h.advance(Duration::from_secs(5));
        assert_eq!(h.b.poll_timeout(), None, "no session, no connection");
        h.open();
        assert_eq!(h.b.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    }

    #[test]
    fn matching_only_scans_for_sys_filters() {
        let mut sys = SysTopics::default();
        let msg = |topic: &'static str| {
            Arc::new(Message {
                topic: Utf8::from_static(topic),
                payload: Bytes::from_static(b"1"),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: PublishProperties::default(),
                expires_at: None,
                publisher: None,
                received: None,
            })
        };
        sys.set(msg("$SYS/broker/uptime"));
        sys.set(msg("$SYS/broker/clients/total"));
        sys.set(msg("$SYS/broker/uptime"));
        let mut out = Vec::new();
        for filter in ["#", "+/broker/uptime", "a/#"] {
            sys.matching(filter, &mut out);
        }
        assert!(out.is_empty());
        sys.matching("$SYS/broker/+", &mut out);
        assert_eq!(out.len(), 1);
        sys.matching("$SYS/#", &mut out);
        assert_eq!(out.len(), 3);
        sys.clear();
        assert!(sys.get("$SYS/broker/uptime").is_none());
    }
}
