//! The OpenAPI 3 document of the API, generated from the handlers' `#[utoipa::path]`
//! attributes as [`crate::app::api`] registers them, and the response sets they share.
//!
//! Place in the data flow: `app::api() (routes + their docs) -> document() -> GET
//! /v1/openapi.json`. The router and the document come from the same registration, so a route
//! cannot be served without being described; the tests in `app` check the rest (every
//! described operation answers).

use crate::error::ErrorBody;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, response::Response};
use utoipa::{IntoResponses, OpenApi as _};

/// Security scheme name of publish tokens (`security(("publish_token" = []))`).
pub(crate) const PUBLISH_SCHEME: &str = "publish_token";
/// Security scheme name of admin tokens.
pub(crate) const ADMIN_SCHEME: &str = "admin_token";

/// The parts of the document that belong to no single handler.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tidegate",
        description = "HTTP face of the Tidegate MQTT gateway: publish, subscribe (SSE and \
                       long-poll), retained messages, administration and operations."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "publish", description = "Publishing messages into the gateway"),
        (name = "subscribe", description = "Receiving messages over HTTP"),
        (name = "retained", description = "Reading retained messages"),
        (name = "admin", description = "Administration (admin tokens)"),
        (name = "tenants", description = "Tenants managed live (admin tokens)"),
        (name = "ops", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

/// The document every route is added to: title, version, tags, the error schema and the two
/// bearer schemes.
pub(crate) fn base() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.title = "Tidegate".to_owned();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        PUBLISH_SCHEME,
        bearer("A token of `http.publish_tokens`: publish, subscribe, poll, read retained."),
    );
    components.add_security_scheme(
        ADMIN_SCHEME,
        bearer("A token of `http.admin_tokens`: the `/v1/admin` API."),
    );
    doc
}

/// An HTTP bearer scheme described by `description`.
fn bearer(description: &str) -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(description))
            .build(),
    )
}

/// The complete document: every route of [`crate::app::api`], with axum's wildcard segments
/// (`{*topic}`) written the OpenAPI way (`{topic}`).
pub(crate) fn document() -> OpenApi {
    let mut doc = crate::app::api().into_openapi();
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc
}

/// [`document`] as JSON, built once (it depends on nothing but the code).
pub(crate) fn json() -> Result<Bytes, String> {
    static DOC: OnceLock<Result<Bytes, String>> = OnceLock::new();
    DOC.get_or_init(|| {
        document()
            .to_json()
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    })
    .clone()
}

/// A response with the [`ErrorBody`] schema.
fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Error responses keyed by status.
pub(crate) fn errors(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| (status.to_string(), error(description)))
        .collect()
}

/// Responses of every operation that takes a bearer token.
pub(crate) struct AuthErrors;

impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                401,
                "`unauthorized`: no bearer token, or an unknown one (with `WWW-Authenticate`)",
            ),
            (403, "`forbidden`: a token of the other kind"),
            (
                429,
                "`rate_limited`: too many requests with this token, or too many failed \
                 authentications from this address (with `Retry-After`)",
            ),
        ])
    }
}

/// Responses of every operation that reads a JSON body.
pub(crate) struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                400,
                "`bad_request`, `invalid_topic`, `invalid_qos`, `invalid_payload`, \
                 `invalid_properties`: the body or a field of it is invalid; the message names \
                 the field",
            ),
            (
                413,
                "`payload_too_large`: the body is larger than `http.max_body_bytes`",
            ),
            (
                415,
                "`unsupported_media_type`: the body is not `application/json`",
            ),
        ])
    }
}

/// Responses of every operation with query or path parameters that can be invalid.
pub(crate) struct ParamErrors;

impl IntoResponses for ParamErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[(
            400,
            "`bad_request` or `invalid_topic`: a parameter is invalid",
        )])
    }
}

/// Responses of every operation that asks the engine.
pub(crate) struct EngineErrors;

impl IntoResponses for EngineErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                500,
                "`internal`: the engine gave an answer this API does not expect",
            ),
            (
                503,
                "`unavailable` (the gateway is shutting down) or `store_failed` (the store \
                 could not write; retry later), with `Retry-After`",
            ),
        ])
    }
}

/// Responses of operations the engine may refuse by its rules (publishing).
pub(crate) struct RefusedErrors;

impl IntoResponses for RefusedErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                403,
                "`forbidden` (a token of the other kind) or `not_authorized` (the engine \
                 refuses this topic, e.g. `$SYS`)",
            ),
            (
                422,
                "`refused`: the engine refused the message (the MQTT reason is in the message)",
            ),
            (
                429,
                "`rate_limited` (with this token or address) or `quota_exceeded` (the engine's \
                 quota), with `Retry-After`",
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_the_gateway_and_its_version() {
        let doc = document();
        assert_eq!(doc.info.title, "Tidegate");
        assert_eq!(doc.info.version, env!("CARGO_PKG_VERSION"));
        let components = doc.components.expect("components");
        assert!(components.schemas.contains_key("ErrorBody"));
        assert!(components.security_schemes.contains_key(PUBLISH_SCHEME));
        assert!(components.security_schemes.contains_key(ADMIN_SCHEME));
    }

    #[test]
    fn wildcard_segments_are_written_as_plain_parameters() {
        let doc = document();
        assert!(doc.paths.paths.keys().all(|p| !p.contains("{*")));
        assert!(doc.paths.paths.contains_key("/v1/admin/retained/{topic}"));
    }

    #[test]
    fn json_is_the_document() {
        let bytes = json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["info"]["title"], "Tidegate");
        assert!(value["openapi"].as_str().unwrap().starts_with("3."));
    }
}
