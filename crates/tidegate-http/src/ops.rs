//! Operations endpoints, open without a token: `GET /metrics`, `GET /healthz`, `GET /readyz`
//! and `GET /v1/openapi.json`.
//!
//! Place in the data flow: `load balancer / Prometheus / tooling -> these handlers ->
//! Gateway::metrics / Gateway::ready` (the document comes from [`crate::openapi`]). They carry
//! no token because probes and scrapers usually cannot; they reveal counters, not data.

use crate::error::ApiError;
use crate::openapi::EngineErrors;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4",
         body = String, content_type = "text/plain; version=0.0.4"),
        EngineErrors,
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.inner.gateway.metrics().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        text,
    )
        .into_response())
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process is alive", body = String,
               content_type = "text/plain"))
)]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: every listener is bound and the store is open.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = String, content_type = "text/plain"),
        (status = 503, description = "`not_ready`: listeners or store not up yet (or draining)",
         body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.inner.gateway.ready() {
        Ok("ready")
    } else {
        Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the gateway is not ready: listeners or store not up (or it is draining)",
            )
        })
    }
}

/// This API's OpenAPI 3 description.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "ops",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object,
         content_type = "application/json"),
        (status = 500, description = "`internal`: the document could not be written",
         body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn openapi_json() -> Result<Response, ApiError> {
    let body = crate::openapi::json().map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use crate::gateway::GatewayError;
    use crate::testing::{Call, FakeGateway, app, call};
    use axum::http::{Method, StatusCode, header};
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn metrics_are_the_gateway_text_in_prometheus_format() {
        let text = "# TYPE tidegate_connections gauge\ntidegate_connections 3\n";
        let (gateway, router) = app(FakeGateway {
            metrics: text.into(),
            ..FakeGateway::default()
        });
        let r = call(&router, Method::GET, "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header(header::CONTENT_TYPE),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(&r.body[..], text.as_bytes());
        assert_eq!(gateway.calls(), vec![Call::Metrics]);
    }

    #[tokio::test]
    async fn metrics_fail_with_503_when_the_engine_is_gone() {
        let gateway = FakeGateway::default();
        *gateway.fail.lock().unwrap() = Some(GatewayError::Unavailable);
        let (_, router) = app(gateway);
        let r = call(&router, Method::GET, "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.error_code(), "unavailable");
    }

    #[tokio::test]
    async fn health_is_ok_and_readiness_follows_the_gateway() {
        let (gateway, router) = app(FakeGateway::default());
        let r = call(&router, Method::GET, "/healthz", None, None).await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
        let r = call(&router, Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        gateway.not_ready.store(true, Ordering::Relaxed);
        let r = call(&router, Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.error_code(), "not_ready");
        // Health does not depend on readiness.
        let r = call(&router, Method::GET, "/healthz", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}
