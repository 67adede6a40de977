//! TLS for the listener: loads `--tls-cert` and `--tls-key` once, at start-up, into a rustls
//! `ServerConfig` (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).
//!
//! Everything that can be wrong with the files (unreadable, no certificate, no key, a key
//! that does not belong to the certificate) is found here, so a bad deployment fails before
//! it listens rather than on the first handshake. The handshake itself is `server`'s.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, InconsistentKeys, ServerConfig};
use zeroize::Zeroizing;

/// Why the certificate and key cannot be used. Messages name the file, never its contents.
#[derive(Debug)]
pub enum TlsError {
    Unreadable {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    BadPem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    NoCertificate(PathBuf),
    NoKey(PathBuf),
    KeyMismatch,
    Rejected(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable { what, path, source } => {
                write!(f, "cannot read the TLS {what} {}: {source}", path.display())
            }
            TlsError::BadPem { what, path, source } => {
                write!(
                    f,
                    "the TLS {what} {} is not valid PEM: {source}",
                    path.display()
                )
            }
            TlsError::NoCertificate(path) => write!(
                f,
                "no certificate (-----BEGIN CERTIFICATE-----) in {}",
                path.display()
            ),
            TlsError::NoKey(path) => write!(
                f,
                "no private key (PKCS#8, RSA or EC, in PEM) in {}",
                path.display()
            ),
            TlsError::KeyMismatch => {
                f.write_str("the TLS key does not match the certificate (the first in the file)")
            }
            TlsError::Rejected(e) => write!(f, "the TLS certificate or key is unusable: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Reads a PEM certificate chain (leaf first) and a PEM private key, and checks that they
/// belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(cert)?;
    let key = read_key(key)?;
    // The ring provider explicitly, so nothing depends on a process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rejected)?
        .with_no_client_auth()
        // Also compares the key's public half with the leaf certificate's.
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError::KeyMismatch,
            e => TlsError::Rejected(e),
        })?;
    // The server speaks HTTP/1.1 only (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate";
    let pem = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        what,
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "key";
    // The file's bytes are wiped once the key is parsed out of them.
    let pem = Zeroizing::new(std::fs::read(path).map_err(|source| TlsError::Unreadable {
        what,
        path: path.to_owned(),
        source,
    })?);
    // The first PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key in the file.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey(path.to_owned()),
        source => TlsError::BadPem {
            what,
            path: path.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A throw-away self-signed certificate and its PKCS#8 key, as PEM.
    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn load_pem(cert: &str, key: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let dir = tempfile::tempdir().unwrap();
        load(&write(&dir, "cert.pem", cert), &write(&dir, "key.pem", key))
    }

    #[test]
    fn loads_a_pkcs8_key_and_offers_http1_only() {
        let (cert, key) = self_signed();
        let config = load_pem(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    /// RSA (PKCS#1) and EC (SEC1) keys as `openssl` writes them in their traditional forms.
    #[test]
    fn loads_traditional_rsa_and_ec_keys() {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("the openssl command");
            assert!(status.status.success(), "openssl {args:?}: {status:?}");
        };
        openssl(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ]);
        for key in ["rsa.pem", "ec.pem"] {
            let cert = format!("{key}.crt");
            let req = ["req", "-x509", "-key", key, "-subj", "/CN=localhost"];
            openssl(&[&req[..], &["-days", "1", "-out", &cert]].concat());
            let head = std::fs::read_to_string(dir.path().join(key)).unwrap();
            assert!(head.starts_with("-----BEGIN RSA") || head.starts_with("-----BEGIN EC"));
            load(&dir.path().join(&cert), &dir.path().join(key))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let e = load_pem(&cert, &other_key).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch), "{e}");
        assert!(e.to_string().contains("does not match"));
    }

    #[test]
    fn garbage_is_named_for_what_is_missing() {
        let (cert, key) = self_signed();
        let garbage = "not a PEM file\n";
        assert!(matches!(
            load_pem(garbage, &key),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(load_pem(&cert, garbage), Err(TlsError::NoKey(_))));
        // A key file holding only the certificate has no key either.
        assert!(matches!(load_pem(&cert, &cert), Err(TlsError::NoKey(_))));
        let truncated = &cert[..cert.len() / 2];
        let e = load_pem(truncated, &key).unwrap_err();
        assert!(matches!(e, TlsError::BadPem { .. }), "{e}");
        let e = load_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &key,
        )
        .unwrap_err();
        assert!(matches!(e, TlsError::Rejected(_)), "{e}");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let (cert, _) = self_signed();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-key.pem");
        let e = load(&write(&dir, "cert.pem", &cert), &missing).unwrap_err();
        assert!(matches!(e, TlsError::Unreadable { what: "key", .. }), "{e}");
        assert!(e.to_string().contains("missing-key.pem"), "{e}");
    }
}
