//! SUBSCRIBE and UNSUBSCRIBE: per-filter validation and reason codes, the session's
//! subscription map mirrored into the [`Router`](crate::router::Router), and retained-message
//! replay after SUBACK.
//!
//! Place in the data flow: `client SUBSCRIBE -> checks -> router.subscribe -> SUBACK ->
//! retained replay through deliver`. Each filter is judged on its own (a SUBSCRIBE with several
//! filters behaves as several SUBSCRIBEs), in this order: length, syntax and level limits (0x8F),
//! shared subscriptions available (0x9E), wildcards available (0xA2), subscription identifiers
//! available (0xA1), the tenant's ACL (0x87), `max_subscriptions` and the tenant's
//! `max_subscriptions_per_client` (0x97). MQTT 3.1.1 reports every failure as 0x80. The
//! subscription lives in the router of the session's tenant, and replays come from the
//! tenant's retained messages.
//!
//! Retained messages are replayed with RETAIN = 1 [MQTT-3.3.1-9] per Retain Handling (0: always,
//! 1: only for a new subscription, 2: never), never for shared subscriptions, in topic order.

use super::persist::Promise;
use super::{Broker, ConnId, Output};
use crate::queue::Queued;
use crate::router::{SessionKey, SubscriptionEntry};
use std::sync::Arc;
use std::time::Instant;
use tidegate_protocol::{
    AckProperties, Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, topic,
};
use tidegate_store::StoreOp;

impl Broker {
    pub(super) fn on_subscribe(&mut self, now: Instant, conn: ConnId, s: Subscribe) {
        let Some((key, v5)) = self.connected(conn).map(|c| (c.session, c.version.is_v5())) else {
            return;
        };
        if s.filters.is_empty() || s.properties.subscription_identifier == Some(0) {
            // Normally caught by the codec: [MQTT-3.8.3-2] and section 3.8.2.1.2.
            return self.violation(
                now,
                conn,
                ReasonCode::ProtocolError,
                "SUBSCRIBE without filters or with subscription identifier 0",
            );
        }
        let shared_no_local = s
            .filters
            .iter()
            .any(|f| f.options.no_local && matches!(topic::parse_shared(&f.filter), Ok(Some(_))));
        if shared_no_local {
            return self.violation(
                now,
                conn,
                ReasonCode::ProtocolError,
                "[MQTT-3.8.3-4] No Local on a shared subscription",
            );
        }
        let identifier = s.properties.subscription_identifier;
        let durable = self.durable_client(key).is_some();
        if durable && self.store_refusing() {
            // The store cannot take the subscriptions: refuse them rather than promise them.
            let code = if v5 {
                ReasonCode::QuotaExceeded
            } else {
                ReasonCode::UnspecifiedError
            };
            let codes = vec![code; s.filters.len()];
            return self.send(
                conn,
                Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    reason_codes: codes,
                    properties: AckProperties::default(),
                }),
            );
        }
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut replays: Vec<(String, SubscriptionEntry)> = Vec::new();
        for f in &s.filters {
            let checked = self
                .check_filter(&f.filter, identifier.is_some())
                .and_then(|shared| {
                    if self.subscribe_allowed(conn, &f.filter) {
                        Ok(shared)
                    } else {
                        Err(ReasonCode::NotAuthorized)
                    }
                });
            let code = match checked {
                Err(code) => code,
                Ok(shared) => {
                    let granted = f.options.qos.min(self.config.max_qos);
                    let entry = SubscriptionEntry {
                        options: SubscriptionOptions {
                            qos: granted,
                            ..f.options
                        },
                        identifier,
                    };
                    match self.add_subscription(key, &f.filter, entry) {
                        Err(code) => code,
                        Ok(existed) => {
                            let replay = !shared
                                && match f.options.retain_handling {
                                    RetainHandling::SendAtSubscribe => true,
                                    RetainHandling::SendIfNew => !existed,
                                    RetainHandling::DoNotSend => false,
                                };
                            if replay {
                                replays.push((f.filter.to_string(), entry));
                            }
                            granted_code(granted)
                        }
                    }
                }
            };
            if !code.is_success() {
                tracing::debug!(
                    conn = conn.0,
                    filter = f.filter.as_str(),
                    ?code,
                    "subscription refused"
                );
            }
            codes.push(if v5 || code.is_success() {
                code
            } else {
                ReasonCode::UnspecifiedError
            });
        }
        let promise = durable.then(|| Promise::SubAck {
            session: key,
            v5,
            filters: s.filters.iter().map(|f| f.filter.to_string()).collect(),
        });
        self.emit(
            Output::Send {
                conn,
                packet: Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    reason_codes: codes,
                    properties: AckProperties::default(),
                }),
            },
            promise,
        );
        for (filter, entry) in replays {
            self.replay_retained(now, key, &filter, entry);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, conn: ConnId, u: Unsubscribe) {
        let Some((key, v5)) = self.connected(conn).map(|c| (c.session, c.version.is_v5())) else {
            return;
        };
        let mut codes = Vec::with_capacity(if v5 { u.filters.len() } else { 0 });
        for filter in &u.filters {
            let code = if filter_syntax_ok(filter) {
                let removed = self.unsubscribe_session(key, filter);
                if removed && let Some(client_id) = self.durable_client(key) {
                    self.store(StoreOp::DeleteSubscription {
                        client_id,
                        filter: Arc::from(filter.as_str()),
                    });
                }
                if removed {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            } else {
                ReasonCode::TopicFilterInvalid
            };
            if v5 {
                codes.push(code);
            }
        }
        self.send(
            conn,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reason_codes: codes,
                properties: AckProperties::default(),
            }),
        );
    }

    /// Validates one filter against syntax, limits and the features enabled; returns whether
    /// it is a shared subscription.
    fn check_filter(&self, filter: &str, has_identifier: bool) -> Result<bool, ReasonCode> {
        if filter.len() > self.config.max_topic_length {
            return Err(ReasonCode::TopicFilterInvalid);
        }
        let shared = topic::parse_shared(filter).map_err(|_| ReasonCode::TopicFilterInvalid)?;
        let inner = shared.map_or(filter, |s| s.filter);
        topic::validate_topic_filter(inner).map_err(|_| ReasonCode::TopicFilterInvalid)?;
        if inner.split('/').count() > self.config.max_topic_levels {
            return Err(ReasonCode::TopicFilterInvalid);
        }
        if shared.is_some() && !self.config.shared_subscriptions {
            return Err(ReasonCode::SharedSubscriptionsNotSupported);
        }
        if !self.config.wildcard_subscriptions && inner.contains(['+', '#']) {
            return Err(ReasonCode::WildcardSubscriptionsNotSupported);
        }
        if has_identifier && !self.config.subscription_identifiers {
            return Err(ReasonCode::SubscriptionIdentifiersNotSupported);
        }
        Ok(shared.is_some())
    }

    /// Records the subscription in the session and the router; returns whether it replaced an
    /// existing one (Retain Handling 1 needs that).
    fn add_subscription(
        &mut self,
        key: SessionKey,
        filter: &str,
        entry: SubscriptionEntry,
    ) -> Result<bool, ReasonCode> {
        let Broker {
            sessions,
            tenants,
            config,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&key) else {
            return Err(ReasonCode::UnspecifiedError);
        };
        let Some(t) = tenants.get_mut(s.tenant.0 as usize) else {
            return Err(ReasonCode::UnspecifiedError);
        };
        let max = t
            .limits
            .max_subscriptions_per_client
            .map_or(config.max_subscriptions, |m| {
                config.max_subscriptions.min(m as usize)
            });
        if !s.subscriptions.contains_key(filter) && s.subscriptions.len() >= max {
            t.counters.quota.subscriptions += 1;
            return Err(ReasonCode::QuotaExceeded);
        }
        let existed = t
            .router
            .subscribe(key, filter, entry)
            .map_err(|_| ReasonCode::TopicFilterInvalid)?;
        s.subscriptions.insert(filter.to_owned(), entry);
        if let Some(client_id) = self.durable_client(key) {
            let subscription = Broker::subscription_record(filter, entry);
            self.store(StoreOp::PutSubscription {
                client_id,
                subscription,
            });
        }
        Ok(existed)
    }

    /// Removes `key`'s subscription to `filter` from its session and its tenant's router;
    /// returns whether the router had it.
    pub(super) fn unsubscribe_session(&mut self, key: SessionKey, filter: &str) -> bool {
        let Some(s) = self.sessions.get_mut(&key) else {
            return false;
        };
        s.subscriptions.remove(filter);
        let tenant = s.tenant;
        self.tenant_mut(tenant).router.unsubscribe(key, filter)
    }

    /// Sends the retained messages matching a new (non-shared) subscription.
    fn replay_retained(
        &mut self,
        now: Instant,
        key: SessionKey,
        filter: &str,
        entry: SubscriptionEntry,
    ) {
        let mut found = Vec::new();
        let Some(tenant) = self.sessions.get(&key).map(|s| s.tenant) else {
            return;
        };
        let t = self.tenant_mut(tenant);
        t.retained.matching(filter, now, &mut found);
        // The `$SYS` figures live beside the retained store (see the `sys` module).
        t.sys.matching(filter, &mut found);
        found.sort_by(|a, b| a.topic.cmp(&b.topic));
        for message in found {
            if entry.options.no_local && message.publisher == Some(key) {
                continue;
            }
            let item = Queued {
                qos: message.qos.min(entry.options.qos),
                retain: true,
                subscription_identifiers: entry.identifier.into_iter().collect(),
                message,
            };
            self.deliver(now, key, item);
        }
    }
}

/// The SUBACK code granting `qos`.
fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// Whether an UNSUBSCRIBE filter is a well-formed (plain or shared) topic filter.
fn filter_syntax_ok(filter: &str) -> bool {
    match topic::parse_shared(filter) {
        Ok(Some(_)) => true,
        Ok(None) => topic::validate_topic_filter(filter).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::{BrokerConfig, Message};
    use bytes::Bytes;
    use std::sync::Arc;
    use tidegate_protocol::{
        AckProperties, Packet, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck,
        SubscriptionOptions, UnsubAck, Unsubscribe, UnsubscribeProperties,
    };

    fn handling(qos: QoS, rh: RetainHandling) -> SubscriptionOptions {
        SubscriptionOptions {
            retain_handling: rh,
            ..opts(qos)
        }
    }

    #[test]
    fn retained_replay_follows_retain_handling() {
        let mut h = H::new();
        let publ = h.join(v5("pub"));
        h.send(publ, retained("r", QoS::AtLeastOnce, 1, "kept"));
        h.take(publ);
        let sub = h.join(v5("sub"));

        // 0: at every subscribe, RETAIN set, QoS min(message, granted).
        let rh0 = handling(QoS::ExactlyOnce, RetainHandling::SendAtSubscribe);
        assert_eq!(
            h.subscribe_with(sub, "r", rh0, None),
            ReasonCode::GrantedQoS2
        );
        let got = h.publishes(sub);
        assert_eq!(payloads(&got), vec![b"kept"]);
        assert!(got[0].retain);
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        h.send(sub, puback(got[0].packet_id.unwrap().get()));
        h.subscribe_with(sub, "r", rh0, None);
        assert_eq!(
            h.publishes(sub).len(),
            1,
            "0 replays on a repeated subscribe too"
        );

        // 1: only when the subscription is new.
        let rh1 = handling(QoS::AtMostOnce, RetainHandling::SendIfNew);
        h.subscribe_with(sub, "r", rh1, None);
        assert_eq!(h.publishes(sub), vec![]);
        h.subscribe_with(sub, "+", rh1, None);
        assert_eq!(h.publishes(sub).len(), 1);

        // 2: never.
        let rh2 = handling(QoS::AtMostOnce, RetainHandling::DoNotSend);
        h.subscribe_with(sub, "#", rh2, None);
        assert_eq!(h.publishes(sub), vec![]);
    }

    #[test]
    fn retain_as_published_keeps_the_flag_on_live_messages() {
        let mut h = H::new();
        let sub = h.join(v5("sub"));
        let rap = SubscriptionOptions {
            retain_as_published: true,
            ..opts(QoS::AtMostOnce)
        };
        h.subscribe_with(sub, "rap", rap, None);
        h.subscribe(sub, "plain", QoS::AtMostOnce);
        let publ = h.join(v5("pub"));
        h.send(publ, retained("rap", QoS::AtMostOnce, 0, "a"));
        h.send(publ, retained("plain", QoS::AtMostOnce, 0, "b"));
        let flags: Vec<bool> = h.publishes(sub).iter().map(|p| p.retain).collect();
        assert_eq!(flags, vec![true, false]);
    }

    #[test]
    fn shared_subscriptions_round_robin_skip_offline_and_get_no_retained() {
        let mut h = H::new();
        let publ = h.join(v5("pub"));
        h.send(publ, retained("job", QoS::AtMostOnce, 0, "old"));
        let a = h.join(v5_persistent("a", true));
        let b = h.join(v5_persistent("b", true));
        for conn in [a, b] {
            assert_eq!(
                h.subscribe(conn, "$share/g/job", QoS::AtLeastOnce),
                ReasonCode::GrantedQoS1
            );
        }
        assert_eq!(h.take(a), vec![]);
        for (i, p) in ["1", "2", "3", "4"].into_iter().enumerate() {
            h.send(
                publ,
                Packet::Publish(publish("job", QoS::AtLeastOnce, i as u16 + 1, p)),
            );
        }
        let got_a = h.publishes(a);
        let got_b = h.publishes(b);
        assert_eq!(got_a.len(), 2);
        assert_eq!(got_b.len(), 2);
        for p in got_a.iter().chain(&got_b) {
            assert!(!p.retain);
        }
        // b goes offline: every message goes to a.
        h.drop_conn(b);
        h.send(
            publ,
            Packet::Publish(publish("job", QoS::AtLeastOnce, 5, "5")),
        );
        h.send(
            publ,
            Packet::Publish(publish("job", QoS::AtLeastOnce, 6, "6")),
        );
        assert_eq!(payloads(&h.publishes(a)), vec![&b"5"[..], b"6"]);
        // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
        let nl = SubscriptionOptions {
            no_local: true,
            ..opts(QoS::AtMostOnce)
        };
        h.send(a, subscribe(2, &[("$share/g/x", nl)], None));
        assert_eq!(h.take(a), vec![disconnect(ReasonCode::ProtocolError)]);
    }

    #[test]
    fn shared_member_chosen_while_all_offline_queues_the_message() {
        let mut h = H::new();
        let c = v5_persistent("a", true);
        let a = h.join(c.clone());
        h.subscribe(a, "$share/g/job", QoS::AtLeastOnce);
        h.drop_conn(a);
        let publ = h.join(v5("pub"));
        h.send(
            publ,
            Packet::Publish(publish("job", QoS::AtLeastOnce, 1, "queued")),
        );
        let mut resume = c;
        resume.clean_start = false;
        let a = h.join(resume);
        assert_eq!(payloads(&h.publishes(a)), vec![b"queued"]);
    }

    #[test]
    fn subscription_identifiers_are_attached_per_matching_subscription() {
        let mut h = H::new();
        let sub = h.join(v5("sub"));
        h.subscribe_with(sub, "a/+", opts(QoS::AtMostOnce), Some(7));
        h.subscribe_with(sub, "a/#", opts(QoS::AtMostOnce), Some(9));
        h.subscribe(sub, "a/b", QoS::AtMostOnce);
        let publ = h.join(v5("pub"));
        h.send(
            publ,
            Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, "x")),
        );
        let got = h.publishes(sub);
        assert_eq!(
            got.len(),
            1,
            "one copy per session for overlapping subscriptions"
        );
        let mut ids = got[0].properties.subscription_identifiers.clone();
        ids.sort_unstable();
        assert_eq!(ids, vec![7, 9]);
    }

    #[test]
    fn no_local_skips_own_messages() {
        let mut h = H::new();
        let me = h.join(v5("me"));
        let nl = SubscriptionOptions {
            no_local: true,
            ..opts(QoS::AtMostOnce)
        };
        h.subscribe_with(me, "chat", nl, None);
        let other = h.join(v5("other"));
        h.subscribe(other, "chat", QoS::AtMostOnce);
        h.send(
            me,
            Packet::Publish(publish("chat", QoS::AtMostOnce, 0, "mine")),
        );
        assert_eq!(h.publishes(me), vec![]);
        assert_eq!(h.publishes(other).len(), 1);
        h.send(
            other,
            Packet::Publish(publish("chat", QoS::AtMostOnce, 0, "theirs")),
        );
        assert_eq!(payloads(&h.publishes(me)), vec![b"theirs"]);
    }

    #[test]
    fn invalid_and_refused_filters_get_their_codes() {
        let mut h = H::with(BrokerConfig {
            max_subscriptions: 2,
            max_qos: QoS::AtLeastOnce,
            wildcard_subscriptions: false,
            subscription_identifiers: false,
            ..BrokerConfig::default()
        });
        let conn = h.join(v5("c"));
        let q2 = opts(QoS::ExactlyOnce);
        h.send(
            conn,
            subscribe(
                3,
                &[
                    ("a", q2),
                    ("a/#/b", q2),
                    ("$share/g", q2),
                    ("a/+", q2),
                    ("b", q2),
                    ("c", q2),
                    ("a", q2),
                ],
                None,
            ),
        );
        assert_eq!(
            h.take(conn),
            vec![Packet::SubAck(SubAck {
                packet_id: pid(3),
                reason_codes: vec![
                    ReasonCode::GrantedQoS1,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::WildcardSubscriptionsNotSupported,
                    ReasonCode::GrantedQoS1,
                    ReasonCode::QuotaExceeded,
                    // Replacing an existing subscription does not count against the limit.
                    ReasonCode::GrantedQoS1,
                ],
                properties: AckProperties::default(),
            })]
        );
        h.send(conn, subscribe(4, &[("z", q2)], Some(5)));
        let Packet::SubAck(ack) = &h.take(conn)[0] else {
            panic!("expected SUBACK");
        };
        assert_eq!(
            ack.reason_codes,
            vec![ReasonCode::SubscriptionIdentifiersNotSupported]
        );

        // 3.1.1 reports every failure as 0x80.
        let v3c = h.join(v3("old"));
        h.send(
            v3c,
            subscribe(1, &[("a/#/b", q2), ("x", opts(QoS::AtMostOnce))], None),
        );
        let Packet::SubAck(ack) = &h.take(v3c)[0] else {
            panic!("expected SUBACK");
        };
        assert_eq!(
            ack.reason_codes,
            vec![ReasonCode::UnspecifiedError, ReasonCode::Success]
        );
    }

    #[test]
    fn shared_subscriptions_can_be_disabled() {
        let mut h = H::with(BrokerConfig {
            shared_subscriptions: false,
            ..BrokerConfig::default()
        });
        let conn = h.join(v5("c"));
        assert_eq!(
            h.subscribe(conn, "$share/g/t", QoS::AtMostOnce),
            ReasonCode::SharedSubscriptionsNotSupported
        );
        assert_eq!(h.b.stats().subscriptions, 0);
    }

    #[test]
    fn sys_topics_are_not_matched_by_leading_wildcards() {
        let mut h = H::new();
        // Only the server publishes to $SYS: inject a retained and a live message directly.
        let sys = |payload: &'static str, retain: bool| {
            Arc::new(Message {
                topic: utf8("$SYS/broker/uptime"),
                payload: Bytes::from_static(payload.as_bytes()),
                qos: QoS::AtMostOnce,
                retain,
                properties: PublishProperties::default(),
                expires_at: None,
                publisher: None,
                received: None,
            })
        };
        h.b.tenants[0].retained.set(sys("r", true)).unwrap();
        let sub = h.join(v5("sub"));
        h.subscribe(sub, "#", QoS::AtMostOnce);
        h.subscribe(sub, "+/broker/#", QoS::AtMostOnce);
        assert_eq!(h.publishes(sub), vec![]);
        let now = h.now;
        let default = super::super::tenant::TenantIdx::DEFAULT;
        assert_eq!(
            h.b.route_message(now, default, sys("live", false)).matched,
            0
        );
        assert_eq!(h.publishes(sub), vec![]);
        h.subscribe(sub, "$SYS/#", QoS::AtMostOnce);
        assert_eq!(payloads(&h.publishes(sub)), vec![b"r"]);
        assert_eq!(
            h.b.route_message(now, default, sys("live", false)).matched,
            1
        );
        assert_eq!(payloads(&h.publishes(sub)), vec![b"live"]);
    }

    #[test]
    fn unsubscribe_reports_what_existed() {
        let mut h = H::new();
        let conn = h.join(v5("c"));
        h.subscribe(conn, "a", QoS::AtMostOnce);
        h.subscribe(conn, "$share/g/b", QoS::AtMostOnce);
        let unsub = |filters: &[&str]| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(8),
                filters: filters.iter().map(|f| utf8(f)).collect(),
                properties: UnsubscribeProperties::default(),
            })
        };
        h.send(conn, unsub(&["a", "$share/g/b", "a", "x/#/y"]));
        assert_eq!(
            h.take(conn),
            vec![Packet::UnsubAck(UnsubAck {
                packet_id: pid(8),
                reason_codes: vec![
                    ReasonCode::Success,
                    ReasonCode::Success,
                    ReasonCode::NoSubscriptionExisted,
                    ReasonCode::TopicFilterInvalid,
                ],
                properties: AckProperties::default(),
            })]
        );
        assert_eq!(h.b.stats().subscriptions, 0);
        let publ = h.join(v5("pub"));
        h.send(publ, Packet::Publish(publish("a", QoS::AtMostOnce, 0, "x")));
        assert_eq!(h.publishes(conn), vec![]);

        let v3c = h.join(v3("old"));
        h.send(v3c, unsub(&["a"]));
        let Packet::UnsubAck(ack) = &h.take(v3c)[0] else {
            panic!("expected UNSUBACK");
        };
        assert!(ack.reason_codes.is_empty());
    }
}
