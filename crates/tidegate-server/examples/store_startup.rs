//! Start-up time on a large store: writes `N` persistent sessions (default 100,000; each with
//! two subscriptions and two queued QoS 1 messages, one retained message per ten sessions)
//! into a fresh disk store, closes it, then times what `tidegate serve` does at start-up:
//! open the store, load it, restore the broker.
//!
//! ```sh
//! cargo run --release -p tidegate-server --example store_startup -- 100000 [DIR]
//! ```
//! Not a test: it prints the figures for docs/benchmarks.md ("Storage").

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_core::BrokerConfig;
use tidegate_protocol::{PublishProperties, QoS, SubscriptionOptions, Utf8};
use tidegate_server::storage::open_and_restore;
use tidegate_store::{
    DiskStore, Durability, MessageRecord, Presence, QueuedRecord, SessionRecord, Store, StoreOp,
    SubscriptionRecord, UnixMillis,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| tmp.path().join("store"), std::path::PathBuf::from);
    let expires = UnixMillis::from_system(std::time::SystemTime::now())
        .saturating_add(Duration::from_secs(3600));
    let message = |i: usize| {
        Arc::new(MessageRecord {
            topic: Utf8::try_from(format!("devices/{i}/cmd")).unwrap_or_default(),
            payload: Bytes::from(vec![b'x'; 100]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: None,
        })
    };
    let started = Instant::now();
    {
        let mut store = DiskStore::open(&dir)?;
        let mut ops = Vec::new();
        for i in 0..n {
            let client_id: Arc<str> = Arc::from(format!("phone-{i:08}").as_str());
            ops.push(StoreOp::PutSession(SessionRecord {
                client_id: client_id.clone(),
                expiry_interval: 7200,
                presence: Presence::Offline {
                    expires_at: Some(expires),
                    will: None,
                },
            }));
            for filter in [format!("devices/{i}/cmd"), "broadcast/#".to_owned()] {
                ops.push(StoreOp::PutSubscription {
                    client_id: client_id.clone(),
                    subscription: SubscriptionRecord {
                        filter: Arc::from(filter.as_str()),
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..SubscriptionOptions::default()
                        },
                        identifier: None,
                    },
                });
            }
            for seq in 0..2 {
                ops.push(StoreOp::PutQueued {
                    client_id: client_id.clone(),
                    seq,
                    record: QueuedRecord {
                        message: message(i),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        subscription_identifiers: Vec::new(),
                    },
                });
            }
            if i % 10 == 0 {
                let mut m = (*message(i)).clone();
                m.retain = true;
                ops.push(StoreOp::PutRetained(Arc::new(m)));
            }
            if ops.len() >= 20_000 {
                store.apply(&ops, Durability::Written)?;
                ops.clear();
            }
        }
        store.apply(&ops, Durability::Synced)?;
        store.sync()?;
    }
    let filled = started.elapsed();
    let started = Instant::now();
    let (_store, broker) = open_and_restore(&dir, BrokerConfig::default())?;
    let took = started.elapsed();
    let st = broker.stats();
    println!(
        "{n} sessions written in {filled:.2?}; start-up (open + load + restore): {took:.2?}; \
         restored {} sessions, {} subscriptions, {} queued ({} in memory), {} retained",
        st.sessions, st.subscriptions, st.queued_messages, st.queued_in_memory, st.retained
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss = status.lines().find(|l| l.starts_with("VmRSS"));
        println!("{}", rss.unwrap_or("VmRSS unknown"));
    }
    Ok(())
}
