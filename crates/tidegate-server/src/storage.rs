//! Opening the store at start-up, restoring the broker from it, and the writer thread that
//! applies the broker's store batches with the configured fsync policy.
//!
//! Place in the data flow:
//! ```text
//! start-up: data_dir/store ──DiskStore::open + load──▶ Broker::restore ──▶ engine task
//! running:  engine task ──Job::Apply(batch)──▶ writer thread ──Store::apply (+fsync)──▶ reply
//! ```
//! Tenant records (issue 7) travel the same thread through a [`TenantStore`] handle: loaded
//! once at start-up, written (synced) when the admin API changes a tenant. They are jobs of
//! their own, not broker batches, because the broker never emits them.
//!
//! The store's API is synchronous and an fsync blocks for milliseconds, so it runs on its own
//! OS thread, never on the engine task: the engine keeps handling events (and accumulating the
//! next batch) while a batch is written — that is the group commit. Jobs are handled in the
//! order they are sent, one at a time.
//!
//! Fsync policies: `always` applies every batch with [`Durability::Synced`] (fsync before the
//! reply); `interval` and `never` apply with [`Durability::Written`] (handed to the OS, which
//! survives a killed process), and `interval` fsyncs every `fsync_interval_ms` — the loss
//! window on a power failure — while `never` only at a clean shutdown.

use crate::config::{Config, FsyncPolicy, Persistence, StorageConfig};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tidegate_core::{Broker, RestoreReport};
use tidegate_store::{DiskStore, Durability, QueueChunk, Store, StoreError, StoreOp, TenantRecord};
use tokio::sync::oneshot;
use tracing::{error, info};

/// The directory of the store inside `data_dir`.
pub(crate) fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}

/// Why the store could not be opened at start-up. The message names the directory and what
/// the operator can do; nothing is ever deleted to get past it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store's files are damaged or from another format.
    #[error(
        "the store in {dir} cannot be read: {error}\n\
         Nothing was deleted or changed. To keep the data, restore {dir} from a backup. To start \
         with an empty store instead, move it aside (mv {dir} {dir}.damaged) and start again."
    )]
    Damaged {
        /// The store directory.
        dir: String,
        /// What is wrong.
        error: StoreError,
    },
    /// Another process holds the store.
    #[error(
        "the store in {dir} is in use by another tidegate process: stop that process, or give \
         this one another data_dir (--data-dir DIR)"
    )]
    InUse {
        /// The store directory.
        dir: String,
    },
    /// Any other failure (permissions, disk).
    #[error(
        "cannot open the store in {dir}: {error} (check the directory's permissions and free space)"
    )]
    Open {
        /// The store directory.
        dir: String,
        /// The error.
        error: StoreError,
    },
    /// The thread opening the store died.
    #[error("opening the store failed: {0}")]
    Thread(String),
}

impl StorageError {
    fn from_store(dir: &Path, e: StoreError) -> StorageError {
        let dir = dir.display().to_string();
        match e {
            StoreError::Locked { .. } => StorageError::InUse { dir },
            e if e.is_damaged() => StorageError::Damaged { dir, error: e },
            e => StorageError::Open { dir, error: e },
        }
    }
}

/// What the engine starts with: the broker, and the writer of its store when persistence is
/// on.
#[derive(Debug)]
pub(crate) struct Storage {
    /// The broker, restored from the store (or fresh, in memory).
    pub(crate) broker: Broker,
    /// The writer thread (`None` for `persistence = "memory"`).
    pub(crate) writer: Option<Writer>,
}

impl Storage {
    /// Opens the store under `config.data_dir` (creating it on first start), loads it and
    /// restores the broker; for `persistence = "memory"`, a fresh broker.
    pub(crate) async fn open(config: &Config) -> Result<Storage, StorageError> {
        let broker_config = config.limits.broker_config();
        let storage = config.storage();
        if storage.persistence == Persistence::Memory {
            info!(
                "persistence = \"memory\": sessions and retained messages will not survive a restart"
            );
            return Ok(Storage {
                broker: Broker::new(broker_config),
                writer: None,
            });
        }
        let dir = store_dir(&config.data_dir);
        let opened = tokio::task::spawn_blocking(move || open_and_restore(&dir, broker_config))
            .await
            .map_err(|e| StorageError::Thread(e.to_string()))??;
        let (store, broker) = opened;
        Ok(Storage {
            broker,
            writer: Some(Writer::spawn(store, storage)),
        })
    }
}

/// The tenant records of the store `writer` owns (none without persistence), with the
/// start-up errors of [`Storage::open`].
pub(crate) async fn load_tenants(
    writer: Option<&Writer>,
    data_dir: &Path,
) -> Result<Vec<TenantRecord>, StorageError> {
    let Some(tenants) = writer.and_then(Writer::tenants) else {
        return Ok(Vec::new());
    };
    tenants.load().await.map_err(|e| match e {
        TenantStoreError::Store(e) => StorageError::from_store(&store_dir(data_dir), e),
        TenantStoreError::Gone => StorageError::Thread("the store writer thread is gone".into()),
    })
}

/// Opens the disk store in `dir`, loads it and restores a broker from it (blocking).
pub fn open_and_restore(
    dir: &Path,
    broker_config: tidegate_core::BrokerConfig,
) -> Result<(DiskStore, Broker), StorageError> {
    let started = Instant::now();
    let mut store = DiskStore::open(dir).map_err(|e| StorageError::from_store(dir, e))?;
    let snapshot = store.load().map_err(|e| StorageError::from_store(dir, e))?;
    let (broker, report) =
        Broker::restore(broker_config, Instant::now(), SystemTime::now(), snapshot);
    log_restore(dir, &report, started.elapsed());
    Ok((store, broker))
}

fn log_restore(dir: &Path, r: &RestoreReport, took: Duration) {
    info!(
        store = %dir.display(),
        sessions = r.sessions,
        expired_sessions = r.expired_sessions,
        queued = r.queued,
        retained = r.retained,
        expired_retained = r.expired_retained,
        wills = r.wills,
        took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        "store loaded"
    );
}

/// What the writer answers.
pub(crate) enum Reply {
    /// A batch was applied (with the answers to its queue loads), or failed.
    Applied(Result<Vec<QueueChunk>, StoreError>),
    /// A check after a failure succeeded or failed.
    Checked(Result<(), StoreError>),
}

enum Job {
    Apply {
        ops: Vec<StoreOp>,
        reply: oneshot::Sender<Reply>,
    },
    Check {
        reply: oneshot::Sender<Reply>,
    },
    LoadTenants {
        reply: oneshot::Sender<Result<Vec<TenantRecord>, StoreError>>,
    },
    PutTenant {
        record: TenantRecord,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// Why a tenant record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TenantStoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread is gone (shutdown, or it could not start).
    #[error("the store writer thread is gone")]
    Gone,
}

/// A handle on the writer thread for tenant records. It holds a sender of the writer's jobs,
/// so the thread outlives it: keep it only where the engine's event sender is kept too (the
/// engine closes the writer once every event sender is gone).
#[derive(Debug, Clone)]
pub(crate) struct TenantStore {
    jobs: mpsc::Sender<Job>,
}

impl TenantStore {
    /// Every tenant record in the store.
    pub(crate) async fn load(&self) -> Result<Vec<TenantRecord>, TenantStoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::LoadTenants { reply })
            .map_err(|_| TenantStoreError::Gone)?;
        Ok(rx.await.map_err(|_| TenantStoreError::Gone)??)
    }

    /// Writes `record`; returns once it is on stable storage.
    pub(crate) async fn put(&self, record: TenantRecord) -> Result<(), TenantStoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::PutTenant { record, reply })
            .map_err(|_| TenantStoreError::Gone)?;
        Ok(rx.await.map_err(|_| TenantStoreError::Gone)??)
    }
}

/// The writer thread: owns the store, applies jobs in order.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread around `store`.
    pub(crate) fn spawn<S: Store + 'static>(store: S, config: StorageConfig) -> Writer {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tidegate-store".to_owned())
            .spawn(move || writer_loop(store, &rx, config));
        match thread {
            Ok(thread) => Writer {
                jobs: Some(tx),
                thread: Some(thread),
            },
            Err(e) => {
                // Without a thread every job's reply channel is dropped, which the engine
                // reports as a failed write: publishers get errors, nothing is promised.
                error!(%e, "cannot start the store writer thread");
                Writer {
                    jobs: None,
                    thread: None,
                }
            }
        }
    }

    /// Sends a batch; the reply says when it is durable.
    pub(crate) fn apply(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // A send fails only when the thread is gone; the dropped reply then reads as a
            // failure.
            let _ = jobs.send(Job::Apply { ops, reply });
        }
        rx
    }

    /// Asks the store whether it works again after a failure.
    pub(crate) fn check(&self) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Check { reply });
        }
        rx
    }

    /// A handle for tenant records (`None` when the thread could not start).
    pub(crate) fn tenants(&self) -> Option<TenantStore> {
        self.jobs
            .as_ref()
            .map(|jobs| TenantStore { jobs: jobs.clone() })
    }

    /// Stops the thread after the jobs already sent (and a final fsync), and waits for it.
    pub(crate) async fn close(mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                error!("the store writer thread panicked");
            }
        }
    }
}

fn writer_loop<S: Store>(mut store: S, jobs: &mpsc::Receiver<Job>, config: StorageConfig) {
    let durability = match config.fsync {
        FsyncPolicy::Always => Durability::Synced,
        FsyncPolicy::Interval | FsyncPolicy::Never => Durability::Written,
    };
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let job = match (config.fsync, unsynced_since) {
            (FsyncPolicy::Interval, Some(since)) => {
                let left = config.fsync_interval.saturating_sub(since.elapsed());
                match jobs.recv_timeout(left) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
        };
        match job {
            Some(Job::Apply { ops, reply }) => {
                let result = store.apply(&ops, durability);
                if result.is_ok() && durability == Durability::Written {
                    unsynced_since.get_or_insert_with(Instant::now);
                }
                let _ = reply.send(Reply::Applied(result));
            }
            Some(Job::Check { reply }) => {
                let _ = reply.send(Reply::Checked(store.check()));
            }
            Some(Job::LoadTenants { reply }) => {
                let _ = reply.send(store.load_tenants());
            }
            Some(Job::PutTenant { record, reply }) => {
                let _ = reply.send(store.put_tenant(&record));
            }
            None => {}
        }
        if config.fsync == FsyncPolicy::Interval
            && unsynced_since.is_some_and(|t| t.elapsed() >= config.fsync_interval)
        {
            if let Err(e) = store.sync() {
                error!(store = %store.location(), %e, "periodic fsync failed");
            }
            unsynced_since = None;
        }
    }
    // Clean shutdown: make everything durable, whatever the policy.
    if let Err(e) = store.sync() {
        error!(store = %store.location(), %e, "final fsync failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_store::{MemoryStore, Presence, SessionRecord};

    fn session_op(id: &str) -> StoreOp {
        StoreOp::PutSession(SessionRecord {
            client_id: id.into(),
            expiry_interval: 60,
            presence: Presence::Connected { will: None },
        })
    }

    #[tokio::test]
    async fn the_writer_applies_in_order_and_flushes_on_close() {
        let store = MemoryStore::new();
        for fsync in [
            FsyncPolicy::Always,
            FsyncPolicy::Interval,
            FsyncPolicy::Never,
        ] {
            let writer = Writer::spawn(
                store.reopen(),
                StorageConfig {
                    persistence: Persistence::Disk,
                    fsync,
                    fsync_interval: Duration::from_millis(5),
                },
            );
            let first = writer.apply(vec![session_op("a")]);
            let second = writer.apply(vec![StoreOp::DeleteSession("a".into()), session_op("b")]);
            assert!(matches!(first.await, Ok(Reply::Applied(Ok(_)))));
            assert!(matches!(second.await, Ok(Reply::Applied(Ok(_)))));
            assert!(matches!(writer.check().await, Ok(Reply::Checked(Ok(())))));
            writer.close().await;
            let ids: Vec<String> = store
                .reopen()
                .load()
                .unwrap()
                .sessions
                .iter()
                .map(|s| s.record.client_id.to_string())
                .collect();
            assert_eq!(ids, ["b"], "{fsync:?}");
        }
    }

    #[tokio::test]
    async fn tenant_records_go_through_the_writer() {
        let store = MemoryStore::new();
        let writer = Writer::spawn(
            store.reopen(),
            StorageConfig {
                persistence: Persistence::Disk,
                fsync: FsyncPolicy::Never,
                fsync_interval: Duration::from_millis(5),
            },
        );
        let tenants = writer.tenants().unwrap();
        assert!(tenants.load().await.unwrap().is_empty());
        let record = TenantRecord {
            id: "acme".into(),
            config: Some(bytes::Bytes::from_static(b"{}")),
        };
        tenants.put(record.clone()).await.unwrap();
        assert_eq!(tenants.load().await.unwrap(), std::slice::from_ref(&record));
        drop(tenants);
        writer.close().await;
        assert_eq!(store.reopen().load_tenants().unwrap(), [record]);
    }

    #[test]
    fn a_damaged_store_is_an_error_naming_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_dir(dir.path());
        std::fs::create_dir_all(&store).unwrap();
        drop(DiskStore::open(&store).unwrap());
        std::fs::write(store.join("version"), b"garbage!").unwrap();
        let err = open_and_restore(&store, tidegate_core::BrokerConfig::default()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StorageError::Damaged { .. }), "{text}");
        assert!(text.contains(&store.display().to_string()), "{text}");
        assert!(text.contains("move it aside"), "{text}");
    }
}
