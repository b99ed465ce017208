//! Verification of a JWT sent as the MQTT password.
//!
//! Place in the data flow: [`crate::Tenants::resolve`] may read a token's tenant claim
//! (unverified, [`peek_claim`]) to route the client; then [`crate::Tenant::authenticate`] calls
//! [`JwtVerifier::verify`] with the tenant's keys and the current unix time, and turns a
//! [`VerifiedToken`] into the client's username (`sub`), ACL (the ACL claim in front of the
//! tenant's rules) and expiry (the server closes the connection with 0xA0 when it passes).
//!
//! # Rules
//! - Accepted algorithms: HS256, RS256 and ES256, nothing else (no `none`, and the key kind is
//!   chosen from the algorithm, so an RSA public key can never be used as an HMAC secret).
//! - Key choice: the token's `kid` selects a JWKS key with that id; keys without an id (the PEM
//!   keys and the secret of the configuration, JWKS keys without `kid`) are tried when no key has
//!   the token's `kid`, or when the token has none.
//! - Time is passed in (sans-IO) and checked here rather than by the JWT library: `exp` is
//!   optional but honoured (refused from the second it names, plus `leeway_secs`), `nbf` too.
//! - `aud` / `iss` are required and checked only when the tenant configures `audience` /
//!   `issuer`.
//! - `sub`, the tenant claim and the ACL claim are optional; when present they must have the
//!   right type, or the token is refused.

use crate::acl::{AclClaim, AclRule};
use crate::config::{ConfigError, JwtConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::fmt;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// An algorithm other than HS256, RS256 and ES256.
    #[error("algorithm {0} is not accepted (HS256, RS256 or ES256)")]
    Algorithm(String),
    /// The tenant has no key for the token's algorithm (and `kid`).
    #[error("no key for alg {alg} and kid {kid:?}")]
    NoKey {
        /// The token's algorithm.
        alg: String,
        /// The token's key id.
        kid: Option<String>,
    },
    /// No candidate key verifies the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("expired at {0}")]
    Expired(u64),
    /// `nbf` is still in the future.
    #[error("not valid before {0}")]
    NotYetValid(u64),
    /// A claim is missing, of the wrong type or with the wrong value.
    #[error("claim {claim}: {reason}")]
    BadClaim {
        /// The claim.
        claim: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`: the username for ACL substitution.
    pub subject: Option<String>,
    /// The tenant claim.
    pub tenant: Option<String>,
    /// Unix second from which the token is no longer accepted (`exp` plus the leeway).
    pub expires_at: Option<u64>,
    /// Rules of the ACL claim, when the token has one.
    pub acl: Option<Vec<AclRule>>,
}

struct Key {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// The keys and claim settings of one tenant.
pub struct JwtVerifier {
    keys: Vec<Key>,
    tenant_claim: String,
    acl_claim: String,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self.keys.iter().map(|k| (k.alg, &k.kid)).collect();
        f.debug_struct("JwtVerifier")
            .field("keys", &keys)
            .field("tenant_claim", &self.tenant_claim)
            .field("acl_claim", &self.acl_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier, reading `jwks_file` if configured; `key` names the table in errors
    /// (`tenants[acme].jwt`).
    pub fn load(config: &JwtConfig, key: &str) -> Result<JwtVerifier, ConfigError> {
        let jwks = match &config.jwks_file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        key: format!("{key}.jwks_file"),
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        JwtVerifier::new(config, jwks.as_deref())
            .map_err(|(field, reason)| ConfigError::invalid(format!("{key}.{field}"), reason))
    }

    /// Builds the verifier from the configuration and the JWKS document's text (pure). The
    /// error names the offending key of the table.
    pub fn new(
        config: &JwtConfig,
        jwks: Option<&str>,
    ) -> Result<JwtVerifier, (&'static str, String)> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            keys.push(Key {
                alg: Algorithm::HS256,
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(pem) = &config.rs256_public_key {
            let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| ("rs256_public_key", e.to_string()))?;
            keys.push(Key {
                alg: Algorithm::RS256,
                kid: None,
                key,
            });
        }
        if let Some(pem) = &config.es256_public_key {
            let key = DecodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|e| ("es256_public_key", e.to_string()))?;
            keys.push(Key {
                alg: Algorithm::ES256,
                kid: None,
                key,
            });
        }
        if let Some(text) = jwks {
            let from_set = parse_jwks(text).map_err(|e| ("jwks_file", e))?;
            keys.extend(from_set);
        }
        if keys.is_empty() {
            return Err(("jwks_file", "no usable key".into()));
        }
        Ok(JwtVerifier {
            keys,
            tenant_claim: config.tenant_claim.clone(),
            acl_claim: config.acl_claim.clone(),
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway: config.leeway_secs,
        })
    }

    /// The claim naming the tenant.
    pub fn tenant_claim(&self) -> &str {
        &self.tenant_claim
    }

    /// Verifies `token` at unix time `now` (see the module docs for the rules).
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let of_alg = || self.keys.iter().filter(|k| k.alg == header.alg);
        let by_kid: Vec<&Key> = match &header.kid {
            Some(kid) => of_alg()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&Key> = if by_kid.is_empty() {
            of_alg()
                .filter(|k| k.kid.is_none() || header.kid.is_none())
                .collect()
        } else {
            by_kid
        };
        if candidates.is_empty() {
            return Err(JwtError::NoKey {
                alg: format!("{:?}", header.alg),
                kid: header.kid,
            });
        }
        let validation = self.validation(header.alg);
        let mut last = JwtError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.read_claims(&data.claims, now),
                Err(e) => last = map_error(e.kind()),
            }
            // A claim error is the token's, not the key's: no other key will do better.
            if !matches!(last, JwtError::BadSignature) {
                break;
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        // Time is checked in `read_claims` against the `now` passed in.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims.clear();
        v.validate_aud = false;
        if let Some(aud) = &self.audience {
            v.validate_aud = true;
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        v
    }

    fn read_claims(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<VerifiedToken, JwtError> {
        let expires_at = numeric_date(claims, "exp")?.map(|exp| exp.saturating_add(self.leeway));
        if let Some(limit) = expires_at
            && now >= limit
        {
            return Err(JwtError::Expired(limit - self.leeway));
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now.saturating_add(self.leeway) < nbf
        {
            return Err(JwtError::NotYetValid(nbf));
        }
        let subject = string_claim(claims, "sub")?;
        let tenant = string_claim(claims, &self.tenant_claim)?;
        let acl = match claims.get(&self.acl_claim) {
            None | Some(Value::Null) => None,
            Some(value) => {
                let bad = |e: crate::acl::AclError| JwtError::BadClaim {
                    claim: self.acl_claim.clone(),
                    reason: e.to_string(),
                };
                Some(
                    AclClaim::from_json(value)
                        .map_err(bad)?
                        .into_rules()
                        .map_err(bad)?,
                )
            }
        };
        Ok(VerifiedToken {
            subject,
            tenant,
            expires_at,
            acl,
        })
    }
}

/// The password as a token, when it has the shape of a JWT (three dot-separated parts whose
/// first is a JSON header with an `alg`). Only a shape test: nothing is verified.
pub fn looks_like_jwt(password: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(password).ok()?;
    if text.split('.').count() != 3 {
        return None;
    }
    jsonwebtoken::decode_header(text).ok().map(|_| text)
}

/// The string value of `claim` in an **unverified** token: for routing a client to the tenant
/// whose keys will then verify it, never for a decision.
pub fn peek_claim(token: &str, claim: &str) -> Option<String> {
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    claims.get(claim)?.as_str().map(str::to_owned)
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEcdsaKey => {
            JwtError::BadSignature
        }
        ErrorKind::InvalidAudience => JwtError::BadClaim {
            claim: "aud".into(),
            reason: "not the configured audience".into(),
        },
        ErrorKind::InvalidIssuer => JwtError::BadClaim {
            claim: "iss".into(),
            reason: "not the configured issuer".into(),
        },
        ErrorKind::MissingRequiredClaim(claim) => JwtError::BadClaim {
            claim: claim.clone(),
            reason: "missing".into(),
        },
        other => JwtError::Malformed(format!("{other:?}")),
    }
}

/// A NumericDate claim (seconds, possibly fractional per RFC 7519) as whole seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, JwtError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let bad = || JwtError::BadClaim {
        claim: name.to_owned(),
        reason: "not a non-negative number of seconds".into(),
    };
    if let Some(secs) = value.as_u64() {
        return Ok(Some(secs));
    }
    match value.as_f64() {
        // Truncation is the intent: a fractional second counts as the second it is in.
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
        _ => Err(bad()),
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::BadClaim {
            claim: name.to_owned(),
            reason: "not a string".into(),
        }),
    }
}

/// The usable keys of a JWKS document: RSA keys for RS256, P-256 keys for ES256, `oct` keys
/// for HS256; keys marked for encryption, with another `alg`, or of other kinds are skipped
/// (a JWKS endpoint often publishes more than a gateway needs).
fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            _ => continue,
        };
        let declared = jwk.common.key_algorithm;
        let expected = match alg {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            Algorithm::ES256 => KeyAlgorithm::ES256,
            _ => KeyAlgorithm::HS256,
        };
        if declared.is_some_and(|d| d != expected) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(Key {
            alg,
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    if keys.is_empty() {
        return Err("no RS256, ES256 or HS256 key in the set".into());
    }
    Ok(keys)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::OnceLock;

    pub(crate) const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

    /// A test RSA key pair (generated once per test run: it takes a while in debug builds).
    pub(crate) struct RsaPair {
        pub(crate) private_pem: String,
        pub(crate) public_pem: String,
        pub(crate) n: Vec<u8>,
        pub(crate) e: Vec<u8>,
    }

    pub(crate) fn rsa_pair() -> &'static RsaPair {
        static PAIR: OnceLock<RsaPair> = OnceLock::new();
        PAIR.get_or_init(|| {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            use rsa::traits::PublicKeyParts;
            let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
            let public = private.to_public_key();
            RsaPair {
                private_pem: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
                n: public.n().to_bytes_be(),
                e: public.e().to_bytes_be(),
            }
        })
    }

    /// A fresh P-256 key pair: (private PKCS#8 PEM, public PEM, x, y).
    pub(crate) fn ec_pair() -> (String, String, Vec<u8>, Vec<u8>) {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let public = secret.public_key();
        let point = p256::EncodedPoint::from(public);
        (
            secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public.to_public_key_pem(LineEnding::LF).unwrap(),
            point.x().unwrap().to_vec(),
            point.y().unwrap().to_vec(),
        )
    }

    pub(crate) fn hs_token(claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    fn token_with(alg: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn hs_config() -> JwtConfig {
        JwtConfig {
            hs256_secret: Some(SECRET.into()),
            ..JwtConfig::default()
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn hs256_token_is_verified_and_its_claims_read() {
        let v = JwtVerifier::new(&hs_config(), None).unwrap();
        let token = hs_token(&json!({
            "sub": "phone1", "tenant": "acme", "exp": NOW + 60,
            "acl": {"pub": ["devices/%u/#"]}
        }));
        let t = v.verify(&token, NOW).unwrap();
        assert_eq!(t.subject.as_deref(), Some("phone1"));
        assert_eq!(t.tenant.as_deref(), Some("acme"));
        assert_eq!(t.expires_at, Some(NOW + 60));
        let acl = t.acl.unwrap();
        assert_eq!(acl.len(), 1);
        assert_eq!(acl[0].filter(), "devices/%u/#");
    }

    #[test]
    fn a_wrong_secret_or_a_tampered_token_is_refused() {
        let other = JwtConfig {
            hs256_secret: Some("another-secret-that-is-32-bytes-long".into()),
            ..JwtConfig::default()
        };
        let token = hs_token(&json!({"sub": "a"}));
        let v = JwtVerifier::new(&other, None).unwrap();
        assert_eq!(v.verify(&token, NOW), Err(JwtError::BadSignature));
        let good = JwtVerifier::new(&hs_config(), None).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert_eq!(
            good.verify(&parts.join("."), NOW),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn expiry_and_not_before_use_the_time_passed_in() {
        let v = JwtVerifier::new(&hs_config(), None).unwrap();
        let token = hs_token(&json!({"exp": NOW, "nbf": NOW - 100}));
        assert!(v.verify(&token, NOW - 1).is_ok());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::Expired(NOW)));
        assert_eq!(
            v.verify(&token, NOW - 101),
            Err(JwtError::NotYetValid(NOW - 100))
        );
        let lenient = JwtVerifier::new(
            &JwtConfig {
                leeway_secs: 30,
                ..hs_config()
            },
            None,
        )
        .unwrap();
        let t = lenient.verify(&token, NOW + 29).unwrap();
        assert_eq!(t.expires_at, Some(NOW + 30));
        assert!(lenient.verify(&token, NOW - 120).is_ok());
        // Fractional NumericDate.
        let frac = hs_token(&json!({"exp": (NOW as f64) + 0.5}));
        assert!(v.verify(&frac, NOW - 1).is_ok());
        assert!(v.verify(&frac, NOW).is_err());
        // No exp: never expires.
        let forever = hs_token(&json!({"sub": "x"}));
        assert_eq!(v.verify(&forever, u64::MAX).unwrap().expires_at, None);
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused() {
        let v = JwtVerifier::new(&hs_config(), None).unwrap();
        for (claims, claim) in [
            (json!({"exp": "tomorrow"}), "exp"),
            (json!({"exp": -5}), "exp"),
            (json!({"sub": 7}), "sub"),
            (json!({"tenant": ["a"]}), "tenant"),
            (json!({"acl": {"pub": ["a/#/b"]}}), "acl"),
            (json!({"acl": {"read": ["a"]}}), "acl"),
        ] {
            let err = v.verify(&hs_token(&claims), NOW).unwrap_err();
            assert!(
                matches!(&err, JwtError::BadClaim { claim: c, .. } if c == claim),
                "{claims}: {err:?}"
            );
        }
    }

    #[test]
    fn custom_claim_names_and_audience_and_issuer() {
        let config = JwtConfig {
            tenant_claim: "org".into(),
            acl_claim: "perm".into(),
            audience: Some("mqtt".into()),
            issuer: Some("https://idp".into()),
            ..hs_config()
        };
        let v = JwtVerifier::new(&config, None).unwrap();
        let good = hs_token(&json!({
            "org": "acme", "perm": {"sub": ["x"]}, "aud": "mqtt", "iss": "https://idp"
        }));
        let t = v.verify(&good, NOW).unwrap();
        assert_eq!(t.tenant.as_deref(), Some("acme"));
        assert_eq!(t.acl.unwrap().len(), 1);
        let wrong_aud = hs_token(&json!({"aud": "web", "iss": "https://idp"}));
        assert!(
            matches!(v.verify(&wrong_aud, NOW), Err(JwtError::BadClaim { claim, .. }) if claim == "aud")
        );
        let no_iss = hs_token(&json!({"aud": "mqtt"}));
        assert!(
            matches!(v.verify(&no_iss, NOW), Err(JwtError::BadClaim { claim, .. }) if claim == "iss")
        );
    }

    #[test]
    fn rs256_and_es256_with_pem_keys() {
        let rsa = rsa_pair();
        let (ec_private, ec_public, _, _) = ec_pair();
        let config = JwtConfig {
            rs256_public_key: Some(rsa.public_pem.clone()),
            es256_public_key: Some(ec_public),
            ..JwtConfig::default()
        };
        let v = JwtVerifier::new(&config, None).unwrap();
        let claims = json!({"sub": "s", "exp": NOW + 5});
        let rs = token_with(Algorithm::RS256, None, &rsa.private_pem, &claims);
        assert_eq!(v.verify(&rs, NOW).unwrap().subject.as_deref(), Some("s"));
        let es = token_with(Algorithm::ES256, None, &ec_private, &claims);
        assert_eq!(v.verify(&es, NOW).unwrap().subject.as_deref(), Some("s"));
        // A token signed by another EC key.
        let (other_private, _, _, _) = ec_pair();
        let forged = token_with(Algorithm::ES256, None, &other_private, &claims);
        assert_eq!(v.verify(&forged, NOW), Err(JwtError::BadSignature));
        // No HS256 key configured: an HMAC token finds no key.
        assert!(matches!(
            v.verify(&hs_token(&claims), NOW),
            Err(JwtError::NoKey { .. })
        ));
    }

    #[test]
    fn an_rsa_public_key_is_never_used_as_an_hmac_secret() {
        let rsa = rsa_pair();
        let config = JwtConfig {
            rs256_public_key: Some(rsa.public_pem.clone()),
            ..JwtConfig::default()
        };
        let v = JwtVerifier::new(&config, None).unwrap();
        let key = EncodingKey::from_secret(rsa.public_pem.as_bytes());
        let confused =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &json!({"sub": "x"}), &key)
                .unwrap();
        assert!(matches!(
            v.verify(&confused, NOW),
            Err(JwtError::NoKey { .. })
        ));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let v = JwtVerifier::new(&hs_config(), None).unwrap();
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &json!({}), &key).unwrap();
        assert!(matches!(v.verify(&hs512, NOW), Err(JwtError::Algorithm(_))));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        let none = format!("{header}.{body}.");
        assert!(v.verify(&none, NOW).is_err());
    }

    fn jwks_doc(rsa: &RsaPair, ec_x: &[u8], ec_y: &[u8]) -> String {
        let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b(&rsa.n), "e": b(&rsa.e)},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b(ec_x), "y": b(ec_y)},
            {"kty": "oct", "kid": "hs-1", "k": b(SECRET.as_bytes())},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b(&rsa.n), "e": b(&rsa.e)},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b(&[0; 32])},
            {"kty": "RSA", "kid": "weird", "alg": "RSA-OAEP-999", "n": b(&rsa.n), "e": b(&rsa.e)}
        ]})
        .to_string()
    }

    #[test]
    fn jwks_keys_are_selected_by_kid() {
        let rsa = rsa_pair();
        let (ec_private, _, x, y) = ec_pair();
        let doc = jwks_doc(rsa, &x, &y);
        let v = JwtVerifier::new(&JwtConfig::default(), Some(&doc)).unwrap();
        assert_eq!(v.keys.len(), 3, "{v:?}");
        let claims = json!({"sub": "k"});
        let rs = token_with(Algorithm::RS256, Some("rsa-1"), &rsa.private_pem, &claims);
        assert!(v.verify(&rs, NOW).is_ok());
        let es = token_with(Algorithm::ES256, Some("ec-1"), &ec_private, &claims);
        assert!(v.verify(&es, NOW).is_ok());
        // Without a kid, every key of the algorithm is tried.
        let es_no_kid = token_with(Algorithm::ES256, None, &ec_private, &claims);
        assert!(v.verify(&es_no_kid, NOW).is_ok());
        // An unknown kid finds no key (the set's keys all have ids).
        let unknown = token_with(Algorithm::RS256, Some("rsa-2"), &rsa.private_pem, &claims);
        assert!(matches!(
            v.verify(&unknown, NOW),
            Err(JwtError::NoKey { kid: Some(k), .. }) if k == "rsa-2"
        ));
        // The kid of a key of another kind does not help.
        let wrong_kind = token_with(Algorithm::RS256, Some("ec-1"), &rsa.private_pem, &claims);
        assert!(matches!(
            v.verify(&wrong_kind, NOW),
            Err(JwtError::NoKey { .. })
        ));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hs-1".into());
        let hs = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&hs, NOW).is_ok());
    }

    #[test]
    fn configured_keys_without_kid_serve_tokens_with_an_unknown_kid() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rotated".into());
        let token = jsonwebtoken::encode(
            &header,
            &json!({}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let v = JwtVerifier::new(&hs_config(), None).unwrap();
        assert!(v.verify(&token, NOW).is_ok());
    }

    #[test]
    fn jwks_files_are_read_and_bad_ones_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let config = JwtConfig {
            jwks_file: Some(path.clone()),
            ..JwtConfig::default()
        };
        let err = JwtVerifier::load(&config, "tenants[a].jwt").unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
        assert!(err.to_string().starts_with("tenants[a].jwt.jwks_file"));
        std::fs::write(&path, "{\"keys\": []}").unwrap();
        let err = JwtVerifier::load(&config, "tenants[a].jwt").unwrap_err();
        assert!(
            err.to_string().contains("no RS256, ES256 or HS256 key"),
            "{err}"
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(
            JwtVerifier::load(&config, "t")
                .unwrap_err()
                .to_string()
                .contains("JWKS")
        );
        let (_, _, x, y) = ec_pair();
        let doc = json!({"keys": [{"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&x), "y": URL_SAFE_NO_PAD.encode(&y)}]});
        std::fs::write(&path, doc.to_string()).unwrap();
        assert_eq!(JwtVerifier::load(&config, "t").unwrap().keys.len(), 1);
    }

    #[test]
    fn shape_test_and_unverified_peek() {
        let token = hs_token(&json!({"tenant": "acme", "n": 1}));
        assert_eq!(looks_like_jwt(token.as_bytes()), Some(token.as_str()));
        assert_eq!(looks_like_jwt(b"hunter2"), None);
        assert_eq!(looks_like_jwt(b"a.b.c"), None);
        assert_eq!(looks_like_jwt(&[0xff, b'.', b'.']), None);
        assert_eq!(peek_claim(&token, "tenant").as_deref(), Some("acme"));
        assert_eq!(peek_claim(&token, "n"), None);
        assert_eq!(peek_claim(&token, "missing"), None);
        assert_eq!(peek_claim("garbage", "tenant"), None);
    }
}
