//! `/v1/admin`: what operators see and steer — clients, sessions, subscriptions, retained
//! messages, counters.
//!
//! Place in the data flow: `admin token -> query/path checks (here) -> Gateway (clients,
//! sessions, kick, retained, stats) -> engine`. Every handler takes [`AdminAccess`], so a
//! publish token never reaches one.
//!
//! Tenants (issue 7): a client id or a retained topic names something inside one tenant, so
//! the endpoints about one of them take `?tenant=` (default `default`, the only tenant there is
//! without `[[tenants]]`, so the URLs of before keep their meaning); listings filter by
//! `tenant` when asked. An admin token bound to a tenant acts in its own tenant only: its
//! listings are narrowed to it and a request naming another tenant is 403.

use crate::auth::AdminAccess;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::gateway::{
    Caller, ClientInfo, ClientQuery, GatewayStats, KickOutcome, Page, SessionInfo, SessionQuery,
    SubscriptionInfo,
};
use crate::openapi::{AuthErrors, EngineErrors, ParamErrors};
use crate::publish::check_topic_name;
use crate::retained::{self, RetainedList};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tidegate_protocol::{Disconnect, ReasonCode};
use utoipa::{IntoParams, ToSchema};

/// Largest page the listings return.
const MAX_PAGE: usize = 1000;

/// Query of `GET /v1/admin/clients`; every parameter narrows the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientsParams {
    /// Only clients of this tenant.
    tenant: Option<String>,
    /// Only clients of the listener with this name (e.g. `tcp:0.0.0.0:1883`).
    listener: Option<String>,
    /// Only client ids starting with this.
    client_id_prefix: Option<String>,
    /// Only clients whose address (`ip` or `ip:port`) starts with this.
    address: Option<String>,
    /// Resume after this cursor (`next_cursor` of the previous page).
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Query of `GET /v1/admin/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionsParams {
    /// Only sessions of this tenant.
    tenant: Option<String>,
    /// Only client ids starting with this.
    client_id_prefix: Option<String>,
    /// `true`: only online sessions; `false`: only offline ones.
    online: Option<bool>,
    /// Resume after this cursor (`next_cursor` of the previous page).
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Query of the endpoints about one client of one tenant.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantParams {
    /// The tenant the client belongs to (default `default`; an admin token bound to a tenant:
    /// its own).
    tenant: Option<String>,
}

/// Query of `DELETE /v1/admin/clients/{client_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct KickParams {
    /// The tenant the client belongs to (default `default`; an admin token bound to a tenant:
    /// its own).
    tenant: Option<String>,
    /// MQTT 5 DISCONNECT reason code sent to the client, decimal or `0x..` hex; one a server
    /// may send. Default `0x98` (Administrative action).
    #[param(example = "0x98")]
    reason: Option<String>,
    /// Also drop the client's session (subscriptions, queued messages), online or not.
    #[param(default = false)]
    discard_session: Option<bool>,
}

/// Query of `GET /v1/admin/retained`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminRetainedParams {
    /// Topic filter (default `#`: every retained message outside `$` topics).
    #[param(default = "#")]
    filter: Option<String>,
    /// The tenant whose retained messages are listed (default `default`).
    tenant: Option<String>,
}

/// Query of `DELETE /v1/admin/retained/{topic}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteRetainedParams {
    /// The tenant the retained message belongs to (default `default`).
    tenant: Option<String>,
}

/// The subscriptions of one session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SubscriptionList {
    /// Its subscriptions.
    subscriptions: Vec<SubscriptionInfo>,
}

/// Checks a page size: absent, or 1 ..= [`MAX_PAGE`].
fn check_limit(limit: Option<usize>) -> Result<Option<usize>, ApiError> {
    match limit {
        Some(n) if n == 0 || n > MAX_PAGE => Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_PAGE}"
        ))),
        other => Ok(other),
    }
}

/// Parses a DISCONNECT reason a server may send, given as decimal or `0x` hex.
fn parse_reason(text: &str) -> Result<ReasonCode, ApiError> {
    let text = text.trim();
    let byte = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse::<u8>(),
    };
    byte.ok()
        .and_then(ReasonCode::from_u8)
        .filter(|code| Disconnect::server_may_send(*code))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_reason",
                format!(
                    "reason: {text:?} is not an MQTT 5 DISCONNECT reason code a server may send \
                     (e.g. 0x98 administrative action, 0x8B server shutting down)"
                ),
            )
        })
}

/// List connected clients.
#[utoipa::path(
    get,
    path = "/v1/admin/clients",
    tag = "admin",
    params(ClientsParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of connected clients", body = Page<ClientInfo>),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn clients(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ClientsParams>,
) -> Result<Json<Page<ClientInfo>>, ApiError> {
    let query = ClientQuery {
        tenant: access.tenant_filter(p.tenant)?,
        listener: p.listener,
        client_id_prefix: p.client_id_prefix,
        address: p.address,
        cursor: p.cursor,
        limit: check_limit(p.limit)?,
    };
    Ok(Json(state.inner.gateway.clients(query).await?))
}

/// One connected client.
#[utoipa::path(
    get,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    params(("client_id" = String, Path, description = "MQTT client identifier"), TenantParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The client", body = ClientInfo),
        (status = 404, description = "`not_found`: no client with this id is connected",
         body = crate::error::ErrorBody),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn client(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(p): ApiQuery<TenantParams>,
) -> Result<Json<ClientInfo>, ApiError> {
    let tenant = access.tenant_for(p.tenant)?;
    state
        .inner
        .gateway
        .client(tenant.clone(), client_id.clone())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no client {client_id:?} of tenant {tenant:?} is connected"
            ))
        })
}

/// Disconnect a client and, on request, drop its session.
#[utoipa::path(
    delete,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    params(("client_id" = String, Path, description = "MQTT client identifier"), KickParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "What was done", body = KickOutcome),
        (status = 400, description = "`invalid_reason` or `bad_request`: a parameter is invalid",
         body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: nothing was disconnected or discarded",
         body = crate::error::ErrorBody),
        AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn kick(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(p): ApiQuery<KickParams>,
) -> Result<Json<KickOutcome>, ApiError> {
    let reason = match p.reason.as_deref() {
        Some(text) => parse_reason(text)?,
        None => ReasonCode::AdministrativeAction,
    };
    let discard = p.discard_session.unwrap_or(false);
    let tenant = access.tenant_for(p.tenant)?;
    // Operators' actions on clients are worth an audit line: which admin token did what.
    tracing::info!(
        admin_token = access.token,
        tenant = %tenant,
        client_id = %client_id,
        reason = reason.as_u8(),
        discard_session = discard,
        "admin API: disconnecting client"
    );
    let outcome = state
        .inner
        .gateway
        .kick(tenant.clone(), client_id.clone(), reason.as_u8(), discard)
        .await?;
    if !outcome.disconnected && !outcome.session_discarded {
        return Err(ApiError::not_found(format!(
            "no client {client_id:?} of tenant {tenant:?} is connected{}",
            if discard {
                " and it has no session"
            } else {
                ""
            }
        )));
    }
    Ok(Json(outcome))
}

/// The subscriptions of a session, online or not.
#[utoipa::path(
    get,
    path = "/v1/admin/clients/{client_id}/subscriptions",
    tag = "admin",
    params(("client_id" = String, Path, description = "MQTT client identifier"), TenantParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The session's subscriptions", body = SubscriptionList),
        (status = 404, description = "`not_found`: no session for this client id",
         body = crate::error::ErrorBody),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn subscriptions(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(p): ApiQuery<TenantParams>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let tenant = access.tenant_for(p.tenant)?;
    state
        .inner
        .gateway
        .subscriptions(tenant.clone(), client_id.clone())
        .await?
        .map(|subscriptions| Json(SubscriptionList { subscriptions }))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "client {client_id:?} of tenant {tenant:?} has no session"
            ))
        })
}

/// List sessions, online and offline.
#[utoipa::path(
    get,
    path = "/v1/admin/sessions",
    tag = "admin",
    params(SessionsParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "One page of sessions", body = Page<SessionInfo>),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn sessions(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<SessionsParams>,
) -> Result<Json<Page<SessionInfo>>, ApiError> {
    let query = SessionQuery {
        tenant: access.tenant_filter(p.tenant)?,
        client_id_prefix: p.client_id_prefix,
        online: p.online,
        cursor: p.cursor,
        limit: check_limit(p.limit)?,
    };
    Ok(Json(state.inner.gateway.sessions(query).await?))
}

/// List retained messages.
#[utoipa::path(
    get,
    path = "/v1/admin/retained",
    tag = "admin",
    params(AdminRetainedParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The matching retained messages", body = RetainedList),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn retained(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<AdminRetainedParams>,
) -> Result<Json<RetainedList>, ApiError> {
    // The admin API reads past the tenant's ACL: operators see what is stored.
    let caller = Caller {
        tenant: access.tenant_for(p.tenant)?,
        acl: None,
    };
    retained::read(&state, caller, p.filter.unwrap_or_else(|| "#".to_owned())).await
}

/// Delete the retained message of a topic.
#[utoipa::path(
    delete,
    path = "/v1/admin/retained/{*topic}",
    tag = "admin",
    params(("topic" = String, Path, description = "Topic name; may contain `/`"),
           DeleteRetainedParams),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no retained message at this topic",
         body = crate::error::ErrorBody),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn delete_retained(
    access: AdminAccess,
    State(state): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeleteRetainedParams>,
) -> Result<StatusCode, ApiError> {
    check_topic_name("topic", &topic)?;
    let tenant = access.tenant_for(p.tenant)?;
    tracing::info!(
        admin_token = access.token,
        tenant = %tenant,
        topic = %topic,
        "admin API: deleting retained message"
    );
    if state
        .inner
        .gateway
        .delete_retained(tenant.clone(), topic.clone())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no retained message at {topic:?} in tenant {tenant:?}"
        )))
    }
}

/// The engine's counters and gauges.
#[utoipa::path(
    get,
    path = "/v1/admin/stats",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Counters and gauges", body = GatewayStats),
        AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn stats(
    access: AdminAccess,
    State(state): State<AppState>,
) -> Result<Json<GatewayStats>, ApiError> {
    // Gateway-wide numbers say something about every tenant.
    access.require_unbound()?;
    Ok(Json(state.inner.gateway.stats().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_as_decimal_or_hex() {
        assert_eq!(
            parse_reason("0x98").unwrap(),
            ReasonCode::AdministrativeAction
        );
        assert_eq!(
            parse_reason("0X8b").unwrap(),
            ReasonCode::ServerShuttingDown
        );
        assert_eq!(
            parse_reason("152").unwrap(),
            ReasonCode::AdministrativeAction
        );
        assert_eq!(parse_reason("0").unwrap(), ReasonCode::Success);
    }

    #[test]
    fn reasons_a_server_may_not_send_are_refused() {
        // 0x04 is client-only; 0x01, 0x84 and 0x86 are reason codes of other packets; 0x05 is
        // no reason code; 256 and junk do not parse.
        for bad in [
            "0x04", "4", "0x01", "0x84", "0x86", "0x05", "256", "0x", "x98", "-1", "",
        ] {
            let e = parse_reason(bad).unwrap_err();
            assert_eq!(e.code, "invalid_reason", "{bad:?}");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(check_limit(None).unwrap(), None);
        assert_eq!(check_limit(Some(1)).unwrap(), Some(1));
        assert_eq!(check_limit(Some(MAX_PAGE)).unwrap(), Some(MAX_PAGE));
        assert!(check_limit(Some(0)).is_err());
        assert!(check_limit(Some(MAX_PAGE + 1)).is_err());
    }

    mod endpoints {
        use crate::gateway::{
            ClientQuery, GatewayStats, MessageProperties, RetainedMessage, SessionQuery,
        };
        use crate::testing::{
            ADMIN_TOKEN, Call, FakeGateway, app, call, client, session, subscription,
        };
        use axum::http::{Method, StatusCode};
        use bytes::Bytes;
        use serde_json::json;
        use std::sync::Mutex;

        fn populated() -> FakeGateway {
            FakeGateway {
                clients: vec![
                    client("sensor-1", "10.0.0.1:5000"),
                    client("sensor-2", "10.0.0.2:5000"),
                    client("phone-1", "10.0.1.1:6000"),
                ],
                sessions: vec![
                    session("sensor-1", true),
                    session("sensor-2", true),
                    session("phone-1", true),
                    session("gone-1", false),
                ],
                subscriptions: vec![
                    ("sensor-1".into(), vec![subscription("cmd/sensor-1/#")]),
                    ("gone-1".into(), vec![]),
                ],
                retained: Mutex::new(vec![RetainedMessage {
                    topic: "a/b/c".into(),
                    payload: Bytes::from_static(b"x"),
                    qos: 0,
                    properties: MessageProperties::default(),
                }]),
                stats: GatewayStats {
                    connections: 3,
                    sessions: 4,
                    ..GatewayStats::default()
                },
                ..FakeGateway::default()
            }
        }

        async fn admin(router: &axum::Router, method: Method, uri: &str) -> crate::testing::Reply {
            call(router, method, uri, Some(ADMIN_TOKEN), None).await
        }

        #[tokio::test]
        async fn clients_are_listed_with_filters_and_pages() {
            let (gateway, router) = app(populated());
            let r = admin(
                &router,
                Method::GET,
                "/v1/admin/clients?client_id_prefix=sensor-&address=10.0.0&limit=1",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            let page = r.json();
            assert_eq!(page["total"], 2);
            assert_eq!(page["items"][0]["client_id"], "sensor-1");
            assert_eq!(page["items"][0]["protocol_version"], "5.0");
            assert_eq!(page["items"].as_array().unwrap().len(), 1);
            let cursor = page["next_cursor"].as_str().unwrap().to_owned();
            let r = admin(
                &router,
                Method::GET,
                &format!("/v1/admin/clients?client_id_prefix=sensor-&limit=1&cursor={cursor}"),
            )
            .await;
            assert_eq!(r.json()["items"][0]["client_id"], "sensor-2");
            assert!(r.json().get("next_cursor").is_none());
            assert_eq!(
                gateway.calls()[0],
                Call::Clients(ClientQuery {
                    client_id_prefix: Some("sensor-".into()),
                    address: Some("10.0.0".into()),
                    limit: Some(1),
                    ..ClientQuery::default()
                })
            );
            let r = admin(
                &router,
                Method::GET,
                "/v1/admin/clients?tenant=default&listener=tcp%3A0.0.0.0%3A1883",
            )
            .await;
            assert_eq!(r.json()["total"], 3);
        }

        #[tokio::test]
        async fn bad_listing_parameters_are_400() {
            let (gateway, router) = app(populated());
            for uri in [
                "/v1/admin/clients?limit=0",
                "/v1/admin/clients?limit=1001",
                "/v1/admin/clients?limit=ten",
                "/v1/admin/clients?client_id=sensor-1",
                "/v1/admin/sessions?online=maybe",
            ] {
                let r = admin(&router, Method::GET, uri).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
                assert_eq!(r.error_code(), "bad_request", "{uri}");
            }
            assert!(gateway.calls().is_empty());
        }

        #[tokio::test]
        async fn one_client_or_404() {
            let (gateway, router) = app(populated());
            let r = admin(&router, Method::GET, "/v1/admin/clients/phone-1").await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["address"], "10.0.1.1:6000");
            assert_eq!(r.json()["bytes_out"], 20);
            let r = admin(&router, Method::GET, "/v1/admin/clients/nobody").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            assert_eq!(r.error_code(), "not_found");
            // Percent-encoded ids arrive decoded.
            admin(&router, Method::GET, "/v1/admin/clients/a%2Fb%20c").await;
            assert_eq!(gateway.calls()[2], Call::Client("a/b c".into()));
        }

        #[tokio::test]
        async fn kick_sends_0x98_unless_told_otherwise() {
            let (gateway, router) = app(populated());
            let r = admin(&router, Method::DELETE, "/v1/admin/clients/sensor-1").await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                r.json(),
                json!({"disconnected": true, "session_discarded": false})
            );
            let r = admin(
                &router,
                Method::DELETE,
                "/v1/admin/clients/sensor-2?reason=0x8B&discard_session=true",
            )
            .await;
            assert_eq!(
                r.json(),
                json!({"disconnected": true, "session_discarded": true})
            );
            let r = admin(
                &router,
                Method::DELETE,
                "/v1/admin/clients/gone-1?reason=137&discard_session=true",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                r.json(),
                json!({"disconnected": false, "session_discarded": true})
            );
            let kick = |id: &str, reason, discard_session| Call::Kick {
                client_id: id.into(),
                reason,
                discard_session,
            };
            assert_eq!(
                gateway.calls(),
                vec![
                    kick("sensor-1", 0x98, false),
                    kick("sensor-2", 0x8B, true),
                    kick("gone-1", 0x89, true),
                ]
            );
        }

        #[tokio::test]
        async fn kick_is_404_when_nothing_was_done_and_400_for_a_bad_reason() {
            let (gateway, router) = app(populated());
            let r = admin(&router, Method::DELETE, "/v1/admin/clients/gone-1").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "offline, session kept");
            let r = admin(
                &router,
                Method::DELETE,
                "/v1/admin/clients/nobody?discard_session=true",
            )
            .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            assert_eq!(gateway.calls().len(), 2);
            for query in [
                "reason=0x04",
                "reason=0x100",
                "reason=abc",
                "discard_session=yes",
            ] {
                let uri = format!("/v1/admin/clients/sensor-1?{query}");
                let r = admin(&router, Method::DELETE, &uri).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
            }
            let r = admin(
                &router,
                Method::DELETE,
                "/v1/admin/clients/sensor-1?reason=4",
            )
            .await;
            assert_eq!(r.error_code(), "invalid_reason");
            assert_eq!(gateway.calls().len(), 2, "bad requests reach nothing");
        }

        #[tokio::test]
        async fn subscriptions_of_a_session_or_404() {
            let (_, router) = app(populated());
            let r = admin(
                &router,
                Method::GET,
                "/v1/admin/clients/sensor-1/subscriptions",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["subscriptions"][0]["filter"], "cmd/sensor-1/#");
            assert_eq!(r.json()["subscriptions"][0]["qos"], 1);
            let r = admin(
                &router,
                Method::GET,
                "/v1/admin/clients/gone-1/subscriptions",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json(), json!({"subscriptions": []}));
            let r = admin(
                &router,
                Method::GET,
                "/v1/admin/clients/nobody/subscriptions",
            )
            .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
        }

        #[tokio::test]
        async fn sessions_are_listed_online_and_offline() {
            let (gateway, router) = app(populated());
            let r = admin(&router, Method::GET, "/v1/admin/sessions").await;
            assert_eq!(r.json()["total"], 4);
            let r = admin(&router, Method::GET, "/v1/admin/sessions?online=false").await;
            assert_eq!(r.json()["total"], 1);
            assert_eq!(r.json()["items"][0]["client_id"], "gone-1");
            assert_eq!(r.json()["items"][0]["expires_at_ms"], 1_700_000_360_000u64);
            assert_eq!(
                gateway.calls()[1],
                Call::Sessions(SessionQuery {
                    online: Some(false),
                    ..SessionQuery::default()
                })
            );
        }

        #[tokio::test]
        async fn retained_are_listed_with_hash_by_default_and_deleted_by_topic() {
            let (gateway, router) = app(populated());
            let r = admin(&router, Method::GET, "/v1/admin/retained").await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["messages"][0]["topic"], "a/b/c");
            let r = admin(&router, Method::GET, "/v1/admin/retained?filter=a%2F%2B").await;
            assert_eq!(r.json(), json!({"messages": []}));
            let r = admin(&router, Method::DELETE, "/v1/admin/retained/a/b/c").await;
            assert_eq!(r.status, StatusCode::NO_CONTENT);
            assert!(r.body.is_empty());
            let r = admin(&router, Method::DELETE, "/v1/admin/retained/a/b/c").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            let r = admin(&router, Method::DELETE, "/v1/admin/retained/a/%2B").await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert_eq!(r.error_code(), "invalid_topic");
            assert_eq!(
                gateway.calls(),
                vec![
                    Call::Retained("#".into()),
                    Call::Retained("a/+".into()),
                    Call::DeleteRetained("a/b/c".into()),
                    Call::DeleteRetained("a/b/c".into()),
                ]
            );
        }

        #[tokio::test]
        async fn stats_are_the_gateway_counters() {
            let (_, router) = app(populated());
            let r = admin(&router, Method::GET, "/v1/admin/stats").await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["connections"], 3);
            assert_eq!(r.json()["sessions"], 4);
            assert_eq!(r.json()["messages_dropped"], 0);
        }
    }
}
