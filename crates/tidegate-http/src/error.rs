//! [`ApiError`]: every failure of the HTTP API as `{"error": {"code", "message"}}` with the
//! HTTP status that says the same.
//!
//! Place in the data flow: handlers and extractors return `Result<_, ApiError>`; axum turns the
//! error into the response. Codes are stable strings clients may match on.

use crate::gateway::GatewayError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An API failure: status, stable code, human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds to put in `Retry-After` (429, 503).
    pub(crate) retry_after: Option<u64>,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_topic`, `unauthorized`, `rate_limited`.
    code: &'static str,
    /// What went wrong, for people.
    message: String,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`: malformed JSON, a missing or contradictory field.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400 `invalid_topic`: a topic name or filter that MQTT would refuse.
    pub(crate) fn invalid_topic(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", message)
    }

    /// 401 `unauthorized`: no bearer token, or an unknown one.
    pub(crate) fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
    }

    /// 403 `forbidden`: a valid token without the right to this endpoint.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`: the gateway answered in a way this face does not expect (a bug, not
    /// the client's doing).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 413 `payload_too_large`.
    pub(crate) fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than http.max_body_bytes ({limit} bytes)"),
        )
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub(crate) fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after_secs.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        match e {
            GatewayError::Unavailable => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            },
            GatewayError::StoreFailed(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_failed",
                    e.to_string(),
                )
            },
            GatewayError::Refused { reason, message } => match reason {
                0x87 => ApiError::new(StatusCode::FORBIDDEN, "not_authorized", message),
                0x96 | 0x97 => ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message)
                },
                0x90 => ApiError::invalid_topic(message),
                0x95 => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message),
                _ => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", message),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidegate\""),
            );
        }
        response
    }
}
