//! The conformance suite: one set of checks every [`Store`] backend must pass (memory and disk
//! here; the Redis backend of the cluster will call [`run_all`] from its own tests, with the
//! `conformance` feature).
//!
//! Place in the data flow: none at run time; it pins down the contract the engine relies on —
//! what [`Store::load`] returns after a sequence of batches, atomic batches in log order, reads
//! that see their batch, [`StoreOp::DeleteSession`] taking everything a session owns and
//! nothing else, data surviving a reopen, and tenant records kept apart from all of it.

use crate::op::{QueueLoad, StoreOp};
use crate::record::{
    InflightRecord, InflightStage, MessageRecord, PendingWillRecord, Presence, QueueIndexEntry,
    QueuedRecord, SessionRecord, Snapshot, SubscriptionRecord, TenantRecord, UnixMillis,
};
use crate::store::{Durability, Store};
use bytes::Bytes;
use std::sync::Arc;
use tidegate_protocol::{PacketId, PublishProperties, QoS, SubscriptionOptions, Utf8, Will};

/// A backend under test: a way to open its store, again and again on the same data.
pub trait Backend {
    /// The store type.
    type S: Store;
    /// Opens the store. Called again after the previous handle was dropped, it must see the
    /// same data, as a restarted server would.
    fn open(&mut self) -> Self::S;
}

/// A named check.
type Check<B> = (&'static str, fn(&mut B));

/// Runs every check, each on a fresh backend from `fresh`. Panics (with the check's name) on
/// the first failure.
pub fn run_all<B: Backend>(mut fresh: impl FnMut() -> B) {
    let checks: [Check<B>; 11] = [
        ("empty_store_loads_empty", empty_store_loads_empty),
        (
            "sessions_survive_reopen_and_are_replaced",
            sessions_survive_reopen_and_are_replaced,
        ),
        ("owned_records_put_and_delete", owned_records_put_and_delete),
        ("queue_index_and_loads", queue_index_and_loads),
        ("loads_see_their_own_batch", loads_see_their_own_batch),
        (
            "delete_session_takes_everything_it_owns_and_nothing_else",
            delete_session_takes_everything_it_owns_and_nothing_else,
        ),
        ("last_write_in_a_batch_wins", last_write_in_a_batch_wins),
        ("retained_messages", retained_messages),
        ("orphans_are_reported", orphans_are_reported),
        (
            "written_batches_survive_reopen",
            written_batches_survive_reopen,
        ),
        (
            "tenant_records_are_replaced_survive_reopen_and_stay_apart",
            tenant_records_are_replaced_survive_reopen_and_stay_apart,
        ),
    ];
    for (name, check) in checks {
        eprintln!("store conformance: {name}");
        check(&mut fresh());
    }
}

fn cid(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero test packet id")
}

fn message(topic: &str, payload: &str) -> Arc<MessageRecord> {
    Arc::new(MessageRecord {
        topic: Utf8::try_from(topic).expect("valid topic"),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties {
            content_type: Some(Utf8::from_static("text/plain")),
            ..PublishProperties::default()
        },
        expires_at: Some(UnixMillis(1_900_000_000_000)),
        publisher: Some(cid("publisher")),
    })
}

fn queued(payload: &str, qos: QoS) -> QueuedRecord {
    QueuedRecord {
        message: message("q/t", payload),
        qos,
        retain: false,
        subscription_identifiers: vec![7],
    }
}

fn session(client: &str) -> SessionRecord {
    SessionRecord {
        client_id: cid(client),
        expiry_interval: 3600,
        presence: Presence::Offline {
            expires_at: Some(UnixMillis(2_000_000_000_000)),
            will: Some(PendingWillRecord {
                will: Will {
                    topic: Utf8::from_static("will/t"),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Default::default(),
                },
                publish_at: Some(UnixMillis(1_999_999_999_000)),
            }),
        },
    }
}

fn apply<S: Store>(s: &mut S, ops: &[StoreOp]) -> Vec<crate::QueueChunk> {
    s.apply(ops, Durability::Synced).expect("apply")
}

fn load<S: Store>(s: &mut S) -> Snapshot {
    s.load().expect("load")
}

fn put_queued(client: &str, seq: u64, payload: &str, qos: QoS) -> StoreOp {
    StoreOp::PutQueued {
        client_id: cid(client),
        seq,
        record: queued(payload, qos),
    }
}

fn load_op(tag: u64, client: &str, from_seq: u64, limit: usize) -> StoreOp {
    StoreOp::LoadQueue(QueueLoad {
        tag,
        client_id: cid(client),
        from_seq,
        limit,
    })
}

fn payloads(chunk: &crate::QueueChunk) -> Vec<(u64, String)> {
    chunk
        .entries
        .iter()
        .map(|(seq, q)| {
            (
                *seq,
                String::from_utf8_lossy(&q.message.payload).into_owned(),
            )
        })
        .collect()
}

fn empty_store_loads_empty<B: Backend>(b: &mut B) {
    let mut s = b.open();
    assert_eq!(load(&mut s), Snapshot::default());
    s.sync().expect("sync");
    s.check().expect("check");
    assert!(!s.location().is_empty());
}

fn sessions_survive_reopen_and_are_replaced<B: Backend>(b: &mut B) {
    {
        let mut s = b.open();
        apply(
            &mut s,
            &[
                StoreOp::PutSession(session("b")),
                StoreOp::PutSession(session("a")),
            ],
        );
        let mut online = session("a");
        online.presence = Presence::Connected { will: None };
        online.expiry_interval = u32::MAX;
        apply(&mut s, &[StoreOp::PutSession(online)]);
    }
    let mut s = b.open();
    let snap = load(&mut s);
    let ids: Vec<&str> = snap.sessions.iter().map(|x| &*x.record.client_id).collect();
    assert_eq!(ids, ["a", "b"], "sessions in client-id order");
    assert_eq!(
        snap.sessions[0].record.presence,
        Presence::Connected { will: None }
    );
    assert_eq!(snap.sessions[0].record.expiry_interval, u32::MAX);
    assert_eq!(snap.sessions[1].record, session("b"));
}

fn owned_records_put_and_delete<B: Backend>(b: &mut B) {
    let mut s = b.open();
    let c = cid("c");
    let sub = |filter: &str, qos| SubscriptionRecord {
        filter: Arc::from(filter),
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
        identifier: Some(3),
    };
    let inflight = |id: u16, seq: u64, stage| InflightRecord {
        packet_id: pid(id),
        seq,
        stage,
    };
    apply(
        &mut s,
        &[
            StoreOp::PutSession(session("c")),
            StoreOp::PutSubscription {
                client_id: c.clone(),
                subscription: sub("a/#", QoS::AtLeastOnce),
            },
            StoreOp::PutSubscription {
                client_id: c.clone(),
                subscription: sub("$share/g/b", QoS::ExactlyOnce),
            },
            StoreOp::PutInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(9),
            },
            StoreOp::PutInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(300),
            },
            StoreOp::PutInflight {
                client_id: c.clone(),
                record: inflight(
                    40,
                    2,
                    InflightStage::AwaitingRec(queued("r", QoS::ExactlyOnce)),
                ),
            },
            StoreOp::PutInflight {
                client_id: c.clone(),
                record: inflight(
                    50,
                    1,
                    InflightStage::AwaitingAck(queued("a", QoS::AtLeastOnce)),
                ),
            },
        ],
    );
    apply(
        &mut s,
        &[
            StoreOp::DeleteSubscription {
                client_id: c.clone(),
                filter: Arc::from("a/#"),
            },
            StoreOp::DeleteInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(9),
            },
            StoreOp::PutInflight {
                client_id: c.clone(),
                record: inflight(40, 2, InflightStage::AwaitingComp),
            },
            StoreOp::PutInflight {
                client_id: c.clone(),
                record: inflight(
                    60,
                    3,
                    InflightStage::AwaitingAck(queued("b", QoS::AtLeastOnce)),
                ),
            },
            StoreOp::DeleteInflight {
                client_id: c.clone(),
                packet_id: pid(50),
            },
        ],
    );
    drop(s);
    let mut s = b.open();
    let snap = load(&mut s);
    let got = &snap.sessions[0];
    assert_eq!(got.subscriptions, vec![sub("$share/g/b", QoS::ExactlyOnce)]);
    assert_eq!(got.inbound_qos2, vec![pid(300)]);
    assert_eq!(
        got.inflight,
        vec![
            inflight(40, 2, InflightStage::AwaitingComp),
            inflight(
                60,
                3,
                InflightStage::AwaitingAck(queued("b", QoS::AtLeastOnce))
            ),
        ],
        "inflight entries in send order"
    );
}

fn queue_index_and_loads<B: Backend>(b: &mut B) {
    let mut s = b.open();
    let mut ops = vec![StoreOp::PutSession(session("q"))];
    // Sequence numbers beyond one byte, to catch a byte order that is not numeric order.
    for seq in [1u64, 2, 255, 256, 70_000] {
        let qos = if seq == 2 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        ops.push(put_queued("q", seq, &format!("m{seq}"), qos));
    }
    apply(&mut s, &ops);
    apply(
        &mut s,
        &[StoreOp::DeleteQueued {
            client_id: cid("q"),
            seq: 1,
        }],
    );
    let snap = load(&mut s);
    assert_eq!(
        snap.sessions[0].queue,
        vec![
            QueueIndexEntry {
                seq: 2,
                qos: QoS::AtMostOnce
            },
            QueueIndexEntry {
                seq: 255,
                qos: QoS::AtLeastOnce
            },
            QueueIndexEntry {
                seq: 256,
                qos: QoS::AtLeastOnce
            },
            QueueIndexEntry {
                seq: 70_000,
                qos: QoS::AtLeastOnce
            },
        ]
    );
    let chunks = apply(
        &mut s,
        &[
            load_op(5, "q", 3, 2),
            load_op(6, "q", 256, 10),
            load_op(7, "nobody", 0, 10),
        ],
    );
    assert_eq!(chunks.len(), 3);
    assert_eq!((chunks[0].tag, chunks[1].tag, chunks[2].tag), (5, 6, 7));
    assert_eq!(
        payloads(&chunks[0]),
        [(255, "m255".to_owned()), (256, "m256".to_owned())]
    );
    assert!(!chunks[0].complete, "more entries follow");
    assert_eq!(
        payloads(&chunks[1]),
        [(256, "m256".to_owned()), (70_000, "m70000".to_owned())]
    );
    assert!(chunks[1].complete);
    assert!(chunks[2].entries.is_empty() && chunks[2].complete);
    // A loaded record is whole: message properties, expiry, publisher, identifiers.
    assert_eq!(chunks[1].entries[0].1, queued("m256", QoS::AtLeastOnce));
}

fn loads_see_their_own_batch<B: Backend>(b: &mut B) {
    let mut s = b.open();
    let chunks = apply(
        &mut s,
        &[
            StoreOp::PutSession(session("l")),
            put_queued("l", 1, "one", QoS::AtLeastOnce),
            put_queued("l", 2, "two", QoS::AtLeastOnce),
            StoreOp::DeleteQueued {
                client_id: cid("l"),
                seq: 1,
            },
            load_op(1, "l", 0, 10),
        ],
    );
    assert_eq!(payloads(&chunks[0]), [(2, "two".to_owned())]);
}

fn delete_session_takes_everything_it_owns_and_nothing_else<B: Backend>(b: &mut B) {
    let mut s = b.open();
    let sub = |filter: &str| SubscriptionRecord {
        filter: Arc::from(filter),
        options: SubscriptionOptions::default(),
        identifier: None,
    };
    let owned = |client: &str| {
        vec![
            StoreOp::PutSession(session(client)),
            StoreOp::PutSubscription {
                client_id: cid(client),
                subscription: sub("x"),
            },
            StoreOp::PutInboundQos2 {
                client_id: cid(client),
                packet_id: pid(1),
            },
            StoreOp::PutInflight {
                client_id: cid(client),
                record: InflightRecord {
                    packet_id: pid(1),
                    seq: 0,
                    stage: InflightStage::AwaitingComp,
                },
            },
            put_queued(client, 1, "m", QoS::AtLeastOnce),
        ]
    };
    // "a" is a prefix of "ab": deleting "a" must leave "ab" whole.
    let mut ops = owned("a");
    ops.extend(owned("ab"));
    apply(&mut s, &ops);
    // Written in the same batch as the delete: gone too.
    apply(
        &mut s,
        &[
            put_queued("a", 2, "late", QoS::AtLeastOnce),
            StoreOp::DeleteSession(cid("a")),
        ],
    );
    let snap = load(&mut s);
    assert_eq!(snap.sessions.len(), 1);
    let ab = &snap.sessions[0];
    assert_eq!(&*ab.record.client_id, "ab");
    assert_eq!(ab.subscriptions.len(), 1);
    assert_eq!(ab.inbound_qos2.len(), 1);
    assert_eq!(ab.inflight.len(), 1);
    assert_eq!(ab.queue.len(), 1);
    assert!(
        snap.orphans.is_empty(),
        "nothing of a is left: {:?}",
        snap.orphans
    );
    let chunks = apply(&mut s, &[load_op(0, "a", 0, 10)]);
    assert!(chunks[0].entries.is_empty());
    // A session created again after its deletion starts empty.
    apply(&mut s, &[StoreOp::PutSession(session("a"))]);
    let snap = load(&mut s);
    assert!(snap.sessions[0].queue.is_empty());
}

fn last_write_in_a_batch_wins<B: Backend>(b: &mut B) {
    let mut s = b.open();
    let c = cid("w");
    apply(
        &mut s,
        &[
            StoreOp::PutSession(session("w")),
            StoreOp::PutInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(1),
            },
            StoreOp::DeleteInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(1),
            },
            StoreOp::DeleteInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(2),
            },
            StoreOp::PutInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(2),
            },
            StoreOp::DeleteSession(c.clone()),
            StoreOp::PutSession(session("w")),
            put_queued("w", 5, "after", QoS::AtLeastOnce),
        ],
    );
    let snap = load(&mut s);
    assert!(
        snap.sessions[0].inbound_qos2.is_empty(),
        "deleted with the session"
    );
    assert_eq!(
        snap.sessions[0].queue,
        vec![QueueIndexEntry {
            seq: 5,
            qos: QoS::AtLeastOnce
        }]
    );
    apply(
        &mut s,
        &[
            StoreOp::PutInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(1),
            },
            StoreOp::DeleteInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(1),
            },
            StoreOp::DeleteInboundQos2 {
                client_id: c.clone(),
                packet_id: pid(2),
            },
            StoreOp::PutInboundQos2 {
                client_id: c,
                packet_id: pid(2),
            },
        ],
    );
    assert_eq!(load(&mut s).sessions[0].inbound_qos2, vec![pid(2)]);
}

fn retained_messages<B: Backend>(b: &mut B) {
    let mut s = b.open();
    apply(
        &mut s,
        &[
            StoreOp::PutRetained(message("r/2", "old")),
            StoreOp::PutRetained(message("r/1", "one")),
            StoreOp::PutRetained(message("r/3", "three")),
        ],
    );
    apply(
        &mut s,
        &[
            StoreOp::PutRetained(message("r/2", "new")),
            StoreOp::DeleteRetained(Utf8::from_static("r/3")),
        ],
    );
    drop(s);
    let mut s = b.open();
    let got: Vec<(String, String)> = load(&mut s)
        .retained
        .iter()
        .map(|m| {
            (
                m.topic.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("r/1".to_owned(), "one".to_owned()),
            ("r/2".to_owned(), "new".to_owned())
        ]
    );
    assert_eq!(load(&mut s).retained[0], message("r/1", "one"));
}

fn orphans_are_reported<B: Backend>(b: &mut B) {
    let mut s = b.open();
    apply(&mut s, &[put_queued("ghost", 1, "m", QoS::AtLeastOnce)]);
    let snap = load(&mut s);
    assert!(snap.sessions.is_empty());
    assert_eq!(snap.orphans, vec![cid("ghost")]);
    apply(&mut s, &[StoreOp::DeleteSession(cid("ghost"))]);
    assert!(load(&mut s).orphans.is_empty());
}

fn written_batches_survive_reopen<B: Backend>(b: &mut B) {
    {
        let mut s = b.open();
        s.apply(&[StoreOp::PutSession(session("n"))], Durability::Written)
            .expect("apply");
        let mut ops = Vec::new();
        for seq in 0..2_000 {
            ops.push(put_queued("n", seq, "bulk", QoS::AtLeastOnce));
        }
        s.apply(&ops, Durability::Written).expect("apply");
        s.sync().expect("sync");
    }
    let mut s = b.open();
    assert_eq!(load(&mut s).sessions[0].queue.len(), 2_000);
}

fn tenant(id: &str, config: Option<&str>) -> TenantRecord {
    TenantRecord {
        id: cid(id),
        config: config.map(|c| Bytes::copy_from_slice(c.as_bytes())),
    }
}

fn tenant_records_are_replaced_survive_reopen_and_stay_apart<B: Backend>(b: &mut B) {
    {
        let mut s = b.open();
        assert!(s.load_tenants().expect("load tenants").is_empty());
        s.put_tenant(&tenant("zeta", Some(r#"{"id":"zeta"}"#)))
            .expect("put");
        s.put_tenant(&tenant("acme", Some(r#"{"id":"acme"}"#)))
            .expect("put");
        // Replacing a configuration by a deletion mark keeps one record per id.
        s.put_tenant(&tenant("zeta", None)).expect("put");
        apply(&mut s, &[StoreOp::PutSession(session("acme"))]);
        assert_eq!(
            s.load_tenants().expect("load tenants"),
            [
                tenant("acme", Some(r#"{"id":"acme"}"#)),
                tenant("zeta", None)
            ]
        );
    }
    let mut s = b.open();
    assert_eq!(
        s.load_tenants().expect("load tenants"),
        [
            tenant("acme", Some(r#"{"id":"acme"}"#)),
            tenant("zeta", None)
        ],
        "tenant records are durable once put_tenant returns"
    );
    // A session named like a tenant is a different thing.
    let snapshot = load(&mut s);
    assert_eq!(snapshot.sessions.len(), 1);
    assert!(snapshot.orphans.is_empty());
    apply(&mut s, &[StoreOp::DeleteSession(cid("acme"))]);
    assert_eq!(s.load_tenants().expect("load tenants").len(), 2);
}
