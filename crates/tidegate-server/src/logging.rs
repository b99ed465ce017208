//! Log output: `tracing` events of every task go through one `tracing-subscriber` formatter,
//! text or JSON, to standard error.
//!
//! Place in the data flow: beside it. The connection tasks log one `info` line per client
//! connect and disconnect; listeners and the engine log what an operator must see (bind
//! addresses, refused sockets, slow consumers, shutdown).
//!
//! The filter comes from `RUST_LOG` when it is set (the habit of every Rust service), else from
//! `log.level` of the configuration.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` or `log.level` is not a valid filter.
    #[error("invalid log filter {directives:?}: {reason}")]
    Filter {
        /// The directives given.
        directives: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber was installed already (e.g. by a test harness).
    #[error("a global log subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Parses filter directives such as `info` or `warn,tidegate_server=debug`.
pub(crate) fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| e.to_string())
}

/// The directives in force: `RUST_LOG` when set and not blank, else the configured level.
fn directives<'a>(config: &'a LogConfig, rust_log: Option<&'a str>) -> &'a str {
    match rust_log {
        Some(env) if !env.trim().is_empty() => env,
        _ => &config.level,
    }
}

/// Installs the global subscriber for the whole process.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let directives = directives(config, rust_log.as_deref());
    let filter = parse_filter(directives).map_err(|reason| LoggingError::Filter {
        directives: directives.to_owned(),
        reason,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| LoggingError::AlreadyInstalled(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let config = LogConfig {
            level: "warn".to_owned(),
            ..LogConfig::default()
        };
        assert_eq!(directives(&config, None), "warn");
        assert_eq!(directives(&config, Some("  ")), "warn");
        assert_eq!(directives(&config, Some("debug")), "debug");
    }

    #[test]
    fn filters_parse_or_explain() {
        assert!(parse_filter("info,tidegate_server=trace").is_ok());
        assert!(parse_filter("info,=[").is_err());
    }
}
