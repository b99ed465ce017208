//! [`MemoryStore`]: the reference backend, holding records in ordered maps.
//!
//! Place in the data flow: where a test (or a future embedding) needs a [`Store`] without
//! files. It is the executable statement of the contract: the conformance suite runs against
//! it first, so a disagreement with the disk backend shows which one is wrong. Handles made by
//! [`MemoryStore::reopen`] share the data, which is how the suite simulates a restart.

use crate::op::StoreOp;
use crate::record::{
    InflightRecord, MessageRecord, QueueChunk, QueueIndexEntry, QueuedRecord, SessionRecord,
    Snapshot, StoredSession, SubscriptionRecord, TenantRecord,
};
use crate::store::{Durability, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use tidegate_protocol::PacketId;

#[derive(Debug, Default)]
struct Data {
    sessions: BTreeMap<Arc<str>, SessionRecord>,
    subscriptions: BTreeMap<(Arc<str>, Arc<str>), SubscriptionRecord>,
    inbound: BTreeSet<(Arc<str>, PacketId)>,
    inflight: BTreeMap<(Arc<str>, PacketId), InflightRecord>,
    queue: BTreeMap<(Arc<str>, u64), QueuedRecord>,
    retained: BTreeMap<String, Arc<MessageRecord>>,
    tenants: BTreeMap<Arc<str>, TenantRecord>,
}

impl Data {
    fn write(&mut self, op: &StoreOp) {
        match op {
            StoreOp::PutSession(r) => {
                self.sessions.insert(r.client_id.clone(), r.clone());
            }
            StoreOp::DeleteSession(c) => {
                self.sessions.remove(c);
                self.subscriptions.retain(|(owner, _), _| owner != c);
                self.inbound.retain(|(owner, _)| owner != c);
                self.inflight.retain(|(owner, _), _| owner != c);
                self.queue.retain(|(owner, _), _| owner != c);
            }
            StoreOp::PutSubscription {
                client_id,
                subscription,
            } => {
                let key = (client_id.clone(), subscription.filter.clone());
                self.subscriptions.insert(key, subscription.clone());
            }
            StoreOp::DeleteSubscription { client_id, filter } => {
                self.subscriptions
                    .remove(&(client_id.clone(), filter.clone()));
            }
            StoreOp::PutInboundQos2 {
                client_id,
                packet_id,
            } => {
                self.inbound.insert((client_id.clone(), *packet_id));
            }
            StoreOp::DeleteInboundQos2 {
                client_id,
                packet_id,
            } => {
                self.inbound.remove(&(client_id.clone(), *packet_id));
            }
            StoreOp::PutInflight { client_id, record } => {
                self.inflight
                    .insert((client_id.clone(), record.packet_id), record.clone());
            }
            StoreOp::DeleteInflight {
                client_id,
                packet_id,
            } => {
                self.inflight.remove(&(client_id.clone(), *packet_id));
            }
            StoreOp::PutQueued {
                client_id,
                seq,
                record,
            } => {
                self.queue.insert((client_id.clone(), *seq), record.clone());
            }
            StoreOp::DeleteQueued { client_id, seq } => {
                self.queue.remove(&(client_id.clone(), *seq));
            }
            StoreOp::PutRetained(m) => {
                self.retained.insert(m.topic.to_string(), m.clone());
            }
            StoreOp::DeleteRetained(topic) => {
                self.retained.remove(topic.as_str());
            }
            StoreOp::LoadQueue(_) => {}
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut sessions: BTreeMap<Arc<str>, StoredSession> = self
            .sessions
            .iter()
            .map(|(c, r)| (c.clone(), StoredSession::new(r.clone())))
            .collect();
        let mut orphans = BTreeSet::new();
        for ((c, _), sub) in &self.subscriptions {
            match sessions.get_mut(c) {
                Some(s) => s.subscriptions.push(sub.clone()),
                None => drop(orphans.insert(c.clone())),
            }
        }
        for (c, id) in &self.inbound {
            match sessions.get_mut(c) {
                Some(s) => s.inbound_qos2.push(*id),
                None => drop(orphans.insert(c.clone())),
            }
        }
        for ((c, _), entry) in &self.inflight {
            match sessions.get_mut(c) {
                Some(s) => s.inflight.push(entry.clone()),
                None => drop(orphans.insert(c.clone())),
            }
        }
        for ((c, seq), q) in &self.queue {
            match sessions.get_mut(c) {
                Some(s) => s.queue.push(QueueIndexEntry {
                    seq: *seq,
                    qos: q.qos,
                }),
                None => drop(orphans.insert(c.clone())),
            }
        }
        let mut sessions: Vec<StoredSession> = sessions.into_values().collect();
        for s in &mut sessions {
            s.inflight.sort_by_key(|e| e.seq);
        }
        Snapshot {
            sessions,
            retained: self.retained.values().cloned().collect(),
            orphans: orphans.into_iter().collect(),
        }
    }
}

/// A store in memory. Cloning the handle (or [`MemoryStore::reopen`]) shares the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Another handle on the same data, as if the store had been closed and opened again.
    pub fn reopen(&self) -> MemoryStore {
        self.clone()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        // Map updates cannot panic half-way through an op, so data behind a poisoned lock is
        // still consistent.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(self.data().snapshot())
    }

    fn apply(
        &mut self,
        ops: &[StoreOp],
        _durability: Durability,
    ) -> Result<Vec<QueueChunk>, StoreError> {
        let mut next = self.data();
        for op in ops {
            next.write(op);
        }
        let mut chunks = Vec::new();
        for op in ops {
            if let StoreOp::LoadQueue(load) = op {
                let from = (load.client_id.clone(), load.from_seq);
                let to = (load.client_id.clone(), u64::MAX);
                let mut entries: Vec<(u64, QueuedRecord)> = next
                    .queue
                    .range(from..=to)
                    .take(load.limit.saturating_add(1))
                    .map(|((_, seq), q)| (*seq, q.clone()))
                    .collect();
                let complete = entries.len() <= load.limit;
                entries.truncate(load.limit);
                chunks.push(QueueChunk {
                    tag: load.tag,
                    entries,
                    complete,
                });
            }
        }
        Ok(chunks)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn check(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn load_tenants(&mut self) -> Result<Vec<TenantRecord>, StoreError> {
        Ok(self.data().tenants.values().cloned().collect())
    }

    fn put_tenant(&mut self, record: &TenantRecord) -> Result<(), StoreError> {
        self.data()
            .tenants
            .insert(record.id.clone(), record.clone());
        Ok(())
    }
}
