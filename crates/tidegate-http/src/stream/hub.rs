//! [`Hub`]: the IO around [`HubCore`] — one tenant's tap into the engine, shared by every SSE
//! stream and long-poll of that tenant, and the task pumping it. Each request holds a
//! [`Reader`] (see `reader.rs`); [`Hubs`](super::hubs::Hubs) keeps one hub per tenant.
//!
//! Place in the data flow: `engine -> Tap.messages -> pump task -> HubCore (seq, histories) ->
//! per-filter broadcast -> Reader -> SSE / poll handler`, and `Reader (acquire/release) ->
//! HubCore outbox -> pump task -> Tap.commands -> engine`.
//!
//! - The tap is opened on the first reader (the engine may not be up when the hub is built);
//!   if that fails the reader gets the error (503), and the next reader tries again. When the
//!   engine closes the tap (shutdown, or the tenant was deleted), every reader gets
//!   [`Item::Closed`]; the next reader opens a new tap under a new epoch, so positions from the
//!   old one reset instead of skipping a gap.
//! - Once the hub tracks no filter at all (every reader gone and their histories aged out) the
//!   pump closes the tap on its next sweep: an idle tenant holds no session in the engine.
//! - Live messages go out on one broadcast channel per filter that has readers, so a message
//!   wakes only the readers of the filters it matched. A reader of several filters merges its
//!   channels by sequence number and drops a message it already has: the pump sends a message
//!   to all its channels before it takes the next, so once a reader sees sequence `n` on one
//!   channel, every earlier message is already visible on the others.
//! - The pump appends to the histories and broadcasts under the lock a reader takes to read the
//!   history and subscribe, so a reader's replay ends exactly where its live messages begin: no
//!   gap, no duplicate.

use super::core::{HubCore, Limits, TooManyFilters};
use super::history::Delivery;
use super::position::{Epoch, Position};
use super::reader::{Channel, Reader, distinct};
use crate::config::HttpConfig;
use crate::error::ApiError;
use crate::gateway::{Gateway, GatewayError, Tap};
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// How often the pump applies the age limit and forgets idle filters. Resumes apply the age
/// limit themselves, so this only bounds how long expired memory lingers.
const SWEEP: Duration = Duration::from_secs(1);

/// Tap messages handled under one lock before the pump looks at its other duties.
const BATCH: usize = 64;

/// Live messages buffered per read filter for readers that are momentarily slow. Small on
/// purpose: the channel exists only while the filter has readers, and a reader further behind
/// catches up from the history, which is the real buffer.
const LIVE_BUFFER: usize = 128;

/// How long opening the tap may take before the reader gets a 503: an engine that does not
/// answer must not hold requests forever.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a reader could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HubError {
    /// `http.max_streams` streams and polls are open.
    #[error("too many open streams and polls (http.max_streams = {0}); retry later")]
    Busy(usize),
    /// The tap could not be opened, or the gateway is draining.
    #[error("the gateway's message stream is not available: {0}")]
    Unavailable(GatewayError),
    /// The caller may not read one of the filters (its tenant's ACL, or its tenant is gone).
    #[error("{0}")]
    Refused(GatewayError),
    /// The hub cannot subscribe another filter.
    #[error(transparent)]
    TooManyFilters(#[from] TooManyFilters),
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        match e {
            HubError::Busy(_) => ApiError::rate_limited(e.to_string(), 1),
            HubError::Unavailable(inner) | HubError::Refused(inner) => inner.into(),
            HubError::TooManyFilters(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            },
        }
    }
}

/// The hub's bounds, from `[http]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HubSettings {
    /// History and idle-filter bounds.
    pub(crate) limits: Limits,
    /// Live buffer per read filter (see [`LIVE_BUFFER`]).
    pub(crate) live_buffer: usize,
    /// Most readers at once (`http.max_streams`).
    pub(crate) max_streams: usize,
}

impl HubSettings {
    /// The settings `config` asks for.
    pub(crate) fn from_config(config: &HttpConfig) -> HubSettings {
        HubSettings {
            limits: Limits {
                history_size: config.history_size.max(1),
                max_age: config.history_max_age(),
                // Idle filters are kept for returning readers; as many as readers may be open
                // is generous, and bounds what a client can make the hub remember.
                max_idle_filters: config.max_streams.max(1024),
            },
            live_buffer: LIVE_BUFFER,
            max_streams: config.max_streams.min(Semaphore::MAX_PERMITS),
        }
    }
}

/// One tenant's stream hub: one tap into the engine shared by every SSE stream and long-poll
/// of the tenant. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
}

/// What the hub, its pump and its readers share.
pub(super) struct Shared {
    gateway: Arc<dyn Gateway>,
    /// The tenant whose topics the tap reads.
    tenant: String,
    pub(super) settings: HubSettings,
    pub(super) stop: CancellationToken,
    /// The open tap session, if any.
    live: Mutex<Option<Live>>,
    /// Held while a tap is being opened, so concurrent first readers open one.
    opening: tokio::sync::Mutex<()>,
    /// Tells the pump the core has commands for the tap.
    pub(super) wake: Notify,
    /// One permit per open reader, shared by the hubs of every tenant (`http.max_streams` is
    /// gateway-wide).
    readers: Arc<Semaphore>,
    /// Numbers tap sessions, so a reader of an old one does not touch a new one.
    sessions: AtomicU64,
}

/// One open tap session.
pub(super) struct Live {
    pub(super) session: u64,
    pub(super) core: HubCore,
    /// The live channel of each filter that has readers, by hub id.
    pub(super) channels: HashMap<u32, broadcast::Sender<Arc<Delivery>>>,
}

impl Live {
    /// Receivers of the live channels of `ids`, created for filters that had no reader.
    pub(super) fn subscribe(&mut self, ids: &[u32], capacity: usize) -> Vec<Channel> {
        ids.iter()
            .map(|id| {
                let sender = self
                    .channels
                    .entry(*id)
                    .or_insert_with(|| broadcast::channel(capacity.max(1)).0);
                Channel::new(sender.subscribe())
            })
            .collect()
    }

    /// Takes in one tap message and sends it to the live channels of the filters it matched.
    fn handle_message(&mut self, now: std::time::Instant, message: crate::gateway::TapMessage) {
        let Some(delivery) = self.core.handle_message(now, message) else {
            return;
        };
        for id in &delivery.ids {
            if let Some(sender) = self.channels.get(id) {
                // No receiver left is fine: the history keeps the message.
                let _ = sender.send(delivery.clone());
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Live>> {
        // The state stays consistent between statements, so a panic elsewhere does not make
        // it unusable.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the live session `session`, if it is still the open one.
    pub(super) fn with_live<T>(&self, session: u64, f: impl FnOnce(&mut Live) -> T) -> Option<T> {
        let mut guard = self.lock();
        guard.as_mut().filter(|live| live.session == session).map(f)
    }
}

/// The hub's clock: tokio's, so tests with paused time control the age limit too.
pub(super) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Hub {
    /// The hub of `tenant` over `gateway`, its readers counted in `readers`. Nothing runs until
    /// the first reader: the tap is opened then.
    pub(crate) fn new(
        gateway: Arc<dyn Gateway>,
        tenant: String,
        settings: HubSettings,
        readers: Arc<Semaphore>,
        stop: CancellationToken,
    ) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                gateway,
                tenant,
                settings,
                stop,
                live: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                readers,
                sessions: AtomicU64::new(0),
            }),
        }
    }

    /// Whether nothing but this handle uses the hub: no reader, no open tap (whose pump holds
    /// the shared state), no request opening one. Only meaningful where no other handle can be
    /// cloned meanwhile (under the lock of the map holding it).
    pub(crate) fn is_unused(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// A reader of `filters` (valid, non-shared, distinct) from `from` (`None`: from now).
    pub(crate) async fn open(
        &self,
        filters: &[String],
        from: Option<Position>,
    ) -> Result<Reader, HubError> {
        let shared = &self.shared;
        let permit = shared
            .readers
            .clone()
            .try_acquire_owned()
            .map_err(|_| HubError::Busy(shared.settings.max_streams))?;
        if shared.stop.is_cancelled() {
            return Err(HubError::Unavailable(GatewayError::Unavailable));
        }
        // The tap may close between opening it and taking the lock (the engine closed it, or
        // the pump found it idle before this reader acquired its filters): open it once more.
        for _ in 0..2 {
            if shared.lock().is_none() {
                self.connect().await?;
            }
            let mut guard = shared.lock();
            let Some(live) = guard.as_mut() else {
                continue;
            };
            let now = now();
            let ids = live.core.acquire(now, filters)?;
            let replay = live.core.resume(now, &ids, from);
            if live.core.has_commands() {
                shared.wake.notify_one();
            }
            let channels = live.subscribe(&distinct(&ids), shared.settings.live_buffer);
            let reader = Reader::new(
                shared.clone(),
                live.session,
                live.core.epoch(),
                ids,
                channels,
                replay,
                permit,
            );
            drop(guard);
            return Ok(reader);
        }
        Err(HubError::Unavailable(GatewayError::Unavailable))
    }

    /// Opens the tap and starts its pump, unless another reader did meanwhile.
    async fn connect(&self) -> Result<(), HubError> {
        let shared = &self.shared;
        let _opening = shared.opening.lock().await;
        if shared.lock().is_some() {
            return Ok(());
        }
        let tap = tokio::select! {
            biased;
            () = shared.stop.cancelled() => Err(GatewayError::Unavailable),
            tap = tokio::time::timeout(OPEN_TIMEOUT, shared.gateway.open_tap(shared.tenant.clone())) => {
                tap.unwrap_or(Err(GatewayError::Unavailable))
            }
        }
        .map_err(|e| {
            tracing::warn!(tenant = %shared.tenant, error = %e, "the HTTP stream hub could not open its tap");
            HubError::Unavailable(e)
        })?;
        let session = shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        *shared.lock() = Some(Live {
            session,
            core: HubCore::new(Epoch::random(), shared.settings.limits),
            channels: HashMap::new(),
        });
        tracing::debug!(tenant = %shared.tenant, session, "the HTTP stream hub opened its tap");
        tokio::spawn(pump(shared.clone(), tap, session));
        Ok(())
    }
}

/// Moves messages from the tap into the core and the live channels, and the core's commands to
/// the tap, until the tap closes, the gateway drains or the hub tracks no filter any more.
/// Commands are sent through a reserved slot inside the same `select!` as the receive, so a
/// full command channel never stops the pump from draining messages (the engine may be waiting
/// on those).
async fn pump(shared: Arc<Shared>, tap: Tap, session: u64) {
    let Tap {
        commands,
        mut messages,
    } = tap;
    // The first sweep waits a whole period: the reader that opened the tap has not acquired
    // its filters yet, and an immediate sweep would find the hub idle.
    let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP, SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ends too when the session is no longer the open one (not expected: only this task
    // clears it).
    while let Some(pending) = shared.with_live(session, |live| live.core.has_commands()) {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            permit = commands.reserve(), if pending => {
                let Ok(permit) = permit else { break };
                if let Some(Some(command)) = shared.with_live(session, |live| live.core.poll_command()) {
                    permit.send(command);
                }
            }
            message = messages.recv() => {
                let Some(first) = message else { break };
                shared.with_live(session, |live| {
                    let now = now();
                    live.handle_message(now, first);
                    for _ in 1..BATCH {
                        let Ok(message) = messages.try_recv() else { break };
                        live.handle_message(now, message);
                    }
                });
            }
            () = shared.wake.notified() => {}
            _ = sweep.tick() => {
                // Checked and cleared under one lock, so no reader acquires a filter of a tap
                // that is closing.
                let mut guard = shared.lock();
                if let Some(live) = guard.as_mut().filter(|live| live.session == session) {
                    live.core.handle_timeout(now());
                    if live.core.is_idle() {
                        *guard = None;
                        tracing::debug!(tenant = %shared.tenant, session, "the HTTP stream hub closes its idle tap");
                        break;
                    }
                }
            }
        }
    }
    let mut live = shared.lock();
    if live.as_ref().is_some_and(|l| l.session == session) {
        // Dropping the channels tells every reader of this session that it is over.
        *live = None;
    }
    tracing::debug!(tenant = %shared.tenant, session, "the HTTP stream hub's tap ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::TapCommand;
    use crate::stream::history::ResetReason;
    use crate::stream::reader::Item;
    use crate::stream::testkit::{Engine, FakeGateway};
    use tokio::sync::mpsc;

    fn settings(history_size: usize, live_buffer: usize, max_streams: usize) -> HubSettings {
        HubSettings {
            limits: Limits {
                history_size,
                max_age: Duration::from_secs(60),
                max_idle_filters: 100,
            },
            live_buffer,
            max_streams,
        }
    }

    fn hub(
        settings: HubSettings,
    ) -> (
        Hub,
        Arc<FakeGateway>,
        mpsc::UnboundedReceiver<Engine>,
        CancellationToken,
    ) {
        let (gateway, engines) = FakeGateway::new();
        let stop = CancellationToken::new();
        let readers = Arc::new(Semaphore::new(settings.max_streams));
        let hub = Hub::new(
            gateway.clone(),
            "default".into(),
            settings,
            readers,
            stop.clone(),
        );
        (hub, gateway, engines, stop)
    }

    /// `f`, or a failed test if it takes longer than any of these tests should.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("the reader did not answer")
    }

    fn filters(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn next_message(reader: &mut Reader) -> (Position, String) {
        match within(reader.next()).await {
            Some(Item::Message { position, delivery }) => {
                (position, delivery.message.topic.clone())
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_catches_up_from_the_history() {
        let (hub, _gateway, mut engines, _stop) = hub(settings(100, 2, 8));
        let mut reader = hub.open(&filters(&["a/#"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a/#"]).await;
        // Ten messages queue up in the tap before the reader looks: the pump handles them in
        // one go, overflowing the two-slot live buffer.
        for i in 0..10 {
            assert!(engine.publish(&format!("a/{i}"), "x").await);
        }
        let mut last = reader.position().seq;
        for i in 0..10 {
            let (position, topic) = next_message(&mut reader).await;
            assert_eq!(topic, format!("a/{i}"));
            assert!(position.seq > last);
            last = position.seq;
        }
        assert!(reader.try_next().is_none(), "nothing twice");
    }

    #[tokio::test]
    async fn a_reader_of_several_filters_gets_their_messages_merged_in_order_once() {
        let (hub, _gateway, mut engines, _stop) = hub(settings(100, 16, 8));
        let mut reader = hub.open(&filters(&["a/#", "+/b"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a/#", "+/b"]).await;
        let topics = ["a/1", "x/b", "a/b", "a/2", "y/b", "z/z"];
        for topic in topics {
            engine.publish(topic, "x").await;
        }
        for expected in &topics[..5] {
            assert_eq!(next_message(&mut reader).await.1, *expected);
        }
        assert!(reader.try_next().is_none(), "nothing twice");
    }

    #[tokio::test]
    async fn a_reader_behind_the_history_too_gets_a_reset_then_the_rest() {
        let (hub, _gateway, mut engines, _stop) = hub(settings(3, 2, 8));
        let mut reader = hub.open(&filters(&["a/#"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a/#"]).await;
        for i in 0..10 {
            engine.publish(&format!("a/{i}"), "x").await;
        }
        match within(reader.next()).await {
            Some(Item::Reset { resets, position }) => {
                assert_eq!(resets.len(), 1);
                assert_eq!(resets[0].filter, "a/#");
                assert_eq!(resets[0].reason, ResetReason::Evicted);
                assert_eq!(position, None, "replayed messages follow");
            }
            other => panic!("expected a reset, got {other:?}"),
        }
        for i in 7..10 {
            assert_eq!(next_message(&mut reader).await.1, format!("a/{i}"));
        }
        engine.publish("a/live", "x").await;
        assert_eq!(next_message(&mut reader).await.1, "a/live");
    }

    #[tokio::test]
    async fn a_closed_tap_ends_readers_and_the_next_one_reopens_under_a_new_epoch() {
        let (hub, gateway, mut engines, _stop) = hub(settings(10, 16, 8));
        let mut reader = hub.open(&filters(&["a"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a"]).await;
        engine.publish("a", "x").await;
        let (seen, _) = next_message(&mut reader).await;
        drop(engine);
        assert!(matches!(within(reader.next()).await, Some(Item::Closed)));
        assert!(within(reader.next()).await.is_none());
        drop(reader);

        let mut again = hub.open(&filters(&["a"]), Some(seen)).await.unwrap();
        assert_eq!(gateway.opened.load(Ordering::SeqCst), 2);
        assert_ne!(again.position().epoch, seen.epoch);
        match within(again.next()).await {
            Some(Item::Reset { resets, position }) => {
                assert_eq!(resets[0].reason, ResetReason::Restarted);
                assert_eq!(position, Some(again.position()));
            }
            other => panic!("expected a reset, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failed_open_is_an_error_and_the_next_reader_retries() {
        let (hub, gateway, mut engines, _stop) = hub(settings(10, 16, 8));
        gateway.refuse.store(true, Ordering::SeqCst);
        let refused = hub.open(&filters(&["a"]), None).await.err();
        assert_eq!(
            refused,
            Some(HubError::Unavailable(GatewayError::Unavailable))
        );
        gateway.refuse.store(false, Ordering::SeqCst);
        let _reader = hub.open(&filters(&["a"]), None).await.unwrap();
        engines.recv().await.unwrap().until_subscribed(&["a"]).await;
    }

    #[tokio::test]
    async fn readers_beyond_max_streams_are_refused_until_one_goes() {
        let (hub, _gateway, _engines, _stop) = hub(settings(10, 16, 2));
        let first = hub.open(&filters(&["a"]), None).await.unwrap();
        let _second = hub.open(&filters(&["b"]), None).await.unwrap();
        assert_eq!(
            hub.open(&filters(&["c"]), None).await.err(),
            Some(HubError::Busy(2))
        );
        drop(first);
        assert!(hub.open(&filters(&["c"]), None).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_filter_nobody_reads_is_unsubscribed_after_the_age_limit() {
        let (hub, _gateway, mut engines, _stop) = hub(settings(10, 16, 8));
        let reader = hub.open(&filters(&["a"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a"]).await;
        drop(reader);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(engine.is_subscribed("a"), "kept for a returning reader");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(
            engine.next_command().await,
            TapCommand::Unsubscribe { filter: "a".into() }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_that_tracks_nothing_closes_and_the_next_reader_reopens_it() {
        let (hub, gateway, mut engines, _stop) = hub(settings(10, 16, 8));
        let reader = hub.open(&filters(&["a"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a"]).await;
        assert!(
            !hub.is_unused(),
            "the pump holds the hub while the tap is open"
        );
        let seen = reader.position();
        drop(reader);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(
            engine.next_command().await,
            TapCommand::Unsubscribe { filter: "a".into() }
        );
        within(engine.closed()).await;
        assert!(hub.is_unused(), "no tap, no reader");

        let mut again = hub.open(&filters(&["a"]), Some(seen)).await.unwrap();
        assert_eq!(gateway.opened.load(Ordering::SeqCst), 2);
        match within(again.next()).await {
            Some(Item::Reset { resets, .. }) => {
                assert_eq!(resets[0].reason, ResetReason::Restarted);
            }
            other => panic!("expected a reset, got {other:?}"),
        }
        engines.recv().await.unwrap().until_subscribed(&["a"]).await;
    }

    #[tokio::test]
    async fn messages_for_dropped_ids_are_ignored() {
        let (hub, _gateway, mut engines, _stop) = hub(settings(10, 16, 8));
        let mut reader = hub.open(&filters(&["a"]), None).await.unwrap();
        let mut engine = engines.recv().await.unwrap();
        engine.until_subscribed(&["a"]).await;
        let id = engine.id_of("a").unwrap();
        engine.send(vec![id + 100], "z", "stale").await;
        engine.send(vec![id], "a", "fresh").await;
        match within(reader.next()).await {
            Some(Item::Message { delivery, .. }) => assert_eq!(delivery.message.topic, "a"),
            other => panic!("expected the message of `a`, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn draining_ends_readers_and_refuses_new_ones() {
        let (hub, _gateway, _engines, stop) = hub(settings(10, 16, 8));
        let mut reader = hub.open(&filters(&["a"]), None).await.unwrap();
        stop.cancel();
        assert!(within(reader.next()).await.is_none());
        assert_eq!(
            hub.open(&filters(&["a"]), None).await.err(),
            Some(HubError::Unavailable(GatewayError::Unavailable))
        );
    }
}
