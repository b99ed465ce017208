//! CONNECT: validation, client identifier assignment, takeover of a connected client id,
//! session creation or resumption, CONNACK with the server's limits, and the resend of what a
//! resumed session still owes the client.
//!
//! Place in the data flow: the first packet of every connection lands here; on success the
//! connection becomes [`Phase::Connected`] and is attached to a session; on refusal a CONNACK
//! with the reason is sent and the socket closed, leaving any existing session untouched (the
//! checks run before the takeover).

use super::alias::{InboundAliases, OutboundAliases};
use super::conn::{ConnPolicy, Connected};
use super::lifecycle::WillFate;
use super::session::Session;
use super::stats::DisconnectSide;
use super::tenancy::ConnAuth;
use super::tenant::{self, TenantIdx};
use super::timers::TimerEvent;
use super::{Broker, ConnId, Phase};
use crate::queue::MessageQueue;
use crate::router::SessionKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_auth::Subject;
use tidegate_protocol::{
    ConnAck, ConnAckProperties, Connect, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode,
    Utf8, Will, topic,
};

impl Broker {
    pub(super) fn on_connect(&mut self, now: Instant, conn: ConnId, c: Connect, auth: ConnAuth) {
        let version = c.protocol;
        let v5 = version.is_v5();
        if version == ProtocolVersion::V31 {
            return self.refuse_connect(conn, ReasonCode::UnsupportedProtocolVersion);
        }
        if v5 && c.properties.authentication_method.is_some() {
            // Enhanced authentication (AUTH exchanges) is not supported yet.
            return self.refuse_connect(conn, ReasonCode::BadAuthenticationMethod);
        }
        if c.properties.receive_maximum == Some(0) || c.properties.maximum_packet_size == Some(0) {
            return self.refuse_connect(conn, ReasonCode::ProtocolError);
        }
        if let Some(will) = &c.will
            && let Err(reason) = self.check_will(will)
        {
            return self.refuse_connect(conn, reason);
        }
        let assigned = c.client_id.is_empty();
        let client_id: Arc<str> = if assigned {
            if !v5 && !c.clean_start {
                // [MQTT-3.1.3-8]: a 3.1.1 client without an identifier must use Clean Session.
                return self.refuse_connect(conn, ReasonCode::ClientIdentifierNotValid);
            }
            self.assign_client_id(auth.tenant)
        } else {
            Arc::from(c.client_id.as_str())
        };
        if client_id.contains(tenant::SESSION_SEPARATOR) {
            // Reserved for the store names of tenants' sessions (see the tenant module).
            return self.refuse_connect(conn, ReasonCode::ClientIdentifierNotValid);
        }
        if let (Some(will), Some(acl)) = (&c.will, &auth.acl) {
            let who = Subject {
                username: auth.username.as_deref(),
                client_id: &client_id,
            };
            if !acl.check_publish(&who, &will.topic).is_allowed() {
                // A will the client could not publish itself is refused up front, as EMQX
                // and Mosquitto do, rather than dropped silently when the client goes.
                self.tenant_mut(auth.tenant).counters.denied_publish += 1;
                return self.refuse_connect(conn, ReasonCode::NotAuthorized);
            }
        }
        let internal = self.conns.get(&conn).is_some_and(|c| c.info.internal);
        if let Err(reason) = self.check_connect_quotas(auth.tenant, &client_id, internal) {
            return self.refuse_connect(conn, reason);
        }

        let requested_expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            self.config.max_session_expiry
        };
        let expiry = requested_expiry.min(self.config.max_session_expiry);
        let (keep_alive, server_keep_alive) = match self.config.max_keep_alive {
            Some(max) if v5 && (c.keep_alive == 0 || c.keep_alive > max) => (max, Some(max)),
            _ => (c.keep_alive, None),
        };

        self.take_over(now, auth.tenant, &client_id);
        let (key, session_present) =
            self.open_session(now, auth.tenant, &client_id, c.clean_start, expiry);
        let window = self.config.queue_memory_window;
        if let Some(s) = self.sessions.get_mut(&key) {
            s.conn = Some(conn);
            if s.durable {
                // Online again: the oldest queued messages come back into memory.
                s.queue.set_memory_window(window);
            }
        }

        let keep_alive_timeout =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let keep_alive_timer =
            keep_alive_timeout.and_then(|t| self.arm(now, t, TimerEvent::KeepAlive(conn)));
        let policy = self.conn_policy(now, conn, &auth);
        let connected = Connected {
            session: key,
            tenant: auth.tenant,
            policy,
            version,
            keep_alive_timeout,
            last_activity: now,
            keep_alive_timer,
            receive_maximum: if v5 {
                c.properties.receive_maximum.unwrap_or(u16::MAX)
            } else {
                u16::MAX
            },
            max_packet_size: if v5 {
                c.properties.maximum_packet_size
            } else {
                None
            },
            inbound_aliases: InboundAliases::default(),
            outbound_aliases: OutboundAliases::new(if v5 {
                c.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            }),
            will: c.will.map(Box::new),
            connect_expiry_zero: requested_expiry == 0,
            keep_alive,
            connected_at: now,
        };
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Phase::Connecting { timer: Some(t) } = entry.phase {
            self.timers.cancel(t);
        }
        entry.phase = Phase::Connected(Box::new(connected));
        let listener = entry.info.listener.clone();
        let internal = entry.info.internal;
        let t = self.tenant_mut(auth.tenant);
        if internal {
            t.internal += 1;
        } else {
            t.connections += 1;
        }
        // The session record (now online, with this connection's will) is written before the
        // CONNACK can leave.
        self.persist_session(key);
        tracing::debug!(
            conn = conn.0,
            client_id = &*client_id,
            listener = &*listener,
            ?version,
            session_present,
            "connected"
        );

        let mut props = ConnAckProperties::default();
        if v5 {
            if expiry != requested_expiry {
                props.session_expiry_interval = Some(expiry);
            }
            props.receive_maximum = Some(self.config.receive_maximum);
            if self.config.max_qos < QoS::ExactlyOnce {
                props.maximum_qos = Some(self.config.max_qos);
            }
            if !self.config.retain_available {
                props.retain_available = Some(false);
            }
            // A tenant may allow less than the gateway.
            props.maximum_packet_size = Some(
                self.tenant(auth.tenant)
                    .limits
                    .max_packet_size
                    .map_or(self.config.max_packet_size, |m| {
                        m.min(self.config.max_packet_size)
                    }),
            );
            if assigned {
                props.assigned_client_identifier = Utf8::try_from(&*client_id).ok();
            }
            if self.config.topic_alias_maximum > 0 {
                props.topic_alias_maximum = Some(self.config.topic_alias_maximum);
            }
            if !self.config.wildcard_subscriptions {
                props.wildcard_subscription_available = Some(false);
            }
            if !self.config.subscription_identifiers {
                props.subscription_identifiers_available = Some(false);
            }
            if !self.config.shared_subscriptions {
                props.shared_subscription_available = Some(false);
            }
            props.server_keep_alive = server_keep_alive;
        }
        self.count_connack(ReasonCode::Success);
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code: ReasonCode::Success,
                properties: props,
            }),
        );
        if session_present {
            // Rules changed while the session was offline (or a token with other claims)
            // apply to the subscriptions it kept.
            self.drop_denied_subscriptions(conn);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.inflight.mark_all_for_resend();
            }
            self.drain(now, key);
        }
    }

    /// CONNACK with a refusal (3.1.1: the encoder maps it to a return code), then close.
    fn refuse_connect(&mut self, conn: ConnId, reason: ReasonCode) {
        tracing::debug!(conn = conn.0, ?reason, "CONNECT refused");
        self.count_connack(reason);
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                reason_code: reason,
                ..ConnAck::default()
            }),
        );
        self.drop_pending(conn);
    }

    /// The will must be publishable under the same rules as a PUBLISH from the client.
    fn check_will(&self, will: &Will) -> Result<(), ReasonCode> {
        if !self.topic_name_ok(&will.topic) {
            return Err(ReasonCode::TopicNameInvalid);
        }
        if is_sys_topic(&will.topic) {
            return Err(ReasonCode::NotAuthorized);
        }
        if will.qos > self.config.max_qos {
            return Err(ReasonCode::QoSNotSupported);
        }
        if will.retain && !self.config.retain_available {
            return Err(ReasonCode::RetainNotSupported);
        }
        if will.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&will.payload).is_err()
        {
            return Err(ReasonCode::PayloadFormatInvalid);
        }
        Ok(())
    }

    /// A topic name within the configured length and level limits.
    pub(super) fn topic_name_ok(&self, name: &str) -> bool {
        topic::validate_topic_name(name).is_ok()
            && name.len() <= self.config.max_topic_length
            && name.split('/').count() <= self.config.max_topic_levels
    }

    /// `tg-<n>` with the first `n` not held by a session of the tenant. A counter, not a
    /// random value: the core reads no entropy source, and the index check keeps it unique
    /// among live sessions.
    fn assign_client_id(&mut self, tenant: TenantIdx) -> Arc<str> {
        loop {
            let id = format!("tg-{}", self.next_assigned_id);
            self.next_assigned_id += 1;
            if !self.tenant(tenant).by_client_id.contains_key(id.as_str()) {
                return Arc::from(id);
            }
        }
    }

    /// The tenant's connection and session quotas: a takeover does not add a connection, and
    /// resuming (or replacing) an existing session does not add a session. CONNACK 0x97
    /// (3.1.1: return code 3, Server unavailable) beyond. The gateway's own connections
    /// (`internal`) are neither checked nor counted.
    fn check_connect_quotas(
        &mut self,
        idx: TenantIdx,
        client_id: &str,
        internal: bool,
    ) -> Result<(), ReasonCode> {
        if internal {
            return Ok(());
        }
        let t = self.tenant(idx);
        let existing = t
            .by_client_id
            .get(client_id)
            .and_then(|k| self.sessions.get(k));
        let takeover = existing.is_some_and(|s| s.conn.is_some());
        let over_connections = !takeover
            && t.limits
                .max_connections
                .is_some_and(|max| t.connections >= max as usize);
        let over_sessions = existing.is_none()
            && t.limits
                .max_sessions
                .is_some_and(|max| t.client_sessions() >= max as usize);
        let quota = &mut self.tenant_mut(idx).counters.quota;
        if over_connections {
            quota.connections += 1;
            return Err(ReasonCode::QuotaExceeded);
        }
        if over_sessions {
            quota.sessions += 1;
            return Err(ReasonCode::QuotaExceeded);
        }
        Ok(())
    }

    /// The per-connection policy, or `None` for an anonymous client with nothing restricted
    /// (no check per packet then); arms the credential-expiry timer.
    fn conn_policy(
        &mut self,
        now: Instant,
        conn: ConnId,
        auth: &ConnAuth,
    ) -> Option<Box<ConnPolicy>> {
        let rate = self
            .tenant(auth.tenant)
            .limits
            .max_inbound_messages_per_sec
            .map(|r| tenant::bucket(r, now));
        // A client with a username keeps a policy even when nothing is restricted yet: a
        // tenant's ACL changed later needs its `%u` (see `Broker::set_tenant_acl`).
        if auth.acl.is_none()
            && rate.is_none()
            && auth.expires_at.is_none()
            && auth.username.is_none()
        {
            return None;
        }
        let expiry_timer = auth.expires_at.map(|at| {
            self.timers
                .insert(at.max(now), TimerEvent::CredentialsExpired(conn))
        });
        Some(Box::new(ConnPolicy {
            username: auth.username.clone(),
            acl: auth.acl.clone(),
            rate,
            expiry_timer,
        }))
    }

    /// [MQTT-3.1.4-3]: a client id already connected elsewhere loses that connection, with
    /// DISCONNECT 0x8E in MQTT 5; its will goes the abnormal way (a delayed will is then
    /// cancelled by this very reconnection if it resumes the session).
    fn take_over(&mut self, now: Instant, tenant: TenantIdx, client_id: &str) {
        let old = self
            .tenant(tenant)
            .by_client_id
            .get(client_id)
            .and_then(|k| self.sessions.get(k))
            .and_then(|s| s.conn);
        let Some(old) = old else {
            return;
        };
        tracing::debug!(conn = old.0, client_id, "session taken over");
        self.count_disconnect(DisconnectSide::Server, ReasonCode::SessionTakenOver);
        if self.connected(old).is_some_and(|c| c.version.is_v5()) {
            self.send(
                old,
                Packet::Disconnect(Disconnect::with_reason(ReasonCode::SessionTakenOver)),
            );
        }
        self.end_connection(now, old, WillFate::Publish, true);
    }

    /// Resumes the client's session (Clean Start 0) or starts a new one; returns its key and
    /// whether it was resumed (CONNACK Session Present).
    fn open_session(
        &mut self,
        now: Instant,
        tenant: TenantIdx,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
    ) -> (SessionKey, bool) {
        if let Some(&key) = self.tenant(tenant).by_client_id.get(&**client_id) {
            // An offline session whose expiry passed, with the timer not yet handled, is gone.
            let expired = self
                .sessions
                .get(&key)
                .is_some_and(|s| s.expiry_timer.is_some_and(|(at, _)| at <= now));
            if clean_start || expired {
                self.end_session(now, key);
            } else if let Some(s) = self.sessions.get_mut(&key) {
                if let Some(t) = s.expiry_timer.take() {
                    self.timers.cancel(t);
                }
                // [MQTT-3.1.3-9]: reconnecting before the will delay ends cancels the will.
                if let Some(t) = s.pending_will.take().and_then(|p| p.timer) {
                    self.timers.cancel(t);
                }
                s.expiry = expiry;
                return (key, true);
            }
        }
        let key = SessionKey(self.next_session);
        self.next_session += 1;
        // The tenant's queue limit replaces the gateway's.
        let limit = self
            .tenant(tenant)
            .limits
            .max_queued_messages
            .map_or(self.config.max_queued_messages, |m| m as usize);
        let mut queue = MessageQueue::new(limit, self.config.queue_drop_policy);
        // Only a session that outlives its connection is worth storing; its queue then keeps
        // a window in memory and the rest in the store.
        let durable = self.is_durable() && expiry > 0;
        if durable {
            queue.set_memory_window(self.config.queue_memory_window);
        }
        let t = self.tenant_mut(tenant);
        let store_id = t.store_id(tenant, client_id);
        t.by_client_id.insert(client_id.clone(), key);
        self.sessions.insert(
            key,
            Session::new(
                (tenant, client_id.clone(), store_id),
                expiry,
                queue,
                durable,
            ),
        );
        (key, false)
    }
}

/// `$SYS` and `$SYS/...` belong to the server; clients may not publish there.
pub(super) fn is_sys_topic(name: &str) -> bool {
    name == "$SYS" || name.starts_with("$SYS/")
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::BrokerConfig;
    use std::time::Duration;
    use tidegate_protocol::{DecodeError, Packet, ProtocolVersion, QoS, ReasonCode, Utf8};

    #[test]
    fn v5_connack_announces_limits_and_assigns_client_id() {
        let mut h = H::with(BrokerConfig {
            max_qos: QoS::AtLeastOnce,
            retain_available: false,
            shared_subscriptions: false,
            ..BrokerConfig::default()
        });
        let mut c = v5("");
        c.properties.session_expiry_interval = Some(u32::MAX);
        let (conn, ack) = h.connect(c);
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(!ack.session_present);
        let p = &ack.properties;
        let assigned = p.assigned_client_identifier.clone().unwrap();
        assert!(assigned.starts_with("tg-"));
        assert_eq!(h.b.client_id(conn), Some(assigned.as_str()));
        assert_eq!(p.receive_maximum, Some(64));
        assert_eq!(p.maximum_packet_size, Some(1024 * 1024));
        assert_eq!(p.topic_alias_maximum, Some(64));
        assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
        assert_eq!(p.retain_available, Some(false));
        assert_eq!(p.shared_subscription_available, Some(false));
        assert_eq!(p.wildcard_subscription_available, None);
        // Capped from "never" to the 7-day maximum, so announced.
        assert_eq!(p.session_expiry_interval, Some(7 * 24 * 3600));
        assert_eq!(p.server_keep_alive, None);
        // A second client without id gets a different one.
        let (_, ack2) = h.connect(v5(""));
        assert_ne!(ack2.properties.assigned_client_identifier, Some(assigned));
        assert_eq!(h.b.stats().connections, 2);
        assert_eq!(h.b.stats().sessions, 2);
    }

    #[test]
    fn v311_connack_has_no_properties_and_empty_id_needs_clean_session() {
        let mut h = H::new();
        let (conn, ack) = h.connect(v3("c1"));
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert_eq!(ack.properties, Default::default());
        assert_eq!(h.b.client_id(conn), Some("c1"));
        assert_eq!(h.b.protocol_version(conn), Some(ProtocolVersion::V311));

        // Clean session with an empty id: accepted, an id assigned silently.
        let (conn, ack) = h.connect(v3(""));
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(h.b.client_id(conn).is_some_and(|id| id.starts_with("tg-")));

        // [MQTT-3.1.3-8]: empty id without clean session is rejected (return code 2).
        let mut c = v3("");
        c.clean_start = false;
        let (conn, ack) = h.connect(c);
        assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
        assert_eq!(ack.reason_code.to_v3_connack(), 2);
        assert!(h.is_closed(conn));
    }

    #[test]
    fn session_present_on_resume_and_clean_start_discards() {
        let mut h = H::new();
        let conn = h.join(v5_persistent("c", true));
        assert_eq!(
            h.subscribe(conn, "a/#", QoS::AtLeastOnce),
            ReasonCode::GrantedQoS1
        );
        h.send(conn, disconnect(ReasonCode::Success));
        assert!(h.is_closed(conn));

        let (conn, ack) = h.connect(v5_persistent("c", false));
        assert!(ack.session_present);
        assert_eq!(ack.properties.session_expiry_interval, None);
        h.send(conn, disconnect(ReasonCode::Success));

        let (_, ack) = h.connect(v5_persistent("c", true));
        assert!(!ack.session_present);
        assert_eq!(h.b.stats().subscriptions, 0);

        // 3.1.1 Clean Session 0 keeps the session too.
        let mut c = v3("old");
        c.clean_start = false;
        let conn = h.join(c.clone());
        h.drop_conn(conn);
        let (_, ack) = h.connect(c);
        assert!(ack.session_present);
    }

    #[test]
    fn second_connect_is_a_protocol_error() {
        let mut h = H::new();
        let conn = h.join(v5("c"));
        h.send(conn, Packet::Connect(Box::new(v5("c"))));
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::ProtocolError)]);
        assert!(h.is_closed(conn));

        let conn = h.join(v3("d"));
        h.send(conn, Packet::Connect(Box::new(v3("d"))));
        assert_eq!(h.take(conn), vec![]);
        assert!(h.is_closed(conn));
        assert_eq!(h.b.stats().protocol_errors, 2);
    }

    #[test]
    fn takeover_disconnects_old_connection_publishes_its_will_and_moves_session() {
        let mut h = H::new();
        let watcher = h.join(v5("w"));
        h.subscribe(watcher, "will/#", QoS::AtMostOnce);
        let mut c = v5_persistent("dev", true);
        c.will = Some(will("will/dev", "bye", None));
        let old = h.join(c);
        h.subscribe(old, "data", QoS::AtLeastOnce);

        let (new, ack) = h.connect(v5_persistent("dev", false));
        assert!(ack.session_present);
        assert_eq!(h.take(old), vec![disconnect(ReasonCode::SessionTakenOver)]);
        assert!(h.is_closed(old));
        let wills = h.publishes(watcher);
        assert_eq!(payloads(&wills), vec![b"bye"]);
        assert_eq!(h.b.client_id(new), Some("dev"));
        // The subscription moved with the session.
        let src = h.join(v5("src"));
        h.send(
            src,
            Packet::Publish(publish("data", QoS::AtMostOnce, 0, "x")),
        );
        assert_eq!(payloads(&h.publishes(new)), vec![b"x"]);
        assert_eq!(h.b.stats().connections, 3);
    }

    #[test]
    fn takeover_of_a_v311_client_just_closes_it() {
        let mut h = H::new();
        let old = h.join(v3("dev"));
        let new = h.join(v3("dev"));
        assert_eq!(h.take(old), vec![]);
        assert!(h.is_closed(old));
        assert!(!h.is_closed(new));
    }

    #[test]
    fn delayed_will_is_cancelled_by_takeover_that_resumes() {
        let mut h = H::new();
        let watcher = h.join(v5("w"));
        h.subscribe(watcher, "will/#", QoS::AtMostOnce);
        let mut c = v5_persistent("dev", true);
        c.will = Some(will("will/dev", "bye", Some(10)));
        h.join(c);
        h.join(v5_persistent("dev", false));
        h.advance(Duration::from_secs(20));
        assert_eq!(h.publishes(watcher), vec![]);

        // With Clean Start the old session ends, which publishes the delayed will at once.
        let mut c = v5_persistent("dev2", true);
        c.will = Some(will("will/dev2", "bye2", Some(10)));
        h.join(c);
        h.join(v5_persistent("dev2", true));
        assert_eq!(payloads(&h.publishes(watcher)), vec![b"bye2"]);
    }

    #[test]
    fn unsupported_version_and_auth_method_are_refused() {
        let mut h = H::new();
        let conn = h.open();
        h.b.handle_decode_error(
            h.now,
            conn,
            &DecodeError::UnsupportedProtocolVersion { level: 6 },
        );
        let packets = h.take(conn);
        let [Packet::ConnAck(ack)] = &packets[..] else {
            panic!("expected one CONNACK, got {packets:?}");
        };
        assert_eq!(ack.reason_code, ReasonCode::UnsupportedProtocolVersion);
        assert_eq!(ack.reason_code.to_v3_connack(), 1);
        assert!(h.is_closed(conn));

        let conn = h.open();
        h.b.handle_decode_error(h.now, conn, &DecodeError::Malformed("x"));
        assert_eq!(h.take(conn), vec![]);
        assert!(h.is_closed(conn));

        let mut c = v5("c");
        c.properties.authentication_method = Some(Utf8::from_static("SCRAM-SHA-1"));
        let (conn, ack) = h.connect(c);
        assert_eq!(ack.reason_code, ReasonCode::BadAuthenticationMethod);
        assert!(h.is_closed(conn));
        assert_eq!(h.b.stats().sessions, 0);
    }

    #[test]
    fn invalid_will_is_refused_without_touching_the_existing_session() {
        let mut h = H::with(BrokerConfig {
            max_qos: QoS::AtLeastOnce,
            ..BrokerConfig::default()
        });
        let first = h.join(v5("c"));
        let mut c = v5("c");
        let mut w = will("w", "x", None);
        w.qos = QoS::ExactlyOnce;
        c.will = Some(w);
        let (conn, ack) = h.connect(c);
        assert_eq!(ack.reason_code, ReasonCode::QoSNotSupported);
        assert!(h.is_closed(conn));
        assert!(!h.is_closed(first));

        let mut c = v5("d");
        c.will = Some(will("$SYS/x", "x", None));
        assert_eq!(h.connect(c).1.reason_code, ReasonCode::NotAuthorized);
    }

    #[test]
    fn connect_timeout_closes_a_silent_socket() {
        // Without the `$SYS` timer, whose own life is tested in `sys`.
        let mut h = H::with(BrokerConfig {
            sys_interval: Duration::ZERO,
            ..BrokerConfig::default()
        });
        let conn = h.open();
        assert_eq!(h.b.poll_timeout(), Some(h.now + Duration::from_secs(10)));
        h.advance(Duration::from_secs(9));
        assert!(!h.is_closed(conn));
        h.advance(Duration::from_secs(1));
        assert!(h.is_closed(conn));
        assert_eq!(h.take(conn), vec![]);
        assert_eq!(h.b.stats().pending_connections, 0);
        assert_eq!(h.b.poll_timeout(), None);

        // A CONNECT in time disarms it.
        let conn = h.join(v5("c"));
        h.advance(Duration::from_secs(60));
        assert!(!h.is_closed(conn));
    }

    #[test]
    fn server_keep_alive_overrides_v5_clients_only() {
        let mut h = H::with(BrokerConfig {
            max_keep_alive: Some(60),
            ..BrokerConfig::default()
        });
        let mut c = v5("a");
        c.keep_alive = 0;
        assert_eq!(h.connect(c).1.properties.server_keep_alive, Some(60));
        let mut c = v5("b");
        c.keep_alive = 30;
        assert_eq!(h.connect(c).1.properties.server_keep_alive, None);
        // The 3.1.1 client asked for no keep alive and cannot be told otherwise.
        let conn = h.join(v3("c"));
        h.advance(Duration::from_secs(1000));
        assert!(!h.is_closed(conn));
    }
}
