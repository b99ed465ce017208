//! Tokens for a newcomer: when an HTTP listener runs and `[http]` names no token, the gateway
//! generates one admin and one publish token on first start, keeps them in
//! `<data_dir>/http-tokens.toml` (mode 0600) and prints them once, so `curl` works at once;
//! later starts reuse the file quietly (its path is logged).
//!
//! Place in the data flow: `Server::bind` calls [`ensure`] before the HTTP face is built; the
//! tokens then live in `[http]` like configured ones.

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use tidegate_http::HttpConfig;
use tracing::info;

/// The file's name under the data directory.
pub const FILE: &str = "http-tokens.toml";

/// The generated pair, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tokens {
    admin_token: String,
    publish_token: String,
}

/// Why the tokens could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading, creating or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file exists but is not ours.
    #[error("{path}: not a token file ({reason}); delete it to generate new tokens")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The system random source failed.
    #[error("no random source for the HTTP tokens")]
    Random,
}

/// Fills `config`'s token lists from the file (or new tokens) when it names no token at all
/// (neither list nor `[[http.tokens]]`); returns
/// the path used, or `None` when the configuration names tokens itself.
pub fn ensure(config: &mut HttpConfig, data_dir: &Path) -> Result<Option<PathBuf>, TokenError> {
    if config.has_tokens() {
        return Ok(None);
    }
    let path = data_dir.join(FILE);
    let io_error = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    let tokens = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let tokens: Tokens = toml::from_str(&text).map_err(|e| TokenError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            info!(path = %path.display(), "HTTP API tokens read");
            tokens
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tokens = Tokens {
                admin_token: token("tga_")?,
                publish_token: token("tgp_")?,
            };
            std::fs::create_dir_all(data_dir).map_err(io_error)?;
            write_private(&path, &toml::to_string(&tokens).unwrap_or_default())
                .map_err(io_error)?;
            // Printed once, on the start that made them; the file keeps them.
            println!(
                "HTTP API tokens (kept in {}):\n  admin:   {}\n  publish: {}",
                path.display(),
                tokens.admin_token,
                tokens.publish_token
            );
            tokens
        }
        Err(e) => return Err(io_error(e)),
    };
    config.admin_tokens = vec![tokens.admin_token];
    config.publish_tokens = vec![tokens.publish_token];
    Ok(Some(path))
}

/// `prefix` + 32 random bytes in hex.
fn token(prefix: &str) -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Creates `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn tokens_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = HttpConfig::default();
        let path = ensure(&mut first, dir.path()).unwrap().unwrap();
        assert_eq!(first.admin_tokens.len(), 1);
        assert!(first.admin_tokens[0].starts_with("tga_"));
        assert_ne!(first.admin_tokens, first.publish_tokens);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut second = HttpConfig::default();
        ensure(&mut second, dir.path()).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn configured_tokens_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HttpConfig {
            admin_tokens: vec!["a".into()],
            ..HttpConfig::default()
        };
        assert_eq!(ensure(&mut config, dir.path()).unwrap(), None);
        assert!(config.publish_tokens.is_empty());
        assert!(!dir.path().join(FILE).exists());
    }
}
