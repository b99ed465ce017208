//! Benchmarks of the topic tree on the publish path: routing one message among many
//! subscriptions (`Router::route`) and replaying retained messages to a new subscription
//! (`RetainedStore::matching`). Run with `cargo bench -p tidegate-core --bench router`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use tidegate_core::Message;
use tidegate_core::retained::RetainedStore;
use tidegate_core::router::{Router, SessionKey, SubscriptionEntry};
use tidegate_protocol::{QoS, SubscriptionOptions, Utf8};

fn entry() -> SubscriptionEntry {
    SubscriptionEntry {
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
        identifier: None,
    }
}

/// One subscription per device, the shape of a fleet where each device listens to its own
/// command topics: `devices/{i}/cmd/+`.
fn fleet_router(devices: u64) -> Router {
    let mut router = Router::new();
    for i in 0..devices {
        router
            .subscribe(SessionKey(i), &format!("devices/{i}/cmd/+"), entry())
            .expect("valid filter");
    }
    router
}

fn route_benches(c: &mut Criterion) {
    let mut out = Vec::new();

    let mut fleet = fleet_router(100_000);
    c.bench_function("route/1_of_100k_distinct_filters", |b| {
        b.iter(|| {
            out.clear();
            fleet.route(
                black_box("devices/42424/cmd/reboot"),
                None,
                |_| true,
                &mut out,
            );
            assert_eq!(out.len(), 1);
        })
    });

    let mut fan_out = Router::new();
    for i in 0..10_000 {
        fan_out
            .subscribe(SessionKey(i), "news/all", entry())
            .expect("valid filter");
    }
    c.bench_function("route/10k_subscribers_of_one_filter", |b| {
        b.iter(|| {
            out.clear();
            fan_out.route(black_box("news/all"), None, |_| true, &mut out);
            assert_eq!(out.len(), 10_000);
        })
    });

    // The same 10k receivers reached through two filters, so deliveries must be merged.
    for i in 0..10_000 {
        fan_out
            .subscribe(SessionKey(i), "news/+", entry())
            .expect("valid filter");
    }
    c.bench_function("route/10k_subscribers_of_two_overlapping_filters", |b| {
        b.iter(|| {
            out.clear();
            fan_out.route(black_box("news/all"), None, |_| true, &mut out);
            assert_eq!(out.len(), 10_000);
        })
    });

    let mut shared = fleet_router(100_000);
    for i in 0..1_000 {
        shared
            .subscribe(SessionKey(i), "$share/workers/jobs/+", entry())
            .expect("valid filter");
    }
    c.bench_function("route/shared_group_of_1k_among_100k", |b| {
        b.iter(|| {
            out.clear();
            shared.route(black_box("jobs/resize"), None, |s| s.0 % 3 == 0, &mut out);
            assert_eq!(out.len(), 1);
        })
    });

    c.bench_function("subscribe_unsubscribe/among_100k", |b| {
        b.iter(|| {
            let s = SessionKey(u64::MAX);
            fleet
                .subscribe(s, black_box("devices/new/cmd/+"), entry())
                .expect("valid filter");
            assert!(fleet.unsubscribe(s, "devices/new/cmd/+"));
        })
    });
}

fn retained_benches(c: &mut Criterion) {
    let mut store = RetainedStore::new(1_000_000);
    for i in 0..100_000 {
        let topic = Utf8::try_from(format!("devices/{i}/status")).expect("valid topic");
        store
            .set(Arc::new(Message {
                topic,
                payload: Bytes::from_static(b"online"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                publisher: None,
                received: None,
            }))
            .expect("below the maximum");
    }
    let now = Instant::now();
    let mut out = Vec::new();
    c.bench_function("retained/exact_filter_among_100k", |b| {
        b.iter(|| {
            out.clear();
            store.matching(black_box("devices/42424/status"), now, &mut out);
            assert_eq!(out.len(), 1);
        })
    });
    c.bench_function("retained/one_device_wildcard_among_100k", |b| {
        b.iter(|| {
            out.clear();
            store.matching(black_box("devices/42424/#"), now, &mut out);
            assert_eq!(out.len(), 1);
        })
    });
    c.bench_function("retained/all_100k_by_plus", |b| {
        b.iter(|| {
            out.clear();
            store.matching(black_box("devices/+/status"), now, &mut out);
            assert_eq!(out.len(), 100_000);
        })
    });
}

criterion_group!(benches, route_benches, retained_benches);
criterion_main!(benches);
