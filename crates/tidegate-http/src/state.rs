//! [`Http`]: the HTTP face as the server starts it, and the state every handler shares.
//!
//! Place in the data flow: `tidegate-server` builds one [`Http`] per gateway (all HTTP
//! listeners share it, hence one set of stream hubs and one set of rate limiters) and serves
//! [`Http::router`] on each listener's connections.

use crate::config::HttpConfig;
use crate::gateway::Gateway;
use crate::limit::Limits;
use crate::stream::Hubs;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The HTTP face: configuration, the gateway it drives, and the stream hubs.
#[derive(Clone)]
pub struct Http {
    pub(crate) state: AppState,
}

/// What every handler can reach (cheap to clone: one `Arc`).
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Inner>,
}

/// The shared part of [`AppState`].
pub(crate) struct Inner {
    /// The engine, through the server.
    pub(crate) gateway: Arc<dyn Gateway>,
    /// `[http]`.
    pub(crate) config: HttpConfig,
    /// SSE / long-poll subscriptions and their histories, one hub per tenant.
    pub(crate) hubs: Hubs,
    /// Rate limiters per token and per failing address.
    pub(crate) limits: Limits,
}

impl Http {
    /// The HTTP face over `gateway`. Must be called inside a tokio runtime (a stream hub runs
    /// a task once it has readers). `stop` ends open SSE streams and long-polls when the
    /// gateway drains.
    pub fn new(gateway: Arc<dyn Gateway>, config: HttpConfig, stop: CancellationToken) -> Http {
        // The hubs hold `stop`: it ends open streams and polls when the gateway drains.
        let hubs = Hubs::start(gateway.clone(), &config, stop);
        let limits = Limits::new(&config);
        Http {
            state: AppState {
                inner: Arc::new(Inner {
                    gateway,
                    config,
                    hubs,
                    limits,
                }),
            },
        }
    }

    /// Every endpoint (REST, streams, admin, operations, `/v1/openapi.json`) as one router
    /// ready to serve, with JSON 404/405 answers and the body limit. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so failed authentications are
    /// rate limited per client address.
    pub fn router(&self) -> axum::Router {
        crate::app::router(self.state.clone())
    }
}
