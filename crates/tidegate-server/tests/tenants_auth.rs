//! Authentication of MQTT clients per tenant (issue 7), end to end with real clients against an
//! in-process server: argon2 passwords (v5 0x86, 3.1.1 code 4), `user@tenant` routing, a
//! listener bound to a tenant, anonymous access refused (0x87), JWT HS256 and RS256 (wrong key
//! and expired tokens refused), Unix peer uid, TLS client certificate identity, and the
//! brute-force limiter (0x8A while blocked, released after `block_secs`). Refusals are checked
//! in the server's counters too.

mod common;

use common::certs::{ClientName, Pki};
use common::inproc::{self, Running};
use common::raw::{ConnectOpts, Raw, Version, connect};
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
use rumqttc::{ConnectReturnCode as V4Code, MqttOptions};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn v5_opts(
    addr: SocketAddr,
    id: &str,
    credentials: Option<(&str, &str)>,
) -> rumqttc::v5::MqttOptions {
    let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    opts
}

fn v4_opts(addr: SocketAddr, id: &str, credentials: Option<(&str, &str)>) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    opts
}

/// The v5 CONNACK code a connection attempt ends with (`Success` when accepted).
async fn v5_code(opts: rumqttc::v5::MqttOptions) -> V5Code {
    match common::v5::Client::try_connect(opts).await {
        Ok(client) => {
            client.disconnect().await;
            V5Code::Success
        }
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => code,
        Err(other) => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// The 3.1.1 CONNACK code a connection attempt ends with.
async fn v4_code(opts: MqttOptions) -> V4Code {
    match common::v4::Client::try_connect(opts).await {
        Ok(client) => {
            client.disconnect().await;
            V4Code::Success
        }
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
        Err(other) => panic!("expected a CONNACK, got {other:?}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_token(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An RSA key pair: (private PKCS#8 PEM, public SPKI PEM).
fn rsa_pair() -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public = rsa::RsaPublicKey::from(&private);
    (
        private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
}

fn rs_token(claims: &serde_json::Value, private_pem: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Tenant `acme` with user `phone1` / `pw` (hashed now), and a listener bound to it.
fn acme_config(extra: &str) -> String {
    let hash = tidegate_auth::hash_password(b"pw").unwrap();
    format!(
        r#"
[[listeners]]
kind = "tcp"
name = "open"
bind = "127.0.0.1:0"

[[listeners]]
kind = "tcp"
name = "acme"
bind = "127.0.0.1:0"
tenant = "acme"

[[tenants]]
id = "acme"
[[tenants.users]]
username = "phone1"
password_hash = "{hash}"

{extra}
"#
    )
}

fn failures(server: &Running, tenant: &str, reason: &str) -> u64 {
    server
        .stats
        .auth_failures()
        .iter()
        .find(|((t, r), _)| t == tenant && *r == reason)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn passwords_per_tenant_accept_and_refuse_in_both_versions() {
    let server = inproc::start(&acme_config("")).await;
    let (open, bound) = (server.addrs[0], server.addrs[1]);
    // user@tenant on a listener without a tenant.
    assert_eq!(
        v5_code(v5_opts(open, "p1", Some(("phone1@acme", "pw")))).await,
        V5Code::Success
    );
    assert_eq!(
        v4_code(v4_opts(open, "p1", Some(("phone1@acme", "pw")))).await,
        V4Code::Success
    );
    // The bound listener needs no @acme.
    assert_eq!(
        v5_code(v5_opts(bound, "p1", Some(("phone1", "pw")))).await,
        V5Code::Success
    );
    // Wrong password and unknown user.
    assert_eq!(
        v5_code(v5_opts(open, "p1", Some(("phone1@acme", "wrong")))).await,
        V5Code::BadUserNamePassword
    );
    assert_eq!(
        v4_code(v4_opts(bound, "p1", Some(("phone1", "wrong")))).await,
        V4Code::BadUserNamePassword
    );
    assert_eq!(
        v5_code(v5_opts(bound, "p1", Some(("ghost", "pw")))).await,
        V5Code::BadUserNamePassword
    );
    assert_eq!(failures(&server, "acme", "bad_password"), 2);
    assert_eq!(failures(&server, "acme", "unknown_user"), 1);
    // Nothing names a tenant and there is no default tenant once tenants are declared.
    assert_eq!(
        v5_code(v5_opts(open, "anon", None)).await,
        V5Code::BadUserNamePassword
    );
    assert_eq!(failures(&server, "", "no_tenant"), 1);
    server.stop().await;
}

#[tokio::test]
async fn anonymous_clients_only_where_the_tenant_allows_them() {
    let extra = r#"
[[listeners]]
kind = "tcp"
name = "bound-open"
bind = "127.0.0.1:0"
tenant = "open"

[[tenants]]
id = "open"
allow_anonymous = true
"#;
    let server = inproc::start(&acme_config(extra)).await;
    let (acme, open) = (server.addrs[1], server.addrs[2]);
    assert_eq!(
        v5_code(v5_opts(acme, "anon", None)).await,
        V5Code::NotAuthorized
    );
    assert_eq!(
        v4_code(v4_opts(acme, "anon", None)).await,
        V4Code::NotAuthorized
    );
    assert_eq!(failures(&server, "acme", "anonymous_not_allowed"), 2);
    assert_eq!(v5_code(v5_opts(open, "anon", None)).await, V5Code::Success);
    assert_eq!(v4_code(v4_opts(open, "anon", None)).await, V4Code::Success);
    server.stop().await;
}

#[tokio::test]
async fn without_tenants_everyone_is_anonymous_in_the_default_tenant() {
    let server = inproc::start(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\ntenant = \"default\"\n",
    )
    .await;
    let addr = server.addrs[0];
    assert_eq!(v5_code(v5_opts(addr, "a", None)).await, V5Code::Success);
    assert_eq!(
        v4_code(v4_opts(addr, "b", Some(("any", "thing")))).await,
        V4Code::Success
    );
    assert!(server.stats.auth_failures().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn jwt_hs256_and_rs256_tokens() {
    let (private, public) = rsa_pair();
    let extra = format!(
        r#"
[[tenants]]
id = "iot"
[tenants.jwt]
hs256_secret = "{HS_SECRET}"
rs256_public_key = """
{public}"""
"#
    );
    let server = inproc::start(&acme_config(&extra)).await;
    let open = server.addrs[0];
    let claims = json!({"sub": "dev-1", "tenant": "iot", "exp": unix_now() + 600});
    // Routed by the token's tenant claim; the MQTT username does not matter.
    let hs = hs_token(&claims, HS_SECRET);
    assert_eq!(
        v5_code(v5_opts(open, "j1", Some(("whoever", &hs)))).await,
        V5Code::Success
    );
    let rs = rs_token(&claims, &private);
    assert_eq!(
        v4_code(v4_opts(open, "j2", Some(("whoever", &rs)))).await,
        V4Code::Success
    );
    assert_eq!(
        v5_code(v5_opts(open, "j2", Some(("x@iot", &rs)))).await,
        V5Code::Success
    );
    // Signed with another key.
    let forged = hs_token(&claims, "another secret, also 32 bytes long!!");
    assert_eq!(
        v5_code(v5_opts(open, "j3", Some(("whoever", &forged)))).await,
        V5Code::BadUserNamePassword
    );
    let (other_private, _) = rsa_pair();
    let forged = rs_token(&claims, &other_private);
    assert_eq!(
        v4_code(v4_opts(open, "j3", Some(("whoever", &forged)))).await,
        V4Code::BadUserNamePassword
    );
    // Expired.
    let expired = hs_token(
        &json!({"sub": "dev-1", "tenant": "iot", "exp": unix_now() - 10}),
        HS_SECRET,
    );
    assert_eq!(
        v5_code(v5_opts(open, "j4", Some(("whoever", &expired)))).await,
        V5Code::BadUserNamePassword
    );
    assert_eq!(failures(&server, "iot", "bad_token"), 3);
    server.stop().await;
}

#[tokio::test]
async fn brute_force_blocks_the_source_until_the_block_ends() {
    let server = inproc::start(&acme_config(
        "[auth]\nmax_failures = 3\nwindow_secs = 60\nblock_secs = 2\n",
    ))
    .await;
    let bound = server.addrs[1];
    for _ in 0..3 {
        assert_eq!(
            v5_code(v5_opts(bound, "bf", Some(("phone1", "guess")))).await,
            V5Code::BadUserNamePassword
        );
    }
    // Blocked: even the right password is refused, without a check (0x8A; 3.1.1: 5).
    assert_eq!(
        v5_code(v5_opts(bound, "bf", Some(("phone1", "pw")))).await,
        V5Code::Banned
    );
    assert_eq!(
        v4_code(v4_opts(bound, "bf", Some(("phone1", "pw")))).await,
        V4Code::NotAuthorized
    );
    assert_eq!(server.stats.auth_rate_limited(), 2);
    assert_eq!(failures(&server, "acme", "bad_password"), 3);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        v5_code(v5_opts(bound, "bf", Some(("phone1", "pw")))).await,
        V5Code::Success
    );
    server.stop().await;
}

#[tokio::test]
async fn unix_peer_uid_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    // Our own uid, read from a file we just created.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap());
    let good = dir.path().join("good.sock");
    let bad = dir.path().join("bad.sock");
    let config = format!(
        r#"
[[listeners]]
kind = "unix"
path = {good:?}
tenant = "local"

[[listeners]]
kind = "unix"
path = {bad:?}
tenant = "other"

[[tenants]]
id = "local"
unix_uids = [{uid}]

[[tenants]]
id = "other"
unix_uids = [{}]
"#,
        uid.wrapping_add(1)
    );
    let server = inproc::start(&config).await;
    let stream = tokio::net::UnixStream::connect(&good).await.unwrap();
    let (raw, _) = Raw::connect_over(stream, &ConnectOpts::new(Version::V5, "u1")).await;
    drop(raw);
    let stream = tokio::net::UnixStream::connect(&bad).await.unwrap();
    let mut raw = Raw::over(stream, Version::V5);
    raw.send(&connect(&ConnectOpts::new(Version::V5, "u2")))
        .await;
    assert_eq!(raw.recv().await.connack().1, 0x87);
    raw.expect_closed_silently().await;
    assert_eq!(failures(&server, "other", "anonymous_not_allowed"), 1);
    server.stop().await;
}

#[tokio::test]
async fn tls_certificate_identity_authenticates() {
    let pki = Pki::new();
    let ca = pki.ca_file.display().to_string();
    let listener = pki.listener(
        "tls",
        &format!("client_ca = {ca:?}\nclient_auth = \"optional\"\nidentity_from = \"cn\"\ntenant = \"certs\""),
    );
    let config = format!(
        "{listener}\n[[tenants]]\nid = \"certs\"\ncert_identity = true\n[[tenants.acl]]\naction = \"all\"\nfilter = \"d/%u/#\"\nallow = true\n"
    );
    let server = inproc::start(&config).await;
    let addr = server.addrs[0];
    let device = pki.client(
        "device",
        &ClientName {
            cn: Some("device-7"),
            ..ClientName::default()
        },
    );
    let with_cert = pki.client_config(Some(&device), &[]);
    let (raw, _) = Raw::connect_over(
        tls(addr, with_cert).await,
        &ConnectOpts::new(Version::V5, "t1"),
    )
    .await;
    drop(raw);
    // Without a certificate nothing authenticates the client.
    let mut raw = Raw::over(tls(addr, pki.client_config(None, &[])).await, Version::V5);
    raw.send(&connect(&ConnectOpts::new(Version::V5, "t2")))
        .await;
    assert_eq!(raw.recv().await.connack().1, 0x87);
    server.stop().await;
}

async fn tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_token_expiring_while_connected_ends_the_connection_with_0xa0() {
    let extra =
        format!("[[tenants]]\nid = \"iot\"\n[tenants.jwt]\nhs256_secret = \"{HS_SECRET}\"\n");
    let server = inproc::start(&acme_config(&extra)).await;
    let token = hs_token(
        &json!({"sub": "dev-1", "tenant": "iot", "exp": unix_now() + 2}),
        HS_SECRET,
    );
    let mut client =
        common::v5::Client::connect(v5_opts(server.addrs[0], "exp", Some(("d", &token)))).await;
    let started = std::time::Instant::now();
    assert_eq!(
        client.server_disconnect().await,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::MaximumConnectTime
    );
    assert!(started.elapsed() <= Duration::from_secs(3));
    server.stop().await;
}
