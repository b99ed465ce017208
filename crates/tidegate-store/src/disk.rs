//! [`DiskStore`]: the embedded, crash-safe backend on fjall (an LSM tree with a write-ahead
//! journal), chosen for the queue write pattern; `docs/design/storage.md` has the benchmark
//! against redb and the reasons.
//!
//! Place in the data flow: the engine's writer thread owns one `DiskStore` and calls
//! [`Store::apply`] once per group commit. Each batch becomes one fjall write batch: one
//! journal record, atomic across keyspaces; [`Durability::Synced`] fsyncs it
//! (`fdatasync`) before returning, [`Durability::Written`] leaves it in the OS page cache,
//! which survives a killed process but not a power loss.
//!
//! Layout: one keyspace per record kind (`sessions`, `subscriptions`, `inbound`, `inflight`,
//! `queue`, `retained`, `meta`, `tenants`), keys as in [`crate::keys`] (a tenant record is
//! keyed by its id), values as in [`crate::codec`]. The `tenants` keyspace was added after
//! format 1 shipped without changing the format: an older store simply opens with it empty.
//! A batch is first folded into one final value per key (a PUBLISH acknowledged within the
//! same group commit costs a tombstone, not a put and a delete), which also gives
//! [`StoreOp::DeleteSession`] a view of the keys written earlier in the same batch.
//!
//! Failures: fjall refuses every write after an IO error ("poisoned") until it is reopened, so
//! after a failed write the database is dropped and reopened by the next call (a full disk
//! works again once space is freed). A journal whose last batch was torn by a crash is
//! recovered without that batch (it was never acknowledged); any other damage is reported at
//! open as [`StoreError::Corrupt`], and nothing is ever deleted to "repair" it.

use crate::codec::{self, DecodeError, FORMAT};
use crate::keys::{client_prefix, owned_key, prefix_end, split_owned_key};
use crate::op::StoreOp;
use crate::record::{QueueChunk, QueueIndexEntry, Snapshot, StoredSession, TenantRecord};
use crate::store::{Durability, Store, StoreError};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::PacketId;

/// The keyspaces, in a fixed order (their index is the overlay's table id).
const TABLES: [&str; 8] = [
    "sessions",
    "subscriptions",
    "inbound",
    "inflight",
    "queue",
    "retained",
    "meta",
    "tenants",
];
const SESSIONS: usize = 0;
const SUBSCRIPTIONS: usize = 1;
const INBOUND: usize = 2;
const INFLIGHT: usize = 3;
const QUEUE: usize = 4;
const RETAINED: usize = 5;
const META: usize = 6;
const TENANTS: usize = 7;
/// The tables whose keys start with a client prefix.
const OWNED: [usize; 4] = [SUBSCRIPTIONS, INBOUND, INFLIGHT, QUEUE];

/// Key of the format marker in `meta`.
const FORMAT_KEY: &[u8] = b"format";
/// Key rewritten by [`Store::check`].
const CHECK_KEY: &[u8] = b"check";
/// Key of the batch counter, bumped by every [`Store::apply`].
const BATCH_KEY: &[u8] = b"batch";
/// The commit mark: a file beside the database holding a batch count known to be durable.
const MARK_FILE: &str = "tidegate-commit-mark";
/// How often the commit mark is rewritten (it costs a file write and two fsyncs).
const MARK_EVERY: Duration = Duration::from_secs(1);

/// The journal's upper bound: it bounds the replay at start-up after a crash (a few hundred
/// milliseconds per 100 MiB), at the cost of earlier memtable flushes.
const MAX_JOURNAL: u64 = 128 * 1024 * 1024;
/// Memtable size of the queue table (the one that grows with offline queues); the others get
/// a quarter. fjall's default, 64 MiB per keyspace, would cost hundreds of MiB of memory.
const QUEUE_MEMTABLE: u64 = 16 * 1024 * 1024;

/// A batch folded to one final value per (table, key); `None` deletes the key.
type Overlay = BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>;

struct Open {
    db: Database,
    tables: Vec<Keyspace>,
    /// Batches applied so far (the `batch` key of `meta`).
    batch: u64,
}

/// The embedded disk store in one directory.
pub struct DiskStore {
    at: Location,
    open: Option<Open>,
    /// When the commit mark was last written.
    marked_at: Option<Instant>,
}

/// The store's directory, and the errors that name it.
struct Location {
    dir: PathBuf,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.at.dir)
            .field("open", &self.open.is_some())
            .finish()
    }
}

impl DiskStore {
    /// Opens the store in `dir`, creating it when absent. A store another process holds, one
    /// written by another format, or damaged data is an error that names the directory;
    /// nothing is deleted.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        let mut store = DiskStore {
            at: Location {
                dir: dir.to_path_buf(),
            },
            open: None,
            marked_at: None,
        };
        ensure_open(&mut store.open, &store.at)?;
        Ok(store)
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.at.dir
    }
}

/// The open database, opening it first if needed (after a failure it was dropped).
fn ensure_open<'a>(open: &'a mut Option<Open>, at: &Location) -> Result<&'a mut Open, StoreError> {
    if open.is_none() {
        *open = Some(at.reopen()?);
    }
    open.as_mut().ok_or_else(|| at.backend("not open"))
}

impl Location {
    fn reopen(&self) -> Result<Open, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Io {
            location: self.dir.clone(),
            source,
        })?;
        let db = Database::builder(&self.dir)
            .max_journaling_size(MAX_JOURNAL)
            .open()
            .map_err(|e| self.open_error(e))?;
        let mut tables = Vec::with_capacity(TABLES.len());
        for (i, name) in TABLES.iter().enumerate() {
            let memtable = if i == QUEUE {
                QUEUE_MEMTABLE
            } else {
                QUEUE_MEMTABLE / 4
            };
            let ks = db
                .keyspace(name, || {
                    KeyspaceCreateOptions::default().max_memtable_size(memtable)
                })
                .map_err(|e| self.open_error(e))?;
            tables.push(ks);
        }
        let mut open = Open {
            db,
            tables,
            batch: 0,
        };
        // The mark first: a store that lost data must not be written to at all.
        open.batch = self.check_mark(&open)?;
        self.check_format(&open)?;
        Ok(open)
    }

    /// The batch counter, checked against the commit mark. fjall recovers a journal whose
    /// tail is damaged by dropping the damaged part, which is right for the one batch a crash
    /// tore (never acknowledged) but would silently lose acknowledged data if older parts were
    /// damaged: the mark, written beside the database after batches are durable, catches that.
    fn check_mark(&self, open: &Open) -> Result<u64, StoreError> {
        let meta = table(&open.tables, META, &self.dir)?;
        let batch = match meta.get(BATCH_KEY).map_err(|e| self.error(e))? {
            None => 0,
            Some(v) => u64::from_be_bytes(<[u8; 8]>::try_from(v.as_ref()).map_err(|_| {
                self.decode_error(META, BATCH_KEY, DecodeError::Invalid("batch counter"))
            })?),
        };
        let path = self.dir.join(MARK_FILE);
        let marked = match std::fs::read(&path) {
            Ok(bytes) => match <[u8; 9]>::try_from(bytes.as_slice()) {
                Ok(b) if b[0] == FORMAT => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[1..]);
                    u64::from_be_bytes(n)
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        location: path,
                        what: "the commit mark".to_owned(),
                        detail: format!("{} bytes that are not a mark", bytes.len()),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(StoreError::Io {
                    location: path,
                    source,
                });
            }
        };
        if marked > batch {
            return Err(self.corrupt(
                "the journal",
                &format!(
                    "{batch} batches recovered, but {marked} were durable (per {MARK_FILE}): \
                     committed data was lost or damaged"
                ),
            ));
        }
        Ok(batch)
    }

    /// Records `batch` as durable in the commit mark (write, fsync, rename, fsync the
    /// directory, so the mark itself is never torn).
    fn write_mark(&self, batch: u64) -> Result<(), StoreError> {
        let io = |location: PathBuf| move |source| StoreError::Io { location, source };
        let tmp = self.dir.join(format!("{MARK_FILE}.tmp"));
        let path = self.dir.join(MARK_FILE);
        let mut bytes = vec![FORMAT];
        bytes.extend_from_slice(&batch.to_be_bytes());
        {
            let mut f = std::fs::File::create(&tmp).map_err(io(tmp.clone()))?;
            f.write_all(&bytes).map_err(io(tmp.clone()))?;
            f.sync_all().map_err(io(tmp.clone()))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(path.clone()))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(self.dir.clone()))
    }

    /// The format marker: written into a new store, checked in an existing one.
    fn check_format(&self, open: &Open) -> Result<(), StoreError> {
        let meta = table(&open.tables, META, &self.dir)?;
        match meta.get(FORMAT_KEY).map_err(|e| self.error(e))? {
            Some(v) if v.as_ref() == [FORMAT] => Ok(()),
            Some(v) => Err(StoreError::Format {
                location: self.dir.clone(),
                found: format!("{:?}", v.as_ref()),
                expected: FORMAT,
            }),
            None => {
                let any_data = open.tables.iter().any(|t| t.iter().next().is_some());
                if any_data {
                    return Err(StoreError::Format {
                        location: self.dir.clone(),
                        found: "none (data without a format marker)".to_owned(),
                        expected: FORMAT,
                    });
                }
                meta.insert(FORMAT_KEY, [FORMAT])
                    .map_err(|e| self.error(e))?;
                open.db
                    .persist(PersistMode::SyncAll)
                    .map_err(|e| self.error(e))
            }
        }
    }

    fn backend(&self, detail: &str) -> StoreError {
        StoreError::Backend {
            location: self.dir.clone(),
            detail: detail.to_owned(),
        }
    }

    /// An error from fjall while the store is open.
    fn error(&self, e: fjall::Error) -> StoreError {
        match e {
            fjall::Error::Io(source) => StoreError::Io {
                location: self.dir.clone(),
                source,
            },
            fjall::Error::Storage(fjall::LsmError::Io(source)) => StoreError::Io {
                location: self.dir.clone(),
                source,
            },
            fjall::Error::Locked => StoreError::Locked {
                location: self.dir.clone(),
            },
            other => self.backend(&format!("{other:?}")),
        }
    }

    /// An error from fjall while opening: anything but IO and the lock means the files are not
    /// what fjall wrote (or what this fjall version reads).
    fn open_error(&self, e: fjall::Error) -> StoreError {
        match e {
            fjall::Error::Io(_) | fjall::Error::Locked => self.error(e),
            fjall::Error::Storage(fjall::LsmError::Io(source)) => StoreError::Io {
                location: self.dir.clone(),
                source,
            },
            other => self.corrupt("the database files", &format!("{other:?}")),
        }
    }

    fn corrupt(&self, what: &str, detail: &str) -> StoreError {
        StoreError::Corrupt {
            location: self.dir.clone(),
            what: what.to_owned(),
            detail: detail.to_owned(),
        }
    }

    fn decode_error(&self, table: usize, key: &[u8], e: DecodeError) -> StoreError {
        let name = TABLES.get(table).copied().unwrap_or("?");
        self.corrupt(
            &format!("table {name}, key {}", show_key(key)),
            &e.to_string(),
        )
    }

    /// Folds `ops` into one final value per key (`None`: delete).
    fn fold(&self, open: &Open, ops: &[StoreOp]) -> Result<Overlay, StoreError> {
        let mut overlay = Overlay::new();
        for op in ops {
            match op {
                StoreOp::PutSession(r) => {
                    overlay.insert(
                        (SESSIONS, r.client_id.as_bytes().to_vec()),
                        Some(codec::encode_session(r)),
                    );
                }
                StoreOp::DeleteSession(c) => {
                    overlay.insert((SESSIONS, c.as_bytes().to_vec()), None);
                    let prefix = client_prefix(c);
                    for t in OWNED {
                        let ks = table(&open.tables, t, &self.dir)?;
                        for item in ks.prefix(&prefix) {
                            let key = item.key().map_err(|e| self.error(e))?;
                            overlay.insert((t, key.to_vec()), None);
                        }
                        // Keys written earlier in this very batch are not in the tree yet.
                        let start = (t, prefix.clone());
                        let written: Vec<(usize, Vec<u8>)> = match prefix_end(&prefix) {
                            Some(end) => overlay
                                .range(start..(t, end))
                                .map(|(k, _)| k.clone())
                                .collect(),
                            None => overlay
                                .range(start..)
                                .filter(|(k, _)| k.0 == t)
                                .map(|(k, _)| k.clone())
                                .collect(),
                        };
                        for k in written {
                            overlay.insert(k, None);
                        }
                    }
                }
                StoreOp::PutSubscription {
                    client_id,
                    subscription,
                } => {
                    let key = owned_key(client_id, subscription.filter.as_bytes());
                    overlay.insert(
                        (SUBSCRIPTIONS, key),
                        Some(codec::encode_subscription(subscription)),
                    );
                }
                StoreOp::DeleteSubscription { client_id, filter } => {
                    overlay.insert(
                        (SUBSCRIPTIONS, owned_key(client_id, filter.as_bytes())),
                        None,
                    );
                }
                StoreOp::PutInboundQos2 {
                    client_id,
                    packet_id,
                } => {
                    let key = owned_key(client_id, &packet_id.get().to_be_bytes());
                    overlay.insert((INBOUND, key), Some(vec![FORMAT]));
                }
                StoreOp::DeleteInboundQos2 {
                    client_id,
                    packet_id,
                } => {
                    let key = owned_key(client_id, &packet_id.get().to_be_bytes());
                    overlay.insert((INBOUND, key), None);
                }
                StoreOp::PutInflight { client_id, record } => {
                    let key = owned_key(client_id, &record.packet_id.get().to_be_bytes());
                    overlay.insert((INFLIGHT, key), Some(codec::encode_inflight(record)));
                }
                StoreOp::DeleteInflight {
                    client_id,
                    packet_id,
                } => {
                    let key = owned_key(client_id, &packet_id.get().to_be_bytes());
                    overlay.insert((INFLIGHT, key), None);
                }
                StoreOp::PutQueued {
                    client_id,
                    seq,
                    record,
                } => {
                    let key = owned_key(client_id, &seq.to_be_bytes());
                    overlay.insert((QUEUE, key), Some(codec::encode_queued(record)));
                }
                StoreOp::DeleteQueued { client_id, seq } => {
                    overlay.insert((QUEUE, owned_key(client_id, &seq.to_be_bytes())), None);
                }
                StoreOp::PutRetained(m) => {
                    overlay.insert(
                        (RETAINED, m.topic.as_bytes().to_vec()),
                        Some(codec::encode_message(m)),
                    );
                }
                StoreOp::DeleteRetained(topic) => {
                    overlay.insert((RETAINED, topic.as_bytes().to_vec()), None);
                }
                StoreOp::LoadQueue(_) => {}
            }
        }
        Ok(overlay)
    }

    fn load_queue(&self, open: &Open, load: &crate::QueueLoad) -> Result<QueueChunk, StoreError> {
        let ks = table(&open.tables, QUEUE, &self.dir)?;
        let prefix = client_prefix(&load.client_id);
        let start = owned_key(&load.client_id, &load.from_seq.to_be_bytes());
        let end = prefix_end(&prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 9]);
        let mut entries = Vec::new();
        let mut complete = true;
        for item in ks.range(start..end) {
            if entries.len() == load.limit {
                complete = false;
                break;
            }
            let (key, value) = item.into_inner().map_err(|e| self.error(e))?;
            let seq = queue_seq(&key)
                .ok_or_else(|| self.decode_error(QUEUE, &key, DecodeError::Invalid("key")))?;
            let record =
                codec::decode_queued(&value).map_err(|e| self.decode_error(QUEUE, &key, e))?;
            entries.push((seq, record));
        }
        Ok(QueueChunk {
            tag: load.tag,
            entries,
            complete,
        })
    }
}

impl DiskStore {
    fn write(
        &mut self,
        ops: &[StoreOp],
        durability: Durability,
    ) -> Result<Vec<QueueChunk>, StoreError> {
        let at = &self.at;
        let open = ensure_open(&mut self.open, at)?;
        let overlay = at.fold(open, ops)?;
        let batch_no = open.batch + 1;
        let mode = match durability {
            Durability::Synced => PersistMode::SyncData,
            Durability::Written => PersistMode::Buffer,
        };
        let mut batch = open.db.batch().durability(Some(mode));
        for ((t, key), value) in overlay {
            let ks = table(&open.tables, t, &at.dir)?;
            match value {
                Some(v) => batch.insert(ks, key, v),
                None => batch.remove(ks, key),
            }
        }
        let meta = table(&open.tables, META, &at.dir)?;
        batch.insert(meta, BATCH_KEY, batch_no.to_be_bytes());
        batch.commit().map_err(|e| at.error(e))?;
        open.batch = batch_no;
        let due = self.marked_at.is_none_or(|t| t.elapsed() >= MARK_EVERY);
        if durability == Durability::Synced && due {
            at.write_mark(batch_no)?;
            self.marked_at = Some(Instant::now());
        }
        let mut chunks = Vec::new();
        for op in ops {
            if let StoreOp::LoadQueue(load) = op {
                chunks.push(at.load_queue(open, load)?);
            }
        }
        Ok(chunks)
    }

    fn read_all(&mut self) -> Result<Snapshot, StoreError> {
        let at = &self.at;
        let open = ensure_open(&mut self.open, at)?;
        let mut sessions: BTreeMap<Arc<str>, StoredSession> = BTreeMap::new();
        for item in table(&open.tables, SESSIONS, &at.dir)?.iter() {
            let (key, value) = item.into_inner().map_err(|e| at.error(e))?;
            let record =
                codec::decode_session(&value).map_err(|e| at.decode_error(SESSIONS, &key, e))?;
            if record.client_id.as_bytes() != key.as_ref() {
                return Err(at.decode_error(SESSIONS, &key, DecodeError::Invalid("client id")));
            }
            sessions.insert(record.client_id.clone(), StoredSession::new(record));
        }
        let mut orphans: BTreeSet<Arc<str>> = BTreeSet::new();
        // Interned so that the thousands of keys of one session share its id.
        let mut ids: HashMap<String, Arc<str>> = HashMap::new();
        for t in OWNED {
            for item in table(&open.tables, t, &at.dir)?.iter() {
                let (key, value) = item.into_inner().map_err(|e| at.error(e))?;
                let bad_key = || at.decode_error(t, &key, DecodeError::Invalid("key"));
                let (client, suffix) = split_owned_key(&key).ok_or_else(bad_key)?;
                let Some(session) = sessions.get_mut(client) else {
                    let id = ids
                        .entry(client.to_owned())
                        .or_insert_with(|| Arc::from(client))
                        .clone();
                    orphans.insert(id);
                    continue;
                };
                match t {
                    SUBSCRIPTIONS => session.subscriptions.push(
                        codec::decode_subscription(&value)
                            .map_err(|e| at.decode_error(t, &key, e))?,
                    ),
                    INBOUND => {
                        let id = <[u8; 2]>::try_from(suffix)
                            .ok()
                            .and_then(|b| PacketId::new(u16::from_be_bytes(b)))
                            .ok_or_else(bad_key)?;
                        session.inbound_qos2.push(id);
                    }
                    INFLIGHT => session.inflight.push(
                        codec::decode_inflight(&value).map_err(|e| at.decode_error(t, &key, e))?,
                    ),
                    _ => {
                        let seq = queue_seq(&key).ok_or_else(bad_key)?;
                        let qos =
                            codec::queued_qos(&value).map_err(|e| at.decode_error(t, &key, e))?;
                        session.queue.push(QueueIndexEntry { seq, qos });
                    }
                }
            }
        }
        let mut retained = Vec::new();
        for item in table(&open.tables, RETAINED, &at.dir)?.iter() {
            let (key, value) = item.into_inner().map_err(|e| at.error(e))?;
            let m =
                codec::decode_message(&value).map_err(|e| at.decode_error(RETAINED, &key, e))?;
            retained.push(Arc::new(m));
        }
        let mut sessions: Vec<StoredSession> = sessions.into_values().collect();
        for s in &mut sessions {
            s.inflight.sort_by_key(|e| e.seq);
        }
        Ok(Snapshot {
            sessions,
            retained,
            orphans: orphans.into_iter().collect(),
        })
    }

    fn read_tenants(&mut self) -> Result<Vec<TenantRecord>, StoreError> {
        let at = &self.at;
        let open = ensure_open(&mut self.open, at)?;
        let mut tenants = Vec::new();
        for item in table(&open.tables, TENANTS, &at.dir)?.iter() {
            let (key, value) = item.into_inner().map_err(|e| at.error(e))?;
            let record =
                codec::decode_tenant(&value).map_err(|e| at.decode_error(TENANTS, &key, e))?;
            if record.id.as_bytes() != key.as_ref() {
                return Err(at.decode_error(TENANTS, &key, DecodeError::Invalid("tenant id")));
            }
            tenants.push(record);
        }
        Ok(tenants)
    }

    /// Writes one tenant record, synced, in a batch of its own that also bumps the batch
    /// counter (so the commit mark stays a count of durable batches).
    fn write_tenant(&mut self, record: &TenantRecord) -> Result<(), StoreError> {
        let at = &self.at;
        let open = ensure_open(&mut self.open, at)?;
        let batch_no = open.batch + 1;
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(
            table(&open.tables, TENANTS, &at.dir)?,
            record.id.as_bytes(),
            codec::encode_tenant(record),
        );
        batch.insert(
            table(&open.tables, META, &at.dir)?,
            BATCH_KEY,
            batch_no.to_be_bytes(),
        );
        batch.commit().map_err(|e| at.error(e))?;
        open.batch = batch_no;
        at.write_mark(batch_no)?;
        self.marked_at = Some(Instant::now());
        Ok(())
    }

    /// Forgets the database after a failed write, so the next call reopens it.
    fn fail<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.open = None;
        }
        r
    }
}

/// The sequence number at the end of a queue key.
fn queue_seq(key: &[u8]) -> Option<u64> {
    let (_, suffix) = split_owned_key(key)?;
    Some(u64::from_be_bytes(<[u8; 8]>::try_from(suffix).ok()?))
}

fn table<'a>(tables: &'a [Keyspace], t: usize, dir: &Path) -> Result<&'a Keyspace, StoreError> {
    tables.get(t).ok_or_else(|| StoreError::Backend {
        location: dir.to_path_buf(),
        detail: format!("keyspace {t} missing"),
    })
}

/// A key for a message: printable bytes as text, the rest escaped.
fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

impl Store for DiskStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let r = self.read_all();
        self.fail(r)
    }

    fn apply(
        &mut self,
        ops: &[StoreOp],
        durability: Durability,
    ) -> Result<Vec<QueueChunk>, StoreError> {
        let r = self.write(ops, durability);
        self.fail(r)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let at = &self.at;
        let r = ensure_open(&mut self.open, at).and_then(|open| {
            open.db
                .persist(PersistMode::SyncData)
                .map_err(|e| at.error(e))?;
            at.write_mark(open.batch)
        });
        if r.is_ok() {
            self.marked_at = Some(Instant::now());
        }
        self.fail(r)
    }

    fn check(&mut self) -> Result<(), StoreError> {
        let at = &self.at;
        let r = ensure_open(&mut self.open, at).and_then(|open| {
            let meta = table(&open.tables, META, &at.dir)?;
            let mut batch = open.db.batch().durability(Some(PersistMode::SyncData));
            batch.insert(meta, CHECK_KEY, [FORMAT]);
            batch.commit().map_err(|e| at.error(e))
        });
        self.fail(r)
    }

    fn location(&self) -> String {
        self.at.dir.display().to_string()
    }

    fn load_tenants(&mut self) -> Result<Vec<TenantRecord>, StoreError> {
        let r = self.read_tenants();
        self.fail(r)
    }

    fn put_tenant(&mut self, record: &TenantRecord) -> Result<(), StoreError> {
        let r = self.write_tenant(record);
        self.fail(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Presence, SessionRecord};

    fn sessions(n: usize) -> Vec<StoreOp> {
        (0..n)
            .map(|i| {
                StoreOp::PutSession(SessionRecord {
                    client_id: Arc::from(format!("c{i}").as_str()),
                    expiry_interval: 60,
                    presence: Presence::Connected { will: None },
                })
            })
            .collect()
    }

    fn filled(dir: &Path) {
        let mut s = DiskStore::open(dir).unwrap();
        s.apply(&sessions(50), Durability::Synced).unwrap();
        s.sync().unwrap();
    }

    /// Overwrites `file` (relative to `dir`) with garbage of the same length.
    fn garble(dir: &Path, file: &str) {
        let path = dir.join(file);
        let len = std::fs::metadata(&path).unwrap().len();
        let len = usize::try_from(len).unwrap().max(16);
        std::fs::write(&path, vec![0x5a; len]).unwrap();
    }

    #[test]
    fn a_garbled_journal_is_an_error_not_an_empty_store() {
        let d = tempfile::tempdir().unwrap();
        filled(d.path());
        // fjall alone would treat the whole journal as a torn tail and open an empty store.
        garble(d.path(), "0.jnl");
        let err = DiskStore::open(d.path()).unwrap_err();
        assert!(err.is_damaged(), "{err}");
        let text = err.to_string();
        assert!(text.contains(&d.path().display().to_string()), "{text}");
        assert!(text.contains("lost"), "{text}");
        // Nothing was written or deleted: the same error again.
        assert!(DiskStore::open(d.path()).unwrap_err().is_damaged());
    }

    #[test]
    fn garbled_database_files_are_errors_naming_the_directory() {
        let d = tempfile::tempdir().unwrap();
        filled(d.path());
        garble(d.path(), "version");
        let err = DiskStore::open(d.path()).unwrap_err();
        assert!(err.is_damaged(), "{err}");
        assert!(err.to_string().contains(&d.path().display().to_string()));

        let d = tempfile::tempdir().unwrap();
        filled(d.path());
        std::fs::write(d.path().join(MARK_FILE), b"not a mark").unwrap();
        let err = DiskStore::open(d.path()).unwrap_err();
        assert!(err.to_string().contains(MARK_FILE), "{err}");
    }

    #[test]
    fn a_store_in_use_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let _first = DiskStore::open(d.path()).unwrap();
        let err = DiskStore::open(d.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn batches_are_counted_across_reopens_and_marked_when_synced() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = DiskStore::open(d.path()).unwrap();
            s.apply(&sessions(1), Durability::Synced).unwrap();
            s.apply(&sessions(2), Durability::Written).unwrap();
            assert_eq!(s.open.as_ref().unwrap().batch, 2);
        }
        let mut s = DiskStore::open(d.path()).unwrap();
        assert_eq!(s.open.as_ref().unwrap().batch, 2);
        assert_eq!(s.load().unwrap().sessions.len(), 2);
        s.sync().unwrap();
        let mark = std::fs::read(d.path().join(MARK_FILE)).unwrap();
        assert_eq!(mark[1..], 2u64.to_be_bytes());
    }
}
