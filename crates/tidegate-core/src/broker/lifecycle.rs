//! How connections and sessions end: DISCONNECT from the client, abnormal closes (socket gone,
//! decode error, protocol violation, takeover, shutdown), connect and keep-alive timeouts, wills
//! (at once or after their delay) and session expiry.
//!
//! Place in the data flow: every path that forgets a connection goes through
//! [`Broker::end_connection`], which detaches the session and decides its fate (ends now when
//! its expiry interval is 0, else waits for the expiry timer) and the will's (dropped, published
//! now, or parked in the session until the Will Delay Interval or the session's end, whichever
//! comes first [MQTT-3.1.3-9]).

use super::session::PendingWill;
use super::stats::DisconnectSide;
use super::tenant::TenantIdx;
use super::timers::{TimerEvent, TimerKey};
use super::{Broker, ConnId, Output, Phase};
use crate::Message;
use crate::router::SessionKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::{Disconnect, Packet, ReasonCode, Will};
use tidegate_store::StoreOp;

/// What becomes of the will of a connection that ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WillFate {
    /// Abnormal end: publish it (after its delay).
    Publish,
    /// DISCONNECT 0x00 (or any 3.1.1 DISCONNECT): drop it [MQTT-3.14.4-3].
    Discard,
}

impl Broker {
    /// Forgets `conn`, emitting `Close` when `close` (not when the shell reported the socket
    /// gone), detaches its session and handles the will per `fate`.
    pub(super) fn end_connection(
        &mut self,
        now: Instant,
        conn: ConnId,
        fate: WillFate,
        close: bool,
    ) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if close {
            self.emit(Output::Close { conn }, None);
        }
        let st = match c.phase {
            Phase::Connecting { timer } => {
                if let Some(t) = timer {
                    self.timers.cancel(t);
                }
                return;
            }
            Phase::Connected(st) => st,
        };
        if let Some(t) = st.keep_alive_timer {
            self.timers.cancel(t);
        }
        if let Some(t) = st.policy.as_ref().and_then(|p| p.expiry_timer) {
            self.timers.cancel(t);
        }
        let tenant = st.tenant;
        let t = self.tenant_mut(tenant);
        if c.info.internal {
            t.internal = t.internal.saturating_sub(1);
        } else {
            t.connections = t.connections.saturating_sub(1);
        }
        let key = st.session;
        let will = match fate {
            WillFate::Publish => st.will,
            WillFate::Discard => None,
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.conn == Some(conn) {
            session.conn = None;
        }
        let expiry = session.expiry;
        tracing::debug!(
            conn = conn.0,
            client_id = &*session.client_id,
            listener = &*c.info.listener,
            session_expiry = expiry,
            "connection ended"
        );
        if expiry == 0 {
            // The session ends with the connection, so the will cannot wait for a delay
            // ("or the Session ends, whichever happens first").
            self.end_session(now, key);
            if let Some(will) = will {
                self.publish_will(now, tenant, *will, None);
            }
            return;
        }
        self.arm_session_expiry(now, key, expiry);
        if let Some(will) = will {
            match will.properties.will_delay_interval.unwrap_or(0) {
                0 => self.publish_will(now, tenant, *will, Some(key)),
                delay => {
                    let timer = self.arm(
                        now,
                        Duration::from_secs(u64::from(delay)),
                        TimerEvent::WillDelay(key),
                    );
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.pending_will = Some(PendingWill { will, timer });
                    }
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&key)
            && s.durable
        {
            // Offline: the queue lives in the store only, memory keeps its positions.
            s.queue.set_memory_window(0);
            s.queue.spill_memory();
        }
        self.persist_session(key);
    }

    /// Removes a session with its subscriptions and queue; a will still waiting for its delay
    /// is published now, since the session's end is one of its two triggers.
    pub(super) fn end_session(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        tracing::debug!(client_id = &*s.client_id, "session ended");
        let t = self.tenant_mut(s.tenant);
        if t.by_client_id.get(&s.client_id) == Some(&key) {
            t.by_client_id.remove(&s.client_id);
        }
        for filter in s.subscriptions.keys() {
            t.router.unsubscribe(key, filter);
        }
        if let Some(t) = s.expiry_timer {
            self.timers.cancel(t);
        }
        if s.durable {
            self.store(StoreOp::DeleteSession(s.store_id.clone()));
        }
        if let Some(pending) = s.pending_will {
            if let Some(t) = pending.timer {
                self.timers.cancel(t);
            }
            self.publish_will(now, s.tenant, *pending.will, None);
        }
    }

    /// Publishes a will in `tenant` as an application message from `publisher` (its session,
    /// if it still exists, so No Local applies). Its topic passed the ACL at CONNECT.
    pub(super) fn publish_will(
        &mut self,
        now: Instant,
        tenant: TenantIdx,
        will: Will,
        publisher: Option<SessionKey>,
    ) {
        tracing::debug!(topic = will.topic.as_str(), "publishing will");
        let msg = Message::from_will(will, now, publisher);
        self.route_message(now, tenant, Arc::new(msg));
    }

    /// DISCONNECT from the client.
    pub(super) fn on_disconnect(&mut self, now: Instant, conn: ConnId, d: Disconnect) {
        let Some(c) = self.connected(conn) else {
            return;
        };
        let (v5, key, expiry_zero) = (c.version.is_v5(), c.session, c.connect_expiry_zero);
        if v5 && let Some(requested) = d.properties.session_expiry_interval {
            if expiry_zero && requested != 0 {
                return self.violation(
                    now,
                    conn,
                    ReasonCode::ProtocolError,
                    "[MQTT-3.14.2-2] DISCONNECT sets a session expiry after CONNECT had 0",
                );
            }
            let capped = requested.min(self.config.max_session_expiry);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.expiry = capped;
            }
        }
        self.count_disconnect(DisconnectSide::Client, d.reason_code);
        let fate = if v5 && d.reason_code != ReasonCode::Success {
            WillFate::Publish
        } else {
            WillFate::Discard
        };
        self.end_connection(now, conn, fate, true);
    }

    pub(super) fn on_connect_timeout(&mut self, conn: ConnId, key: TimerKey) {
        if let Some(c) = self.conns.get(&conn)
            && matches!(c.phase, Phase::Connecting { timer: Some(t) } if t == key)
        {
            tracing::debug!(conn = conn.0, "no CONNECT in time");
            self.drop_pending(conn);
        }
    }

    /// The keep-alive entry fired: close if the client was silent for 1.5 × keep alive,
    /// otherwise re-arm at the real deadline.
    pub(super) fn on_keep_alive_timer(&mut self, now: Instant, conn: ConnId, key: TimerKey) {
        let Some(c) = self.connected_mut(conn) else {
            return;
        };
        if c.keep_alive_timer != Some(key) {
            return;
        }
        c.keep_alive_timer = None;
        let Some(deadline) = c
            .keep_alive_timeout
            .and_then(|t| c.last_activity.checked_add(t))
        else {
            return;
        };
        if deadline > now {
            let t = self.timers.insert(deadline, TimerEvent::KeepAlive(conn));
            if let Some(c) = self.connected_mut(conn) {
                c.keep_alive_timer = Some(t);
            }
            return;
        }
        tracing::debug!(conn = conn.0, "keep alive timeout");
        self.count_disconnect(DisconnectSide::Server, ReasonCode::KeepAliveTimeout);
        if self.connected(conn).is_some_and(|c| c.version.is_v5()) {
            self.send(
                conn,
                Packet::Disconnect(Disconnect::with_reason(ReasonCode::KeepAliveTimeout)),
            );
        }
        self.end_connection(now, conn, WillFate::Publish, true);
    }

    pub(super) fn on_will_delay(&mut self, now: Instant, key: SessionKey, timer: TimerKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.pending_will.as_ref().and_then(|p| p.timer) != Some(timer) {
            return;
        }
        let tenant = s.tenant;
        if let Some(pending) = s.pending_will.take() {
            self.publish_will(now, tenant, *pending.will, Some(key));
            self.persist_session(key);
        }
    }

    pub(super) fn on_session_expiry(&mut self, now: Instant, key: SessionKey, timer: TimerKey) {
        let due = self
            .sessions
            .get(&key)
            .is_some_and(|s| s.conn.is_none() && s.expiry_timer == Some(timer));
        if due {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.expiry_timer = None;
            }
            self.end_session(now, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConnId;
    use super::super::testkit::*;
    use crate::BrokerConfig;
    use std::time::Duration;
    use tidegate_protocol::{
        DecodeError, Disconnect, DisconnectProperties, Packet, QoS, ReasonCode, Utf8,
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A watcher subscribed to `will/#`.
    fn watcher(h: &mut H) -> ConnId {
        let w = h.join(v5("watcher"));
        h.subscribe(w, "will/#", QoS::AtMostOnce);
        w
    }

    fn with_will(
        mut c: tidegate_protocol::Connect,
        delay: Option<u32>,
    ) -> tidegate_protocol::Connect {
        c.will = Some(will("will/x", "gone", delay));
        c
    }

    fn disconnect_with_expiry(reason: ReasonCode, expiry: u32) -> Packet {
        Packet::Disconnect(Disconnect {
            reason_code: reason,
            properties: DisconnectProperties {
                session_expiry_interval: Some(expiry),
                ..DisconnectProperties::default()
            },
        })
    }

    #[test]
    fn keep_alive_is_enforced_at_one_and_a_half_times() {
        // Without the `$SYS` timer, whose own life is tested in `sys`.
        let mut h = H::with(BrokerConfig {
            sys_interval: Duration::ZERO,
            ..BrokerConfig::default()
        });
        let mut c = v5("c");
        c.keep_alive = 10;
        let conn = h.join(c);
        let mut c3 = v3("d");
        c3.keep_alive = 10;
        let conn3 = h.join(c3);
        h.advance(secs(14));
        // Activity pushes the deadline; the timer entry is re-armed when it fires early.
        h.send(conn, Packet::PingReq);
        assert_eq!(h.take(conn), vec![Packet::PingResp]);
        h.advance(Duration::from_millis(1000));
        assert!(!h.is_closed(conn));
        assert!(h.is_closed(conn3), "3.1.1 client silent for 15 s");
        assert_eq!(h.take(conn3), vec![]);
        h.advance(secs(13));
        assert!(!h.is_closed(conn));
        h.advance(secs(1));
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::KeepAliveTimeout)]);
        assert!(h.is_closed(conn));
        // Keep alive 0: never times out, and no timer is left behind.
        let idle = h.join(v5("idle"));
        assert_eq!(h.b.poll_timeout(), None);
        h.advance(secs(100_000));
        assert!(!h.is_closed(idle));
    }

    #[test]
    fn keep_alive_timeout_publishes_the_will() {
        let mut h = H::new();
        let w = watcher(&mut h);
        let mut c = with_will(v5("c"), None);
        c.keep_alive = 2;
        h.join(c);
        h.advance(secs(3));
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);
    }

    #[test]
    fn will_on_abnormal_close_not_on_normal_disconnect() {
        let mut h = H::new();
        let w = watcher(&mut h);
        let conn = h.join(with_will(v5("a"), None));
        h.drop_conn(conn);
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);

        let conn = h.join(with_will(v5("b"), None));
        h.send(conn, disconnect(ReasonCode::Success));
        assert!(h.is_closed(conn));
        assert_eq!(h.publishes(w), vec![]);

        let conn = h.join(with_will(v5("c"), None));
        h.send(conn, disconnect(ReasonCode::DisconnectWithWillMessage));
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);

        let conn = h.join(with_will(v3("d"), None));
        h.send(conn, disconnect(ReasonCode::Success));
        assert_eq!(h.publishes(w), vec![]);

        // Decode errors and protocol violations are abnormal too.
        let conn = h.join(with_will(v5("e"), None));
        h.b.handle_decode_error(h.now, conn, &DecodeError::Malformed("bad"));
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::MalformedPacket)]);
        assert!(h.is_closed(conn));
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);
        let conn = h.join(with_will(v3("f"), None));
        h.b.handle_decode_error(h.now, conn, &DecodeError::Malformed("bad"));
        assert_eq!(h.take(conn), vec![]);
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);
    }

    #[test]
    fn delayed_will_is_published_after_its_delay_or_cancelled_by_reconnect() {
        let mut h = H::new();
        let w = watcher(&mut h);
        let conn = h.join(with_will(v5_persistent("a", true), Some(10)));
        h.drop_conn(conn);
        h.advance(secs(9));
        assert_eq!(h.publishes(w), vec![]);
        h.advance(secs(1));
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);

        let conn = h.join(with_will(v5_persistent("b", true), Some(10)));
        h.drop_conn(conn);
        h.advance(secs(5));
        h.join(v5_persistent("b", false));
        h.advance(secs(60));
        assert_eq!(h.publishes(w), vec![]);
    }

    #[test]
    fn session_expiry_removes_the_session_and_publishes_a_pending_will() {
        let mut h = H::new();
        let w = watcher(&mut h);
        let mut c = with_will(v5("a"), Some(600));
        c.properties.session_expiry_interval = Some(30);
        let conn = h.join(c);
        h.subscribe(conn, "x", QoS::AtLeastOnce);
        assert_eq!(h.b.stats().sessions, 2);
        h.drop_conn(conn);
        h.advance(secs(29));
        assert_eq!(h.b.stats().sessions, 2);
        assert_eq!(h.publishes(w), vec![]);
        h.advance(secs(1));
        assert_eq!(h.b.stats().sessions, 1);
        assert_eq!(h.b.stats().subscriptions, 1, "only the watcher's remains");
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);
        let (_, ack) = h.connect(v5_persistent("a", false));
        assert!(!ack.session_present);

        // Expiry 0: the session ends with the connection, the will goes at once.
        let conn = h.join(with_will(v5("b"), Some(600)));
        h.drop_conn(conn);
        assert_eq!(payloads(&h.publishes(w)), vec![b"gone"]);
        assert_eq!(h.b.stats().sessions, 2);
    }

    #[test]
    fn expired_session_is_not_resumed_even_before_its_timer_is_handled() {
        let mut h = H::new();
        let mut c = v5("a");
        c.properties.session_expiry_interval = Some(10);
        let conn = h.join(c);
        h.drop_conn(conn);
        // The shell is late with handle_timeout: the CONNECT still sees the session as gone.
        h.now += secs(11);
        let (_, ack) = h.connect(v5_persistent("a", false));
        assert!(!ack.session_present);
    }

    #[test]
    fn disconnect_may_change_session_expiry_unless_connect_had_zero() {
        let mut h = H::new();
        let conn = h.join(v5_persistent("a", true));
        h.send(conn, disconnect_with_expiry(ReasonCode::Success, 0));
        assert_eq!(
            h.b.stats().sessions,
            0,
            "expiry lowered to 0: session ends now"
        );

        let conn = h.join(v5_persistent("b", true));
        h.send(conn, disconnect_with_expiry(ReasonCode::Success, 5));
        h.advance(secs(5));
        assert_eq!(h.b.stats().sessions, 0);

        // [MQTT-3.14.2-2]
        let conn = h.join(with_will(v5("c"), None));
        let w = watcher(&mut h);
        h.send(conn, disconnect_with_expiry(ReasonCode::Success, 60));
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::ProtocolError)]);
        assert!(h.is_closed(conn));
        assert_eq!(
            payloads(&h.publishes(w)),
            vec![b"gone"],
            "a violation publishes the will"
        );
        // Setting 0 again is fine.
        let conn = h.join(v5("d"));
        h.send(conn, disconnect_with_expiry(ReasonCode::Success, 0));
        assert_eq!(h.take(conn), vec![]);
    }

    #[test]
    fn shutdown_disconnects_everyone_and_keeps_sessions() {
        let mut h = H::new();
        let pending = h.open();
        let a = h.join(v5_persistent("a", true));
        let b = h.join(v3("b"));
        let mut c = v3("c");
        c.clean_start = false;
        let c = h.join(c);
        let now = h.now;
        h.b.shutdown(
            now,
            ReasonCode::ServerShuttingDown,
            Some(Utf8::from_static("other:1883")),
        );
        let packets = h.take(a);
        let [Packet::Disconnect(d)] = &packets[..] else {
            panic!("expected DISCONNECT, got {packets:?}");
        };
        assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown);
        assert_eq!(d.properties.server_reference.as_deref(), Some("other:1883"));
        assert_eq!(h.take(b), vec![]);
        for conn in [pending, a, b, c] {
            assert!(h.is_closed(conn));
        }
        let st = h.b.stats();
        assert_eq!((st.connections, st.pending_connections), (0, 0));
        // "a" and "c" persist; "b" had a clean session.
        assert_eq!(st.sessions, 2);
        let late = h.open();
        assert!(h.is_closed(late));
    }

    #[test]
    fn packets_after_close_and_for_unknown_connections_are_ignored() {
        // Without the `$SYS` timer, whose own life is tested in `sys`.
        let mut h = H::with(BrokerConfig {
            sys_interval: Duration::ZERO,
            ..BrokerConfig::default()
        });
        let conn = h.join(v5("a"));
        h.send(conn, disconnect(ReasonCode::Success));
        h.send(conn, Packet::PingReq);
        h.b.handle_closed(h.now, conn);
        h.b.handle_closed(h.now, ConnId(999));
        assert_eq!(h.take(conn), vec![]);
        // A socket closed before CONNECT is forgotten with its timer.
        let pending = h.open();
        h.drop_conn(pending);
        assert_eq!(h.b.poll_timeout(), None);
        assert_eq!(h.b.stats().pending_connections, 0);
    }

    #[test]
    fn v311_persistent_session_expires_after_the_configured_maximum() {
        let mut h = H::with(BrokerConfig {
            max_session_expiry: 100,
            ..BrokerConfig::default()
        });
        let mut c = v3("a");
        c.clean_start = false;
        let conn = h.join(c);
        h.drop_conn(conn);
        h.advance(secs(99));
        assert_eq!(h.b.stats().sessions, 1);
        h.advance(secs(1));
        assert_eq!(h.b.stats().sessions, 0);
    }
}
