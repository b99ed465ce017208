//! # tidegate-bench
//!
//! A load generator for MQTT brokers (Tidegate, Mosquitto, rumqttd, ...): throughput, loss,
//! publish-to-deliver latency, memory per connection and CPU per message, measured the same way
//! against every broker so the numbers can be put side by side.
//!
//! Place in the data flow: it sits *outside* the broker, as its peers do.
//! `scenario -> client (hand-rolled MQTT over tidegate-protocol's codec) -> transport -> socket
//! -> broker -> socket -> client -> stream accounting + latency histogram -> report`.
//! Broker resource use is sampled from `/proc/<pid>` on the side ([`procfs`]). The `http`
//! scenario adds the gateway's HTTP face: `scenario::http -> http_client (hyper HTTP/1.1,
//! SSE parser) -> socket -> gateway`, with MQTT clients on the other end as above.
//!
//! The generator has to be much cheaper than the broker it measures, so the hot paths follow a
//! few rules: one connection per task, writes batched per wake-up (many PUBLISH encoded into one
//! buffer, one syscall), reads into a reused buffer, acknowledgements answered inline, payloads
//! built in a reused buffer (no allocation per message), and a single-threaded runtime unless
//! `--threads` asks for more.
//!
//! Latency is measured from each message's *intended* send time when a rate is given (open
//! loop), so a generator or broker that falls behind shows it in the percentiles instead of
//! hiding it (coordinated omission).

pub mod cli;
pub mod client;
pub mod clock;
pub mod http_client;
pub mod latency;
pub mod pacing;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod resources;
pub mod scenario;
pub mod source_addrs;
pub mod streams;
pub mod target;
pub mod tls;
pub mod transport;
pub mod ws;
