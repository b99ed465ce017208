//! SSE and long-poll subscriptions (owned by the stream work; this is the contract).

use crate::config::HttpConfig;
use crate::gateway::Gateway;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The stream hub: one tap into the engine shared by every SSE stream and long-poll.
pub(crate) struct Hub {}

impl Hub {
    /// Starts the hub task.
    pub(crate) fn start(
        _gateway: Arc<dyn Gateway>,
        _config: &HttpConfig,
        _stop: CancellationToken,
    ) -> Hub {
        Hub {}
    }
}

/// The stream endpoints (`/v1/subscribe`, `/v1/poll`), to be merged into the app's router.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<crate::state::AppState> {
    utoipa_axum::router::OpenApiRouter::new()
}
