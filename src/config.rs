//! Command-line flags (with `ALFRESCO_*` environment fallbacks) parsed once into a checked
//! `Config`. Nothing below `main` reads the environment; each layer gets typed values.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

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

    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, env = "ALFRESCO_LOG", default_value = "info")]
    pub log: String,

    /// An OpenSSH known_hosts file of trusted host keys (plain, hashed and [host]:port
    /// entries), read once at start-up. A key listed here for a host:port is the only one
    /// accepted for it.
    #[arg(long, env = "ALFRESCO_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// What to do with a host key that neither the session's `host_key` nor --known-hosts
    /// knows: refuse it (strict), record it and refuse a different one later (accept-new),
    /// or accept any key without a check (insecure-accept-any).
    #[arg(long, env = "ALFRESCO_HOST_KEY_POLICY", value_enum, default_value_t = HostKeyPolicy::AcceptNew)]
    pub host_key_policy: HostKeyPolicy,

    /// Where accept-new records host keys (DIR/known_hosts). Default: $STATE_DIRECTORY
    /// (systemd), else $HOME/.local/state/alfresco-ssh.
    #[arg(long, env = "ALFRESCO_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// What happens to a host key that no pin and no --known-hosts entry decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostKeyPolicy {
    /// Refuse it: `host_key_unknown`.
    Strict,
    /// Trust on first use: record it, and refuse a different key for that host:port later.
    AcceptNew,
    /// Accept any key, unchecked. A man in the middle would get the credentials.
    InsecureAcceptAny,
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
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// `None`: accept-new remembers keys in memory only, until the process exits.
    pub state_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults as documented in `--help`, for `listen`, except that there is no state
    /// directory: accept-new keeps what it learns in memory. Tests start from this.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            public_url: None,
            session_ttl: Duration::from_secs(60),
            max_sessions: 1000,
            max_pending: 1000,
            connect_timeout: Duration::from_secs(10),
            known_hosts: None,
            host_key_policy: HostKeyPolicy::AcceptNew,
            state_dir: None,
        }
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
        Ok(Config {
            listen: args.listen,
            public_url,
            session_ttl: args.session_ttl,
            max_sessions: args.max_sessions.get(),
            max_pending: args.max_pending.get(),
            connect_timeout: args.connect_timeout,
            known_hosts: args.known_hosts.clone(),
            host_key_policy: args.host_key_policy,
            state_dir: args.state_dir.clone(),
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
        assert_eq!(c.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(c.known_hosts, None);
    }

    #[test]
    fn host_key_flags() {
        let c = parse(&[
            "--known-hosts",
            "/etc/ssh/ssh_known_hosts",
            "--host-key-policy",
            "strict",
            "--state-dir",
            "/var/lib/alfresco-ssh",
        ])
        .unwrap();
        assert_eq!(c.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(
            c.known_hosts.as_deref(),
            Some(std::path::Path::new("/etc/ssh/ssh_known_hosts"))
        );
        assert_eq!(
            c.state_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/alfresco-ssh"))
        );
        let c = parse(&["--host-key-policy", "insecure-accept-any"]).unwrap();
        assert_eq!(c.host_key_policy, HostKeyPolicy::InsecureAcceptAny);
        assert!(Args::try_parse_from(["alfresco-ssh", "--host-key-policy", "tofu"]).is_err());
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
}
