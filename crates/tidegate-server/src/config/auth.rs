//! `[auth]`: gateway-wide settings of client authentication, beside the per-tenant
//! `[[tenants]]` (whose model lives in [`tidegate_auth::TenantConfig`]).
//!
//! Place in the data flow: read at start-up with the rest of [`crate::config`]; the server
//! builds the brute-force limiter ([`tidegate_auth::AuthFailureLimiter`]) and the hook answer
//! cache ([`tidegate_auth::HookCache`]) of its CONNECT handling from it.
//!
//! ```toml
//! [auth]
//! max_failures = 10       # failed authentications per source address within the window...
//! window_secs = 60        # ...counted from the first failure of the window...
//! block_secs = 300        # ...block the source this long (CONNACK 0x8A Banned, 3.1.1 code 5)
//! max_tracked = 100000    # source addresses remembered at once
//! hook_cache_size = 10000 # HTTP hook answers cached at once
//! ```

use super::ConfigError;
use serde::Deserialize;
use tidegate_auth::AuthFailureLimits;

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Failed authentications from one source (an IPv4 address or an IPv6 /64) within
    /// `window_secs` that block it.
    pub max_failures: u32,
    /// Length of the counting window, seconds, from the first failure in it.
    pub window_secs: u64,
    /// How long a blocked source is refused, seconds.
    pub block_secs: u64,
    /// Most sources remembered at once (the oldest is forgotten beyond it).
    pub max_tracked: usize,
    /// Most HTTP hook answers cached at once (the oldest is dropped beyond it).
    pub hook_cache_size: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let limits = AuthFailureLimits::default();
        AuthConfig {
            max_failures: limits.max_failures,
            window_secs: limits.window_secs,
            block_secs: limits.block_secs,
            max_tracked: limits.max_tracked,
            hook_cache_size: 10_000,
        }
    }
}

impl AuthConfig {
    /// The brute-force limiter's settings.
    pub fn failure_limits(&self) -> AuthFailureLimits {
        AuthFailureLimits {
            max_failures: self.max_failures,
            window_secs: self.window_secs,
            block_secs: self.block_secs,
            max_tracked: self.max_tracked,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.failure_limits()
            .validate()
            .map_err(|reason| ConfigError::InvalidAuth(reason.to_string()))?;
        if self.hook_cache_size == 0 {
            return Err(ConfigError::InvalidAuth(
                "hook_cache_size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_limiter_defaults_and_valid() {
        let auth = AuthConfig::default();
        assert_eq!(auth.failure_limits(), AuthFailureLimits::default());
        auth.validate().unwrap();
    }

    #[test]
    fn keys_are_read_and_checked() {
        let auth: AuthConfig = toml::from_str("max_failures = 3\nblock_secs = 1").unwrap();
        assert_eq!(auth.max_failures, 3);
        assert_eq!(auth.failure_limits().block_secs, 1);
        assert_eq!(auth.window_secs, 60);
        let zero: AuthConfig = toml::from_str("max_failures = 0").unwrap();
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("max_failures"), "{err}");
        let zero: AuthConfig = toml::from_str("hook_cache_size = 0").unwrap();
        assert!(zero.validate().is_err());
        assert!(toml::from_str::<AuthConfig>("max_failure = 3").is_err());
    }
}
