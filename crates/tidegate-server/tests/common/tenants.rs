//! Helpers of the multi-tenancy suites (issue 7): one argon2 hash per test process, MQTT
//! options that log into `user@tenant`, and reading one sample out of `/metrics`.

use super::http::Gate;
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// The password of every tenant user of these suites.
pub(crate) const PASSWORD: &str = "tenant-pw";

/// An argon2id hash of [`PASSWORD`], made once per test process: argon2 is slow in a debug
/// build, and every user shares it.
pub(crate) fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tidegate_auth::hash_password(PASSWORD.as_bytes()).unwrap())
}

/// A `[[tenants]]` entry with user `dev` (password [`PASSWORD`]); `rest` comes right after
/// the id, so it may start with the tenant's own keys (`allow_anonymous = true`) and go on with
/// its tables (`[tenants.quotas]`, `[[tenants.acl]]`).
pub(crate) fn tenant_toml(id: &str, rest: &str) -> String {
    format!(
        "\n[[tenants]]\nid = \"{id}\"\n{rest}\n[[tenants.users]]\nusername = \"dev\"\n\
         password_hash = \"{}\"\n",
        hash()
    )
}

/// MQTT 5 options for `client_id` logging in as `dev@{tenant}`.
pub(crate) fn v5_login(
    mqtt: SocketAddr,
    client_id: &str,
    tenant: &str,
) -> rumqttc::v5::MqttOptions {
    let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(format!("dev@{tenant}"), PASSWORD);
    opts
}

/// MQTT 3.1.1 options for `client_id` logging in as `dev@{tenant}`.
pub(crate) fn v4_login(mqtt: SocketAddr, client_id: &str, tenant: &str) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(format!("dev@{tenant}"), PASSWORD);
    opts
}

/// The value of the sample `name{labels}` (labels as written, e.g. `tenant="a",quota="x"`),
/// or `None` when the exposition has no such sample.
pub(crate) fn sample(metrics: &str, name: &str, labels: &str) -> Option<u64> {
    let prefix = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {v:?}: {e}"))
        })
}

/// `GET /metrics` (no token needed).
pub(crate) async fn metrics(gate: &Gate) -> String {
    let reply = gate.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.text()
}
