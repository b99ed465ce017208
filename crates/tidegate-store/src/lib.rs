//! # tidegate-store
//!
//! What Tidegate persists, and where: the record types of sessions, subscriptions, queues,
//! inflight deliveries and retained messages, and the tenants the admin API manages
//! ([`TenantRecord`]); [`StoreOp`], the change log the broker emits;
//! the [`Store`] trait; [`MemoryStore`], the reference backend; `DiskStore` (feature `disk`,
//! on by default), the embedded crash-safe backend on fjall; and the conformance suite every
//! backend passes (`conformance`, feature `conformance`).
//!
//! Place in the data flow:
//! ```text
//! Broker (tidegate-core, sans-IO) ──StoreOp batches──▶ engine writer thread ──▶ Store::apply
//!        ▲                                                                     (fsync policy)
//!        └──────── Broker::restore(Snapshot) ◀── Store::load at start-up
//! ```
//! The core depends on this crate without the `disk` feature: it needs the records and ops,
//! never a file. The server enables `disk` and owns the store.

pub mod codec;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(feature = "disk")]
mod disk;
pub mod keys;
mod memory;
mod op;
mod record;
mod store;

#[cfg(feature = "disk")]
pub use disk::DiskStore;
pub use memory::MemoryStore;
pub use op::{QueueLoad, StoreOp};
pub use record::{
    InflightRecord, InflightStage, MessageRecord, PendingWillRecord, Presence, QueueChunk,
    QueueIndexEntry, QueuedRecord, SessionRecord, Snapshot, StoredSession, SubscriptionRecord,
    TenantRecord, UnixMillis,
};
pub use store::{Durability, Store, StoreError};

#[cfg(test)]
mod tests {
    use super::conformance::{self, Backend};
    use super::*;

    struct Memory(MemoryStore);

    impl Backend for Memory {
        type S = MemoryStore;
        fn open(&mut self) -> MemoryStore {
            self.0.reopen()
        }
    }

    #[test]
    fn memory_store_conforms() {
        conformance::run_all(|| Memory(MemoryStore::new()));
    }

    #[cfg(feature = "disk")]
    struct Disk(tempfile::TempDir);

    #[cfg(feature = "disk")]
    impl Backend for Disk {
        type S = DiskStore;
        fn open(&mut self) -> DiskStore {
            DiskStore::open(self.0.path()).expect("open the disk store")
        }
    }

    #[cfg(feature = "disk")]
    #[test]
    fn disk_store_conforms() {
        conformance::run_all(|| Disk(tempfile::tempdir().expect("tempdir")));
    }
}
