//! The outbound queue of one connection: packets the engine routed to it that its task has not
//! encoded yet, plus the engine's order to close.
//!
//! Place in the data flow: `engine task --push--> Outbox --take--> connection task --> socket`.
//!
//! Why not a tokio mpsc channel: a bounded (or unbounded) tokio channel allocates its first
//! block of 32 slots when it is created, i.e. 32 × `size_of::<Packet>()` bytes for every
//! connection, idle or not, several KiB against an idle-connection budget of about one. This
//! queue is a `VecDeque` behind a mutex plus a [`Notify`]: it holds no allocation while empty,
//! and the connection task takes the whole queue at each wake-up (one lock, one write per
//! wake-up), leaving an empty deque behind.
//!
//! Policy when the queue is full (`limits.max_outbound_queue`), decided by [`Outbox::push`]: a
//! QoS 0 PUBLISH is dropped, because QoS 0 promises at most once; any other packet cannot be
//! dropped without breaking the protocol, so the connection is a slow consumer and the engine
//! closes it. Either way the engine never waits for a client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tidegate_protocol::{Packet, QoS};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// How the engine wants the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// Write everything queued before the order, then close (the broker's `Output::Close`).
    Flush,
    /// Close now and drop what is queued (slow consumer).
    Abort,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued; the connection task has been woken if it needed to be.
    Queued,
    /// The queue was full and the packet is a QoS 0 PUBLISH: dropped.
    DroppedQos0,
    /// The queue was full and the packet may not be dropped: the connection must be closed.
    Full,
    /// The connection is closing or gone: the packet was discarded.
    Closed,
}

/// What the connection task takes at a wake-up.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Packets to encode, in order.
    pub(crate) packets: VecDeque<Packet>,
    /// Set once the engine ordered the close; after a `Flush` the packets are the last ones.
    pub(crate) close: Option<CloseMode>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Packet>,
    close: Option<CloseMode>,
    /// The connection task ended: nobody will take what is pushed.
    detached: bool,
}

/// What one connection carried, in MQTT bytes (the encoded packets, without TLS or WebSocket
/// framing) and PUBLISH packets; written by its task, read by the admin API.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Bytes of packets decoded from the client.
    pub(crate) bytes_in: AtomicU64,
    /// Bytes of packets encoded for the client.
    pub(crate) bytes_out: AtomicU64,
    /// PUBLISH packets from the client.
    pub(crate) messages_in: AtomicU64,
    /// PUBLISH packets to the client.
    pub(crate) messages_out: AtomicU64,
}

impl Traffic {
    /// Adds one read batch: `bytes` decoded into `messages` PUBLISH packets.
    pub(crate) fn add_in(&self, bytes: u64, messages: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.messages_in.fetch_add(messages, Ordering::Relaxed);
    }

    /// Adds one write batch.
    pub(crate) fn add_out(&self, bytes: u64, messages: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.messages_out.fetch_add(messages, Ordering::Relaxed);
    }

    /// (bytes in, bytes out, messages in, messages out).
    pub(crate) fn read(&self) -> (u64, u64, u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.messages_in.load(Ordering::Relaxed),
            self.messages_out.load(Ordering::Relaxed),
        )
    }
}

/// The queue shared by the engine (producer) and one connection task (consumer).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// What the connection carried so far.
    pub(crate) traffic: Traffic,
}

impl Outbox {
    /// An empty outbox; allocates nothing beyond itself.
    pub(crate) fn new() -> Outbox {
        Outbox::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated (every critical
        // section is a single push, take or flag store), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `packet` unless `capacity` packets are waiting already (see the module docs).
    pub(crate) fn push(&self, packet: Packet, capacity: usize) -> Push {
        let mut state = self.lock();
        if state.detached || state.close.is_some() {
            return Push::Closed;
        }
        if state.queue.len() >= capacity {
            return if is_qos0_publish(&packet) {
                Push::DroppedQos0
            } else {
                Push::Full
            };
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(packet);
        drop(state);
        // The task takes the whole queue at each wake-up, so a non-empty queue means a wake-up
        // is already pending: one notification per batch is enough.
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Orders the connection closed. An `Abort` also discards what is queued; a later `Flush`
    /// does not soften an `Abort`.
    pub(crate) fn close(&self, mode: CloseMode) {
        let mut state = self.lock();
        if state.close != Some(CloseMode::Abort) {
            state.close = Some(mode);
        }
        if mode == CloseMode::Abort {
            state.queue = VecDeque::new();
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Takes everything queued and the close order, leaving an empty, unallocated queue.
    pub(crate) fn take(&self) -> Batch {
        let mut state = self.lock();
        Batch {
            packets: std::mem::take(&mut state.queue),
            close: state.close,
        }
    }

    /// Takes at most `max` packets (the oldest); the close order comes only with the last of
    /// the queue. When packets remain, the outbox stays notified, so the task comes back for
    /// them after it let others run (see `crate::connection`: bounded work per wake-up).
    pub(crate) fn take_up_to(&self, max: usize) -> Batch {
        let mut state = self.lock();
        if state.queue.len() <= max {
            return Batch {
                packets: std::mem::take(&mut state.queue),
                close: state.close,
            };
        }
        let rest = state.queue.split_off(max);
        let packets = std::mem::replace(&mut state.queue, rest);
        drop(state);
        self.notify.notify_one();
        Batch {
            packets,
            close: None,
        }
    }

    /// Called by the connection task when it ends: later pushes are discarded, not kept.
    pub(crate) fn detach(&self) {
        let mut state = self.lock();
        state.detached = true;
        state.queue = VecDeque::new();
    }

    /// Completes once something was pushed or a close ordered since the last wake-up.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

fn is_qos0_publish(packet: &Packet) -> bool {
    matches!(packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;
    use tidegate_protocol::{PacketId, PubResponse, Publish, PublishProperties, Utf8};

    pub(crate) fn publish(qos: QoS) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: Utf8::from_static("a/b"),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(1).unwrap()),
            payload: Bytes::from_static(b"x"),
            properties: PublishProperties::default(),
        })
    }

    fn puback() -> Packet {
        Packet::PubAck(PubResponse::success(PacketId::new(7).unwrap()))
    }

    #[test]
    fn full_queue_drops_qos0_publish_and_refuses_the_rest() {
        let outbox = Outbox::new();
        assert_eq!(outbox.push(publish(QoS::AtLeastOnce), 2), Push::Queued);
        assert_eq!(outbox.push(Packet::PingResp, 2), Push::Queued);
        assert_eq!(outbox.push(publish(QoS::AtMostOnce), 2), Push::DroppedQos0);
        assert_eq!(outbox.push(publish(QoS::AtLeastOnce), 2), Push::Full);
        assert_eq!(outbox.push(publish(QoS::ExactlyOnce), 2), Push::Full);
        assert_eq!(outbox.push(puback(), 2), Push::Full);
        let batch = outbox.take();
        assert_eq!(batch.packets.len(), 2, "nothing over capacity was kept");
        assert_eq!(batch.close, None);
        assert_eq!(outbox.push(publish(QoS::AtMostOnce), 2), Push::Queued);
    }

    #[test]
    fn an_outbox_is_small() {
        // Paid by every connection, idle or not (plus the Arc's two counters).
        let size = std::mem::size_of::<Outbox>();
        assert!(size <= 128, "Outbox is {size} bytes");
    }

    #[test]
    fn take_leaves_an_unallocated_queue() {
        let outbox = Outbox::new();
        for _ in 0..10 {
            outbox.push(Packet::PingResp, 100);
        }
        assert_eq!(outbox.take().packets.len(), 10);
        assert_eq!(outbox.lock().queue.capacity(), 0);
        assert!(outbox.take().packets.is_empty());
    }

    #[test]
    fn flush_close_keeps_queued_packets_and_refuses_new_ones() {
        let outbox = Outbox::new();
        outbox.push(Packet::PingResp, 8);
        outbox.close(CloseMode::Flush);
        assert_eq!(outbox.push(Packet::PingResp, 8), Push::Closed);
        let batch = outbox.take();
        assert_eq!(batch.packets.len(), 1);
        assert_eq!(batch.close, Some(CloseMode::Flush));
    }

    #[test]
    fn abort_discards_and_wins_over_flush() {
        let outbox = Outbox::new();
        outbox.push(Packet::PingResp, 8);
        outbox.close(CloseMode::Abort);
        outbox.close(CloseMode::Flush);
        let batch = outbox.take();
        assert!(batch.packets.is_empty());
        assert_eq!(batch.close, Some(CloseMode::Abort));
    }

    #[test]
    fn bounded_takes_keep_the_rest_and_the_close_order_for_later() {
        let outbox = Outbox::new();
        for _ in 0..5 {
            outbox.push(Packet::PingResp, 8);
        }
        outbox.close(CloseMode::Flush);
        let first = outbox.take_up_to(3);
        assert_eq!(first.packets.len(), 3);
        assert_eq!(first.close, None, "the close order follows the last packet");
        let second = outbox.take_up_to(3);
        assert_eq!(second.packets.len(), 2);
        assert_eq!(second.close, Some(CloseMode::Flush));
    }

    #[tokio::test]
    async fn a_bounded_take_leaves_the_outbox_notified_for_the_rest() {
        let outbox = Outbox::new();
        for _ in 0..4 {
            outbox.push(Packet::PingResp, 8);
        }
        outbox.notified().await;
        assert_eq!(outbox.take_up_to(2).packets.len(), 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.notified())
            .await
            .expect("woken again for the rest");
        assert_eq!(outbox.take_up_to(2).packets.len(), 2);
    }

    #[test]
    fn detached_outbox_discards() {
        let outbox = Outbox::new();
        outbox.push(Packet::PingResp, 8);
        outbox.detach();
        assert_eq!(outbox.push(Packet::PingResp, 8), Push::Closed);
        assert!(outbox.take().packets.is_empty());
    }

    #[tokio::test]
    async fn push_and_close_wake_the_consumer() {
        let outbox = Outbox::new();
        outbox.push(Packet::PingResp, 8);
        // A second push onto a non-empty queue must not leave an extra wake-up behind, but the
        // first one is stored until the consumer waits.
        outbox.push(Packet::PingResp, 8);
        tokio::time::timeout(Duration::from_secs(1), outbox.notified())
            .await
            .unwrap();
        assert_eq!(outbox.take().packets.len(), 2);
        let quiet = tokio::time::timeout(Duration::from_millis(20), outbox.notified()).await;
        assert!(quiet.is_err(), "no wake-up without news");
        outbox.close(CloseMode::Flush);
        tokio::time::timeout(Duration::from_secs(1), outbox.notified())
            .await
            .unwrap();
    }
}
