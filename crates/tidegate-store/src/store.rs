//! The [`Store`] trait every backend implements (memory, embedded disk, later Redis), and its
//! error type.
//!
//! Place in the data flow: the server's engine owns one `Store` on a writer thread; it calls
//! [`Store::load`] once at start-up and then [`Store::apply`] for each batch of
//! [`StoreOp`]s the broker emits, one batch at a time. The trait is synchronous on purpose: a
//! backend runs on its own thread, never on the engine task, and a synchronous API is what the
//! embedded stores offer.

use crate::op::StoreOp;
use crate::record::{QueueChunk, Snapshot, TenantRecord};
use std::path::PathBuf;

/// How durable [`Store::apply`] must make a batch before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On stable storage (fsync): survives a power loss.
    Synced,
    /// Handed to the operating system: survives the process being killed, not a power loss
    /// until the next [`Store::sync`].
    Written,
}

/// The contract of a store backend. Every implementation passes the conformance suite
/// ([`crate::conformance`]).
pub trait Store: Send {
    /// Everything stored, for the engine to rebuild its state at start-up. Queue messages are
    /// not loaded, only their index ([`crate::QueueIndexEntry`]).
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies `ops` atomically and in order (a crash leaves all of them or none), makes them
    /// as durable as `durability` says, then answers the [`StoreOp::LoadQueue`] reads among
    /// them, in order, each seeing every write of the batch.
    fn apply(
        &mut self,
        ops: &[StoreOp],
        durability: Durability,
    ) -> Result<Vec<QueueChunk>, StoreError>;

    /// Makes everything applied so far durable on stable storage.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Writes and syncs a marker: after a failure, tells whether the store works again (a
    /// backend that must reopen its files after an IO error does it here).
    fn check(&mut self) -> Result<(), StoreError>;

    /// Where the data lives, for messages (a directory, a URL, "memory").
    fn location(&self) -> String;

    /// Every tenant record, in id order (read once at start-up, beside [`Store::load`]).
    fn load_tenants(&mut self) -> Result<Vec<TenantRecord>, StoreError>;

    /// Creates or replaces the record of `record.id`, durable on stable storage before it
    /// returns whatever the fsync policy: an admin API answer promises the change survives.
    /// Tenant records are not [`StoreOp`]s because the broker never emits them: the server
    /// writes them when the admin API changes a tenant, rarely, outside the group commit.
    fn put_tenant(&mut self, record: &TenantRecord) -> Result<(), StoreError>;
}

/// Why a store operation failed. Every variant says where, so that a message to the operator
/// can name the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Stored bytes that cannot be decoded: a damaged or foreign file.
    #[error("{location}: corrupted record in {what}: {detail}")]
    Corrupt {
        /// The file or directory.
        location: PathBuf,
        /// Which record (table and key).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store was written by a format this build does not read.
    #[error("{location}: store format {found}, this build reads format {expected}")]
    Format {
        /// The file holding the format marker.
        location: PathBuf,
        /// The format found.
        found: String,
        /// The format this build writes.
        expected: u8,
    },
    /// Another process holds the store.
    #[error("{location}: the store is in use by another process")]
    Locked {
        /// The directory.
        location: PathBuf,
    },
    /// An IO error (a full disk is [`StoreError::is_disk_full`]).
    #[error("{location}: {source}")]
    Io {
        /// The file or directory.
        location: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other failure of the backend.
    #[error("{location}: {detail}")]
    Backend {
        /// The file or directory.
        location: PathBuf,
        /// The backend's description.
        detail: String,
    },
}

impl StoreError {
    /// True when the failure is a full disk (or quota): writes may work again once space is
    /// freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.kind() == std::io::ErrorKind::QuotaExceeded
            }
            _ => false,
        }
    }

    /// True when the stored data itself is unreadable (corrupted, foreign format): restarting
    /// will not help, the operator must act.
    pub fn is_damaged(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. } | StoreError::Format { .. })
    }
}
