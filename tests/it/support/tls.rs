//! A throw-away TLS certificate for `127.0.0.1` and `localhost`, made at test time (no key is
//! committed), written as PEM files the gateway loads like `--tls-cert`/`--tls-key`, and a
//! client connector that trusts it and nothing else.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
    _dir: TempDir,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let generated = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        TestCert {
            cert,
            key,
            der: generated.cert.der().clone(),
            _dir: dir,
        }
    }

    /// The server side, loaded from the PEM files the way `--tls-cert`/`--tls-key` are.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        alfresco_ssh::tls::load(&self.cert, &self.key).expect("load the test certificate")
    }

    /// A client that trusts this certificate only and offers ALPN `http/1.1`.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// The name the tests connect to, matching the certificate's IP address entry.
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(Ipv4Addr::LOCALHOST.into())
}
