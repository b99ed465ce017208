//! TLS client settings: which server certificates to trust, an optional client certificate,
//! and the rustls configuration built from them once per run.
//!
//! Place in the data flow: the CLI's TLS options → [`TlsOptions::client`] → a [`TlsClient`]
//! held by the resolved endpoint → the transport wraps each new socket in TLS with it (and,
//! for `wss://`, runs the WebSocket handshake inside the TLS session).
//!
//! Only the `ring` provider is compiled in (see the workspace's dependency notes). Server
//! certificates are checked against `--ca-file`; `--insecure` accepts any certificate, which is
//! what a load test against a development broker with a self-signed certificate wants.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// The TLS options of the command line.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
    /// Name to verify the server certificate against (default: the URL's host).
    pub server_name: Option<String>,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Neither a CA file nor `--insecure`.
    #[error("a tls:// or wss:// URL needs --ca-file (or --insecure to accept any certificate)")]
    NoTrust,
    /// A PEM file could not be read.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `--cert` without `--key` or the other way round.
    #[error("--cert and --key go together")]
    HalfClientAuth,
    /// A host name that is not a valid TLS server name.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What a connection needs to start TLS.
#[derive(Clone)]
pub struct TlsClient {
    /// The shared rustls client configuration.
    pub connector: TlsConnector,
    /// The name the server certificate must carry.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn pem_err(path: &std::path::Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl TlsOptions {
    /// True when any TLS option was given.
    pub fn any(&self) -> bool {
        self.ca_file.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure
            || self.server_name.is_some()
    }

    /// Builds the client for a broker reached as `host`.
    pub fn client(&self, host: &str) -> Result<TlsClient, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(
                    provider.signature_verification_algorithms,
                )))
        } else {
            let path = self.ca_file.as_ref().ok_or(TlsError::NoTrust)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_err(path, e))? {
                roots.add(cert.map_err(|e| pem_err(path, e))?)?;
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| pem_err(cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| pem_err(cert, e))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
                builder.with_client_auth_cert(chain, key_der)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::HalfClientAuth),
        };
        let name = self.server_name.as_deref().unwrap_or(host).to_string();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// `--insecure`: any certificate is accepted, but handshake signatures are still verified
/// (so the session keys are really the server's; only its identity goes unchecked).
#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_needs_a_trust_decision() {
        let e = TlsOptions::default().client("localhost").unwrap_err();
        assert!(matches!(e, TlsError::NoTrust));
        assert!(
            TlsOptions {
                insecure: true,
                ..Default::default()
            }
            .client("localhost")
            .is_ok()
        );
    }

    #[test]
    fn client_cert_needs_its_key() {
        let o = TlsOptions {
            insecure: true,
            cert: Some("/nonexistent.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            o.client("h").unwrap_err(),
            TlsError::HalfClientAuth
        ));
    }

    #[test]
    fn missing_ca_file_is_reported_with_its_path() {
        let o = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = o.client("h").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn ip_addresses_are_valid_server_names() {
        let c = TlsOptions {
            insecure: true,
            ..Default::default()
        }
        .client("127.0.0.1")
        .unwrap();
        assert!(matches!(c.server_name, ServerName::IpAddress(_)));
    }
}
