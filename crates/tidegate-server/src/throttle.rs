//! Reader quotas of a tenant (issue 7): inbound bytes per second per client and per tenant,
//! enforced by slowing the reader, and the tenant's maximum packet size.
//!
//! Place in the data flow:
//! ```text
//! Authenticator::check ── Allow ──▶ ReaderQuota (boxed, only for a limited tenant)
//! connection task: socket ──read n bytes──▶ ReaderQuota::charge(now, n)
//!     paid      ──▶ decode ──▶ engine
//!     Pause(d)  ──▶ no decoding, no reading for d ──▶ ReaderQuota::settle(now) ──▶ ...
//! ```
//! Nothing is dropped and nothing disconnected: bytes are paid for before they are decoded,
//! and while a connection waits it does not read its socket, so the kernel's receive buffer
//! fills and TCP flow control slows the client down. The connection keeps writing meanwhile
//! (acknowledgements, deliveries) and keeps obeying the hard stop.
//!
//! A batch pays the client's bucket first, then the tenant's; a scope already paid is not
//! charged again while the other is awaited, so a shared bucket that others drained does not
//! make the client pay twice. A batch larger than a bucket passes when the bucket is full and
//! leaves it in debt ([`TokenBucket`]); reads are capped at one burst ([`ReaderQuota::max_read`])
//! so that a slow limit does not make one batch wait longer than about a second.
//!
//! The tenant-wide bucket is shared by every connection of the tenant through
//! [`TenantBuckets`]; a quota change reaches it with the tenant's next accepted CONNECT (the
//! bucket is replaced in place, so every connection of the tenant follows at once), while a
//! client's own bucket keeps the rate it connected with. Clock readings are passed in: this
//! module does no IO and reads no clock.

use crate::connection::{MAX_READ, MIN_READ};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tidegate_auth::{Quotas, TokenBucket};

/// Which bucket made a reader wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Scope {
    /// The client's own `max_inbound_bytes_per_sec`.
    Client,
    /// The tenant's `tenant_bytes_per_sec`, shared by all of its clients.
    Tenant,
}

impl Scope {
    /// The `scope` label in `/metrics`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Tenant => "tenant",
        }
    }
}

/// A reader has to wait before what it read may be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pause {
    /// The bucket that is short.
    pub(crate) scope: Scope,
    /// How long until it holds enough.
    pub(crate) wait: Duration,
    /// Whether this is the first wait of this batch on this scope (a batch is counted as
    /// throttled once per scope, however many waits it takes).
    pub(crate) first: bool,
}

/// A tenant-wide byte bucket, shared by the tenant's connections.
pub(crate) type SharedBucket = Arc<Mutex<TokenBucket>>;

/// The tenant-wide byte buckets, one per tenant with `tenant_bytes_per_sec`, created on a
/// tenant's first accepted CONNECT. Kept by the [`crate::auth::Authenticator`] behind its lock.
#[derive(Debug, Default)]
pub(crate) struct TenantBuckets {
    buckets: HashMap<Arc<str>, SharedBucket>,
}

impl TenantBuckets {
    /// The bucket of `tenant` for a limit of `rate` bytes/s (`None`: not limited). A bucket
    /// whose rate differs is replaced in place, so the connections already holding it follow.
    pub(crate) fn get(
        &mut self,
        tenant: &Arc<str>,
        rate: Option<u64>,
        now: Instant,
    ) -> Option<SharedBucket> {
        let Some(rate) = rate else {
            // Connections still holding the old bucket keep it until they reconnect.
            self.buckets.remove(tenant);
            return None;
        };
        let fresh = || TokenBucket::new(rate, rate, now);
        let bucket = self
            .buckets
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Mutex::new(fresh())));
        {
            let mut guard = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            // The clamp of `TokenBucket::new` makes a rate of 0 read back as 1.
            if guard.rate() != rate.max(1) {
                *guard = fresh();
            }
        }
        Some(bucket.clone())
    }

    /// Forgets the buckets no connection holds any more and that are full again, which a new
    /// bucket would equal (so forgetting changes no behaviour).
    pub(crate) fn purge(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| {
            if Arc::strong_count(bucket) > 1 {
                return true;
            }
            let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let rate = b.rate();
            b.available(now) < rate
        });
    }

    /// How many tenants have a bucket.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Bytes read and not yet paid for.
#[derive(Debug, Clone, Copy)]
struct Owed {
    bytes: u64,
    client_due: bool,
    tenant_due: bool,
    client_waited: bool,
    tenant_waited: bool,
}

/// What a tenant's quotas ask of one connection's reader. Exists only for a connection of a
/// tenant with a byte rate or a packet size limit, and is boxed, so an unlimited idle
/// connection pays one null pointer for it.
#[derive(Debug)]
pub(crate) struct ReaderQuota {
    tenant: Arc<str>,
    client: Option<TokenBucket>,
    shared: Option<SharedBucket>,
    /// The tenant's `max_packet_size` while it is below the gateway's (then a packet too large
    /// is the tenant's refusal, counted for it).
    packet_limit: Option<u32>,
    owed: Option<Owed>,
}

impl ReaderQuota {
    /// The reader quota of a client of `tenant`, or `None` when its quotas limit no byte rate
    /// and no packet size. `shared` is the tenant's bucket from [`TenantBuckets::get`].
    pub(crate) fn new(
        tenant: Arc<str>,
        quotas: &Quotas,
        shared: Option<SharedBucket>,
        now: Instant,
    ) -> Option<Box<ReaderQuota>> {
        let client = quotas.client_byte_bucket(now);
        if client.is_none() && shared.is_none() && quotas.max_packet_size.is_none() {
            return None;
        }
        Some(Box::new(ReaderQuota {
            tenant,
            client,
            shared,
            packet_limit: quotas.max_packet_size,
            owed: None,
        }))
    }

    /// The tenant it counts for.
    pub(crate) fn tenant(&self) -> &Arc<str> {
        &self.tenant
    }

    /// The decoder limit for a gateway allowing `gateway_max` bytes: the smaller of the two.
    /// Forgets the tenant's limit when it is not the smaller one, as it then refuses nothing.
    pub(crate) fn bind_packet_limit(&mut self, gateway_max: u32) -> u32 {
        match self.packet_limit {
            Some(max) if max < gateway_max => max,
            _ => {
                self.packet_limit = None;
                gateway_max
            }
        }
    }

    /// Whether a packet too large was refused by the tenant's limit rather than the gateway's.
    pub(crate) fn limits_packets(&self) -> bool {
        self.packet_limit.is_some()
    }

    /// Whether it limits nothing (its packet limit was not below the gateway's and no byte
    /// rate is set): the connection can drop it.
    pub(crate) fn is_idle(&self) -> bool {
        self.client.is_none() && self.shared.is_none() && self.packet_limit.is_none()
    }

    /// The largest read worth making: one burst of the smallest bucket, within the
    /// connection's read sizes.
    pub(crate) fn max_read(&self) -> usize {
        let client = self.client.as_ref().map(TokenBucket::rate);
        let tenant = self.shared.as_ref().map(|b| lock(b).rate());
        let smallest = client.into_iter().chain(tenant).min();
        smallest.map_or(MAX_READ, |rate| {
            usize::try_from(rate)
                .unwrap_or(MAX_READ)
                .clamp(MIN_READ, MAX_READ)
        })
    }

    /// Charges a batch of `bytes` just read. `None`: paid, decode it; a [`Pause`]: wait, then
    /// call [`ReaderQuota::settle`].
    pub(crate) fn charge(&mut self, now: Instant, bytes: u64) -> Option<Pause> {
        self.owed = Some(Owed {
            bytes,
            client_due: self.client.is_some(),
            tenant_due: self.shared.is_some(),
            client_waited: false,
            tenant_waited: false,
        });
        self.settle(now)
    }

    /// Pays what the last batch still owes. `None` once everything is paid.
    pub(crate) fn settle(&mut self, now: Instant) -> Option<Pause> {
        let mut owed = self.owed?;
        if owed.client_due
            && let Some(bucket) = &mut self.client
        {
            if let Err(wait) = bucket.try_take(now, owed.bytes) {
                let first = !owed.client_waited;
                owed.client_waited = true;
                self.owed = Some(owed);
                return Some(Pause {
                    scope: Scope::Client,
                    wait,
                    first,
                });
            }
            owed.client_due = false;
        }
        if owed.tenant_due
            && let Some(bucket) = &self.shared
            && let Err(wait) = lock(bucket).try_take(now, owed.bytes)
        {
            let first = !owed.tenant_waited;
            owed.tenant_waited = true;
            self.owed = Some(owed);
            return Some(Pause {
                scope: Scope::Tenant,
                wait,
                first,
            });
        }
        // Every scope due is paid.
        self.owed = None;
        None
    }
}

fn lock(bucket: &SharedBucket) -> std::sync::MutexGuard<'_, TokenBucket> {
    // A bucket is a few integers updated in one call: a panic elsewhere cannot leave it torn.
    bucket.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(client: Option<u64>, tenant: Option<u64>, packet: Option<u32>) -> Quotas {
        Quotas {
            max_inbound_bytes_per_sec: client,
            tenant_bytes_per_sec: tenant,
            max_packet_size: packet,
            ..Quotas::default()
        }
    }

    fn quota(q: &Quotas, buckets: &mut TenantBuckets, now: Instant) -> Option<Box<ReaderQuota>> {
        let tenant: Arc<str> = Arc::from("t");
        let shared = buckets.get(&tenant, q.tenant_bytes_per_sec, now);
        ReaderQuota::new(tenant, q, shared, now)
    }

    #[test]
    fn unlimited_tenants_get_no_quota() {
        let mut buckets = TenantBuckets::default();
        let now = Instant::now();
        assert!(quota(&Quotas::default(), &mut buckets, now).is_none());
        assert_eq!(buckets.len(), 0);
        let mut only_size = quota(&quotas(None, None, Some(4096)), &mut buckets, now).unwrap();
        assert_eq!(only_size.max_read(), MAX_READ);
        assert_eq!(only_size.charge(now, 1_000_000), None, "no byte rate");
        // A tenant limit above the gateway's refuses nothing: the quota has nothing left to do.
        assert_eq!(only_size.bind_packet_limit(1024), 1024);
        assert!(!only_size.limits_packets());
        assert!(only_size.is_idle());
        let mut smaller = quota(&quotas(None, None, Some(512)), &mut buckets, now).unwrap();
        assert_eq!(smaller.bind_packet_limit(1024), 512);
        assert!(smaller.limits_packets());
        assert!(!smaller.is_idle());
    }

    #[test]
    fn a_client_waits_for_its_own_bucket() {
        let mut buckets = TenantBuckets::default();
        let t0 = Instant::now();
        let mut q = quota(&quotas(Some(1000), None, None), &mut buckets, t0).unwrap();
        assert_eq!(q.max_read(), 1000);
        assert_eq!(q.charge(t0, 1000), None, "one burst passes at once");
        let pause = q.charge(t0, 500).unwrap();
        assert_eq!(
            pause,
            Pause {
                scope: Scope::Client,
                wait: Duration::from_millis(500),
                first: true
            }
        );
        let again = q.settle(t0 + Duration::from_millis(100)).unwrap();
        assert!(!again.first, "the same batch is throttled once");
        assert_eq!(again.wait, Duration::from_millis(400));
        assert_eq!(q.settle(t0 + Duration::from_millis(500)), None);
        assert_eq!(q.settle(t0 + Duration::from_millis(500)), None, "paid once");
        // Paid: the next batch starts from an empty bucket.
        assert_eq!(
            q.charge(t0 + Duration::from_millis(500), 1)
                .map(|p| p.first),
            Some(true)
        );
    }

    #[test]
    fn the_tenant_bucket_is_shared_and_a_paid_scope_is_not_charged_twice() {
        let mut buckets = TenantBuckets::default();
        let t0 = Instant::now();
        let q = quotas(Some(10_000), Some(1000), None);
        let mut a = quota(&q, &mut buckets, t0).unwrap();
        let mut b = quota(&q, &mut buckets, t0).unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(a.max_read(), 1000, "the smaller burst caps the reads");
        assert_eq!(a.charge(t0, 800), None);
        // `b` pays its own bucket, then waits for the tenant's, which `a` emptied.
        let pause = b.charge(t0, 800).unwrap();
        assert_eq!(pause.scope, Scope::Tenant);
        assert_eq!(pause.wait, Duration::from_millis(600));
        assert_eq!(b.settle(t0 + pause.wait), None);
        // `b`'s client bucket was charged once: 9,200 left of 10,000.
        assert_eq!(b.client.as_mut().unwrap().available(t0), 9_200);
    }

    #[test]
    fn a_changed_rate_replaces_the_bucket_in_place_and_purge_keeps_what_matters() {
        let mut buckets = TenantBuckets::default();
        let t0 = Instant::now();
        let tenant: Arc<str> = Arc::from("t");
        let held = buckets.get(&tenant, Some(100), t0).unwrap();
        lock(&held).try_take(t0, 100).unwrap();
        let same = buckets.get(&tenant, Some(100), t0).unwrap();
        assert!(Arc::ptr_eq(&held, &same));
        assert_eq!(
            lock(&held).available(t0),
            0,
            "the same rate keeps the state"
        );
        drop(same);
        buckets.get(&tenant, Some(5000), t0).unwrap();
        assert_eq!(lock(&held).rate(), 5000, "holders follow the new rate");
        // Held: kept. Not held and in use (not full): kept. Not held and full: forgotten.
        buckets.purge(t0);
        assert_eq!(buckets.len(), 1);
        lock(&held).try_take(t0, 10).unwrap();
        drop(held);
        buckets.purge(t0);
        assert_eq!(buckets.len(), 1, "a bucket in use is remembered");
        buckets.purge(t0 + Duration::from_secs(1));
        assert_eq!(buckets.len(), 0);
        // No limit any more: no bucket.
        assert!(buckets.get(&tenant, None, t0).is_none());
    }

    #[test]
    fn sustained_reading_follows_the_rate() {
        let mut buckets = TenantBuckets::default();
        let t0 = Instant::now();
        let mut q = quota(&quotas(Some(20_480), None, None), &mut buckets, t0).unwrap();
        let read = q.max_read() as u64;
        let (mut now, mut paid) = (t0, 0u64);
        let mut pending = q.charge(now, read);
        while paid < 100 * 1024 {
            match pending {
                Some(pause) => {
                    now += pause.wait;
                    pending = q.settle(now);
                }
                None => {
                    paid += read;
                    pending = q.charge(now, read);
                }
            }
        }
        // 100 KiB with a 20 KiB burst at 20 KiB/s: the last batch is paid after 4 s.
        assert_eq!(now - t0, Duration::from_secs(4));
    }
}
