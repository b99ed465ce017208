//! Inbound PUBLISH and PUBREL, and the fan-out of an accepted message.
//!
//! Place in the data flow: `client PUBLISH -> checks -> Arc<Message> -> retained store ->
//! router.route -> deliver (per session)`. QoS 2 uses method A of the specification (section
//! 4.3.3): the message is routed when the PUBLISH arrives and its packet id is remembered until
//! PUBREL, so a resent PUBLISH with the same id is acknowledged again but never routed twice —
//! exactly once end to end, without holding the message itself until PUBREL.
//!
//! The checks, in order, each ending the connection (DISCONNECT in MQTT 5) when broken: topic
//! alias valid (0x94) and known (0x82), topic name within limits (0x90), QoS within
//! `max_qos` (0x9B), retain available (0x9A), our Receive Maximum (0x93). Then the per-message
//! refusals answered in the acknowledgement (MQTT 5): `$SYS` topics (0x87), payloads
//! announced as UTF-8 that are not (0x99), the tenant's ACL (0x87) and message rates (0x96).
//! A message is routed in its publisher's tenant only; a retained one over the tenant's
//! retained quota is routed but not stored, and acknowledged with 0x97 (see `tenancy`).

use super::connect::is_sys_topic;
use super::persist::Promise;
use super::tenant::{self, TenantIdx};
use super::{Broker, ConnId, Output};
use crate::Message;
use crate::queue::Queued;
use std::sync::Arc;
use std::time::Instant;
use tidegate_protocol::{
    AckProperties, Packet, PacketId, PubResponse, Publish, QoS, ReasonCode, Utf8,
};
use tidegate_store::StoreOp;

impl Broker {
    pub(super) fn on_publish(&mut self, now: Instant, conn: ConnId, p: Publish) {
        let topic_alias_maximum = self.config.topic_alias_maximum;
        let Some(c) = self.connected_mut(conn) else {
            return;
        };
        let (v5, key, tenant) = (c.version.is_v5(), c.session, c.tenant);
        // Whether any tenant policy applies: without one (the default tenant) no check runs.
        let restricted = c.policy.is_some();
        if !p.properties.subscription_identifiers.is_empty() {
            return self.violation(
                now,
                conn,
                ReasonCode::ProtocolError,
                "[MQTT-3.3.4-6] PUBLISH from a client carries a Subscription Identifier",
            );
        }
        let topic: Utf8 = match (v5, p.properties.topic_alias) {
            (true, Some(alias)) if alias == 0 || alias > topic_alias_maximum => {
                return self.violation(
                    now,
                    conn,
                    ReasonCode::TopicAliasInvalid,
                    "topic alias 0 or above our Topic Alias Maximum (section 3.3.2.3.4)",
                );
            }
            (true, Some(alias)) if p.topic.is_empty() => match c.inbound_aliases.get(alias) {
                Some(t) => t.clone(),
                None => {
                    return self.violation(
                        now,
                        conn,
                        ReasonCode::ProtocolError,
                        "empty topic with an unknown topic alias (section 3.3.2.3.4)",
                    );
                }
            },
            (true, Some(alias)) => {
                c.inbound_aliases.set(alias, p.topic.clone());
                p.topic.clone()
            }
            _ => p.topic.clone(),
        };
        if topic.is_empty() {
            return self.violation(
                now,
                conn,
                ReasonCode::ProtocolError,
                "empty topic without a topic alias (section 3.3.2.1)",
            );
        }
        if !self.topic_name_ok(&topic) {
            return self.violation(
                now,
                conn,
                ReasonCode::TopicNameInvalid,
                "topic name invalid or beyond the length/level limits",
            );
        }
        if p.qos > self.config.max_qos {
            return self.violation(
                now,
                conn,
                ReasonCode::QoSNotSupported,
                "QoS above the Maximum QoS (section 3.2.2.3.4)",
            );
        }
        if p.retain && !self.config.retain_available {
            return self.violation(
                now,
                conn,
                ReasonCode::RetainNotSupported,
                "RETAIN while retain is not available (section 3.2.2.3.5)",
            );
        }
        let packet_id = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (_, Some(id)) => Some(id),
            (_, None) => {
                return self.violation(
                    now,
                    conn,
                    ReasonCode::ProtocolError,
                    "[MQTT-2.2.1-3] QoS > 0 PUBLISH without packet id",
                );
            }
        };
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, packet_id)
            && session.inbound_qos2.contains(&id)
        {
            // Resent before PUBREL: acknowledge again, do not route again.
            return self.send(conn, Packet::PubRec(PubResponse::success(id)));
        }
        if v5
            && p.qos != QoS::AtMostOnce
            && session.inbound_qos2.len() >= usize::from(self.config.receive_maximum)
        {
            return self.violation(
                now,
                conn,
                ReasonCode::ReceiveMaximumExceeded,
                "more unacknowledged QoS > 0 PUBLISH than our Receive Maximum (section 3.3.4)",
            );
        }
        if is_sys_topic(&topic) {
            tracing::debug!(
                conn = conn.0,
                topic = topic.as_str(),
                "client publish to $SYS refused"
            );
            self.counters.refused_publishes += 1;
            return self.refuse_publish(now, conn, p.qos, packet_id, ReasonCode::NotAuthorized, v5);
        }
        if p.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&p.payload).is_err()
        {
            self.counters.refused_publishes += 1;
            return self.refuse_publish(
                now,
                conn,
                p.qos,
                packet_id,
                ReasonCode::PayloadFormatInvalid,
                v5,
            );
        }
        let restricted = restricted || self.tenant(tenant).rate.is_some();
        if restricted && let Err(reason) = self.check_publish_policy(now, conn, &topic) {
            tracing::debug!(
                conn = conn.0,
                topic = topic.as_str(),
                ?reason,
                "publish refused by the tenant's policy"
            );
            self.counters.refused_publishes += 1;
            return self.refuse_publish(now, conn, p.qos, packet_id, reason, v5);
        }

        if self.store_refusing() && (p.qos != QoS::AtMostOnce || p.retain) {
            // A write failed and none succeeded since: nothing that needs the store is
            // accepted, so nothing is acknowledged that could be lost.
            self.counters.refused_publishes += 1;
            if !v5 && p.qos != QoS::AtMostOnce {
                // 3.1.1 cannot refuse in an acknowledgement: the client resends after
                // reconnecting.
                return self.end_connection(now, conn, super::lifecycle::WillFate::Publish, true);
            }
            return self.refuse_publish(now, conn, p.qos, packet_id, ReasonCode::QuotaExceeded, v5);
        }

        let qos = p.qos;
        let ops_before = self.pending_ops();
        let msg = Arc::new(Message::from_publish(p, topic, now, Some(key)));
        let routed = self.route_message(now, tenant, msg);
        let reason = if !v5 {
            ReasonCode::Success
        } else if routed.retained_over_quota {
            ReasonCode::QuotaExceeded
        } else if routed.matched == 0 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        let packet = match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(ack(id, reason)),
            // A failed PUBREC ends the QoS 2 flow: no id to remember.
            (QoS::ExactlyOnce, Some(id)) if !reason.is_success() => Packet::PubRec(ack(id, reason)),
            (QoS::ExactlyOnce, Some(id)) => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.inbound_qos2.insert(id);
                }
                if let Some(client_id) = self.durable_client(key) {
                    self.store(StoreOp::PutInboundQos2 {
                        client_id,
                        packet_id: id,
                    });
                }
                Packet::PubRec(ack(id, reason))
            }
            _ => return,
        };
        // The acknowledgement promises what this publication wrote (queue and inflight
        // entries, the retained message, the inbound id); it leaves once that is durable.
        let promise =
            (self.pending_ops() > ops_before).then_some(Promise::Ack { session: key, v5 });
        self.emit(Output::Send { conn, packet }, promise);
    }

    /// A publication accepted by the protocol but not by policy. MQTT 5 says why in the
    /// acknowledgement (a failed PUBREC ends the QoS 2 flow, so its id is not remembered);
    /// 3.1.1 cannot, and gets a plain acknowledgement. A QoS 0 message has no acknowledgement:
    /// dropped silently, except an invalid payload format, which is a DISCONNECT in MQTT 5.
    fn refuse_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        qos: QoS,
        packet_id: Option<PacketId>,
        reason: ReasonCode,
        v5: bool,
    ) {
        let code = if v5 { reason } else { ReasonCode::Success };
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(conn, Packet::PubAck(ack(id, code))),
            (QoS::ExactlyOnce, Some(id)) => self.send(conn, Packet::PubRec(ack(id, code))),
            _ if v5 && reason == ReasonCode::PayloadFormatInvalid => self.violation(
                now,
                conn,
                reason,
                "payload is not the UTF-8 its format indicator announces (section 3.3.2.3.2)",
            ),
            _ => {}
        }
    }

    /// PUBREL: the QoS 2 flow of `packet_id` ends; its id may be reused by the client.
    pub(super) fn on_pubrel(&mut self, conn: ConnId, r: PubResponse) {
        let Some(c) = self.connected(conn) else {
            return;
        };
        let (v5, key) = (c.version.is_v5(), c.session);
        let known = self
            .sessions
            .get_mut(&key)
            .is_some_and(|s| s.inbound_qos2.remove(&r.packet_id));
        if known && let Some(client_id) = self.durable_client(key) {
            self.store(StoreOp::DeleteInboundQos2 {
                client_id,
                packet_id: r.packet_id,
            });
        }
        let reason = if known || !v5 {
            ReasonCode::Success
        } else {
            tracing::debug!(
                conn = conn.0,
                id = r.packet_id.get(),
                "PUBREL for unknown packet id"
            );
            ReasonCode::PacketIdentifierNotFound
        };
        self.send(conn, Packet::PubComp(ack(r.packet_id, reason)));
    }

    /// Stores `msg` if retained, routes it in `tenant` and delivers it to every receiving
    /// session.
    pub(super) fn route_message(
        &mut self,
        now: Instant,
        tenant: TenantIdx,
        msg: Arc<Message>,
    ) -> Routed {
        self.counters.messages_in.add(msg.qos);
        self.tenant_mut(tenant).counters.messages_in += 1;
        let retained_over_quota = msg.retain && !self.retain(tenant, &msg);
        let matched = self.fan_out(now, tenant, &msg, false);
        if matched == 0 {
            self.counters.dropped_no_subscribers += 1;
        }
        Routed {
            matched,
            retained_over_quota,
        }
    }

    /// Routes `msg` in `tenant`'s router and hands it to each receiving session (only those
    /// online when `online_only`: the `$SYS` figures, which are not worth queueing); returns
    /// how many sessions it was handed to. Counts nothing and stores nothing: that is
    /// [`Broker::route_message`]'s part.
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        tenant: TenantIdx,
        msg: &Arc<Message>,
        online_only: bool,
    ) -> usize {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        deliveries.clear();
        let Broker {
            sessions, tenants, ..
        } = self;
        let online = |k| sessions.get(&k).is_some_and(|s| s.conn.is_some());
        if let Some(t) = tenants.get_mut(tenant.0 as usize) {
            t.router
                .route(&msg.topic, msg.publisher, online, &mut deliveries);
        }
        if online_only {
            deliveries.retain(|d| online(d.session));
        }
        let matched = deliveries.len();
        for d in deliveries.drain(..) {
            let item = Queued {
                message: msg.clone(),
                qos: msg.qos.min(d.qos),
                retain: msg.retain && d.retain_as_published,
                subscription_identifiers: d.subscription_identifiers,
            };
            self.deliver(now, d.session, item);
        }
        // Hand the (empty) vector back so its capacity serves the next fan-out.
        self.deliveries = deliveries;
        matched
    }

    /// Stores (or clears) the retained message of `msg`'s topic in `tenant`, within the
    /// tenant's quotas and the gateway's `max_retained_messages` (which counts every tenant's
    /// messages). Returns false only when a tenant quota refused it; a full gateway store is
    /// counted but, as before tenants, not reported to the publisher.
    fn retain(&mut self, tenant: TenantIdx, msg: &Arc<Message>) -> bool {
        if !msg.payload.is_empty() {
            let t = self.tenant(tenant);
            let old = t.retained.get(&msg.topic).map(|m| m.payload.len() as u64);
            let over_messages = old.is_none()
                && t.limits
                    .max_retained_messages
                    .is_some_and(|max| t.retained.len() >= max as usize);
            let over_bytes = t.limits.max_retained_bytes.is_some_and(|max| {
                t.retained.bytes().saturating_sub(old.unwrap_or(0)) + msg.payload.len() as u64 > max
            });
            let gateway_full = old.is_none()
                && self.tenants.iter().map(|t| t.retained.len()).sum::<usize>()
                    >= self.config.max_retained_messages;
            if over_messages || over_bytes {
                tracing::debug!(topic = msg.topic.as_str(), "retained quota of the tenant");
                self.counters.refused_publishes += 1;
                let quota = &mut self.tenant_mut(tenant).counters.quota;
                if over_messages {
                    quota.retained_messages += 1;
                } else {
                    quota.retained_bytes += 1;
                }
                return false;
            }
            if gateway_full {
                tracing::debug!(topic = msg.topic.as_str(), "retained store full");
                self.counters.refused_publishes += 1;
                return true;
            }
        }
        if let Err(e) = self.tenant_mut(tenant).retained.set(msg.clone()) {
            tracing::debug!(topic = msg.topic.as_str(), %e, "retained message not stored");
            self.counters.refused_publishes += 1;
            return true;
        }
        if self.is_durable() {
            self.persist_retained(tenant, msg);
        }
        true
    }

    /// Writes (or deletes) a tenant's retained message in the store, under its stored name.
    fn persist_retained(&mut self, tenant: TenantIdx, msg: &Arc<Message>) {
        let namespace = (tenant != TenantIdx::DEFAULT).then(|| self.tenant(tenant).id.clone());
        let topic = match &namespace {
            None => msg.topic.clone(),
            Some(ns) => match Utf8::try_from(tenant::stored_topic(Some(ns), &msg.topic)) {
                Ok(topic) => topic,
                Err(_) => {
                    tracing::warn!(
                        topic = msg.topic.as_str(),
                        "retained topic too long to store"
                    );
                    return;
                }
            },
        };
        let op = if msg.payload.is_empty() {
            StoreOp::DeleteRetained(topic)
        } else if namespace.is_none() {
            StoreOp::PutRetained(self.message_record(msg))
        } else {
            // The shared record keeps the plain topic for the queue entries of this fan-out.
            let mut record = (*self.message_record(msg)).clone();
            record.topic = topic;
            StoreOp::PutRetained(Arc::new(record))
        };
        self.store(op);
    }
}

/// What routing one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Routed {
    /// Sessions it was routed to.
    pub(super) matched: usize,
    /// It was retained, and the tenant's retained quota kept it from being stored.
    pub(super) retained_over_quota: bool,
}

fn ack(packet_id: PacketId, reason_code: ReasonCode) -> PubResponse {
    PubResponse {
        packet_id,
        reason_code,
        properties: AckProperties::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::BrokerConfig;
    use bytes::Bytes;
    use tidegate_protocol::{Packet, PubResponse, Publish, QoS, ReasonCode, Utf8};

    fn with_alias(mut p: Publish, alias: u16) -> Packet {
        p.properties.topic_alias = Some(alias);
        Packet::Publish(p)
    }

    #[test]
    fn qos1_inbound_is_acknowledged_and_reports_no_subscribers_in_v5() {
        let mut h = H::new();
        let conn = h.join(v5("p"));
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 5, "a")),
        );
        assert_eq!(
            h.take(conn),
            vec![Packet::PubAck(PubResponse {
                reason_code: ReasonCode::NoMatchingSubscribers,
                ..PubResponse::success(pid(5))
            })]
        );
        let sub = h.join(v5("s"));
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 6, "b")),
        );
        assert_eq!(h.take(conn), vec![puback(6)]);
        assert_eq!(payloads(&h.publishes(sub)), vec![b"b"]);
        let st = h.b.stats();
        assert_eq!(st.messages_in.qos1, 2);
        assert_eq!(st.dropped_no_subscribers, 1);

        // 3.1.1 has no reason codes: plain PUBACK.
        let v3c = h.join(v3("p3"));
        h.send(
            v3c,
            Packet::Publish(publish("none", QoS::AtLeastOnce, 1, "a")),
        );
        assert_eq!(h.take(v3c), vec![puback(1)]);
    }

    #[test]
    fn qos2_inbound_routes_once_even_when_resent_before_pubrel() {
        let mut h = H::new();
        let sub = h.join(v5("s"));
        h.subscribe(sub, "t", QoS::ExactlyOnce);
        let conn = h.join(v5_persistent("p", true));
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 9, "once")),
        );
        assert_eq!(h.take(conn), vec![pubrec(9)]);
        assert_eq!(h.publishes(sub).len(), 1);

        // Resent with DUP on the same connection: PUBREC again, not routed again.
        let mut dup = publish("t", QoS::ExactlyOnce, 9, "once");
        dup.dup = true;
        h.send(conn, Packet::Publish(dup.clone()));
        assert_eq!(h.take(conn), vec![pubrec(9)]);

        // The connection drops before PUBREL; the resumed session still knows the id.
        h.drop_conn(conn);
        let conn = h.join(v5_persistent("p", false));
        h.send(conn, Packet::Publish(dup));
        assert_eq!(h.take(conn), vec![pubrec(9)]);
        h.send(conn, pubrel(9));
        assert_eq!(h.take(conn), vec![pubcomp(9)]);
        assert_eq!(h.publishes(sub).len(), 0);

        // After PUBREL the id is free: the same id is a new message.
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 9, "again")),
        );
        assert_eq!(h.take(conn), vec![pubrec(9)]);
        assert_eq!(payloads(&h.publishes(sub)), vec![b"again"]);

        // PUBREL for an unknown id: PUBCOMP 0x92 in v5.
        h.send(conn, pubrel(77));
        assert_eq!(
            h.take(conn),
            vec![Packet::PubComp(PubResponse {
                reason_code: ReasonCode::PacketIdentifierNotFound,
                ..PubResponse::success(pid(77))
            })]
        );
    }

    #[test]
    fn exceeding_our_receive_maximum_disconnects_with_0x93() {
        let mut h = H::with(BrokerConfig {
            receive_maximum: 2,
            ..BrokerConfig::default()
        });
        let conn = h.join(v5("p"));
        for id in 1..=2 {
            h.send(
                conn,
                Packet::Publish(publish("t", QoS::ExactlyOnce, id, "x")),
            );
        }
        // QoS 1 is acknowledged at once and never counts; a third unreleased QoS 2 would.
        h.send(conn, pubrel(1));
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 3, "x")),
        );
        assert!(!h.is_closed(conn));
        h.take(conn);
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 4, "x")),
        );
        assert_eq!(
            h.take(conn),
            vec![disconnect(ReasonCode::ReceiveMaximumExceeded)]
        );
        assert!(h.is_closed(conn));
    }

    #[test]
    fn inbound_topic_aliases_set_resolve_and_reject() {
        let mut h = H::with(BrokerConfig {
            topic_alias_maximum: 2,
            ..BrokerConfig::default()
        });
        let sub = h.join(v5("s"));
        h.subscribe(sub, "#", QoS::AtMostOnce);
        let conn = h.join(v5("p"));
        h.send(conn, with_alias(publish("a/b", QoS::AtMostOnce, 0, "1"), 1));
        h.send(conn, with_alias(publish("", QoS::AtMostOnce, 0, "2"), 1));
        // Re-pointing an alias is allowed.
        h.send(conn, with_alias(publish("c", QoS::AtMostOnce, 0, "3"), 1));
        h.send(conn, with_alias(publish("", QoS::AtMostOnce, 0, "4"), 1));
        let got = h.publishes(sub);
        let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, vec!["a/b", "a/b", "c", "c"]);
        // Forwarded messages never carry the publisher's alias.
        assert!(got.iter().all(|p| p.properties.topic_alias.is_none()));

        h.send(conn, with_alias(publish("", QoS::AtMostOnce, 0, "x"), 2));
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::ProtocolError)]);

        let conn = h.join(v5("q"));
        h.send(conn, with_alias(publish("t", QoS::AtMostOnce, 0, "x"), 3));
        assert_eq!(
            h.take(conn),
            vec![disconnect(ReasonCode::TopicAliasInvalid)]
        );
        assert!(h.is_closed(conn));
        assert_eq!(h.publishes(sub), vec![]);
    }

    #[test]
    fn qos_retain_and_topic_limits_disconnect() {
        let mut h = H::with(BrokerConfig {
            max_qos: QoS::AtLeastOnce,
            retain_available: false,
            max_topic_levels: 3,
            ..BrokerConfig::default()
        });
        let conn = h.join(v5("a"));
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 1, "x")),
        );
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::QoSNotSupported)]);
        let conn = h.join(v5("b"));
        h.send(conn, retained("t", QoS::AtMostOnce, 0, "x"));
        assert_eq!(
            h.take(conn),
            vec![disconnect(ReasonCode::RetainNotSupported)]
        );
        let conn = h.join(v5("c"));
        h.send(
            conn,
            Packet::Publish(publish("a/b/c/d", QoS::AtMostOnce, 0, "x")),
        );
        assert_eq!(h.take(conn), vec![disconnect(ReasonCode::TopicNameInvalid)]);
        // 3.1.1: closed without DISCONNECT.
        let conn = h.join(v3("d"));
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 1, "x")),
        );
        assert_eq!(h.take(conn), vec![]);
        assert!(h.is_closed(conn));
    }

    #[test]
    fn sys_topics_are_refused_and_not_routed() {
        let mut h = H::new();
        let sub = h.join(v5("s"));
        h.subscribe(sub, "$SYS/#", QoS::AtLeastOnce);
        let conn = h.join(v5("p"));
        h.send(
            conn,
            Packet::Publish(publish("$SYS/x", QoS::AtLeastOnce, 1, "x")),
        );
        h.send(
            conn,
            Packet::Publish(publish("$SYS/x", QoS::ExactlyOnce, 2, "x")),
        );
        h.send(
            conn,
            Packet::Publish(publish("$SYS/x", QoS::AtMostOnce, 0, "x")),
        );
        let refused = |id| PubResponse {
            reason_code: ReasonCode::NotAuthorized,
            ..PubResponse::success(pid(id))
        };
        assert_eq!(
            h.take(conn),
            vec![Packet::PubAck(refused(1)), Packet::PubRec(refused(2))]
        );
        assert!(!h.is_closed(conn));
        // Other `$` topics are fine.
        h.subscribe(sub, "$app/#", QoS::AtMostOnce);
        h.send(
            conn,
            Packet::Publish(publish("$app/x", QoS::AtMostOnce, 0, "ok")),
        );
        assert_eq!(payloads(&h.publishes(sub)), vec![b"ok"]);
        assert_eq!(h.b.stats().refused_publishes, 3);
    }

    #[test]
    fn payload_format_indicator_is_checked() {
        let mut h = H::new();
        let conn = h.join(v5("p"));
        let mut p = publish("t", QoS::AtLeastOnce, 1, "");
        p.payload = Bytes::from_static(&[0xff, 0xfe]);
        p.properties.payload_format_indicator = Some(true);
        h.send(conn, Packet::Publish(p.clone()));
        assert_eq!(
            h.take(conn),
            vec![Packet::PubAck(PubResponse {
                reason_code: ReasonCode::PayloadFormatInvalid,
                ..PubResponse::success(pid(1))
            })]
        );
        // Valid UTF-8 with the indicator passes.
        p.payload = Bytes::from_static("héllo".as_bytes());
        h.send(conn, Packet::Publish(p.clone()));
        assert_eq!(h.take(conn).len(), 1);
        assert!(!h.is_closed(conn));
        // QoS 0 has no acknowledgement to carry 0x99: DISCONNECT.
        p.qos = QoS::AtMostOnce;
        p.packet_id = None;
        p.payload = Bytes::from_static(&[0xc3]);
        h.send(conn, Packet::Publish(p));
        assert_eq!(
            h.take(conn),
            vec![disconnect(ReasonCode::PayloadFormatInvalid)]
        );
    }

    #[test]
    fn retained_messages_are_stored_replaced_and_cleared() {
        let mut h = H::new();
        let conn = h.join(v5("p"));
        h.send(conn, retained("r/1", QoS::AtMostOnce, 0, "one"));
        h.send(conn, retained("r/2", QoS::AtMostOnce, 0, "two"));
        h.send(conn, retained("r/2", QoS::AtMostOnce, 0, "two-b"));
        assert_eq!(h.b.stats().retained, 2);
        // An empty retained payload clears the topic and is still delivered [MQTT-3.3.1-10].
        let sub = h.join(v5("s"));
        h.subscribe(sub, "r/#", QoS::AtMostOnce);
        let replay = h.publishes(sub);
        assert_eq!(payloads(&replay), vec![&b"one"[..], b"two-b"]);
        h.send(conn, retained("r/1", QoS::AtMostOnce, 0, ""));
        let live = h.publishes(sub);
        assert_eq!(live.len(), 1);
        assert!(live[0].payload.is_empty());
        assert!(!live[0].retain, "live delivery clears RETAIN");
        assert_eq!(h.b.stats().retained, 1);
        assert_eq!(live[0].topic, Utf8::from_static("r/1"));
    }
}
