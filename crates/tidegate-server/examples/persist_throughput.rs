//! QoS 1 throughput to persistent subscribers: `pairs` publishers (clean sessions) each publish
//! QoS 1 messages as fast as the inflight window allows to their own subscriber, which has a
//! persistent session (3.1.1, Clean Session 0) and acknowledges each message. Prints the
//! messages per second received over the measured time.
//!
//! The load generator `tidegate-bench pairs` runs clean sessions only (nothing for Tidegate to
//! persist), hence this small client; it runs against any MQTT broker (Mosquitto included).
//!
//! ```sh
//! cargo run --release -p tidegate-server --example persist_throughput -- PORT [PAIRS] [SECS]
//! ```

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(Ok(1883), |a| a.parse())?;
    let pairs: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let secs: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let run = format!("{}", std::process::id());
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..pairs {
        let topic = format!("tp/{run}/{i}");
        // The persistent subscriber.
        let mut opts = MqttOptions::new(format!("tp-sub-{run}-{i}"), "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(60));
        let (sub, mut sub_loop) = AsyncClient::new(opts, 1024);
        sub.subscribe(&topic, QoS::AtLeastOnce).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
                break;
            }
        }
        let counter = received.clone();
        let halt = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
        // Its publisher.
        let mut opts = MqttOptions::new(format!("tp-pub-{run}-{i}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_inflight(64);
        let (publ, mut pub_loop) = AsyncClient::new(opts, 1024);
        let halt = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                if pub_loop.poll().await.is_err() {
                    return;
                }
            }
        }));
        let halt = stop.clone();
        tasks.push(tokio::spawn(async move {
            let payload = vec![b'p'; 64];
            while !halt.load(Ordering::Relaxed) {
                if publ
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = received.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let got = received.load(Ordering::Relaxed) - start;
    stop.store(true, Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
    let rate = got as f64 / secs as f64;
    println!(
        "{pairs} pairs, QoS 1, persistent subscribers: {got} messages in {secs} s = {rate:.0} msg/s"
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
