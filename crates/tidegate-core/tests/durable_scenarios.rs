//! Every scenario of this directory once more, with persistence on: the harness builds each
//! broker with `Broker::restore` over a memory store and commits every batch at once (see
//! `harness/mod.rs`). What a client sees must not change when the broker persists.

// Each scenario file declares the harness module itself (it is its own test crate too), so
// this crate loads `harness/mod.rs` once per file.
#![allow(clippy::duplicate_mod)]

#[path = "connect.rs"]
mod connect;
#[path = "keepalive.rs"]
mod keepalive;
#[path = "limits.rs"]
mod limits;
#[path = "pubsub.rs"]
mod pubsub;
#[path = "qos.rs"]
mod qos;
#[path = "retained.rs"]
mod retained;
#[path = "sessions.rs"]
mod sessions;
#[path = "shared.rs"]
mod shared;
#[path = "sys_topics.rs"]
mod sys_topics;
#[path = "tenancy.rs"]
mod tenancy;
#[path = "v5_features.rs"]
mod v5_features;
#[path = "wills.rs"]
mod wills;

#[path = "harness/mod.rs"]
mod harness;

/// Guards the premise of this binary: a scenario's broker really persists here.
#[test]
fn scenarios_here_run_with_persistence() {
    let sim = harness::Sim::new();
    let _client = sim.connect_v5("persisted", harness::persistent);
    let mut store = sim.store();
    let snapshot = tidegate_core::store::Store::load(&mut store).expect("load");
    let ids: Vec<&str> = snapshot
        .sessions
        .iter()
        .map(|s| &*s.record.client_id)
        .collect();
    assert_eq!(ids, ["persisted"]);
}
