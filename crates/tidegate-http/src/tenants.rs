//! `/v1/admin/tenants`: tenants created, read, replaced and deleted while the gateway runs
//! (issue 7).
//!
//! Place in the data flow: `admin token -> JSON body (a TenantConfig, unknown keys refused) ->
//! validation (here, so a bad body never reaches the engine) -> Gateway (create / replace /
//! delete: the server compiles the tenant, writes it to the store and swaps the live set) ->
//! answer with the secrets redacted`. Every handler takes [`AdminAccess`].
//!
//! Reads never show a secret: password hashes and the HS256 secret come back as `"***"`
//! ([`redact`]). A configuration read this way therefore cannot be sent back as is: its users'
//! hashes must be supplied again (a hash can be attacked offline, so it never leaves).

use crate::auth::AdminAccess;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::gateway::{TenantDeleted, TenantError, TenantSource, TenantView};
use crate::openapi::{AuthErrors, EngineErrors, errors};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use tidegate_auth::TenantConfig;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, response::Response};
use utoipa::{IntoResponses, ToSchema};

/// What replaces a secret in every answer.
pub(crate) const REDACTED: &str = "***";

/// A tenant as `GET /v1/admin/tenants` lists it: what it allows, not its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct TenantSummary {
    /// The tenant id.
    id: String,
    /// Where it comes from.
    source: TenantSource,
    /// Whether clients no method authenticates may connect.
    allow_anonymous: bool,
    /// The authentication methods it enables: `password`, `jwt`, `http_hook`, `certificate`,
    /// `unix_uid`, `anonymous`.
    auth_methods: Vec<String>,
    /// How many `[[tenants.users]]` it has.
    users: usize,
    /// How many ACL rules it has.
    acl_rules: usize,
    /// What decides when no rule matches: `allow` or `deny`.
    default_acl: String,
    /// TLS SNI host names routed to it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    sni_hosts: Vec<String>,
    /// Its connection quota, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    /// Clients of the tenant connected now (absent when the engine does not count them).
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<usize>,
}

impl TenantSummary {
    fn of(view: &TenantView) -> TenantSummary {
        let c = &view.config;
        let methods = [
            ("password", !c.users.is_empty()),
            ("jwt", c.jwt.is_some()),
            ("http_hook", c.http_auth.is_some()),
            ("certificate", c.cert_identity),
            ("unix_uid", !c.unix_uids.is_empty()),
            ("anonymous", c.allow_anonymous),
        ];
        TenantSummary {
            id: c.id.clone(),
            source: view.source,
            allow_anonymous: c.allow_anonymous,
            auth_methods: methods
                .iter()
                .filter(|(_, on)| *on)
                .map(|(name, _)| (*name).to_owned())
                .collect(),
            users: c.users.len(),
            acl_rules: c.acl.len(),
            default_acl: if c.effective_default_acl().is_allowed() {
                "allow".to_owned()
            } else {
                "deny".to_owned()
            },
            sni_hosts: c.sni_hosts.clone(),
            max_connections: c.quotas.max_connections,
            connections: view.connections,
        }
    }
}

/// The answer of `GET /v1/admin/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct TenantList {
    /// Every tenant in force, in id order.
    tenants: Vec<TenantSummary>,
}

/// `config` without its secrets: password hashes and the HS256 secret become `"***"`. Public
/// keys, the hook URL and everything else stay (they are not secrets).
pub(crate) fn redact(mut config: TenantConfig) -> TenantConfig {
    for user in &mut config.users {
        user.password_hash = REDACTED.to_owned();
    }
    if let Some(secret) = config.jwt.as_mut().and_then(|j| j.hs256_secret.as_mut()) {
        *secret = REDACTED.to_owned();
    }
    config
}

/// The schema of a tenant configuration in the document: the `[[tenants]]` TOML entry as a
/// JSON object. `TenantConfig` lives in `tidegate-auth`, which knows nothing of OpenAPI, so
/// its schema is described here by hand rather than derived.
pub(crate) struct TenantConfigSchema;

impl utoipa::PartialSchema for TenantConfigSchema {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A tenant: the keys of a `[[tenants]]` entry of the configuration file, as \
                 JSON (`id`, `allow_anonymous`, `sni_hosts`, `users` [{username, \
                 password_hash}], `acl` [{action, filter, allow}], `default_acl`, `quotas`, \
                 `jwt`, `http_auth`, `unix_uids`, `cert_identity`). Unknown keys are refused. \
                 In answers, password hashes and `jwt.hs256_secret` are `\"***\"`.",
            ))
            .property(
                "id",
                string().description(Some(
                    "ASCII letters, digits, `-`, `_` and `.`, 1 to 64 characters",
                )),
            )
            .required("id")
            .property(
                "allow_anonymous",
                ObjectBuilder::new().schema_type(Type::Boolean),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .build()
            .into()
    }
}

impl ToSchema for TenantConfigSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TenantConfig")
    }
}

/// Error responses of the operations that read a tenant body.
pub(crate) struct TenantBodyErrors;

impl IntoResponses for TenantBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                400,
                "`invalid_tenant` (the configuration is invalid or clashes with another \
                 tenant; the message names the key) or `bad_request` (not JSON, an unknown \
                 key, or an `id` that differs from the path)",
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

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> ApiError {
        match e {
            TenantError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            TenantError::NotFound(_) => ApiError::not_found(e.to_string()),
            TenantError::Invalid(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", message)
            }
            TenantError::Gateway(e) => e.into(),
        }
    }
}

/// Checks a configuration before it goes to the gateway.
fn check(config: &TenantConfig) -> Result<(), ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::from(TenantError::Invalid(e.to_string())))
}

/// List the tenants in force.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants",
    tag = "tenants",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every tenant, in id order", body = TenantList),
        AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn list(
    access: AdminAccess,
    State(state): State<AppState>,
) -> Result<Json<TenantList>, ApiError> {
    let mut views = state.inner.gateway.tenants().await?;
    // A token bound to a tenant sees that tenant only.
    views.retain(|v| access.check_tenant(&v.config.id).is_ok());
    views.sort_by(|a, b| a.config.id.cmp(&b.config.id));
    Ok(Json(TenantList {
        tenants: views.iter().map(TenantSummary::of).collect(),
    }))
}

/// Create a tenant; new connections can use it at once, and it survives a restart.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants",
    tag = "tenants",
    request_body(content = TenantConfigSchema, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created; the configuration, secrets redacted",
         body = TenantConfigSchema),
        (status = 409, description = "`conflict`: a tenant with this id exists",
         body = crate::error::ErrorBody),
        TenantBodyErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn create(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiJson(config): ApiJson<TenantConfig>,
) -> Result<
    (
        StatusCode,
        [(header::HeaderName, String); 1],
        Json<TenantConfig>,
    ),
    ApiError,
> {
    // Creating and deleting tenants is the gateway operator's, not a tenant's admin's.
    access.require_unbound()?;
    check(&config)?;
    tracing::info!(admin_token = access.token, tenant = %config.id, "admin API: creating tenant");
    state.inner.gateway.create_tenant(config.clone()).await?;
    let location = format!("/v1/admin/tenants/{}", config.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(redact(config)),
    ))
}

/// One tenant's configuration, secrets redacted.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The configuration, secrets redacted",
         body = TenantConfigSchema),
        (status = 404, description = "`not_found`: no such tenant",
         body = crate::error::ErrorBody),
        AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn show(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantConfig>, ApiError> {
    access.check_tenant(&id)?;
    state
        .inner
        .gateway
        .tenant(id.clone())
        .await?
        .map(|view| Json(redact(view.config)))
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))
}

/// Replace a tenant's configuration. New connections get the new configuration at once;
/// connected clients stay connected, and the tenant's quotas apply to them as each one's
/// documentation says (the README's "Tenants" lists what applies when).
#[utoipa::path(
    put,
    path = "/v1/admin/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    request_body(content = TenantConfigSchema, content_type = "application/json",
                 description = "The whole configuration; `id` may be left out"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Replaced; the configuration, secrets redacted",
         body = TenantConfigSchema),
        (status = 404, description = "`not_found`: no such tenant",
         body = crate::error::ErrorBody),
        TenantBodyErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn replace(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut config): ApiJson<TenantConfig>,
) -> Result<Json<TenantConfig>, ApiError> {
    access.check_tenant(&id)?;
    if config.id.is_empty() {
        config.id.clone_from(&id);
    } else if config.id != id {
        return Err(ApiError::bad_request(format!(
            "id: {:?} differs from the tenant of the path, {id:?} (a tenant cannot be renamed)",
            config.id
        )));
    }
    check(&config)?;
    tracing::info!(admin_token = access.token, tenant = %id, "admin API: replacing tenant");
    state.inner.gateway.replace_tenant(config.clone()).await?;
    Ok(Json(redact(config)))
}

/// Delete a tenant: new connections to it are refused at once, its connected clients are
/// disconnected (MQTT 5 ones with DISCONNECT 0x87, Not authorized), and its sessions and
/// retained messages are dropped.
#[utoipa::path(
    delete,
    path = "/v1/admin/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Deleted", body = TenantDeleted),
        (status = 404, description = "`not_found`: no such tenant",
         body = crate::error::ErrorBody),
        AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn delete(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantDeleted>, ApiError> {
    access.require_unbound()?;
    tracing::info!(admin_token = access.token, tenant = %id, "admin API: deleting tenant");
    Ok(Json(state.inner.gateway.delete_tenant(id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ADMIN_TOKEN, Call, FakeGateway, PUBLISH_TOKEN, app, call};
    use axum::http::Method;
    use serde_json::{Value, json};
    use tidegate_auth::{JwtConfig, UserConfig};

    /// A valid argon2id PHC string (of "pw", small parameters).
    const HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$kZ1H0QbXkRKmDvAI+3XVFg";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn acme() -> Value {
        json!({
            "id": "acme",
            "users": [{"username": "phone1", "password_hash": HASH}],
            "acl": [{"action": "all", "filter": "devices/%u/#", "allow": true}],
            "quotas": {"max_connections": 10},
            "jwt": {"hs256_secret": SECRET},
        })
    }

    async fn admin(
        router: &axum::Router,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> crate::testing::Reply {
        call(router, method, uri, Some(ADMIN_TOKEN), body).await
    }

    #[test]
    fn redaction_hides_hashes_and_the_hmac_secret_only() {
        let config: TenantConfig = serde_json::from_value(acme()).unwrap();
        let mut with_key = config.clone();
        with_key.jwt = Some(JwtConfig {
            rs256_public_key: Some("-----BEGIN PUBLIC KEY-----".into()),
            ..JwtConfig::default()
        });
        let shown = serde_json::to_value(redact(config)).unwrap();
        assert_eq!(shown["users"][0]["password_hash"], REDACTED);
        assert_eq!(shown["users"][0]["username"], "phone1");
        assert_eq!(shown["jwt"]["hs256_secret"], REDACTED);
        assert!(!shown.to_string().contains(SECRET));
        assert!(!shown.to_string().contains("kZ1H0Q"));
        let shown = serde_json::to_value(redact(with_key)).unwrap();
        assert_eq!(shown["jwt"]["hs256_secret"], Value::Null);
        assert_eq!(
            shown["jwt"]["rs256_public_key"],
            "-----BEGIN PUBLIC KEY-----"
        );
    }

    #[test]
    fn summaries_name_the_methods_and_the_default() {
        let mut config: TenantConfig = serde_json::from_value(acme()).unwrap();
        config.users.push(UserConfig {
            username: "phone2".into(),
            password_hash: HASH.into(),
        });
        let s = TenantSummary::of(&TenantView {
            config,
            source: TenantSource::Api,
            connections: Some(3),
        });
        assert_eq!(s.auth_methods, ["password", "jwt"]);
        assert_eq!(s.users, 2);
        assert_eq!(s.acl_rules, 1);
        assert_eq!(s.default_acl, "deny");
        assert_eq!(s.max_connections, Some(10));
        assert_eq!(s.connections, Some(3));
        let open = TenantSummary::of(&TenantView {
            config: TenantConfig::implicit_default(),
            source: TenantSource::Config,
            connections: None,
        });
        assert_eq!(open.auth_methods, ["anonymous"]);
        assert_eq!(open.default_acl, "allow");
    }

    #[tokio::test]
    async fn create_list_show_replace_delete() {
        let (gateway, router) = app(FakeGateway::default());
        let r = admin(&router, Method::POST, "/v1/admin/tenants", Some(acme())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.header(header::LOCATION), Some("/v1/admin/tenants/acme"));
        assert_eq!(r.json()["users"][0]["password_hash"], REDACTED);

        let r = admin(&router, Method::POST, "/v1/admin/tenants", Some(acme())).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.error_code(), "conflict");

        let list = admin(&router, Method::GET, "/v1/admin/tenants", None).await;
        assert_eq!(list.status, StatusCode::OK);
        let list = list.json();
        assert_eq!(list["tenants"][0]["id"], "acme");
        assert_eq!(list["tenants"][0]["source"], "api");
        assert_eq!(list["tenants"][0]["users"], 1);
        assert!(!list.to_string().contains(SECRET));

        let shown = admin(&router, Method::GET, "/v1/admin/tenants/acme", None).await;
        assert_eq!(shown.status, StatusCode::OK);
        let shown = shown.json();
        assert_eq!(shown["jwt"]["hs256_secret"], REDACTED);
        assert_eq!(shown["quotas"]["max_connections"], 10);

        // PUT without an id takes the path's.
        let mut changed = acme();
        changed["id"] = Value::Null;
        changed.as_object_mut().unwrap().remove("id");
        changed["allow_anonymous"] = json!(true);
        let r = admin(
            &router,
            Method::PUT,
            "/v1/admin/tenants/acme",
            Some(changed),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json()["allow_anonymous"], true);
        let stored = gateway.tenants.lock().unwrap().clone();
        assert!(stored[0].config.allow_anonymous);
        assert_eq!(
            stored[0].config.users[0].password_hash, HASH,
            "kept, not redacted"
        );

        let r = admin(&router, Method::DELETE, "/v1/admin/tenants/acme", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json(), json!({"disconnected": 0, "sessions_dropped": 0}));
        for (method, body) in [
            (Method::GET, None),
            (Method::PUT, Some(acme())),
            (Method::DELETE, None),
        ] {
            let r = admin(&router, method.clone(), "/v1/admin/tenants/acme", body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
            assert_eq!(r.error_code(), "not_found");
        }
        assert!(
            gateway
                .calls()
                .contains(&Call::DeleteTenant("acme".to_owned()))
        );
    }

    #[tokio::test]
    async fn invalid_bodies_are_400_naming_the_key_and_never_reach_the_gateway() {
        let (gateway, router) = app(FakeGateway::default());
        let mut bad_hash = acme();
        bad_hash["users"][0]["password_hash"] = json!(REDACTED);
        let mut bad_id = acme();
        bad_id["id"] = json!("no spaces allowed");
        let mut short_secret = acme();
        short_secret["jwt"]["hs256_secret"] = json!("short");
        for (body, code, key) in [
            (bad_hash, "invalid_tenant", "users[0].password_hash"),
            (bad_id, "invalid_tenant", ".id"),
            (short_secret, "invalid_tenant", "jwt.hs256_secret"),
            (
                json!({"id": "x", "alow_anonymous": true}),
                "bad_request",
                "alow_anonymous",
            ),
            (
                json!({"id": "x", "quotas": {"max_connections": -1}}),
                "bad_request",
                "quotas.max_connections",
            ),
        ] {
            let r = admin(&router, Method::POST, "/v1/admin/tenants", Some(body)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
            assert_eq!(r.error_code(), code);
            let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains(key), "{message} should name {key}");
        }
        let r = admin(
            &router,
            Method::PUT,
            "/v1/admin/tenants/other",
            Some(acme()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("renamed")
        );
        assert!(gateway.calls().is_empty());
    }

    #[tokio::test]
    async fn the_gateway_refusing_a_clash_is_400_and_publish_tokens_are_403() {
        let (_, router) = app(FakeGateway::default());
        let mut a = acme();
        a["sni_hosts"] = json!(["mqtt.example"]);
        let mut b = acme();
        b["id"] = json!("beta");
        b["sni_hosts"] = json!(["mqtt.example"]);
        let r = admin(&router, Method::POST, "/v1/admin/tenants", Some(a)).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = admin(&router, Method::POST, "/v1/admin/tenants", Some(b)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.error_code(), "invalid_tenant");
        let r = call(
            &router,
            Method::GET,
            "/v1/admin/tenants",
            Some(PUBLISH_TOKEN),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn the_document_describes_every_tenant_operation() {
        let (_, router) = app(FakeGateway::default());
        let doc = call(&router, Method::GET, "/v1/openapi.json", None, None)
            .await
            .json();
        for (method, path) in [
            ("get", "/v1/admin/tenants"),
            ("post", "/v1/admin/tenants"),
            ("get", "/v1/admin/tenants/{tenant_id}"),
            ("put", "/v1/admin/tenants/{tenant_id}"),
            ("delete", "/v1/admin/tenants/{tenant_id}"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        assert_eq!(
            doc["paths"]["/v1/admin/tenants"]["post"]["responses"]["409"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(doc["components"]["schemas"]["TenantConfig"].is_object());
        assert!(doc["components"]["schemas"]["TenantSummary"].is_object());
    }
}
