//! `tidegate serve --dev`: a local certificate authority and a server certificate for
//! `localhost`, made with rcgen in the data directory on first start, so that TLS and WSS work
//! without any set-up.
//!
//! Place in the data flow: start-up only, between reading the configuration and validating
//! it: [`crate::cli::ServeArgs::load_config`] calls [`ensure`] and gives every TLS listener
//! without `cert`/`key` the development pair.
//!
//! The files (`<data_dir>/dev-tls/`): `ca.pem` (trust this in clients), `ca-key.pem`,
//! `server.pem` (chain: server then CA) and `server-key.pem`; keys are written with mode
//! 0600. Existing files are reused, so clients that trusted the CA once keep working. The
//! server certificate names `localhost`, `127.0.0.1` and `::1`. Never use them in production:
//! the CA key sits next to the server's.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The development certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    /// The CA certificate clients should trust.
    pub ca: PathBuf,
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// Whether this start created them.
    pub created: bool,
}

/// Why the development certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// A file could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// rcgen refused to make a certificate.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The directory of the development certificates under `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-tls")
}

/// Makes the CA and server certificate under `data_dir` unless they exist.
pub fn ensure(data_dir: &Path) -> Result<DevCerts, DevCertError> {
    let dir = dir(data_dir);
    let mut certs = DevCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        created: false,
    };
    if certs.ca.is_file() && certs.cert.is_file() && certs.key.is_file() {
        return Ok(certs);
    }
    fs::create_dir_all(&dir).map_err(|source| DevCertError::Io {
        path: dir.clone(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tidegate development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer)?;

    write(&dir.join("ca-key.pem"), &ca_key.serialize_pem(), 0o600)?;
    write(&certs.key, &server_key.serialize_pem(), 0o600)?;
    write(
        &certs.cert,
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        0o644,
    )?;
    // The CA certificate last: its presence is what marks the set as complete.
    write(&certs.ca, &ca_cert.pem(), 0o644)?;
    certs.created = true;
    Ok(certs)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), DevCertError> {
    let io = |source| DevCertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IdentityFrom, ListenerConfig, ListenerKind};
    use crate::transport::tls::{TlsSetup, certificate_identity};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_reused_and_loadable() {
        let data = tempfile::tempdir().unwrap();
        let first = ensure(data.path()).unwrap();
        assert!(first.created);
        let mode = fs::metadata(&first.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = fs::read_to_string(&first.cert).unwrap();
        let second = ensure(data.path()).unwrap();
        assert!(!second.created);
        assert_eq!(fs::read_to_string(&second.cert).unwrap(), pem, "reused");

        let chain: Vec<_> = CertificateDer::pem_file_iter(&first.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2, "server certificate then CA");
        assert_eq!(
            certificate_identity(&chain[0], IdentityFrom::Cn).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            certificate_identity(&chain[0], IdentityFrom::SanDns).as_deref(),
            Some("localhost")
        );
        assert_eq!(certificate_identity(&chain[0], IdentityFrom::SanUri), None);

        let listener = ListenerConfig {
            cert: Some(first.cert.clone()),
            key: Some(first.key.clone()),
            ..ListenerConfig::new(ListenerKind::Tls, "127.0.0.1:0")
        };
        crate::transport::tls::install_default_provider();
        TlsSetup::load(&listener).unwrap();
    }
}
