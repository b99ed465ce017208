//! Tenants changed live (issue 7): the start-up merge of the configuration file's tenants with
//! the store's, and the admin API's create / replace / delete.
//!
//! Place in the data flow:
//! ```text
//! start-up: config [[tenants]] ─┐
//!           store tenant records ┴─▶ merge ──▶ TenantRegistry (read by CONNECT handling)
//! running:  admin API ──GatewayHandle──▶ TenantAdmin::create/replace/delete
//!             compile + check against the others ──▶ store (synced) ──▶ registry swap
//! ```
//! **Which wins.** The configuration file is the seed; the store wins for every tenant the
//! admin API has changed. A tenant created or replaced through the API is stored whole and
//! overrides, after a restart, a tenant of the same id in the file; one deleted through the
//! API is stored as a deletion mark, so a tenant of that id in the file stays deleted. Editing
//! the file afterwards does not change such a tenant: the API is where it is managed now (the
//! start-up log says which tenants the store overrides). With `persistence = "memory"` there is
//! no store: API changes hold until the process ends.
//!
//! **Order of a change.** Compile and check first (nothing changes on a bad configuration),
//! then write the store (nothing changes when it fails), then swap the registry's set, so an
//! answer of success means durable and in force. Changes are serialised by one lock, so two
//! creations of one id cannot both succeed.

use crate::storage::{TenantStore, TenantStoreError};
use crate::tenants::TenantRegistry;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tidegate_auth::{ConfigError, Tenant, TenantConfig, Tenants};
use tidegate_http::{GatewayError, TenantError, TenantSource, TenantView};
use tidegate_store::TenantRecord;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

/// The live tenants and what changes them.
#[derive(Debug)]
pub(crate) struct TenantAdmin {
    registry: Arc<TenantRegistry>,
    /// `None` with `persistence = "memory"`.
    store: Option<TenantStore>,
    /// Ids of the tenants whose configuration comes from the API (stored). Its lock also
    /// serialises changes.
    from_api: Mutex<HashSet<String>>,
}

impl TenantAdmin {
    /// The tenants of the file (`file`; none gives the implicit `default` tenant) with the
    /// store's records applied over them. A stored tenant that no longer compiles (its JWKS
    /// file is gone, say) is left out with an error in the log rather than stopping the
    /// gateway: its clients are refused, the others are served.
    pub(crate) fn start(
        file: &[TenantConfig],
        stored: Vec<TenantRecord>,
        store: Option<TenantStore>,
    ) -> Result<TenantAdmin, ConfigError> {
        let seed = Tenants::from_configs(file)?;
        let mut configs: BTreeMap<String, TenantConfig> = seed
            .iter()
            .map(|t| (t.id().to_owned(), t.config().clone()))
            .collect();
        let mut from_api = HashSet::new();
        for record in stored {
            let id = record.id.to_string();
            let Some(json) = record.config else {
                if configs.remove(&id).is_some() {
                    info!(tenant = %id, "tenant of the configuration file deleted through the admin API; left out");
                }
                continue;
            };
            match serde_json::from_slice::<TenantConfig>(&json) {
                Ok(config) if config.id == id => {
                    if configs.get(&id).is_some_and(|c| *c != config) {
                        warn!(tenant = %id, "the admin API changed this tenant: the stored configuration overrides the file's");
                    }
                    configs.insert(id.clone(), config);
                    from_api.insert(id);
                }
                Ok(config) => {
                    error!(tenant = %id, stored_id = %config.id, "stored tenant record names another id; left out");
                }
                Err(e) => {
                    error!(tenant = %id, error = %e, "stored tenant record unreadable; left out")
                }
            }
        }
        let mut tenants = Tenants::from_tenants(Vec::new())?;
        for (id, config) in configs {
            let compiled = Tenant::compile(config).and_then(|t| tenants.with(Arc::new(t)));
            match compiled {
                Ok(set) => tenants = set,
                // A file tenant was compiled by `from_configs` already: only a stored one can
                // fail here, or clash with a file tenant edited since.
                Err(e) => error!(tenant = %id, error = %e, "stored tenant unusable; left out"),
            }
        }
        info!(
            tenants = tenants.len(),
            from_store = from_api.len(),
            "tenants loaded"
        );
        Ok(TenantAdmin {
            registry: Arc::new(TenantRegistry::new(tenants)),
            store,
            from_api: Mutex::new(from_api),
        })
    }

    /// The registry CONNECT handling reads.
    pub(crate) fn registry(&self) -> &Arc<TenantRegistry> {
        &self.registry
    }

    /// Every tenant in force, in id order.
    pub(crate) async fn list(&self) -> Vec<TenantView> {
        let from_api = self.from_api.lock().await;
        let current = self.registry.current();
        let mut views: Vec<TenantView> = current
            .iter()
            .map(|t| view(t.config(), &from_api))
            .collect();
        views.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        views
    }

    /// The tenant `id`.
    pub(crate) async fn get(&self, id: &str) -> Option<TenantView> {
        let from_api = self.from_api.lock().await;
        self.registry
            .current()
            .get(id)
            .map(|t| view(t.config(), &from_api))
    }

    /// Adds `config` (`exists`: false) or replaces the tenant of its id (`exists`: true).
    pub(crate) async fn put(&self, config: TenantConfig, exists: bool) -> Result<(), TenantError> {
        let mut from_api = self.from_api.lock().await;
        let current = self.registry.current();
        let id = config.id.clone();
        match (current.get(&id).is_some(), exists) {
            (true, false) => return Err(TenantError::Exists(id)),
            (false, true) => return Err(TenantError::NotFound(id)),
            _ => {}
        }
        let json = serde_json::to_vec(&config)
            .map_err(|e| TenantError::Invalid(format!("cannot encode the tenant: {e}")))?;
        let next = Tenant::compile(config)
            .and_then(|t| current.with(Arc::new(t)))
            .map_err(|e| TenantError::Invalid(e.to_string()))?;
        self.write(TenantRecord {
            id: Arc::from(id.as_str()),
            config: Some(Bytes::from(json)),
        })
        .await?;
        self.registry.replace(next);
        info!(tenant = %id, replaced = exists, "tenant changed through the admin API");
        from_api.insert(id);
        Ok(())
    }

    /// Removes the tenant `id` from the set new connections are checked against.
    pub(crate) async fn delete(&self, id: &str) -> Result<(), TenantError> {
        let mut from_api = self.from_api.lock().await;
        let current = self.registry.current();
        if current.get(id).is_none() {
            return Err(TenantError::NotFound(id.to_owned()));
        }
        self.write(TenantRecord {
            id: Arc::from(id),
            config: None,
        })
        .await?;
        self.registry.replace(current.without(id));
        info!(tenant = %id, "tenant deleted through the admin API");
        from_api.remove(id);
        Ok(())
    }

    /// Writes `record` when there is a store.
    async fn write(&self, record: TenantRecord) -> Result<(), TenantError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.put(record).await.map_err(|e| {
            TenantError::Gateway(match e {
                TenantStoreError::Store(e) => GatewayError::StoreFailed(e.to_string()),
                TenantStoreError::Gone => GatewayError::Unavailable,
            })
        })
    }
}

fn view(config: &TenantConfig, from_api: &HashSet<String>) -> TenantView {
    TenantView {
        config: config.clone(),
        source: if from_api.contains(&config.id) {
            TenantSource::Api
        } else {
            TenantSource::Config
        },
        connections: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FsyncPolicy, Persistence, StorageConfig};
    use crate::storage::Writer;
    use std::time::Duration;
    use tidegate_store::{MemoryStore, Store, StoreError};

    fn tenant(id: &str, anonymous: bool) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            allow_anonymous: anonymous,
            ..TenantConfig::default()
        }
    }

    fn record(id: &str, config: Option<&TenantConfig>) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            config: config.map(|c| Bytes::from(serde_json::to_vec(c).unwrap())),
        }
    }

    fn writer(store: &MemoryStore) -> Writer {
        Writer::spawn(
            store.reopen(),
            StorageConfig {
                persistence: Persistence::Disk,
                fsync: FsyncPolicy::Always,
                fsync_interval: Duration::from_millis(5),
            },
        )
    }

    fn ids(admin: &TenantAdmin) -> Vec<String> {
        let mut ids: Vec<String> = admin
            .registry()
            .current()
            .iter()
            .map(|t| t.id().to_owned())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_store_wins_over_the_file_and_deletion_marks_hold() {
        let file = [tenant("a", false), tenant("b", false), tenant("c", false)];
        let stored = vec![
            record("a", Some(&tenant("a", true))),
            record("b", None),
            record("d", Some(&tenant("d", false))),
            // Damaged records are left out, the others still load.
            TenantRecord {
                id: "e".into(),
                config: Some(Bytes::from_static(b"{not json")),
            },
            record("f", Some(&tenant("other", false))),
        ];
        let admin = TenantAdmin::start(&file, stored, None).unwrap();
        assert_eq!(ids(&admin), ["a", "c", "d"]);
        let current = admin.registry().current();
        assert!(current.get("a").unwrap().config().allow_anonymous);
    }

    #[test]
    fn without_tenants_anywhere_the_default_tenant_runs() {
        let admin = TenantAdmin::start(&[], Vec::new(), None).unwrap();
        assert_eq!(ids(&admin), ["default"]);
        let stored = vec![
            record("default", None),
            record("x", Some(&tenant("x", true))),
        ];
        let admin = TenantAdmin::start(&[], stored, None).unwrap();
        assert_eq!(ids(&admin), ["x"]);
    }

    #[tokio::test]
    async fn changes_are_checked_stored_then_swapped() {
        let store = MemoryStore::new();
        let writer = writer(&store);
        let admin =
            TenantAdmin::start(&[tenant("a", false)], Vec::new(), writer.tenants()).unwrap();
        assert_eq!(admin.list().await[0].source, TenantSource::Config);

        admin.put(tenant("b", true), false).await.unwrap();
        assert_eq!(
            admin.put(tenant("b", true), false).await,
            Err(TenantError::Exists("b".into()))
        );
        assert_eq!(
            admin.put(tenant("zz", true), true).await,
            Err(TenantError::NotFound("zz".into()))
        );
        admin.put(tenant("a", true), true).await.unwrap();
        assert_eq!(admin.get("a").await.unwrap().source, TenantSource::Api);
        assert!(admin.get("a").await.unwrap().config.allow_anonymous);

        let mut clash = tenant("c", false);
        clash.sni_hosts = vec!["x.example".into()];
        admin.put(clash.clone(), false).await.unwrap();
        clash.id = "d".into();
        assert!(matches!(
            admin.put(clash, false).await,
            Err(TenantError::Invalid(_))
        ));
        assert!(admin.get("d").await.is_none(), "nothing changed");

        admin.delete("a").await.unwrap();
        assert_eq!(
            admin.delete("a").await,
            Err(TenantError::NotFound("a".into()))
        );
        assert_eq!(ids(&admin), ["b", "c"]);

        // What a restart would load.
        drop(admin);
        writer.close().await;
        let stored = store.reopen().load_tenants().unwrap();
        let again = TenantAdmin::start(&[tenant("a", false)], stored, None).unwrap();
        assert_eq!(ids(&again), ["b", "c"]);
        assert_eq!(again.list().await[0].source, TenantSource::Api);
    }

    /// A store whose tenant writes fail.
    struct Failing;

    impl Store for Failing {
        fn load(&mut self) -> Result<tidegate_store::Snapshot, StoreError> {
            Ok(tidegate_store::Snapshot::default())
        }
        fn apply(
            &mut self,
            _ops: &[tidegate_store::StoreOp],
            _durability: tidegate_store::Durability,
        ) -> Result<Vec<tidegate_store::QueueChunk>, StoreError> {
            Ok(Vec::new())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn check(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn location(&self) -> String {
            "failing".to_owned()
        }
        fn load_tenants(&mut self) -> Result<Vec<TenantRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn put_tenant(&mut self, _record: &TenantRecord) -> Result<(), StoreError> {
            Err(StoreError::Backend {
                location: "failing".into(),
                detail: "no space".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_failing_store_changes_nothing() {
        let writer = Writer::spawn(
            Failing,
            StorageConfig {
                persistence: Persistence::Disk,
                fsync: FsyncPolicy::Always,
                fsync_interval: Duration::from_millis(5),
            },
        );
        let admin = TenantAdmin::start(&[], Vec::new(), writer.tenants()).unwrap();
        let err = admin.put(tenant("b", true), false).await.unwrap_err();
        assert!(
            matches!(&err, TenantError::Gateway(GatewayError::StoreFailed(m)) if m.contains("no space")),
            "{err:?}"
        );
        assert_eq!(admin.delete("default").await, Err(err));
        assert_eq!(ids(&admin), ["default"]);
        drop(admin);
        writer.close().await;
    }
}
