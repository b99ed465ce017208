//! The command line: `tidegate serve [--config FILE] [--listen URL]... [--data-dir DIR]`,
//! `tidegate passwd [--password-stdin]`, `tidegate tenant create|list|show|update|delete`
//! (see [`crate::tenant_cli`]) and `tidegate --version`.
//!
//! Place in the data flow: the first step of start-up. The configuration is layered as the
//! style notes ask: the file (named by `--config` or the `TIDEGATE_CONFIG` environment
//! variable, else built-in defaults), then the flags, which replace what the file says:
//! any `--listen` replaces *all* listeners of the file, so `tidegate serve --listen
//! tcp://127.0.0.1:1884` never also opens the file's public port.

use crate::config::{Config, ConfigError, ListenerConfig, ListenerKind};
use crate::dev_cert;
use clap::{Args, Parser, Subcommand};
use std::io::BufRead;
use std::path::PathBuf;

/// Tidegate, an MQTT 3.1.1 and 5.0 gateway.
#[derive(Debug, Parser)]
#[command(name = "tidegate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Read a password from standard input and print its argon2id hash, the `password_hash`
    /// of a `[[tenants.users]]` entry.
    Passwd(PasswdArgs),
    /// Manage the tenants of a running gateway through its admin API; prints JSON.
    Tenant(crate::tenant_cli::TenantArgs),
}

/// Arguments of `tidegate passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PasswdArgs {
    /// Read the password from standard input (what `passwd` always does; the flag is accepted
    /// for scripts written for tools that need it). Only the first line is read, without its
    /// line ending; nothing is echoed or prompted, so pipe it in: `echo -n s3cret | tidegate
    /// passwd`.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Why `tidegate passwd` failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// Standard input could not be read.
    #[error("cannot read the password from standard input: {0}")]
    Read(#[from] std::io::Error),
    /// The first line is empty.
    #[error("the password is empty")]
    Empty,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] tidegate_auth::PasswordError),
}

impl PasswdArgs {
    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) of the first line of `input`.
    /// Takes tens of milliseconds of CPU by design.
    pub fn hash_from(&self, input: &mut impl BufRead) -> Result<String, PasswdError> {
        let mut line = String::new();
        input.read_line(&mut line)?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            return Err(PasswdError::Empty);
        }
        Ok(tidegate_auth::hash_password(password.as_bytes())?)
    }
}

/// Arguments of `tidegate serve`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one, MQTT over TCP on 0.0.0.0:1883.
    #[arg(long, short = 'c', value_name = "FILE", env = "TIDEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listener URL such as tcp://127.0.0.1:1883; repeat for several. Replaces every listener
    /// of the configuration file.
    #[arg(long = "listen", value_name = "URL", value_parser = ListenerConfig::from_url)]
    pub listen: Vec<ListenerConfig>,
    /// Directory for persistent state; overrides `data_dir` of the file.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Development mode: make a local CA and a localhost certificate in the data directory
    /// (first start only) for every TLS/WSS listener without `cert`/`key`; without a file or
    /// `--listen`, listen on tcp :1883, tls :8883, ws :8083, wss :8084 and the HTTP API on
    /// :8080.
    #[arg(long)]
    pub dev: bool,
}

/// The listeners of `tidegate serve --dev` without a configuration file or `--listen`.
pub const DEV_LISTENERS: [(ListenerKind, &str); 5] = [
    (ListenerKind::Tcp, "0.0.0.0:1883"),
    (ListenerKind::Tls, "0.0.0.0:8883"),
    (ListenerKind::Ws, "0.0.0.0:8083"),
    (ListenerKind::Wss, "0.0.0.0:8084"),
    (ListenerKind::Http, "0.0.0.0:8080"),
];

impl ServeArgs {
    /// The configuration to run with: the file (or the defaults), the flags applied, validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let base = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let mut config = self.apply(base);
        if self.dev {
            self.apply_dev(&mut config)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// `--dev`: the development listeners (when nothing else names any) and certificates.
    fn apply_dev(&self, config: &mut Config) -> Result<(), ConfigError> {
        if self.config.is_none() && self.listen.is_empty() {
            config.listeners = DEV_LISTENERS
                .iter()
                .map(|(kind, bind)| ListenerConfig::new(*kind, bind))
                .collect();
        }
        let needs_certs =
            |l: &ListenerConfig| l.kind.uses_tls() && l.cert.is_none() && l.key.is_none();
        if !config.listeners.iter().any(needs_certs) {
            return Ok(());
        }
        let certs =
            dev_cert::ensure(&config.data_dir).map_err(|e| ConfigError::DevCertificates {
                dir: dev_cert::dir(&config.data_dir),
                reason: e.to_string(),
            })?;
        for listener in config.listeners.iter_mut().filter(|l| needs_certs(l)) {
            listener.cert = Some(certs.cert.clone());
            listener.key = Some(certs.key.clone());
        }
        Ok(())
    }

    /// Applies the flags to `config`.
    pub fn apply(&self, mut config: Config) -> Config {
        if !self.listen.is_empty() {
            config.listeners = self.listen.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["tidegate", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => args,
            other => panic!("serve expected, got {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_flag_prints_the_version() {
        let err = Cli::try_parse_from(["tidegate", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn config_path_can_come_from_the_environment() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let config = serve
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .unwrap();
        assert_eq!(
            config.get_env(),
            Some(std::ffi::OsStr::new("TIDEGATE_CONFIG"))
        );
    }

    #[test]
    fn listen_repeats_and_replaces_the_file_listeners() {
        let args = serve(&[
            "--listen",
            "tcp://127.0.0.1:1883",
            "--listen",
            "tcp://[::1]:1884",
            "--data-dir",
            "/tmp/tg",
        ]);
        assert_eq!(args.listen.len(), 2);
        let file = Config::from_toml_str(
            "data_dir = \"/var\"\n[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1883\"\n\
             [limits]\nmax_qos = 1",
        )
        .unwrap();
        let config = args.apply(file);
        let binds: Vec<_> = config
            .listeners
            .iter()
            .map(|l| (l.kind, l.bind.as_deref()))
            .collect();
        assert_eq!(
            binds,
            [
                (ListenerKind::Tcp, Some("127.0.0.1:1883")),
                (ListenerKind::Tcp, Some("[::1]:1884"))
            ]
        );
        assert_eq!(config.data_dir, PathBuf::from("/tmp/tg"));
        assert_eq!(config.limits.max_qos, 1, "other keys of the file are kept");
    }

    #[test]
    fn no_flags_keep_the_file() {
        let file =
            Config::from_toml_str("[[listeners]]\nkind = \"tcp\"\nbind = \"1.2.3.4:5\"").unwrap();
        assert_eq!(serve(&[]).apply(file.clone()), file);
    }

    #[test]
    fn bad_listen_url_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["tidegate", "serve", "--listen", "127.0.0.1:1883"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn the_http_api_listens_by_default_and_by_flag() {
        let config = serve(&[]).load_config().unwrap();
        let kinds: Vec<_> = config.listeners.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, [ListenerKind::Tcp, ListenerKind::Http]);
        assert_eq!(config.listeners[1].bind.as_deref(), Some("0.0.0.0:8080"));
        let args = serve(&["--listen", "http://127.0.0.1:8081"]);
        let config = args.load_config().unwrap();
        assert_eq!(config.listeners[0].kind, ListenerKind::Http);
    }

    #[test]
    fn dev_makes_certificates_and_tls_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let config = serve(&["--dev", "--data-dir", data]).load_config().unwrap();
        let kinds: Vec<_> = config.listeners.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [
                ListenerKind::Tcp,
                ListenerKind::Tls,
                ListenerKind::Ws,
                ListenerKind::Wss,
                ListenerKind::Http
            ]
        );
        let cert = dev_cert::dir(dir.path()).join("server.pem");
        assert_eq!(config.listeners[1].cert.as_deref(), Some(cert.as_path()));
        assert!(cert.is_file());
        assert!(dev_cert::dir(dir.path()).join("ca.pem").is_file());
        // --listen keeps its listeners; a TLS one still gets the development pair.
        let config = serve(&["--dev", "--data-dir", data, "--listen", "tls://127.0.0.1:0"])
            .load_config()
            .unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].cert.as_deref(), Some(cert.as_path()));
        // Without --dev a TLS listener needs its files.
        let err = serve(&["--listen", "tls://127.0.0.1:0"])
            .load_config()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::MissingListenerKey { key: "cert", .. }),
            "{err}"
        );
    }

    #[test]
    fn load_config_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[shutdown]\ngrace_period_ms = 7").unwrap();
        let path_arg = path.to_str().unwrap();
        let config = serve(&["--config", path_arg]).load_config().unwrap();
        assert_eq!(config.shutdown.grace_period_ms, 7);
        let missing = dir.path().join("missing.toml");
        let missing_arg = missing.to_str().unwrap();
        assert!(matches!(
            serve(&["-c", missing_arg]).load_config(),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn passwd_hashes_the_first_line_of_stdin() {
        for argv in [
            &["tidegate", "passwd"][..],
            &["tidegate", "passwd", "--password-stdin"],
        ] {
            let Command::Passwd(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("passwd expected")
            };
            let mut input = std::io::Cursor::new("s3cret pass\r\nignored\n");
            let phc = args.hash_from(&mut input).unwrap();
            assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
            let parsed = tidegate_auth::parse_phc(&phc).unwrap();
            assert!(tidegate_auth::verify_password(&parsed, b"s3cret pass"));
            assert!(!tidegate_auth::verify_password(&parsed, b"s3cret pass\r"));
        }
        let args = PasswdArgs {
            password_stdin: false,
        };
        let mut empty = std::io::Cursor::new("\n");
        assert!(matches!(
            args.hash_from(&mut empty),
            Err(PasswdError::Empty)
        ));
        let mut nothing = std::io::Cursor::new("");
        assert!(matches!(
            args.hash_from(&mut nothing),
            Err(PasswdError::Empty)
        ));
    }
}
