//! Certificates made at test time with rcgen: a test CA, a server certificate for
//! `localhost`/`127.0.0.1`, client certificates with a CN, a DNS SAN or a URI SAN, an expired
//! one and one from an unrelated CA; plus rustls client configs that use them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A CA able to issue certificates.
pub(crate) struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate, PEM.
    pub(crate) pem: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub(crate) fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issue(&self, params: &CertificateParams) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    /// Certificate chain file.
    pub(crate) cert: PathBuf,
    /// Private key file.
    pub(crate) key: PathBuf,
}

impl Issued {
    /// The chain and key, for a rustls client.
    pub(crate) fn load(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (chain, PrivateKeyDer::from_pem_file(&self.key).unwrap())
    }
}

/// What a client certificate names.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientName<'a> {
    /// Subject CN.
    pub(crate) cn: Option<&'a str>,
    /// A DNS SAN.
    pub(crate) dns: Option<&'a str>,
    /// A URI SAN.
    pub(crate) uri: Option<&'a str>,
    /// Valid only in 2020.
    pub(crate) expired: bool,
}

/// A test PKI in a temporary directory.
pub(crate) struct Pki {
    /// Holds the files.
    pub(crate) dir: tempfile::TempDir,
    /// The CA that signs everything (clients and the server).
    pub(crate) ca: Ca,
    /// `ca.pem`.
    pub(crate) ca_file: PathBuf,
    /// The server's certificate and key.
    pub(crate) server: Issued,
}

impl Pki {
    /// A CA and a server certificate for `localhost`, `127.0.0.1` with CN `server-1`.
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Tidegate test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let server = Issued {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
        };
        let pki = Pki {
            dir,
            ca,
            ca_file,
            server,
        };
        pki.reissue_server("server-1");
        pki
    }

    /// Writes a new server certificate (CN `cn`, same names) over the server's files.
    pub(crate) fn reissue_server(&self, cn: &str) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) = self.ca.issue(&params);
        // Key first, then certificate, as a careful operator would; each write is atomic.
        write_atomic(&self.server.key, &key);
        write_atomic(&self.server.cert, &cert);
    }

    /// A client certificate signed by this PKI's CA.
    pub(crate) fn client(&self, file: &str, name: &ClientName<'_>) -> Issued {
        issue_client(&self.ca, self.dir.path(), file, name)
    }

    /// A client certificate from another CA, which the server does not trust.
    pub(crate) fn stranger(&self, file: &str) -> Issued {
        let other = Ca::new("Somebody else's CA");
        issue_client(
            &other,
            self.dir.path(),
            file,
            &ClientName {
                cn: Some("stranger"),
                ..ClientName::default()
            },
        )
    }

    /// A rustls client config trusting the CA, with `client` as its certificate and `alpn`.
    pub(crate) fn client_config(
        &self,
        client: Option<&Issued>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca_file, client, alpn)
    }

    /// A `[[listeners]]` entry of `kind` on a free port of 127.0.0.1 with this server
    /// certificate, plus `extra` TOML lines.
    pub(crate) fn listener(&self, kind: &str, extra: &str) -> String {
        format!(
            "[[listeners]]\nkind = \"{kind}\"\nbind = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n{extra}\n",
            self.server.cert, self.server.key
        )
    }
}

/// A rustls client config trusting the CA in `ca_file`.
pub(crate) fn client_config(
    ca_file: &Path,
    client: Option<&Issued>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(issued) => {
            let (chain, key) = issued.load();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn issue_client(ca: &Ca, dir: &Path, file: &str, name: &ClientName<'_>) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    if let Some(cn) = name.cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    if let Some(dns) = name.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(dns.try_into().unwrap()));
    }
    if let Some(uri) = name.uri {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if name.expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let (cert, key) = ca.issue(&params);
    let issued = Issued {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}-key.pem")),
    };
    std::fs::write(&issued.cert, cert).unwrap();
    std::fs::write(&issued.key, key).unwrap();
    issued
}

/// Writes `text` to `path` through a temporary file and a rename, as deployment tools do.
pub(crate) fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
