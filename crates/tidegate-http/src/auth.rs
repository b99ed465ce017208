//! Bearer-token access: [`PublishAccess`] and [`AdminAccess`] extractors.
//!
//! Place in the data flow: `request -> extractor (this module) -> handler`. A handler that takes
//! one of these runs only for a request carrying a token of that kind; every other request gets
//! 401 (no or unknown token) or 403 (a token of the other kind). Health and metrics take none.
//! Tokens are compared in constant time so their bytes cannot be guessed from response times.
//! With no token configured at all, every request is refused (fail closed): `tidegate serve`
//! generates tokens when the file names none.
//!
//! Tokens of `[[http.tokens]]` are bound to a tenant (issue 7): [`PublishAccess::caller`] then
//! carries the tenant and the ACL identity (`username`, `http:<index>`) every topic is checked
//! with, and [`AdminAccess::tenant`] restricts the admin API to that tenant (403 elsewhere).
//!
//! Rate limits ([`crate::limit`]) are applied here, where the caller is known: a recognised
//! token is counted against its own limit; a failed authentication against the client's
//! address (`ConnectInfo<SocketAddr>`, put there by the server), and past that limit the answer
//! is 429 instead of 401/403, so guessing tokens is slow.

use crate::config::{TokenConfig, TokenKind};
use crate::error::ApiError;
use crate::gateway::{AclIdentity, Caller};
use crate::limit;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The request carries a publish token: it may publish, subscribe, poll and read retained.
#[derive(Debug, Clone)]
pub(crate) struct PublishAccess {
    /// Index of the token among the publish tokens (`http.publish_tokens`, then the publish
    /// entries of `http.tokens`); rate limits are kept per token.
    pub(crate) token: usize,
    /// Who it acts for: its tenant and, when bound, its ACL identity.
    pub(crate) caller: Caller,
}

/// The request carries an admin token: it may use `/v1/admin`.
#[derive(Debug, Clone)]
pub(crate) struct AdminAccess {
    /// Index of the token among the admin tokens (`http.admin_tokens`, then the admin entries
    /// of `http.tokens`).
    pub(crate) token: usize,
    /// `Some`: the only tenant it may see and manage; `None`: every tenant.
    pub(crate) tenant: Option<String>,
}

impl AdminAccess {
    /// The tenant a request about one client or retained message acts in: `requested` (the
    /// `?tenant=` parameter, default `default`, or the token's own tenant), 403 when the token
    /// is bound to another one.
    pub(crate) fn tenant_for(&self, requested: Option<String>) -> Result<String, ApiError> {
        match (&self.tenant, requested) {
            (None, requested) => {
                Ok(requested.unwrap_or_else(|| tidegate_auth::DEFAULT_TENANT_ID.to_owned()))
            }
            (Some(own), None) => Ok(own.clone()),
            (Some(own), Some(requested)) if *own == requested => Ok(requested),
            (Some(own), Some(_)) => Err(self.elsewhere(own)),
        }
    }

    /// The tenant filter of a listing: the token's own tenant when it is bound (403 when
    /// another is asked for), else `requested` as given (`None`: every tenant).
    pub(crate) fn tenant_filter(
        &self,
        requested: Option<String>,
    ) -> Result<Option<String>, ApiError> {
        match &self.tenant {
            None => Ok(requested),
            Some(_) => self.tenant_for(requested).map(Some),
        }
    }

    /// 403 unless the token may manage tenant `id`.
    pub(crate) fn check_tenant(&self, id: &str) -> Result<(), ApiError> {
        match &self.tenant {
            Some(own) if own != id => Err(self.elsewhere(own)),
            _ => Ok(()),
        }
    }

    /// 403 unless the token manages every tenant (gateway-wide reads and tenant creation).
    pub(crate) fn require_unbound(&self) -> Result<(), ApiError> {
        match &self.tenant {
            Some(own) => Err(ApiError::forbidden(format!(
                "this admin token is bound to tenant {own:?}; this operation concerns the \
                 whole gateway"
            ))),
            None => Ok(()),
        }
    }

    fn elsewhere(&self, own: &str) -> ApiError {
        ApiError::forbidden(format!(
            "this admin token is bound to tenant {own:?} and cannot act in another"
        ))
    }
}

/// The bearer token of `parts`, if the header is there and well-formed.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Byte comparison whose time does not depend on where the first difference is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The index (and binding) of `token` in `tokens` (every entry is compared, match or not).
fn find<'a>(
    tokens: impl Iterator<Item = (&'a str, Option<&'a TokenConfig>)>,
    token: &str,
) -> Option<(usize, Option<&'a TokenConfig>)> {
    let mut found = None;
    for (i, (t, binding)) in tokens.enumerate() {
        if constant_time_eq(t.as_bytes(), token.as_bytes()) && found.is_none() {
            found = Some((i, binding));
        }
    }
    found
}

/// The address the request came from, when the server recorded it.
fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Finds the bearer token of `parts` among the tokens of `kind`: its index and binding, or 401
/// (none or unknown) / 403 (a token of the other kind, `wrong_kind` says why), rate limited
/// both ways.
fn authenticate<'a>(
    parts: &Parts,
    state: &'a AppState,
    kind: TokenKind,
    wrong_kind: &str,
) -> Result<(usize, Option<&'a TokenConfig>), ApiError> {
    let config = &state.inner.config;
    let (other, limiter) = match kind {
        TokenKind::Publish => (TokenKind::Admin, limit::TokenKind::Publish),
        TokenKind::Admin => (TokenKind::Publish, limit::TokenKind::Admin),
    };
    let failure = match bearer(parts) {
        None => ApiError::unauthorized(),
        Some(token) => match find(config.tokens_of(kind), token) {
            Some((i, binding)) => {
                state.inner.limits.check_token(limiter, i)?;
                return Ok((i, binding));
            }
            None if find(config.tokens_of(other), token).is_some() => {
                ApiError::forbidden(wrong_kind)
            }
            None => ApiError::unauthorized(),
        },
    };
    state.inner.limits.check_failure(peer_ip(parts))?;
    Err(failure)
}

impl FromRequestParts<AppState> for PublishAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(
            parts,
            state,
            TokenKind::Publish,
            "an admin token cannot publish or subscribe; use a publish token",
        )
        .map(|(token, binding)| PublishAccess {
            token,
            caller: match binding {
                None => Caller::unrestricted(),
                Some(b) => Caller {
                    tenant: b.tenant().to_owned(),
                    acl: Some(AclIdentity {
                        username: b.username.clone(),
                        client_id: format!("http:{token}"),
                    }),
                },
            },
        })
    }
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(
            parts,
            state,
            TokenKind::Admin,
            "a publish token cannot use the admin API; use an admin token",
        )
        .map(|(token, binding)| AdminAccess {
            token,
            tenant: binding.map(|b| b.tenant().to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }

    #[test]
    fn find_gives_the_index_of_the_match() {
        let tokens = ["aa", "bb", "cc"];
        let list = || tokens.iter().map(|t| (*t, None));
        assert_eq!(find(list(), "bb"), Some((1, None)));
        assert_eq!(find(list(), "cc"), Some((2, None)));
        assert_eq!(find(list(), "b"), None);
        assert_eq!(find(std::iter::empty(), "aa"), None);
    }

    #[test]
    fn a_bound_admin_token_stays_in_its_tenant() {
        let bound = AdminAccess {
            token: 0,
            tenant: Some("acme".into()),
        };
        assert_eq!(bound.tenant_for(None).unwrap(), "acme");
        assert_eq!(bound.tenant_for(Some("acme".into())).unwrap(), "acme");
        assert_eq!(
            bound.tenant_for(Some("other".into())).unwrap_err().code,
            "forbidden"
        );
        assert_eq!(bound.tenant_filter(None).unwrap().as_deref(), Some("acme"));
        assert!(bound.tenant_filter(Some("default".into())).is_err());
        assert!(bound.check_tenant("acme").is_ok());
        assert!(bound.check_tenant("other").is_err());
        assert!(bound.require_unbound().is_err());

        let all = AdminAccess {
            token: 0,
            tenant: None,
        };
        assert_eq!(all.tenant_for(None).unwrap(), "default");
        assert_eq!(all.tenant_for(Some("x".into())).unwrap(), "x");
        assert_eq!(all.tenant_filter(None).unwrap(), None);
        assert!(all.check_tenant("x").is_ok());
        assert!(all.require_unbound().is_ok());
    }

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = axum::http::Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_only() {
        assert_eq!(bearer(&parts(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&parts(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(&parts(Some("Basic abc"))), None);
        assert_eq!(bearer(&parts(Some("Bearer "))), None);
        assert_eq!(bearer(&parts(Some("Bearer"))), None);
        assert_eq!(bearer(&parts(None)), None);
    }

    mod endpoints {
        use crate::config::{HttpConfig, TokenConfig, TokenKind};
        use crate::gateway::{AclIdentity, Caller};
        use crate::testing::{
            ADMIN_TOKEN, Call, FakeGateway, PUBLISH_TOKEN, app_with, call, client, config,
        };
        use axum::http::{Method, StatusCode};
        use serde_json::json;

        const ACME_PUBLISH: &str = "acme-publish-token";
        const ACME_ADMIN: &str = "acme-admin-token";

        /// The test configuration plus a publish and an admin token bound to tenant `acme`.
        fn bound_config() -> HttpConfig {
            let mut config = config();
            config.tokens = vec![
                TokenConfig {
                    token: ACME_PUBLISH.into(),
                    kind: TokenKind::Publish,
                    tenant: Some("acme".into()),
                    username: Some("backend".into()),
                },
                TokenConfig {
                    token: ACME_ADMIN.into(),
                    kind: TokenKind::Admin,
                    tenant: Some("acme".into()),
                    username: None,
                },
            ];
            config
        }

        fn two_tenants() -> FakeGateway {
            let mut acme = client("phone", "10.0.0.9:1000");
            acme.tenant = "acme".into();
            FakeGateway {
                clients: vec![client("phone", "10.0.0.1:1000"), acme],
                ..FakeGateway::default()
            }
        }

        #[tokio::test]
        async fn a_bound_publish_token_publishes_as_its_tenant_identity() {
            let (gateway, router) = app_with(FakeGateway::default(), bound_config());
            let body = json!({"topic": "a/b", "payload": "x"});
            let r = call(
                &router,
                Method::POST,
                "/v1/publish",
                Some(ACME_PUBLISH),
                Some(body),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            let r = call(
                &router,
                Method::GET,
                "/v1/retained?filter=a%2F%23",
                Some(ACME_PUBLISH),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            // Two plain publish tokens come first: the bound one is number 2.
            let acme = Caller {
                tenant: "acme".into(),
                acl: Some(AclIdentity {
                    username: Some("backend".into()),
                    client_id: "http:2".into(),
                }),
            };
            let calls = gateway.calls();
            assert_eq!(calls[0], Call::As(acme.clone()));
            assert!(matches!(calls[1], Call::Publish(_)));
            assert_eq!(calls[2], Call::As(acme));
            assert_eq!(calls[3], Call::Retained("a/#".into()));
            // A plain token is still the default tenant with every topic allowed.
            let body = json!({"topic": "a/b", "payload": "x"});
            call(
                &router,
                Method::POST,
                "/v1/publish",
                Some(PUBLISH_TOKEN),
                Some(body),
            )
            .await;
            assert!(matches!(gateway.calls()[4], Call::Publish(_)));
            // The admin API is no place for a publish token, bound or not.
            let r = call(
                &router,
                Method::GET,
                "/v1/admin/clients",
                Some(ACME_PUBLISH),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN);
        }

        #[tokio::test]
        async fn a_bound_token_streams_from_its_tenant_under_its_acl() {
            let gateway = FakeGateway {
                denied: vec!["secret/#".into()],
                ..FakeGateway::default()
            };
            let (gateway, router) = app_with(gateway, bound_config());
            for uri in [
                "/v1/subscribe?filter=a&filter=secret/%23",
                "/v1/poll?filter=secret/%23&timeout=0",
            ] {
                let r = call(&router, Method::GET, uri, Some(ACME_PUBLISH), None).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
                assert_eq!(r.error_code(), "not_authorized", "{uri}");
                assert!(
                    r.json()["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("secret/#")
                );
            }
            assert!(gateway.tap_tenants().is_empty(), "nothing opened");
            let r = call(
                &router,
                Method::GET,
                "/v1/poll?filter=a&timeout=0",
                Some(ACME_PUBLISH),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            // A plain token's filters are not checked, and it reads the default tenant.
            let r = call(
                &router,
                Method::GET,
                "/v1/poll?filter=secret/%23&timeout=0",
                Some(PUBLISH_TOKEN),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(gateway.tap_tenants(), ["acme", "default"]);
        }

        #[tokio::test]
        async fn tenant_parameters_reach_the_gateway() {
            let (gateway, router) = app_with(two_tenants(), bound_config());
            let admin =
                |uri: &'static str, method| call(&router, method, uri, Some(ADMIN_TOKEN), None);
            let r = admin("/v1/admin/clients/phone?tenant=acme", Method::GET).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["address"], "10.0.0.9:1000");
            let r = admin("/v1/admin/clients/phone", Method::GET).await;
            assert_eq!(
                r.json()["address"],
                "10.0.0.1:1000",
                "default tenant by default"
            );
            let r = admin("/v1/admin/clients/phone?tenant=nowhere", Method::DELETE).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            admin(
                "/v1/admin/clients/phone/subscriptions?tenant=acme",
                Method::GET,
            )
            .await;
            admin("/v1/admin/retained?tenant=acme", Method::GET).await;
            admin("/v1/admin/retained/a/b?tenant=acme", Method::DELETE).await;
            let r = admin("/v1/admin/clients?tenant=acme", Method::GET).await;
            assert_eq!(r.json()["total"], 1);
            let tenant = |t: &str| {
                Call::As(Caller {
                    tenant: t.into(),
                    acl: None,
                })
            };
            let calls = gateway.calls();
            assert_eq!(calls[0], tenant("acme"));
            assert_eq!(calls[1], Call::Client("phone".into()));
            assert_eq!(calls[2], Call::Client("phone".into()), "no As: default");
            assert_eq!(calls[3], tenant("nowhere"));
            assert!(matches!(calls[4], Call::Kick { .. }));
            for (i, call) in [
                (6, Call::Subscriptions("phone".into())),
                (8, Call::Retained("#".into())),
                (10, Call::DeleteRetained("a/b".into())),
            ] {
                assert_eq!(calls[i - 1], tenant("acme"), "{i}");
                assert_eq!(calls[i], call, "{i}");
            }
        }

        #[tokio::test]
        async fn a_bound_admin_token_sees_and_manages_its_tenant_only() {
            let (gateway, router) = app_with(two_tenants(), bound_config());
            let admin =
                |uri: &'static str, method| call(&router, method, uri, Some(ACME_ADMIN), None);
            let r = admin("/v1/admin/clients", Method::GET).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json()["total"], 1, "narrowed to acme");
            assert_eq!(r.json()["items"][0]["tenant"], "acme");
            let r = admin("/v1/admin/clients/phone", Method::GET).await;
            assert_eq!(
                r.json()["address"],
                "10.0.0.9:1000",
                "its own tenant by default"
            );
            for (uri, method) in [
                ("/v1/admin/clients?tenant=default", Method::GET),
                ("/v1/admin/sessions?tenant=default", Method::GET),
                ("/v1/admin/clients/phone?tenant=default", Method::GET),
                ("/v1/admin/clients/phone?tenant=default", Method::DELETE),
                ("/v1/admin/retained?tenant=default", Method::GET),
                ("/v1/admin/retained/a?tenant=default", Method::DELETE),
                ("/v1/admin/stats", Method::GET),
                ("/v1/admin/tenants/default", Method::GET),
                ("/v1/admin/tenants/acme", Method::DELETE),
            ] {
                let r = admin(uri, method.clone()).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {uri}");
                assert_eq!(r.error_code(), "forbidden", "{method} {uri}");
            }
            let r = call(
                &router,
                Method::POST,
                "/v1/admin/tenants",
                Some(ACME_ADMIN),
                Some(json!({"id": "new"})),
            )
            .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN);
            let calls = gateway.calls();
            assert_eq!(
                calls.len(),
                3,
                "the refused requests reach nothing: {calls:?}"
            );
        }
    }
}
