//! Graceful shutdown: the signals that start it and the bounded wait that ends it.
//!
//! Place in the data flow: around everything. The sequence (driven by
//! [`crate::Server::serve`]):
//! 1. the shutdown future completes ([`os_signal`] in the binary: SIGINT or SIGTERM);
//! 2. the `stop` token is cancelled: every listener stops accepting and drops its socket, the
//!    engine calls `Broker::shutdown` (DISCONNECT 0x8B with the configured Server Reference to
//!    MQTT 5 clients) and orders every connection closed once its queue is flushed;
//! 3. `wait_for_tasks` waits for every listener and connection task (all spawned on one
//!    `TaskTracker`, the mini-redis pattern with the tracker standing in for its mpsc sender)
//!    for at most the grace period; when it is over, the `hard_stop` token makes the remaining
//!    connection tasks (clients too slow to take their DISCONNECT) end at once;
//! 4. the engine task ends when the last sender of its channel is gone.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn os_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received"),
        _ = terminate => info!("SIGTERM received"),
    }
}

/// Waits for every task of `tracker` (which must be closed) for at most `grace`, then cancels
/// `hard_stop` and waits for the rest. Returns whether the grace period ran out.
pub(crate) async fn wait_for_tasks(
    tracker: &TaskTracker,
    grace: Duration,
    hard_stop: &CancellationToken,
) -> bool {
    if tokio::time::timeout(grace, tracker.wait()).await.is_ok() {
        return false;
    }
    warn!(
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        remaining = tracker.len(),
        "shutdown grace period over; dropping the remaining connections"
    );
    hard_stop.cancel();
    tracker.wait().await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_that_finish_in_time_are_not_forced() {
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(10)));
        tracker.close();
        assert!(!wait_for_tasks(&tracker, Duration::from_secs(5), &hard_stop).await);
        assert!(!hard_stop.is_cancelled());
    }

    #[tokio::test]
    async fn stragglers_are_stopped_after_the_grace_period() {
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let token = hard_stop.clone();
        tracker.spawn(async move { token.cancelled().await });
        tracker.close();
        let forced = tokio::time::timeout(
            Duration::from_secs(5),
            wait_for_tasks(&tracker, Duration::from_millis(20), &hard_stop),
        )
        .await
        .unwrap();
        assert!(forced);
        assert!(tracker.is_empty());
    }
}
