//! [`Reader`]: one SSE stream's or long-poll's view of the [`Hub`](super::hub::Hub) — its
//! replay, then its filters' live channels merged in sequence order.
//!
//! Place in the data flow: `Hub::open -> Reader (replay queue, live channels) -> Item -> SSE /
//! poll handler`; on drop, `Reader -> HubCore::release`.
//!
//! A reader of several filters merges their channels: before yielding a message it brings
//! every channel up to date and takes the lowest sequence number (the pump sends a message to
//! all its channels before the next, so nothing earlier can still come), and it drops a message
//! it already has (a message of two of its filters comes on both). A reader that falls behind a
//! channel's buffer repairs itself from the histories like a reconnecting client (replay, or a
//! reset when the history is gone too): never silent loss.

use super::core::Replay;
use super::history::{Delivery, Reset};
use super::hub::{Shared, now};
use super::position::{Epoch, Position};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// What a reader yields.
#[derive(Debug)]
pub(crate) enum Item {
    /// A message of one of its filters, at `position`.
    Message {
        /// The reader's position once it has this message.
        position: Position,
        /// The message.
        delivery: Arc<Delivery>,
    },
    /// Messages of these filters may have been lost (sent before what the history still holds).
    Reset {
        /// Which filters, and why.
        resets: Vec<Reset>,
        /// The reader's position once told, when no replayed message follows (so a client that
        /// stores it does not hear the same reset twice).
        position: Option<Position>,
    },
    /// The tap closed: no more messages will come.
    Closed,
}

/// What waits in a reader's queue: its replay.
#[derive(Debug)]
enum Queued {
    Reset(Vec<Reset>),
    Message(Arc<Delivery>),
}

/// A reader's end of one filter's live channel.
pub(super) struct Channel {
    rx: broadcast::Receiver<Arc<Delivery>>,
    /// Received, not yet yielded: it waits until no other channel can hold an earlier message.
    peeked: Option<Arc<Delivery>>,
    /// The reader fell behind this channel's buffer.
    lagged: bool,
    /// The channel closed (the tap ended).
    done: bool,
}

impl Channel {
    /// A channel end that has nothing yet.
    pub(super) fn new(rx: broadcast::Receiver<Arc<Delivery>>) -> Channel {
        Channel {
            rx,
            peeked: None,
            lagged: false,
            done: false,
        }
    }

    /// Whether [`Channel::wait`] has anything to wait for.
    fn idle(&self) -> bool {
        self.peeked.is_none() && !self.lagged && !self.done
    }

    /// Waits for the channel's next event. Cancel safe (a broadcast `recv` is).
    async fn wait(&mut self) {
        match self.rx.recv().await {
            Ok(delivery) => self.peeked = Some(delivery),
            Err(RecvError::Lagged(_)) => self.lagged = true,
            Err(RecvError::Closed) => self.done = true,
        }
    }

    /// Takes the channel's next event if there is one now.
    fn poll_now(&mut self) {
        match self.rx.try_recv() {
            Ok(delivery) => self.peeked = Some(delivery),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Lagged(_)) => self.lagged = true,
            Err(TryRecvError::Closed) => self.done = true,
        }
    }
}

/// What a reader's live channels had.
enum Arrival {
    /// The earliest message they hold.
    Delivery(Arc<Delivery>),
    /// One of them overflowed: messages were dropped for this reader.
    Lagged,
    /// Every one closed.
    Closed,
}

/// Waits until one of `channels` has an event (left in its slot for [`Reader::arrival`]).
async fn wait_any(channels: &mut [Channel]) {
    let waits: Vec<_> = channels
        .iter_mut()
        .filter(|c| c.idle())
        .map(|c| Box::pin(c.wait()))
        .collect();
    // None idle: every channel already has an event, which the caller takes next.
    if !waits.is_empty() {
        futures_util::future::select_all(waits).await;
    }
}

/// One SSE stream's or long-poll's view of the hub: its filters, its position, its replay and
/// its live channels. Dropping it releases its filters and its `max_streams` slot.
pub(crate) struct Reader {
    shared: Arc<Shared>,
    session: u64,
    epoch: Epoch,
    /// Hub ids of its filters, as acquired (released as such).
    ids: Vec<u32>,
    /// One per distinct filter id.
    channels: Vec<Channel>,
    /// Every message up to this sequence number has been yielded (or reported lost).
    last: u64,
    queue: VecDeque<Queued>,
    /// Where the queued replay brings the reader.
    queue_upto: u64,
    closed: bool,
    _permit: OwnedSemaphorePermit,
}

impl Reader {
    /// A reader of `ids` (as acquired) in tap session `session`, starting with `replay`.
    pub(super) fn new(
        shared: Arc<Shared>,
        session: u64,
        epoch: Epoch,
        ids: Vec<u32>,
        channels: Vec<Channel>,
        replay: Replay,
        permit: OwnedSemaphorePermit,
    ) -> Reader {
        let mut reader = Reader {
            shared,
            session,
            epoch,
            ids,
            channels,
            last: replay.upto,
            queue: VecDeque::new(),
            queue_upto: replay.upto,
            closed: false,
            _permit: permit,
        };
        reader.enqueue(replay);
        reader
    }

    /// Where the reader stands.
    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.last,
        }
    }

    /// The next item; `None` once the gateway drains or after [`Item::Closed`].
    pub(crate) async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            if self.closed || self.shared.stop.is_cancelled() {
                return None;
            }
            tokio::select! {
                biased;
                () = self.shared.stop.cancelled() => return None,
                () = wait_any(&mut self.channels) => {}
            }
        }
    }

    /// The next item if one is ready now.
    pub(crate) fn try_next(&mut self) -> Option<Item> {
        loop {
            if self.closed || self.shared.stop.is_cancelled() {
                return None;
            }
            if let Some(item) = self.pop_queued() {
                return Some(item);
            }
            let item = match self.arrival()? {
                Arrival::Delivery(delivery) => self.accept(delivery),
                Arrival::Lagged => self.recover(),
                Arrival::Closed => Some(self.close()),
            };
            if item.is_some() {
                return item;
            }
        }
    }

    /// The earliest live event: every channel is first brought up to date, so a message on one
    /// is not yielded before an earlier one on another.
    fn arrival(&mut self) -> Option<Arrival> {
        for channel in self.channels.iter_mut().filter(|c| c.idle()) {
            channel.poll_now();
        }
        if self.channels.iter().any(|c| c.lagged) {
            return Some(Arrival::Lagged);
        }
        let earliest = self
            .channels
            .iter_mut()
            .filter(|c| c.peeked.is_some())
            .min_by_key(|c| c.peeked.as_ref().map_or(u64::MAX, |d| d.seq));
        if let Some(channel) = earliest {
            return channel.peeked.take().map(Arrival::Delivery);
        }
        self.channels
            .iter()
            .all(|c| c.done)
            .then_some(Arrival::Closed)
    }

    fn close(&mut self) -> Item {
        self.closed = true;
        Item::Closed
    }

    fn enqueue(&mut self, replay: Replay) {
        if !replay.resets.is_empty() {
            self.queue.push_back(Queued::Reset(replay.resets));
        }
        self.queue
            .extend(replay.messages.into_iter().map(Queued::Message));
        self.queue_upto = replay.upto;
        if self.queue.is_empty() {
            self.last = self.last.max(replay.upto);
        }
    }

    fn pop_queued(&mut self) -> Option<Item> {
        let mut item = match self.queue.pop_front()? {
            Queued::Message(delivery) => {
                self.last = delivery.seq;
                Item::Message {
                    position: self.position(),
                    delivery,
                }
            }
            Queued::Reset(resets) => Item::Reset {
                resets,
                position: None,
            },
        };
        if self.queue.is_empty() {
            self.last = self.last.max(self.queue_upto);
            if let Item::Reset { position, .. } = &mut item {
                *position = Some(self.position());
            }
        }
        Some(item)
    }

    /// A live message, unless the reader has it already: the replay covered everything up to
    /// where the channels began, and a message of two of its filters comes on both channels.
    fn accept(&mut self, delivery: Arc<Delivery>) -> Option<Item> {
        if delivery.seq <= self.last {
            return None;
        }
        self.last = delivery.seq;
        Some(Item::Message {
            position: self.position(),
            delivery,
        })
    }

    /// The reader fell behind a live channel: take what it missed from the histories (or a
    /// reset where they no longer have it) and rejoin the channels where that replay ends.
    fn recover(&mut self) -> Option<Item> {
        let from = self.position();
        let ids = distinct(&self.ids);
        let capacity = self.shared.settings.live_buffer;
        let recovered = self.shared.with_live(self.session, |live| {
            let replay = live.core.resume(now(), &ids, Some(from));
            (replay, live.subscribe(&ids, capacity))
        });
        match recovered {
            Some((replay, channels)) => {
                self.channels = channels;
                self.enqueue(replay);
                self.pop_queued()
            }
            None => Some(self.close()),
        }
    }
}

/// `ids` without repeats.
pub(super) fn distinct(ids: &[u32]) -> Vec<u32> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Drop for Reader {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        let commands = self.shared.with_live(self.session, |live| {
            live.core.release(now(), &ids);
            // A filter nobody reads needs no live channel; its history stays in the core.
            for id in &ids {
                if !live.core.is_read(*id) {
                    live.channels.remove(id);
                }
            }
            live.core.has_commands()
        });
        if commands == Some(true) {
            self.shared.wake.notify_one();
        }
    }
}
