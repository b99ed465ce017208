//! [`Hubs`]: one stream [`Hub`] per tenant, created on the first stream of that tenant.
//!
//! Place in the data flow: `SSE / poll handler -> Hubs::open(caller) -> ACL check (Gateway) ->
//! the caller's tenant's Hub -> Reader`. Each hub has its own tap, a session inside its tenant,
//! so a reader never sees a message of another tenant, and its own epoch, so a position handed
//! out by another tenant's hub resumes as a `restarted` reset, never as that hub's messages.
//!
//! The tap of a hub may read every topic of its tenant (the union of what its readers need);
//! each reader's filters are checked against its caller's ACL before its hub is even looked up,
//! so a denied filter is refused (403) with nothing opened or subscribed.
//!
//! Hubs whose tap has ended (idle, the engine closed it, or the tenant was deleted) and that
//! have no reader are dropped when another tenant's hub is created, so tenants that come and go
//! leave nothing behind. `http.max_streams` counts the readers of every hub together.

use super::hub::{Hub, HubError, HubSettings};
use super::position::Position;
use super::reader::Reader;
use crate::config::HttpConfig;
use crate::gateway::{Caller, Gateway};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The stream hubs, by tenant id.
pub(crate) struct Hubs {
    gateway: Arc<dyn Gateway>,
    settings: HubSettings,
    stop: CancellationToken,
    /// One permit per open reader, whatever its tenant.
    readers: Arc<Semaphore>,
    by_tenant: Mutex<HashMap<String, Hub>>,
}

impl Hubs {
    /// The hubs over `gateway`, bounded by `config`. Nothing runs until the first reader.
    pub(crate) fn start(
        gateway: Arc<dyn Gateway>,
        config: &HttpConfig,
        stop: CancellationToken,
    ) -> Hubs {
        Hubs::with_settings(gateway, HubSettings::from_config(config), stop)
    }

    /// The hubs with explicit settings.
    pub(crate) fn with_settings(
        gateway: Arc<dyn Gateway>,
        settings: HubSettings,
        stop: CancellationToken,
    ) -> Hubs {
        Hubs {
            gateway,
            settings,
            stop,
            readers: Arc::new(Semaphore::new(settings.max_streams)),
            by_tenant: Mutex::new(HashMap::new()),
        }
    }

    /// A reader for `caller` of `filters` (valid, non-shared, distinct) from `from` (`None`:
    /// from now), in the hub of the caller's tenant. Refused before anything opens when the
    /// caller's ACL denies one of the filters.
    pub(crate) async fn open(
        &self,
        caller: &Caller,
        filters: &[String],
        from: Option<Position>,
    ) -> Result<Reader, HubError> {
        self.gateway
            .check_subscribe(caller, filters)
            .map_err(HubError::Refused)?;
        self.hub(&caller.tenant).open(filters, from).await
    }

    /// The hub of `tenant`, created if there is none.
    fn hub(&self, tenant: &str) -> Hub {
        // Nothing below can panic half-way, so a poisoned map is still consistent.
        let mut map = self
            .by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(hub) = map.get(tenant) {
            return hub.clone();
        }
        // Under the lock nobody can take a new handle to a hub, so an unused one stays unused.
        map.retain(|_, hub| !hub.is_unused());
        let hub = Hub::new(
            self.gateway.clone(),
            tenant.to_owned(),
            self.settings,
            self.readers.clone(),
            self.stop.clone(),
        );
        map.insert(tenant.to_owned(), hub.clone());
        hub
    }

    /// The tenants that have a hub now, sorted.
    #[cfg(test)]
    fn tenants(&self) -> Vec<String> {
        let map = self
            .by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut tenants: Vec<String> = map.keys().cloned().collect();
        tenants.sort();
        tenants
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{AclIdentity, GatewayError};
    use crate::stream::core::Limits;
    use crate::stream::history::ResetReason;
    use crate::stream::reader::Item;
    use crate::stream::testkit::{Engine, FakeGateway};
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn settings(max_streams: usize) -> HubSettings {
        HubSettings {
            limits: Limits {
                history_size: 10,
                max_age: Duration::from_secs(60),
                max_idle_filters: 100,
            },
            live_buffer: 16,
            max_streams,
        }
    }

    fn hubs(max_streams: usize) -> (Hubs, Arc<FakeGateway>, mpsc::UnboundedReceiver<Engine>) {
        let (gateway, engines) = FakeGateway::new();
        let hubs = Hubs::with_settings(
            gateway.clone(),
            settings(max_streams),
            CancellationToken::new(),
        );
        (hubs, gateway, engines)
    }

    /// A caller bound to `tenant`'s ACL.
    fn bound(tenant: &str) -> Caller {
        Caller {
            tenant: tenant.into(),
            acl: Some(AclIdentity {
                username: Some("backend".into()),
                client_id: "http:1".into(),
            }),
        }
    }

    fn filters(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("no answer in time")
    }

    async fn topic_of(reader: &mut Reader) -> String {
        match within(reader.next()).await {
            Some(Item::Message { delivery, .. }) => delivery.message.topic.clone(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_tenant_reads_through_its_own_tap() {
        let (hubs, gateway, mut engines) = hubs(8);
        let mut a = hubs
            .open(&bound("a"), &filters(&["t"]), None)
            .await
            .unwrap();
        let mut engine_a = engines.recv().await.unwrap();
        let mut b = hubs
            .open(&bound("b"), &filters(&["t"]), None)
            .await
            .unwrap();
        let mut engine_b = engines.recv().await.unwrap();
        let mut plain = hubs
            .open(&Caller::unrestricted(), &filters(&["t"]), None)
            .await
            .unwrap();
        let mut engine_default = engines.recv().await.unwrap();
        assert_eq!(
            [&engine_a.tenant, &engine_b.tenant, &engine_default.tenant],
            ["a", "b", "default"]
        );
        // A second reader of a tenant shares its hub.
        let _a2 = hubs
            .open(&bound("a"), &filters(&["t"]), None)
            .await
            .unwrap();
        assert_eq!(gateway.opened.load(Ordering::SeqCst), 3);
        assert_eq!(hubs.tenants(), ["a", "b", "default"]);

        for engine in [&mut engine_a, &mut engine_b, &mut engine_default] {
            engine.until_subscribed(&["t"]).await;
        }
        engine_b.publish("t", "of b").await;
        engine_a.publish("t", "of a").await;
        engine_default.publish("t", "of default").await;
        for (reader, payload) in [
            (&mut a, "of a"),
            (&mut b, "of b"),
            (&mut plain, "of default"),
        ] {
            match within(reader.next()).await {
                Some(Item::Message { delivery, .. }) => {
                    assert_eq!(delivery.message.payload, payload.as_bytes());
                }
                other => panic!("expected {payload}, got {other:?}"),
            }
            assert!(reader.try_next().is_none(), "nothing of another tenant");
        }
    }

    #[tokio::test]
    async fn a_denied_filter_is_refused_before_anything_opens() {
        let (hubs, gateway, _engines) = hubs(8);
        gateway.deny("secret/#");
        let refused = hubs
            .open(&bound("a"), &filters(&["open", "secret/#"]), None)
            .await
            .err();
        match refused {
            Some(HubError::Refused(GatewayError::Refused { reason, message })) => {
                assert_eq!(reason, 0x87);
                assert!(message.contains("secret/#"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(gateway.opened.load(Ordering::SeqCst), 0);
        assert!(hubs.tenants().is_empty(), "no hub for a refused reader");
        // Only bound callers have an ACL.
        assert!(
            hubs.open(&Caller::unrestricted(), &filters(&["secret/#"]), None)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_position_of_another_tenants_hub_is_a_restart() {
        let (hubs, _gateway, mut engines) = hubs(8);
        let mut a = hubs
            .open(&bound("a"), &filters(&["t"]), None)
            .await
            .unwrap();
        let mut engine_a = engines.recv().await.unwrap();
        engine_a.until_subscribed(&["t"]).await;
        engine_a.publish("t", "x").await;
        assert_eq!(topic_of(&mut a).await, "t");
        let of_a = a.position();

        let mut b = hubs
            .open(&bound("b"), &filters(&["t"]), Some(of_a))
            .await
            .unwrap();
        assert_ne!(b.position().epoch, of_a.epoch);
        match within(b.next()).await {
            Some(Item::Reset { resets, position }) => {
                assert_eq!(resets[0].reason, ResetReason::Restarted);
                assert_eq!(position, Some(b.position()), "nothing of a follows");
            }
            other => panic!("expected a reset, got {other:?}"),
        }
        assert!(b.try_next().is_none());
    }

    #[tokio::test]
    async fn max_streams_counts_every_tenant() {
        let (hubs, _gateway, _engines) = hubs(2);
        let a = hubs
            .open(&bound("a"), &filters(&["t"]), None)
            .await
            .unwrap();
        let _b = hubs
            .open(&bound("b"), &filters(&["t"]), None)
            .await
            .unwrap();
        assert_eq!(
            hubs.open(&bound("c"), &filters(&["t"]), None).await.err(),
            Some(HubError::Busy(2))
        );
        drop(a);
        assert!(hubs.open(&bound("c"), &filters(&["t"]), None).await.is_ok());
    }

    #[tokio::test]
    async fn a_closed_tenant_ends_its_readers_and_its_unused_hub_goes() {
        let (hubs, _gateway, mut engines) = hubs(8);
        let mut a = hubs
            .open(&bound("a"), &filters(&["t"]), None)
            .await
            .unwrap();
        let engine_a = engines.recv().await.unwrap();
        let _b = hubs
            .open(&bound("b"), &filters(&["t"]), None)
            .await
            .unwrap();
        // The engine closes a's tap (the tenant was deleted): its reader hears of it.
        drop(engine_a);
        assert!(matches!(within(a.next()).await, Some(Item::Closed)));
        assert_eq!(hubs.tenants(), ["a", "b"], "a's reader still holds its hub");
        drop(a);
        let _c = hubs
            .open(&bound("c"), &filters(&["t"]), None)
            .await
            .unwrap();
        assert_eq!(
            hubs.tenants(),
            ["b", "c"],
            "a's hub, with no tap and no reader, is gone; b's is in use"
        );
    }
}
