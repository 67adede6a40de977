//! Command-line flags (with `ALFRESCO_*` environment fallbacks) parsed once into a checked
//! `Config`. Nothing below `main` reads the environment; each layer gets typed values.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_rustls::rustls::ServerConfig;

use crate::tls;

/// The flags, as the user types them. `Config::try_from` checks them.
#[derive(Debug, Parser)]
#[command(
    name = "alfresco-ssh",
    version,
    about = "A web SSH gateway: POST /create-session, open the one-time URL, get a terminal."
)]
pub struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "ALFRESCO_LISTEN", default_value = "127.0.0.1:8022")]
    pub listen: SocketAddr,

    /// Public base URL of the gateway (e.g. https://ssh.example.com), used to build session
    /// URLs. Default: http://<the request's Host header>.
    #[arg(long, env = "ALFRESCO_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How long a created session waits to be opened before it expires ("60s", "5m").
    #[arg(long, env = "ALFRESCO_SESSION_TTL", default_value = "60s", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// Most live (connected) sessions at once; more get `too_many_sessions`.
    #[arg(long, env = "ALFRESCO_MAX_SESSIONS", default_value = "1000")]
    pub max_sessions: NonZeroUsize,

    /// Most created-but-unopened sessions held at once; more get `too_many_pending`.
    #[arg(long, env = "ALFRESCO_MAX_PENDING", default_value = "1000")]
    pub max_pending: NonZeroUsize,

    /// Time allowed for DNS, the TCP connection and the SSH handshake and authentication.
    #[arg(long, env = "ALFRESCO_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// PEM certificate chain (leaf first) to serve HTTPS and WSS with. Needs --tls-key.
    #[arg(long, env = "ALFRESCO_TLS_CERT", value_name = "PEM_FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, RSA or EC) for --tls-cert.
    #[arg(long, env = "ALFRESCO_TLS_KEY", value_name = "PEM_FILE")]
    pub tls_key: Option<PathBuf>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, env = "ALFRESCO_LOG", default_value = "info")]
    pub log: String,
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// The checked configuration `server::run` works from.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Scheme, host and optional path prefix, without a trailing slash.
    pub public_url: Option<String>,
    pub session_ttl: Duration,
    pub max_sessions: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    /// Serve HTTPS and WSS with this; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Config {
    /// Defaults as documented in `--help`, for `listen`. Tests start from this.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            public_url: None,
            session_ttl: Duration::from_secs(60),
            max_sessions: 1000,
            max_pending: 1000,
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }

    /// The scheme clients reach the listener with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Plain HTTP on an address other hosts can reach: credentials would cross the network
    /// in clear text, which start-up warns about.
    pub fn is_cleartext_exposed(&self) -> bool {
        self.tls.is_none() && !self.listen.ip().is_loopback()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl TryFrom<&Args> for Config {
    type Error = ConfigError;

    fn try_from(args: &Args) -> Result<Self, ConfigError> {
        let public_url = args
            .public_url
            .as_deref()
            .map(check_public_url)
            .transpose()?;
        if args.session_ttl.is_zero() {
            return Err(ConfigError("--session-ttl must be more than zero".into()));
        }
        if args.connect_timeout < Duration::from_millis(100) {
            return Err(ConfigError(
                "--connect-timeout must be at least 100ms".into(),
            ));
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(tls::load(cert, key).map_err(|e| ConfigError(e.to_string()))?)
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => return Err(ConfigError("--tls-key needs --tls-cert".into())),
        };
        Ok(Config {
            listen: args.listen,
            public_url,
            session_ttl: args.session_ttl,
            max_sessions: args.max_sessions.get(),
            max_pending: args.max_pending.get(),
            connect_timeout: args.connect_timeout,
            tls,
        })
    }
}

/// `http(s)://host[:port][/prefix]`, returned without a trailing slash.
fn check_public_url(url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ConfigError("--public-url must start with http:// or https://".into()))?;
    let host = rest.split('/').next().unwrap_or_default();
    let bad =
        |b: char| b.is_whitespace() || b.is_control() || matches!(b, '?' | '#' | '"' | '<' | '>');
    if host.is_empty() || url.chars().any(bad) {
        return Err(ConfigError(
            "--public-url must be a plain URL such as https://ssh.example.com".into(),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["alfresco-ssh"];
        argv.extend_from_slice(args);
        Config::try_from(&Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8022".parse().unwrap());
        assert_eq!(c.session_ttl, Duration::from_secs(60));
        assert_eq!(c.public_url, None);
    }

    #[test]
    fn public_url_is_checked_and_trimmed() {
        let c = parse(&["--public-url", "https://ssh.example.com/gw/"]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://ssh.example.com/gw"));
        assert!(parse(&["--public-url", "ftp://x"]).is_err());
        assert!(parse(&["--public-url", "https://"]).is_err());
        assert!(parse(&["--public-url", "https://a b"]).is_err());
    }

    #[test]
    fn durations() {
        let c = parse(&["--session-ttl", "5m", "--connect-timeout", "3s"]).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(300));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert!(parse(&["--session-ttl", "0s"]).is_err());
    }

    #[test]
    fn tls_needs_both_files() {
        let e = parse(&["--tls-cert", "/nonexistent/cert.pem"]).unwrap_err();
        assert_eq!(e.0, "--tls-cert needs --tls-key");
        let e = parse(&["--tls-key", "/nonexistent/key.pem"]).unwrap_err();
        assert_eq!(e.0, "--tls-key needs --tls-cert");
    }

    #[test]
    fn tls_files_are_loaded_and_checked_at_parse_time() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

        let c = parse(&["--tls-cert", cert, "--tls-key", key]).unwrap();
        assert_eq!(c.scheme(), "https");
        std::fs::write(key, "garbage").unwrap();
        let e = parse(&["--tls-cert", cert, "--tls-key", key]).unwrap_err();
        assert!(e.0.starts_with("no private key"), "{e}");
    }

    #[test]
    fn cleartext_is_exposed_only_off_loopback_without_tls() {
        assert!(!parse(&[]).unwrap().is_cleartext_exposed());
        assert!(
            !parse(&["--listen", "[::1]:8022"])
                .unwrap()
                .is_cleartext_exposed()
        );
        assert!(
            parse(&["--listen", "0.0.0.0:8022"])
                .unwrap()
                .is_cleartext_exposed()
        );
        assert!(
            parse(&["--listen", "10.1.2.3:8022"])
                .unwrap()
                .is_cleartext_exposed()
        );
    }
}
