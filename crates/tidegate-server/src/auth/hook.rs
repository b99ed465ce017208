//! The HTTP client of the authentication hook: POSTs a [`HookRequest`]'s body to the tenant's
//! URL and reads the answer into a [`HookOutcome`] (the contract is `tidegate_auth::hook`'s).
//!
//! Place in the data flow: `Authenticator::check -> HookCache miss -> HookClient::ask ->
//! HookCache::complete`. One pooled hyper client for the whole server (connections to a hook
//! are reused across CONNECTs); `http://` and `https://` (rustls with the ring provider and the
//! system's root certificates). Everything that is not an answer (timeout, connection error, a
//! body over [`MAX_ANSWER`]) is [`HookOutcome::Unavailable`], which fails closed unless the
//! tenant sets `fail_open`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::fmt;
use std::sync::Arc;
use tidegate_auth::{HookOutcome, HookRequest};
use tracing::warn;

/// Largest answer body read; a hook's answer is a small JSON object.
const MAX_ANSWER: usize = 64 * 1024;

/// The hook's HTTP client.
pub(crate) struct HookClient {
    /// The client, or why none could be built (then every hook is unavailable).
    client: Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String>,
}

impl fmt::Debug for HookClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookClient").finish_non_exhaustive()
    }
}

impl HookClient {
    /// A client for `http://` and `https://` hooks. Without system root certificates,
    /// `https://` hooks fail (closed) and a warning says why.
    pub(crate) fn new() -> HookClient {
        let client = tls_config().map(|tls| {
            let connector = HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build();
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .build(connector)
        });
        if let Err(why) = &client {
            warn!(%why, "auth hooks unavailable");
        }
        HookClient { client }
    }

    /// POSTs `request`'s body to its URL and reads the answer, within its timeout.
    pub(crate) async fn ask(&self, request: &HookRequest) -> HookOutcome {
        let client = match &self.client {
            Ok(client) => client,
            Err(why) => return HookOutcome::Unavailable(why.clone()),
        };
        let http = match Request::post(request.url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("tidegate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(request.body())))
        {
            Ok(http) => http,
            Err(e) => return HookOutcome::Unavailable(format!("bad hook URL: {e}")),
        };
        let exchange = async {
            let response = client
                .request(http)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("answer unreadable: {e}"))?
                .to_bytes();
            Ok::<_, String>(HookOutcome::from_response(status, &body))
        };
        match tokio::time::timeout(request.timeout, exchange).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(why)) => HookOutcome::Unavailable(why),
            Err(_) => HookOutcome::Unavailable(format!(
                "no answer within {} ms",
                request.timeout.as_millis()
            )),
        }
    }
}

/// rustls with the ring provider and the system's roots (none if they cannot be loaded).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS for https hooks: {e}"))?;
    Ok(match builder.clone().with_native_roots() {
        Ok(with_roots) => with_roots.with_no_client_auth(),
        Err(e) => {
            warn!(error = %e, "no system root certificates: https auth hooks will fail");
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    })
}
