//! Extractors whose every rejection is an [`ApiError`]: [`ApiJson`], [`ApiQuery`], [`ApiPath`].
//!
//! Place in the data flow: `request -> body limit -> auth -> these extractors -> handler`.
//! axum's own `Json`, `Query` and `Path` reject with plain-text bodies; a client of this API
//! matches on `{"error": {"code"}}` everywhere, so handlers take these wrappers instead.
//! JSON errors name the field that failed (`messages[3].qos: ...`) so a batch caller can find
//! the bad message.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// The query string as `T`.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

/// The path parameters as `T`.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

/// True for `application/json` and `application/<anything>+json`, parameters ignored.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Parses `bytes` as one JSON value of type `T` (nothing after it), naming the failing field.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (inner.is_data(), path.as_str()) {
            (true, ".") => ApiError::bad_request(inner.to_string()),
            (true, _) => ApiError::bad_request(format!("{path}: {inner}")),
            (false, _) => ApiError::bad_request(format!("invalid JSON body: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let limit = state.inner.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(limit)
                } else {
                    ApiError::bad_request(format!("could not read the body: {}", e.body_text()))
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| {
                if e.status().is_client_error() {
                    ApiError::bad_request(e.body_text())
                } else {
                    // A route whose pattern does not give the parameters its handler takes:
                    // our bug, not the client's.
                    ApiError::internal(e.body_text())
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        h
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/merge-patch+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/x-www-form-urlencoded")));
        assert!(!is_json(&headers("json")));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    struct Inner {
        qos: u8,
    }

    #[test]
    fn errors_name_the_field_or_say_the_json_is_bad() {
        let e = parse_json::<Outer>(br#"{"items": [{"qos": 1}, {"qos": 300}]}"#).unwrap_err();
        assert_eq!(e.code, "bad_request");
        assert!(e.message.starts_with("items[1].qos: "), "{}", e.message);
        let e = parse_json::<Outer>(b"{\"items\": [").unwrap_err();
        assert!(e.message.starts_with("invalid JSON body"), "{}", e.message);
        let e = parse_json::<Outer>(br#"{"items": []} trailing"#).unwrap_err();
        assert!(e.message.starts_with("invalid JSON body"), "{}", e.message);
        let e = parse_json::<Outer>(br#"{"items": [{}]}"#).unwrap_err();
        assert!(
            e.message.starts_with("items[0]: missing field"),
            "{}",
            e.message
        );
        let ok = parse_json::<Outer>(br#"{"items": [{"qos": 2}]}"#).unwrap();
        assert_eq!(ok.items.len(), 1);
        assert_eq!(ok.items[0].qos, 2);
    }
}
