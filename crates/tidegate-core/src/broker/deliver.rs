//! Outbound delivery: from a routed [`Queued`] delivery to a PUBLISH on the subscriber's
//! connection, and the acknowledgements that complete it.
//!
//! Place in the data flow: `route_message / retained replay -> deliver -> (send now | session
//! queue) -> PUBLISH`, and `resume / PUBACK / PUBREC / PUBCOMP -> drain -> resends, queue`.
//!
//! Rules applied here:
//! - QoS 0 is sent at once to an online client and needs no inflight slot; QoS 1/2 needs a slot
//!   in the window min(`max_inflight`, client Receive Maximum) and waits in the queue when it is
//!   full — and also while older QoS 1/2 deliveries wait, so they stay in order.
//! - An expired message is dropped, not sent; the Message Expiry Interval forwarded is what is
//!   left of it at send time.
//! - A PUBLISH larger than the client's Maximum Packet Size is dropped for that client as if it
//!   had been delivered [MQTT-3.1.2-25]; the size is measured with the alias actually used.
//! - Outbound topic aliases: full topic plus a new alias the first time, empty topic plus the
//!   alias after that; an alias is only committed once its PUBLISH is really sent.

use super::alias::AliasUse;
use super::session::Awaiting;
use super::{Broker, ConnId};
use crate::queue::{PushOutcome, Queued};
use crate::router::SessionKey;
use std::time::Instant;
use tidegate_protocol::{
    AckProperties, Packet, PacketId, PubResponse, Publish, PublishProperties, QoS, ReasonCode,
    Utf8, encoded_len,
};
use tidegate_store::StoreOp;

impl Broker {
    /// Hands one delivery to a session: sent now when possible, queued otherwise.
    pub(super) fn deliver(&mut self, now: Instant, key: SessionKey, item: Queued) {
        if item.message.is_expired(now) {
            self.counters.dropped_expired += 1;
            return;
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let Some(conn) = session.conn else {
            return self.enqueue(key, item);
        };
        let send_now = item.qos == QoS::AtMostOnce
            || (session.queue.is_empty() && session.inflight.len() < self.window(conn));
        if send_now {
            self.transmit(now, conn, key, item);
        } else {
            self.enqueue(key, item);
        }
    }

    /// Sends what the window allows: first inflight entries awaiting their resend after a
    /// resume (PUBLISH with DUP = 1, or PUBREL for those past PUBREC, in original order
    /// [MQTT-4.4.0-1]; started deliveries are completed even if their message expired), then
    /// queued deliveries, then any QoS 0 ones waiting behind a full window (they need no slot).
    pub(super) fn drain(&mut self, now: Instant, key: SessionKey) {
        loop {
            let Some(conn) = self.sessions.get(&key).and_then(|s| s.conn) else {
                return;
            };
            let window = self.window(conn);
            let Some(s) = self.sessions.get_mut(&key) else {
                return;
            };
            if s.inflight.sent_len() < window
                && let Some(id) = s.inflight.next_resend()
            {
                self.resend(now, conn, key, id);
                continue;
            }
            let next = match s.queue.front_qos() {
                None => None,
                Some(QoS::AtMostOnce) => s.queue.pop_front(),
                Some(_) if s.inflight.len() < window => s.queue.pop_front(),
                Some(_) => s.queue.pop_qos0(),
            };
            let Some((seq, item)) = next else {
                // Memory is empty: the rest of a persistent queue comes from the store.
                self.request_queue_load(key);
                return;
            };
            // Leaves the stored queue in the same batch that stores its inflight entry.
            self.unqueue(key, seq);
            if item.message.is_expired(now) {
                self.counters.dropped_expired += 1;
                continue;
            }
            self.transmit(now, conn, key, item);
        }
    }

    /// Sends inflight entry `id` again on a new connection.
    fn resend(&mut self, now: Instant, conn: ConnId, key: SessionKey, id: PacketId) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.inflight.mark_sent(id);
        let item = match s.inflight.stage(id) {
            Some(Awaiting::Ack(item) | Awaiting::Rec(item)) => item.clone(),
            Some(Awaiting::Comp) => {
                return self.send(conn, Packet::PubRel(PubResponse::success(id)));
            }
            None => return,
        };
        if !self.send_publish(now, conn, &item, Some(id), true) {
            self.counters.dropped_too_large += 1;
            if let Some(s) = self.sessions.get_mut(&key) {
                s.inflight.remove(id);
            }
            self.forget_inflight(key, id);
        }
    }

    /// PUBACK from the client.
    pub(super) fn on_puback(&mut self, now: Instant, conn: ConnId, r: PubResponse) {
        let Some(key) = self.connected(conn).map(|c| c.session) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if let Some(Awaiting::Ack(_)) = s.inflight.stage(r.packet_id) {
            s.inflight.remove(r.packet_id);
            self.forget_inflight(key, r.packet_id);
            self.drain(now, key);
        } else {
            tracing::debug!(
                conn = conn.0,
                id = r.packet_id.get(),
                "unexpected PUBACK ignored"
            );
        }
    }

    /// PUBREC from the client: answer PUBREL, or end the flow on a failure code.
    pub(super) fn on_pubrec(&mut self, now: Instant, conn: ConnId, r: PubResponse) {
        let Some((key, v5)) = self.connected(conn).map(|c| (c.session, c.version.is_v5())) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let id = r.packet_id;
        match s.inflight.stage(id) {
            Some(Awaiting::Rec(_)) if !r.reason_code.is_success() => {
                // A PUBREC >= 0x80 ends the QoS 2 flow: no PUBREL, the slot is free.
                s.inflight.remove(id);
                self.forget_inflight(key, id);
                self.drain(now, key);
            }
            Some(Awaiting::Rec(_)) => {
                s.inflight.released(id);
                s.inflight.mark_sent(id);
                // The PUBREL stage is stored before the PUBREL can leave: after a crash the
                // flow resumes with PUBREL, never with the PUBLISH again.
                if let Some(client_id) = self.durable_client(key)
                    && let Some(seq) = self.sessions.get(&key).and_then(|s| s.inflight.seq(id))
                {
                    let record = self.inflight_record(id, seq, &Awaiting::Comp);
                    self.store(StoreOp::PutInflight { client_id, record });
                }
                self.send(conn, Packet::PubRel(PubResponse::success(id)));
            }
            // A repeated PUBREC: our PUBREL may have been lost with the connection.
            Some(Awaiting::Comp) => {
                s.inflight.mark_sent(id);
                self.send(conn, Packet::PubRel(PubResponse::success(id)));
            }
            _ => {
                tracing::debug!(conn = conn.0, id = id.get(), "PUBREC for unknown packet id");
                let reason = if v5 {
                    ReasonCode::PacketIdentifierNotFound
                } else {
                    ReasonCode::Success
                };
                self.send(
                    conn,
                    Packet::PubRel(PubResponse {
                        packet_id: id,
                        reason_code: reason,
                        properties: AckProperties::default(),
                    }),
                );
            }
        }
    }

    /// PUBCOMP from the client: the QoS 2 delivery is complete.
    pub(super) fn on_pubcomp(&mut self, now: Instant, conn: ConnId, r: PubResponse) {
        let Some(key) = self.connected(conn).map(|c| c.session) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if let Some(Awaiting::Comp) = s.inflight.stage(r.packet_id) {
            s.inflight.remove(r.packet_id);
            self.forget_inflight(key, r.packet_id);
            self.drain(now, key);
        } else {
            tracing::debug!(
                conn = conn.0,
                id = r.packet_id.get(),
                "unexpected PUBCOMP ignored"
            );
        }
    }

    /// The outbound window of `conn`: min(max_inflight, the client's Receive Maximum).
    fn window(&self, conn: ConnId) -> usize {
        let client = self.connected(conn).map_or(u16::MAX, |c| c.receive_maximum);
        usize::from(self.config.max_inflight.min(client))
    }

    fn enqueue(&mut self, key: SessionKey, item: Queued) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let durable = s.durable && self.is_durable();
        // Built before the push moves the item, only when it will be written.
        let record = durable.then(|| item.clone());
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let pushed = s.queue.push(item);
        match pushed.outcome {
            PushOutcome::Queued => {}
            PushOutcome::QueuedDroppedOldest | PushOutcome::Rejected => {
                tracing::debug!(
                    client_id = &*s.client_id,
                    "session queue full, message dropped"
                );
                let tenant = s.tenant;
                self.counters.dropped_queue_full += 1;
                self.tenant_mut(tenant).counters.quota.queued_messages += 1;
            }
        }
        if let Some(evicted) = pushed.evicted {
            self.unqueue(key, evicted);
        }
        if let (Some(seq), Some(item), Some(client_id)) =
            (pushed.seq, record, self.durable_client(key))
        {
            let record = self.queued_record(&item);
            self.store(StoreOp::PutQueued {
                client_id,
                seq,
                record,
            });
        }
    }

    /// Deletes the stored inflight entry `id` of a durable session.
    fn forget_inflight(&mut self, key: SessionKey, packet_id: PacketId) {
        if let Some(client_id) = self.durable_client(key) {
            self.store(StoreOp::DeleteInflight {
                client_id,
                packet_id,
            });
        }
    }

    /// First transmission of a delivery: a packet id and an inflight entry for QoS 1/2.
    fn transmit(&mut self, now: Instant, conn: ConnId, key: SessionKey, item: Queued) {
        let packet_id = if item.qos == QoS::AtMostOnce {
            None
        } else {
            let Some(id) = self
                .sessions
                .get_mut(&key)
                .and_then(|s| s.inflight.next_free_id())
            else {
                // Unreachable while the window (a u16) is below 65,535 entries, which the
                // callers check; kept as a counted drop rather than a panic.
                self.counters.dropped_queue_full += 1;
                return;
            };
            Some(id)
        };
        if !self.send_publish(now, conn, &item, packet_id, false) {
            self.counters.dropped_too_large += 1;
            return;
        }
        self.counters.messages_out.add(item.qos);
        if let Some(received) = item.message.received {
            self.counters
                .delivery_latency
                .record(now.saturating_duration_since(received));
        }
        let Some(id) = packet_id else {
            return;
        };
        let stage = match item.qos {
            QoS::ExactlyOnce => Awaiting::Rec(item),
            _ => Awaiting::Ack(item),
        };
        if let Some(client_id) = self.durable_client(key) {
            let seq = self.sessions.get(&key).map_or(0, |s| s.inflight.next_seq());
            let record = self.inflight_record(id, seq, &stage);
            self.store(StoreOp::PutInflight { client_id, record });
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.inflight.insert(id, stage);
        }
    }

    /// Builds the PUBLISH of `item` for `conn` and sends it, unless it exceeds the client's
    /// Maximum Packet Size (then returns false and sends nothing).
    fn send_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        item: &Queued,
        packet_id: Option<PacketId>,
        dup: bool,
    ) -> bool {
        let Some(c) = self.connected_mut(conn) else {
            return false;
        };
        let msg = &item.message;
        let v5 = c.version.is_v5();
        let mut publish = Publish {
            dup,
            qos: item.qos,
            retain: item.retain,
            topic: msg.topic.clone(),
            packet_id,
            payload: msg.payload.clone(),
            // 3.1.1 carries no properties: skip the clone of the user properties.
            properties: if v5 {
                PublishProperties {
                    message_expiry_interval: msg.remaining_expiry(now),
                    subscription_identifiers: item.subscription_identifiers.clone(),
                    ..msg.properties.clone()
                }
            } else {
                PublishProperties::default()
            },
        };
        let alias = if v5 {
            c.outbound_aliases.lookup(&msg.topic)
        } else {
            AliasUse::None
        };
        match alias {
            AliasUse::None => {}
            AliasUse::Establish(a) => publish.properties.topic_alias = Some(a),
            AliasUse::Reuse(a) => {
                publish.topic = Utf8::new();
                publish.properties.topic_alias = Some(a);
            }
        }
        let packet = Packet::Publish(publish);
        if let Some(max) = c.max_packet_size {
            let len = encoded_len(&packet, c.version);
            if len > usize::try_from(max).unwrap_or(usize::MAX) {
                tracing::debug!(
                    conn = conn.0,
                    len,
                    max,
                    "PUBLISH exceeds the client's Maximum Packet Size; dropped"
                );
                return false;
            }
        }
        if let AliasUse::Establish(a) = alias {
            c.outbound_aliases.commit(&msg.topic, a);
        }
        let (published, tenant) = (msg.qos, c.tenant);
        if !dup {
            self.tenant_mut(tenant).counters.messages_out += 1;
        }
        self.emit_delivery(conn, packet, published);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::{BrokerConfig, QueueDropPolicy};
    use bytes::Bytes;
    use std::time::Duration;
    use tidegate_protocol::{Packet, PubResponse, Publish, QoS, ReasonCode, Utf8};

    /// A subscriber with a persistent session on `t` at `qos`, and a publisher.
    fn pair(h: &mut H, qos: QoS) -> (tidegate_protocol::Connect, super::ConnId, super::ConnId) {
        let c = v5_persistent("sub", true);
        let sub = h.join(c.clone());
        h.subscribe(sub, "t", qos);
        let publ = h.join(v5("pub"));
        (c, sub, publ)
    }

    fn pub0(h: &mut H, conn: super::ConnId, payload: &'static str) {
        h.send(
            conn,
            Packet::Publish(publish("t", QoS::AtMostOnce, 0, payload)),
        );
    }

    fn pub_q(h: &mut H, conn: super::ConnId, qos: QoS, id: u16, payload: &'static str) {
        h.send(conn, Packet::Publish(publish("t", qos, id, payload)));
        h.take(conn);
    }

    #[test]
    fn qos1_outbound_waits_for_puback_and_is_resent_with_dup_after_resume() {
        let mut h = H::new();
        let (_, sub, publ) = pair(&mut h, QoS::AtLeastOnce);
        pub_q(&mut h, publ, QoS::AtLeastOnce, 1, "m1");
        pub_q(&mut h, publ, QoS::AtLeastOnce, 2, "m2");
        let got = h.publishes(sub);
        assert_eq!(payloads(&got), vec![&b"m1"[..], b"m2"]);
        assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
        let (id1, id2) = (got[0].packet_id.unwrap(), got[1].packet_id.unwrap());
        assert_ne!(id1, id2);
        h.send(sub, Packet::PubAck(PubResponse::success(id1)));
        // Unknown PUBACK: ignored.
        h.send(sub, puback(999));
        assert!(!h.is_closed(sub));
        h.drop_conn(sub);

        let sub = h.join(v5_persistent("sub", false));
        let again = h.publishes(sub);
        assert_eq!(payloads(&again), vec![b"m2"]);
        assert!(again[0].dup);
        assert_eq!(again[0].packet_id, Some(id2));
        h.send(sub, Packet::PubAck(PubResponse::success(id2)));
        h.drop_conn(sub);
        let sub = h.join(v5_persistent("sub", false));
        assert_eq!(h.take(sub), vec![]);
        assert_eq!(h.b.stats().messages_out.qos1, 2);
    }

    #[test]
    fn qos2_outbound_survives_a_resume_at_every_step_without_duplicates() {
        let mut h = H::new();
        let (c, sub, publ) = pair(&mut h, QoS::ExactlyOnce);
        pub_q(&mut h, publ, QoS::ExactlyOnce, 1, "m");
        h.send(publ, pubrel(1));
        let got = h.publishes(sub);
        assert_eq!(got.len(), 1);
        let id = got[0].packet_id.unwrap();
        assert!(!got[0].dup);

        // Lost before PUBREC: the PUBLISH comes again with DUP.
        h.drop_conn(sub);
        let mut resume = c.clone();
        resume.clean_start = false;
        let sub = h.join(resume.clone());
        let again = h.publishes(sub);
        assert_eq!(again.len(), 1);
        assert!(again[0].dup);
        assert_eq!(again[0].packet_id, Some(id));

        // PUBREC -> PUBREL; lost before PUBCOMP: only PUBREL comes again.
        h.send(sub, Packet::PubRec(PubResponse::success(id)));
        assert_eq!(h.take(sub), vec![Packet::PubRel(PubResponse::success(id))]);
        h.drop_conn(sub);
        let sub = h.join(resume.clone());
        assert_eq!(h.take(sub), vec![Packet::PubRel(PubResponse::success(id))]);
        // A repeated PUBREC is answered with PUBREL again.
        h.send(sub, Packet::PubRec(PubResponse::success(id)));
        assert_eq!(h.take(sub), vec![Packet::PubRel(PubResponse::success(id))]);
        h.send(sub, Packet::PubComp(PubResponse::success(id)));
        h.drop_conn(sub);
        let sub = h.join(resume);
        assert_eq!(h.take(sub), vec![]);
    }

    #[test]
    fn resends_after_resume_respect_a_smaller_receive_maximum_and_go_first() {
        let mut h = H::new();
        let (c, sub, publ) = pair(&mut h, QoS::ExactlyOnce);
        for (i, p) in ["1", "2", "3"].into_iter().enumerate() {
            pub_q(&mut h, publ, QoS::ExactlyOnce, i as u16 + 1, p);
        }
        let first = h.publishes(sub);
        assert_eq!(first.len(), 3);
        let id = |n: usize| first[n].packet_id.unwrap();
        // Message 1 reaches PUBREC; then the connection drops.
        h.send(sub, Packet::PubRec(PubResponse::success(id(0))));
        h.take(sub);
        h.drop_conn(sub);
        pub_q(&mut h, publ, QoS::ExactlyOnce, 4, "4");

        let mut resume = c;
        resume.clean_start = false;
        resume.properties.receive_maximum = Some(2);
        let sub = h.join(resume);
        // Window of 2: PUBREL for 1, PUBLISH(DUP) for 2; 3 waits, and so does the queued 4.
        let got = h.take(sub);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Packet::PubRel(PubResponse::success(id(0))));
        let Packet::Publish(p) = &got[1] else {
            panic!("expected PUBLISH, got {:?}", got[1]);
        };
        assert!(p.dup && p.packet_id == Some(id(1)));

        h.send(sub, Packet::PubComp(PubResponse::success(id(0))));
        let again = h.publishes(sub);
        assert_eq!(payloads(&again), vec![b"3"]);
        assert!(again[0].dup && again[0].packet_id == Some(id(2)));
        h.send(sub, Packet::PubRec(PubResponse::success(id(1))));
        h.send(sub, Packet::PubComp(PubResponse::success(id(1))));
        let rest = h.take(sub);
        assert_eq!(rest.len(), 2, "PUBREL for 2, then the queued 4: {rest:?}");
        let Packet::Publish(p) = &rest[1] else {
            panic!("expected PUBLISH, got {:?}", rest[1]);
        };
        assert_eq!((&p.payload[..], p.dup), (&b"4"[..], false));
    }

    #[test]
    fn failed_pubrec_ends_the_flow_and_unknown_pubrec_gets_0x92() {
        let mut h = H::new();
        let (_, sub, publ) = pair(&mut h, QoS::ExactlyOnce);
        pub_q(&mut h, publ, QoS::ExactlyOnce, 1, "m");
        let id = h.publishes(sub)[0].packet_id.unwrap();
        h.send(
            sub,
            Packet::PubRec(PubResponse {
                reason_code: ReasonCode::QuotaExceeded,
                ..PubResponse::success(id)
            }),
        );
        assert_eq!(h.take(sub), vec![]);
        h.send(sub, Packet::PubRec(PubResponse::success(id)));
        assert_eq!(
            h.take(sub),
            vec![Packet::PubRel(PubResponse {
                reason_code: ReasonCode::PacketIdentifierNotFound,
                ..PubResponse::success(id)
            })]
        );
    }

    #[test]
    fn inflight_window_is_the_smaller_of_config_and_client_receive_maximum() {
        let mut h = H::with(BrokerConfig {
            max_inflight: 3,
            ..BrokerConfig::default()
        });
        let mut c = v5("sub");
        c.properties.receive_maximum = Some(2);
        let sub = h.join(c);
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        let big = h.join(v5("big"));
        h.subscribe(big, "t", QoS::AtLeastOnce);
        let publ = h.join(v5("pub"));
        for (i, p) in ["1", "2", "3", "4"].into_iter().enumerate() {
            pub_q(&mut h, publ, QoS::AtLeastOnce, i as u16 + 1, p);
        }
        // QoS 0 needs no slot and overtakes the waiting QoS 1 messages.
        pub0(&mut h, publ, "q0");
        let got = h.publishes(sub);
        assert_eq!(payloads(&got), vec![&b"1"[..], b"2", b"q0"]);
        assert_eq!(
            payloads(&h.publishes(big)),
            vec![&b"1"[..], b"2", b"3", b"q0"]
        );
        // Each PUBACK lets one more through, in order.
        h.send(
            sub,
            Packet::PubAck(PubResponse::success(got[0].packet_id.unwrap())),
        );
        assert_eq!(payloads(&h.publishes(sub)), vec![b"3"]);
        h.send(
            sub,
            Packet::PubAck(PubResponse::success(got[1].packet_id.unwrap())),
        );
        assert_eq!(payloads(&h.publishes(sub)), vec![b"4"]);
        h.send(
            sub,
            Packet::PubAck(PubResponse::success(got[1].packet_id.unwrap())),
        );
        assert_eq!(h.publishes(sub), vec![]);
    }

    #[test]
    fn offline_queue_is_delivered_on_resume_in_order_within_the_window() {
        let mut h = H::with(BrokerConfig {
            max_inflight: 2,
            ..BrokerConfig::default()
        });
        let (c, sub, publ) = pair(&mut h, QoS::AtLeastOnce);
        h.drop_conn(sub);
        pub_q(&mut h, publ, QoS::AtLeastOnce, 1, "a");
        pub0(&mut h, publ, "b");
        pub_q(&mut h, publ, QoS::AtLeastOnce, 2, "c");
        pub_q(&mut h, publ, QoS::AtLeastOnce, 3, "d");
        pub0(&mut h, publ, "e");
        let mut resume = c;
        resume.clean_start = false;
        let (sub, ack) = h.connect(resume);
        assert!(ack.session_present);
        let got = h.publishes(sub);
        // a, b, c fill the window of 2; e (QoS 0) follows without a slot; d waits.
        assert_eq!(payloads(&got), vec![&b"a"[..], b"b", b"c", b"e"]);
        h.send(
            sub,
            Packet::PubAck(PubResponse::success(got[0].packet_id.unwrap())),
        );
        assert_eq!(payloads(&h.publishes(sub)), vec![b"d"]);
    }

    #[test]
    fn queue_limit_drops_oldest_qos0_first() {
        let mut h = H::with(BrokerConfig {
            max_queued_messages: 3,
            ..BrokerConfig::default()
        });
        let (c, sub, publ) = pair(&mut h, QoS::AtLeastOnce);
        h.drop_conn(sub);
        pub_q(&mut h, publ, QoS::AtLeastOnce, 1, "a");
        pub0(&mut h, publ, "b");
        pub_q(&mut h, publ, QoS::AtLeastOnce, 2, "c");
        pub_q(&mut h, publ, QoS::AtLeastOnce, 3, "d"); // drops b
        pub_q(&mut h, publ, QoS::AtLeastOnce, 4, "e"); // drops a
        pub0(&mut h, publ, "f"); // refused: no QoS 0 to evict
        assert_eq!(h.b.stats().dropped_queue_full, 3);
        let mut resume = c;
        resume.clean_start = false;
        let sub = h.join(resume);
        assert_eq!(payloads(&h.publishes(sub)), vec![&b"c"[..], b"d", b"e"]);
    }

    #[test]
    fn drop_newest_policy_refuses_when_full() {
        let mut h = H::with(BrokerConfig {
            max_queued_messages: 1,
            queue_drop_policy: QueueDropPolicy::DropNewest,
            ..BrokerConfig::default()
        });
        let (c, sub, publ) = pair(&mut h, QoS::AtLeastOnce);
        h.drop_conn(sub);
        pub_q(&mut h, publ, QoS::AtLeastOnce, 1, "a");
        pub_q(&mut h, publ, QoS::AtLeastOnce, 2, "b");
        let mut resume = c;
        resume.clean_start = false;
        let sub = h.join(resume);
        assert_eq!(payloads(&h.publishes(sub)), vec![b"a"]);
    }

    #[test]
    fn delivery_qos_is_the_minimum_and_retain_is_cleared() {
        let mut h = H::new();
        let (_, sub, publ) = pair(&mut h, QoS::AtLeastOnce);
        h.send(publ, retained("t", QoS::ExactlyOnce, 1, "x"));
        let got = h.publishes(sub);
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        assert!(!got[0].retain);
        pub0(&mut h, publ, "y");
        let got = h.publishes(sub);
        assert_eq!((got[0].qos, got[0].packet_id), (QoS::AtMostOnce, None));
    }

    #[test]
    fn expired_messages_are_not_delivered_and_remaining_expiry_is_forwarded() {
        let mut h = H::new();
        let (c, sub, publ) = pair(&mut h, QoS::AtLeastOnce);
        let mut p = publish("t", QoS::AtLeastOnce, 1, "live");
        p.properties.message_expiry_interval = Some(60);
        h.send(publ, Packet::Publish(p.clone()));
        assert_eq!(
            h.publishes(sub)[0].properties.message_expiry_interval,
            Some(60)
        );
        h.drop_conn(sub);
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 2, "short")),
        );
        let mut short = p.clone();
        short.payload = Bytes::from_static(b"expires");
        short.properties.message_expiry_interval = Some(5);
        h.send(publ, Packet::Publish(short));
        let mut long = p;
        long.payload = Bytes::from_static(b"waits");
        h.send(publ, Packet::Publish(long));
        h.advance(Duration::from_secs(20));
        let mut resume = c;
        resume.clean_start = false;
        let sub = h.join(resume);
        let got = h.publishes(sub);
        // "live" is resent (delivery had started), "expires" is gone, "waits" has 40 s left.
        let texts: Vec<&[u8]> = payloads(&got);
        assert_eq!(texts, vec![&b"live"[..], b"short", b"waits"]);
        assert!(got[0].dup);
        assert_eq!(got[1].properties.message_expiry_interval, None);
        assert_eq!(got[2].properties.message_expiry_interval, Some(40));
        assert_eq!(h.b.stats().dropped_expired, 1);
    }

    #[test]
    fn publish_above_the_client_maximum_packet_size_is_dropped_for_that_client() {
        let mut h = H::new();
        let mut c = v5("small");
        c.properties.maximum_packet_size = Some(64);
        let small = h.join(c);
        h.subscribe(small, "t", QoS::AtLeastOnce);
        let big = h.join(v5("big"));
        h.subscribe(big, "t", QoS::AtLeastOnce);
        let publ = h.join(v5("pub"));
        let mut p = publish("t", QoS::AtLeastOnce, 1, "");
        p.payload = Bytes::from(vec![b'x'; 200]);
        h.send(publ, Packet::Publish(p));
        pub_q(&mut h, publ, QoS::AtLeastOnce, 2, "fits");
        assert_eq!(h.publishes(big).len(), 2);
        let got = h.publishes(small);
        assert_eq!(payloads(&got), vec![b"fits"]);
        assert_eq!(h.b.stats().dropped_too_large, 1);
    }

    #[test]
    fn outbound_topic_aliases_up_to_the_client_maximum() {
        let mut h = H::new();
        let mut c = v5("sub");
        c.properties.topic_alias_maximum = Some(1);
        let sub = h.join(c);
        h.subscribe(sub, "#", QoS::AtMostOnce);
        let publ = h.join(v5("pub"));
        for (topic, payload) in [("a/long/topic", "1"), ("a/long/topic", "2"), ("other", "3")] {
            h.send(
                publ,
                Packet::Publish(publish(topic, QoS::AtMostOnce, 0, payload)),
            );
        }
        let got = h.publishes(sub);
        let seen: Vec<(&str, Option<u16>)> = got
            .iter()
            .map(|p| (p.topic.as_str(), p.properties.topic_alias))
            .collect();
        assert_eq!(
            seen,
            vec![("a/long/topic", Some(1)), ("", Some(1)), ("other", None)]
        );
        // 3.1.1 and clients without a maximum get full topics only.
        let plain = h.join(v5("plain"));
        h.subscribe(plain, "#", QoS::AtMostOnce);
        h.send(
            publ,
            Packet::Publish(publish("a/long/topic", QoS::AtMostOnce, 0, "4")),
        );
        assert_eq!(h.publishes(plain)[0].properties.topic_alias, None);
        // A new connection starts with an empty table: the topic comes in full again.
        h.drop_conn(sub);
        let mut c = v5("sub");
        c.properties.topic_alias_maximum = Some(1);
        let sub = h.join(c);
        h.subscribe(sub, "#", QoS::AtMostOnce);
        h.send(
            publ,
            Packet::Publish(publish("a/long/topic", QoS::AtMostOnce, 0, "5")),
        );
        let got: Vec<Publish> = h.publishes(sub);
        assert_eq!(got[0].topic, Utf8::from_static("a/long/topic"));
    }

    #[test]
    fn v311_subscribers_get_no_properties() {
        let mut h = H::new();
        let sub = h.join(v3("sub"));
        h.subscribe(sub, "t", QoS::AtMostOnce);
        let publ = h.join(v5("pub"));
        let mut p = publish("t", QoS::AtMostOnce, 0, "x");
        p.properties.message_expiry_interval = Some(10);
        p.properties.content_type = Some(Utf8::from_static("text/plain"));
        h.send(publ, Packet::Publish(p));
        assert_eq!(h.publishes(sub)[0].properties, Default::default());
    }
}
