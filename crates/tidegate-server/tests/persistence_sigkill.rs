//! SIGKILL at random points under traffic, again and again on the same store: publishers
//! (3.1.1 and 5.0) keep QoS 1 and QoS 2 flows open, one persistent subscriber is online
//! (so kills land in the middle of outbound QoS 2 handshakes too) and one is offline every
//! other round. After the last restart every flow completes and the subscribers drain; then
//! every acknowledged message must have arrived (QoS 1 at least once, QoS 2 exactly once, in
//! order per publisher), and no QoS 2 message may arrive twice.
//!
//! The number of kills is `TIDEGATE_KILL_LOOPS` (default 3, what CI runs); run
//! `TIDEGATE_KILL_LOOPS=25 cargo test -p tidegate-server --test persistence_sigkill --
//! --nocapture` for a long run. Kill points come from `TIDEGATE_KILL_SEED` (printed).

mod common;
mod persistence_support;

use common::raw::Version;
use persistence_support::{Gateway, Publisher, Rng, Subscriber};
use std::process::Command;
use std::time::Duration;

fn kills() -> usize {
    std::env::var("TIDEGATE_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_across_repeated_sigkills() {
    let kills = kills();
    let mut rng = Rng::from_env();
    let mut gw = Gateway::start("");
    let mut publishers = [
        Publisher::new("pub-5", Version::V5),
        Publisher::new("pub-311", Version::V311),
    ];
    let mut online = Subscriber::new("online-5", Version::V5);
    let mut offline = Subscriber::new("offline-311", Version::V311);
    for s in [&mut online, &mut offline] {
        s.connect(gw.broker(), true).await.drop_connection();
    }
    let mut first_publish = true;
    for round in 0..kills {
        let broker = gw.broker();
        let [p5, p3] = &mut publishers;
        let mut raw5 = p5.connect(broker, first_publish).await;
        let mut raw3 = p3.connect(broker, first_publish).await;
        first_publish = false;
        let mut raw_on = online.connect(broker, false).await;
        let with_offline = round % 2 == 1;
        let mut raw_off = if with_offline {
            Some(offline.connect(broker, false).await)
        } else {
            None
        };
        let pid = broker.pid();
        let after = Duration::from_millis(rng.range(20, 400));
        let killer = async {
            tokio::time::sleep(after).await;
            let status = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success());
        };
        let quiet = Duration::from_secs(10);
        let off = &mut offline;
        let off_run = async {
            if let Some(raw) = raw_off.as_mut() {
                off.run(raw, quiet).await;
            }
        };
        tokio::join!(
            killer,
            p5.run(&mut raw5, u64::MAX / 2, 8),
            p3.run(&mut raw3, u64::MAX / 2, 8),
            online.run(&mut raw_on, quiet),
            off_run,
        );
        eprintln!(
            "kill {}/{kills} after {after:?}: open flows {} + {}",
            round + 1,
            publishers[0].in_flight(),
            publishers[1].in_flight()
        );
        gw.restart();
    }
    // Let every flow finish, then drain both subscribers.
    for p in &mut publishers {
        let mut raw = p.connect(gw.broker(), false).await;
        p.run(&mut raw, 0, 8).await;
        assert_eq!(
            p.in_flight(),
            0,
            "{}: flows completed after the last restart",
            p.id
        );
    }
    for s in [&mut online, &mut offline] {
        let mut raw = s.connect(gw.broker(), false).await;
        s.run(&mut raw, Duration::from_secs(1)).await;
    }
    let acked: usize = publishers
        .iter()
        .flat_map(|p| p.acked.values())
        .map(|set| set.len())
        .sum();
    eprintln!(
        "{kills} kills; {acked} messages acknowledged; delivered {} (online) and {} (offline)",
        online.delivered.len(),
        offline.delivered.len()
    );
    assert!(acked > 0, "traffic flowed");
    for p in &publishers {
        online.check(p);
        offline.check(p);
    }
}
