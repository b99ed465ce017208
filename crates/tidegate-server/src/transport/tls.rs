//! TLS for `tls` and `wss` listeners: rustls with the ring provider, certificates from PEM
//! files, optional client certificates, session resumption, and reload without a restart.
//!
//! Place in the data flow: `accept --> [PROXY] --> TlsSetup::accept --> [WebSocket] -->
//! connection`. The handshake fills the [`ConnInfo`] with the SNI and, when the listener has
//! `identity_from`, the identity read from the verified client certificate.
//!
//! Choices:
//! - **ALPN**: `tls` listeners offer `mqtt`, `wss` listeners `http/1.1` (what browsers ask
//!   for). A client that offers ALPN without a protocol in common is refused
//!   (`no_application_protocol`); a client that offers none is served.
//! - **Resumption**: TLS 1.3 tickets and TLS 1.2 tickets from one ring ticketer (keys rotate
//!   every 6 hours), plus a session-id cache for TLS 1.2 clients without ticket support. The
//!   ticketer and the cache belong to the listener, not to one [`ServerConfig`], so sessions
//!   survive a certificate reload: a phone reconnecting after the swap still resumes.
//! - **Reload** ([`TlsSetup::reload`]): the files are read and a whole new `ServerConfig` is
//!   built; only when that succeeds does it replace the old one, so a bad new file is
//!   reported and the old certificate stays in use. Handshakes take the config in force when
//!   they start; established sessions are not touched.
//! - Client certificates are verified by webpki against `client_ca` (chain, validity dates,
//!   client-auth usage); `client_auth = "optional"` accepts clients without one, but a
//!   certificate that is sent must verify.

use crate::config::{ClientAuth, IdentityFrom, ListenerConfig, ListenerKind};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ProducesTickets, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use tidegate_core::ConnInfo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// TLS 1.2 sessions remembered by id, per listener (about 100 bytes each).
const SESSION_CACHE: usize = 4096;

/// Why a listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, key or verifier (e.g. a key that does not match).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle cannot verify anything.
    #[error("client_ca: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// The ring provider, the only one this build compiles in.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider (for any code that builds a config without
/// naming one). Installing twice is harmless: the first one stays.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a listener's TLS material comes from.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
}

/// One listener's TLS state: the config in force, replaced on reload.
pub(crate) struct TlsSetup {
    /// The listener's name, for logs.
    pub(crate) listener: Arc<str>,
    files: TlsFiles,
    identity_from: Option<IdentityFrom>,
    current: RwLock<Arc<ServerConfig>>,
    ticketer: Arc<dyn ProducesTickets>,
    session_cache: Arc<dyn StoresServerSessions>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Reads the listener's files and builds its first config.
    pub(crate) fn load(listener: &ListenerConfig) -> Result<TlsSetup, TlsError> {
        let missing = |key: &str| TlsError::File {
            path: PathBuf::new(),
            reason: format!("`{key}` is not set"),
        };
        let files = TlsFiles {
            cert: listener.cert.clone().ok_or_else(|| missing("cert"))?,
            key: listener.key.clone().ok_or_else(|| missing("key"))?,
            client_ca: listener.client_ca.clone(),
            client_auth: listener.effective_client_auth(),
            alpn: match listener.kind {
                ListenerKind::Tls => vec![b"mqtt".to_vec()],
                _ => vec![b"http/1.1".to_vec()],
            },
        };
        let ticketer = rustls::crypto::ring::Ticketer::new()?;
        let session_cache: Arc<dyn StoresServerSessions> =
            ServerSessionMemoryCache::new(SESSION_CACHE);
        let config = build(&files, &ticketer, &session_cache)?;
        Ok(TlsSetup {
            listener: listener.name().into(),
            files,
            identity_from: listener.identity_from,
            current: RwLock::new(config),
            ticketer,
            session_cache,
        })
    }

    /// Re-reads the files; the old config stays in force if they are not usable.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files, &self.ticketer, &self.session_cache)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The files a reload reads.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.files.cert.clone(), self.files.key.clone()];
        files.extend(self.files.client_ca.clone());
        files
    }

    fn config(&self) -> Arc<ServerConfig> {
        // A writer cannot panic between taking the lock and storing the new Arc.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs the server handshake on `io` and records what it learnt in `info`.
    pub(crate) async fn accept<IO>(&self, io: IO, info: &mut ConnInfo) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = TlsAcceptor::from(self.config()).accept(io).await?;
        let session = stream.get_ref().1;
        info.tls_server_name = session.server_name().map(Arc::from);
        if let (Some(from), Some(cert)) = (
            self.identity_from,
            session.peer_certificates().and_then(<[_]>::first),
        ) {
            info.cert_identity = certificate_identity(cert, from).map(Arc::from);
        }
        Ok(stream)
    }
}

fn build(
    files: &TlsFiles,
    ticketer: &Arc<dyn ProducesTickets>,
    session_cache: &Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let certs = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        path: files.key.clone(),
        reason: format!("no usable private key: {e}"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = match (&files.client_ca, files.client_auth) {
        (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: ca.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated().build()?
            } else {
                verifier.build()?
            };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = files.alpn.clone();
    config.ticketer = ticketer.clone();
    config.session_storage = session_cache.clone();
    Ok(Arc::new(config))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// The identity `from` names in a (verified) certificate, if it has one.
pub(crate) fn certificate_identity(
    cert: &CertificateDer<'_>,
    from: IdentityFrom,
) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    match from {
        IdentityFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        IdentityFrom::SanDns | IdentityFrom::SanUri => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(dns) if from == IdentityFrom::SanDns => {
                    Some((*dns).to_owned())
                }
                GeneralName::URI(uri) if from == IdentityFrom::SanUri => Some((*uri).to_owned()),
                _ => None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// Writes a self-signed certificate for `localhost` with a key of `alg`; returns a
    /// listener using it.
    fn listener_with(dir: &Path, alg: &'static rcgen::SignatureAlgorithm) -> ListenerConfig {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        ListenerConfig {
            cert: Some(cert_path),
            key: Some(key_path),
            ..ListenerConfig::new(ListenerKind::Tls, "127.0.0.1:0")
        }
    }

    #[test]
    fn ecdsa_and_ed25519_keys_load() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let setup = TlsSetup::load(&listener_with(dir.path(), alg)).unwrap();
            assert_eq!(setup.config().alpn_protocols, [b"mqtt".to_vec()]);
        }
    }

    #[test]
    fn unusable_files_are_errors_and_reload_keeps_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let listener = listener_with(dir.path(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let setup = TlsSetup::load(&listener).unwrap();
        let before = setup.config();
        // A key of another certificate: rustls refuses the mismatch.
        let other = tempfile::tempdir().unwrap();
        let stranger = listener_with(other.path(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let key = listener.key.clone().unwrap();
        std::fs::copy(stranger.key.unwrap(), &key).unwrap();
        assert!(matches!(setup.reload(), Err(TlsError::Rustls(_))));
        std::fs::write(&key, "no key here").unwrap();
        assert!(matches!(setup.reload(), Err(TlsError::File { .. })));
        assert!(
            Arc::ptr_eq(&before, &setup.config()),
            "the old config stays"
        );
        std::fs::write(listener.cert.as_ref().unwrap(), "").unwrap();
        assert!(TlsSetup::load(&listener).is_err());
    }
}
