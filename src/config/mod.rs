//! Command-line flags (with `ALFRESCO_*` environment fallbacks) parsed once into a checked
//! `Config`. Nothing below `main` reads the environment; each layer gets typed values.
//! `args` holds what the user types; this module turns it into what the program works from.

mod args;

pub use args::{Args, parse_command_line};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use tokio_rustls::rustls::ServerConfig;

use crate::destination::DestinationPolicy;
use crate::record::{self, RecordSettings};
use crate::secret::Secret;
use crate::tls;

/// A bearer token for POST /create-session, and the name logs know it by.
#[derive(Debug)]
pub struct ApiToken {
    pub name: String,
    pub token: Secret<String>,
    /// `name:token:admin`: sees and ends every session, not only its own.
    pub admin: bool,
}

/// Shortest token accepted: guessing must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

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

/// The body `--webhook-format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WebhookFormat {
    /// `{"event", "delivery", "timestamp", "session", "url"?}`: for programs.
    Json,
    /// `{"text": "…"}`: a readable line for Slack or Mattermost incoming webhooks.
    Slack,
}

/// A checked `--webhook` URL (http or https, with a host). Chat webhooks carry their secret
/// in the path (Slack's `/services/T…/B…/…`), so `Display` and `Debug` show only the scheme,
/// host and port; `expose()` is for the request itself.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(reqwest::Url);

impl WebhookUrl {
    /// The whole URL, path and query included; for sending, never for logs.
    pub fn expose(&self) -> &reqwest::Url {
        &self.0
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => write!(f, "{}://{host}:{port}", self.0.scheme()),
            None => write!(f, "{}://{host}", self.0.scheme()),
        }
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// Where session events are posted, how they are signed and shaped (`crate::webhook`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// At least one; in the order given.
    pub endpoints: Vec<WebhookUrl>,
    /// The `--webhook-secret-file` contents, trimmed; `None`: deliveries are unsigned.
    pub secret: Option<Arc<Secret<Vec<u8>>>>,
    pub format: WebhookFormat,
}

/// Shortest webhook secret accepted, as for API tokens: a receiver's check is only as good
/// as the secret is unguessable.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;

/// The checked configuration `server::run` works from.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Scheme, host and optional path prefix, without a trailing slash.
    pub public_url: Option<String>,
    pub session_ttl: Duration,
    /// The bound of a create-session's own `ttl`.
    pub max_session_ttl: Duration,
    /// The bound of a status wait's `timeout`.
    pub max_wait: Duration,
    /// How long, and how many, ended sessions stay queryable.
    pub session_history: Duration,
    pub session_history_entries: usize,
    pub max_sessions: usize,
    /// 0 = no per-token limit.
    pub max_sessions_per_token: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    /// How long one authentication prompt waits for the person (not counted in
    /// `connect_timeout`).
    pub auth_prompt_timeout: Duration,
    /// `LANG` for the remote shell; `None` sends none.
    pub remote_lang: Option<String>,
    /// Empty means every create-session is refused: `main` generates one when none is set.
    pub api_tokens: Arc<Vec<ApiToken>>,
    /// Where `api_tokens` came from, to read them again on SIGHUP.
    pub token_source: TokenSource,
    /// Origins allowed besides the gateway's own, as `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// Origins that may frame the page; empty: none.
    pub frame_ancestors: Vec<String>,
    /// `--allowed-host` names (checked: lower case, no port), whose pages may open WebSockets.
    pub allowed_hosts: Vec<String>,
    /// Per token and per client IP; 0 = no limit.
    pub create_rate_per_minute: u32,
    pub destinations: Arc<DestinationPolicy>,
    pub idle_timeout: Option<Duration>,
    pub max_session_time: Option<Duration>,
    /// `None`: a session ends when its client leaves.
    pub resume_grace: Option<Duration>,
    pub resume_buffer: usize,
    /// 0 = sharing off.
    pub max_viewers: usize,
    /// How long live sessions may go on after a shutdown signal.
    pub drain_timeout: Duration,
    /// Serve HTTPS and WSS with this; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// `None`: accept-new remembers keys in memory only, until the process exits.
    pub state_dir: Option<PathBuf>,
    /// `None`: sessions are not recorded.
    pub record: Option<RecordSettings>,
    /// `None`: no `--webhook`, no events are posted.
    pub webhook: Option<WebhookSettings>,
}

impl Config {
    /// The flags' defaults (as `--help` shows them), listening on `listen`. Tests start from
    /// this. Derived from the flags, so the two cannot disagree.
    pub fn new(listen: SocketAddr) -> Self {
        let mut config = Config::try_from(&Args::defaults())
            .expect("the flag defaults are a valid configuration (config::tests::defaults)");
        config.listen = listen;
        config
    }

    /// The scheme clients reach the listener with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Off loopback with no name configured: the origin check accepts only pages served
    /// from the listen address, which is rarely how people reach a shared gateway.
    pub fn reached_only_by_address(&self) -> bool {
        !self.listen.ip().is_loopback()
            && self.public_url.is_none()
            && self.allowed_hosts.is_empty()
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
        if args.session_ttl > args.max_session_ttl {
            return Err(ConfigError(
                "--session-ttl must not be above --max-session-ttl".into(),
            ));
        }
        if args.max_wait.is_zero() {
            return Err(ConfigError("--max-wait must be more than zero".into()));
        }
        if args.connect_timeout < Duration::from_millis(100) {
            return Err(ConfigError(
                "--connect-timeout must be at least 100ms".into(),
            ));
        }
        if args.auth_prompt_timeout < Duration::from_secs(1) {
            return Err(ConfigError(
                "--auth-prompt-timeout must be at least 1s".into(),
            ));
        }
        let token_source = TokenSource {
            file: args.api_token_file.clone(),
            env: args.api_token.clone().map(|t| Arc::new(Secret::new(t))),
        };
        let api_tokens = token_source.load()?;
        let allowed_origins = args
            .allow_origin
            .iter()
            .map(|o| check_origin("--allow-origin", o))
            .collect::<Result<_, _>>()?;
        let frame_ancestors = args
            .allow_frame_ancestors
            .iter()
            .map(|o| check_origin("--allow-frame-ancestors", o))
            .collect::<Result<_, _>>()?;
        let allowed_hosts = args
            .allowed_host
            .iter()
            .map(|h| check_host(h))
            .collect::<Result<_, _>>()?;
        let destinations = DestinationPolicy::parse(&args.allow, &args.deny)
            .map_err(|e| ConfigError(format!("destination rule: {e}")))?;
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(tls::load(cert, key).map_err(|e| ConfigError(e.to_string()))?)
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => return Err(ConfigError("--tls-key needs --tls-cert".into())),
        };
        let record = check_record(args)?;
        let webhook = check_webhooks(args)?;
        Ok(Config {
            listen: args.listen,
            public_url,
            session_ttl: args.session_ttl,
            max_session_ttl: args.max_session_ttl,
            max_wait: args.max_wait,
            session_history: args.session_history,
            session_history_entries: args.session_history_entries,
            max_sessions: args.max_sessions.get(),
            max_sessions_per_token: args.max_sessions_per_token,
            max_pending: args.max_pending.get(),
            connect_timeout: args.connect_timeout,
            auth_prompt_timeout: args.auth_prompt_timeout,
            remote_lang: check_lang(&args.remote_lang)?,
            api_tokens: Arc::new(api_tokens),
            token_source,
            allowed_origins,
            frame_ancestors,
            allowed_hosts,
            create_rate_per_minute: args.create_rate_limit,
            destinations: Arc::new(destinations),
            idle_timeout: nonzero(args.idle_timeout),
            max_session_time: nonzero(args.max_session_time),
            resume_grace: nonzero(args.resume_grace),
            resume_buffer: args.resume_buffer,
            max_viewers: args.max_viewers,
            drain_timeout: args.drain_timeout,
            tls,
            known_hosts: args.known_hosts.clone(),
            host_key_policy: args.host_key_policy,
            state_dir: args.state_dir.clone(),
            record,
            webhook,
        })
    }
}

/// `--webhook` URLs must be http(s) with a host, and the secret file readable and long
/// enough, at start-up: a misspelt receiver found in production means events already lost.
/// Errors name the flag and the URL's position, never the URL (its path may be a secret).
fn check_webhooks(args: &Args) -> Result<Option<WebhookSettings>, ConfigError> {
    if args.webhook.is_empty() {
        if args.webhook_secret_file.is_some() {
            return Err(ConfigError("--webhook-secret-file needs --webhook".into()));
        }
        return Ok(None);
    }
    let endpoints = args
        .webhook
        .iter()
        .enumerate()
        .map(|(i, url)| check_webhook_url(i + 1, url))
        .collect::<Result<Vec<_>, _>>()?;
    let secret = args
        .webhook_secret_file
        .as_deref()
        .map(read_webhook_secret)
        .transpose()?
        .map(Arc::new);
    Ok(Some(WebhookSettings {
        endpoints,
        secret,
        format: args.webhook_format,
    }))
}

/// The `n`th `--webhook`.
fn check_webhook_url(n: usize, url: &str) -> Result<WebhookUrl, ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError(format!("--webhook #{n}: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "--webhook #{n}: only http:// and https:// URLs are posted to"
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError(format!("--webhook #{n}: the URL has no host")));
    }
    Ok(WebhookUrl(parsed))
}

/// Read once; leading and trailing whitespace (the file's final newline) is not part of the
/// secret. `fs::read` sizes its buffer from the file's length, and the untrimmed copy is
/// wiped, so no stray copy of the secret is left in freed memory.
fn read_webhook_secret(path: &std::path::Path) -> Result<Secret<Vec<u8>>, ConfigError> {
    let raw = zeroize::Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| ConfigError(format!("--webhook-secret-file {}: {e}", path.display())))?,
    );
    let secret = raw.trim_ascii();
    if secret.len() < MIN_WEBHOOK_SECRET_LEN {
        return Err(ConfigError(format!(
            "--webhook-secret-file {}: the secret must be at least {MIN_WEBHOOK_SECRET_LEN} bytes",
            path.display()
        )));
    }
    Ok(Secret::new(secret.to_vec()))
}

/// The recording directory must exist or be creatable, and writable, at start-up: a
/// session is never refused for a recording that cannot be made, so find out now.
fn check_record(args: &Args) -> Result<Option<RecordSettings>, ConfigError> {
    let Some(dir) = &args.record_dir else {
        if args.record_input {
            return Err(ConfigError("--record-input needs --record-dir".into()));
        }
        return Ok(None);
    };
    record::prepare_dir(dir).map_err(|e| {
        ConfigError(format!(
            "--record-dir {}: not usable for recordings: {e}",
            dir.display()
        ))
    })?;
    Ok(Some(RecordSettings {
        dir: dir.clone(),
        record_input: args.record_input,
    }))
}

/// A locale name such as `C.UTF-8` or `en_US.UTF-8`; empty means none.
fn check_lang(lang: &str) -> Result<Option<String>, ConfigError> {
    if lang.is_empty() {
        return Ok(None);
    }
    let plain = lang.len() <= 64
        && lang
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'));
    if !plain {
        return Err(ConfigError(format!(
            "--remote-lang {lang:?} is not a locale name such as C.UTF-8"
        )));
    }
    Ok(Some(lang.to_owned()))
}

/// Where the API tokens come from: `--api-token-file` (read again on SIGHUP) and
/// `ALFRESCO_API_TOKEN` (named `env`, an admin: it is the operator's own).
#[derive(Debug, Clone, Default)]
pub struct TokenSource {
    pub file: Option<PathBuf>,
    pub env: Option<Arc<Secret<String>>>,
}

impl TokenSource {
    /// Reads and checks the tokens; an error names the file or line, never a token.
    pub fn load(&self) -> Result<Vec<ApiToken>, ConfigError> {
        let mut api_tokens = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("--api-token-file {}: {e}", path.display()))
                })?;
                parse_token_file(&text)?
            }
            None => Vec::new(),
        };
        if let Some(token) = &self.env {
            check_token(token.expose(), "ALFRESCO_API_TOKEN")?;
            api_tokens.push(ApiToken {
                name: "env".into(),
                token: Secret::new(token.expose().clone()),
                admin: true,
            });
        }
        Ok(api_tokens)
    }
}

/// `name:token`, `name:token:admin` or a bare token per line; names must be unique, tokens long enough.
fn parse_token_file(text: &str) -> Result<Vec<ApiToken>, ConfigError> {
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = match line.split_once(':') {
            Some((name, token)) => (name.trim().to_owned(), token.trim()),
            None => (format!("line-{n}"), line),
        };
        // `name:token:admin`; a token itself may hold `:` but cannot end in `:admin`.
        let (token, admin) = match token.rsplit_once(':') {
            Some((token, "admin")) => (token.trim(), true),
            _ => (token, false),
        };
        let plain_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain_name {
            return Err(ConfigError(format!(
                "--api-token-file line {n}: the name must be letters, digits, '-', '_' or '.'"
            )));
        }
        check_token(token, &format!("--api-token-file line {n}"))?;
        if tokens.iter().any(|t| t.name == name) {
            return Err(ConfigError(format!(
                "--api-token-file line {n}: the name {name} is used twice"
            )));
        }
        tokens.push(ApiToken {
            name,
            token: Secret::new(token.to_owned()),
            admin,
        });
    }
    if tokens.is_empty() {
        return Err(ConfigError("--api-token-file holds no token".into()));
    }
    Ok(tokens)
}

/// Never echoes the token itself.
fn check_token(token: &str, source: &str) -> Result<(), ConfigError> {
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "{source}: a token must be at least {MIN_TOKEN_LEN} printable characters without spaces"
        )));
    }
    Ok(())
}

/// `scheme://host[:port]`, lower-cased, no path.
/// `scheme://host[:port]` for `flag` (`--allow-origin`, `--allow-frame-ancestors`), whose
/// errors name it.
fn check_origin(flag: &str, origin: &str) -> Result<String, ConfigError> {
    let url = check_url(flag, origin)?;
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    if rest.contains('/') {
        return Err(ConfigError(format!(
            "{flag} {origin}: an origin has no path"
        )));
    }
    Ok(url.to_ascii_lowercase())
}

/// `--allowed-host`: a DNS name or an IP address, without a port; lower case, no trailing
/// dot, IPv6 in brackets (as it appears in an `Origin`).
fn check_host(host: &str) -> Result<String, ConfigError> {
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let bare = name
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        });
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(ConfigError(format!(
            "--allowed-host {host}: give a host name or IP address without scheme or port"
        )));
    }
    Ok(name.to_owned())
}

/// A fresh random token (244 bits from the OS CSPRNG, via UUID v4), for `main` to print
/// once when the operator configured none.
pub fn generate_token() -> ApiToken {
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    ApiToken {
        name: "generated".into(),
        token: Secret::new(token),
        // The operator's only token: it must be able to see and end every session.
        admin: true,
    }
}

/// `http(s)://host[:port][/prefix]`, returned without a trailing slash.
fn check_public_url(url: &str) -> Result<String, ConfigError> {
    check_url("--public-url", url)
}

/// `http(s)://host[:port][/prefix]` given to `flag`, whose errors name it; returned without
/// a trailing slash.
fn check_url(flag: &str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ConfigError(format!("{flag} must start with http:// or https://")))?;
    let host = rest.split('/').next().unwrap_or_default();
    let bad =
        |b: char| b.is_whitespace() || b.is_control() || matches!(b, '?' | '#' | '"' | '<' | '>');
    if host.is_empty() || url.chars().any(bad) {
        return Err(ConfigError(format!(
            "{flag} must be a plain URL such as https://ssh.example.com"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::Parser;

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
        assert_eq!(c.session_ttl, Duration::from_secs(600));
        assert_eq!(c.public_url, None);
        assert_eq!(c.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(c.known_hosts, None);
        // Config::new is the same defaults on another address.
        let listen = "127.0.0.1:1".parse().unwrap();
        let n = Config::new(listen);
        assert_eq!(n.listen, listen);
        assert_eq!(format!("{:?}", Config { listen, ..c }), format!("{n:?}"));
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

    fn with_file(toml: &str, flags: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alfresco.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv: Vec<OsString> = vec!["alfresco-ssh".into(), "--config".into(), path.into()];
        argv.extend(flags.iter().map(OsString::from));
        let args = parse_command_line(argv)
            .map_err(|e| e.map_or_else(|e| e, |clap| ConfigError(clap.to_string())))?;
        Config::try_from(&args)
    }

    #[test]
    fn config_file() {
        let c = with_file("listen = \"127.0.0.1:9000\"\nsession-ttl = \"5m\"\nallow = [\"10.0.0.0/8\", \"*.corp.example\"]\nmax-sessions = 50\n", &[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.session_ttl, Duration::from_secs(300));
        assert_eq!(c.max_sessions, 50);
        assert!(
            c.destinations
                .summary()
                .starts_with("only 10.0.0.0/8, *.corp.example")
        );
        // A flag wins over the file.
        let c = with_file(
            "listen = \"127.0.0.1:9000\"\n",
            &["--listen", "127.0.0.1:9001"],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9001".parse().unwrap());
    }

    #[test]
    fn config_file_errors_name_the_key() {
        let err = with_file("lissten = \"127.0.0.1:9000\"\n", &[]).unwrap_err();
        assert!(err.0.contains("unknown key `lissten`"), "{err}");
        let err = with_file("listen = \"nowhere\"\n", &[]).unwrap_err();
        assert!(err.0.contains("--listen"), "{err}");
        let err = with_file("max-sessions = true\n", &[]).unwrap_err();
        assert!(err.0.contains("`max-sessions`"), "{err}");
        let err = with_file("listen = \n", &[]).unwrap_err();
        assert!(err.0.contains("alfresco.toml"), "{err}");
        let err = with_file("config = \"x\"\n", &[]).unwrap_err();
        assert!(err.0.contains("unknown key `config`"), "{err}");
    }

    #[test]
    fn token_file() {
        let tokens =
            parse_token_file("# ci tokens\n\nci-main:0123456789abcdef0123\nabcdefabcdefabcdef99\n")
                .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].name, "ci-main");
        assert_eq!(tokens[0].token.expose(), "0123456789abcdef0123");
        assert_eq!(tokens[1].name, "line-4");
        assert!(parse_token_file("ci:short").is_err());
        assert!(parse_token_file("# nothing\n").is_err());
        assert!(parse_token_file("a b:0123456789abcdef0123").is_err());
        assert!(parse_token_file("x:0123456789abcdef0123\nx:0123456789abcdef0124").is_err());
        let err = parse_token_file("ci:SECRET-short").unwrap_err();
        assert!(!err.0.contains("SECRET"), "{err}");
    }

    #[test]
    fn origins() {
        let c = parse(&[
            "--allow-origin",
            "https://Portal.example.com,http://10.0.0.1:8080",
        ])
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            ["https://portal.example.com", "http://10.0.0.1:8080"]
        );
        assert!(parse(&["--allow-origin", "https://a.example/path"]).is_err());
        // Each flag's errors name that flag.
        for flag in ["--allow-origin", "--allow-frame-ancestors"] {
            for bad in ["ftp://a.example", "https://a.example/path", "https://"] {
                let err = parse(&[flag, bad]).unwrap_err();
                assert!(err.0.starts_with(flag), "{flag} {bad}: {err}");
            }
        }
    }

    #[test]
    fn allowed_hosts() {
        let c = parse(&[
            "--allowed-host",
            "GW.Internal.,10.0.0.5",
            "--allowed-host",
            "::1",
        ])
        .unwrap();
        assert_eq!(c.allowed_hosts, ["gw.internal", "10.0.0.5", "[::1]"]);
        for bad in ["http://gw", "gw:8022", "", "a..b", "gw/x", "[gw]"] {
            let err = parse(&["--allowed-host", bad]).unwrap_err();
            assert!(err.0.starts_with("--allowed-host"), "{bad}: {err}");
        }
    }

    #[test]
    fn size_flags() {
        let c = parse(&["--resume-grace", "0", "--resume-buffer", "64KiB"]).unwrap();
        assert_eq!((c.resume_grace, c.resume_buffer), (None, 64 << 10));
    }

    #[test]
    fn durations() {
        let c = parse(&["--session-ttl", "5m", "--connect-timeout", "3s"]).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(300));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert!(parse(&["--session-ttl", "0s"]).is_err());
        let c = parse(&["--idle-timeout", "0", "--max-session-time", "1h"]).unwrap();
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_session_time, Some(Duration::from_secs(3600)));
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
    fn record_flags() {
        assert_eq!(parse(&[]).unwrap().record, None);
        let dir = tempfile::tempdir().unwrap();
        let recordings = dir.path().join("recordings");
        let path = recordings.to_str().unwrap();
        let c = parse(&["--record-dir", path]).unwrap();
        assert_eq!(
            c.record,
            Some(RecordSettings {
                dir: recordings.clone(),
                record_input: false
            })
        );
        assert!(recordings.is_dir(), "created at start-up");
        let c = parse(&["--record-dir", path, "--record-input"]).unwrap();
        assert!(c.record.unwrap().record_input);
        let e = parse(&["--record-input"]).unwrap_err();
        assert_eq!(e.0, "--record-input needs --record-dir");
        let file_setting = format!("record-dir = {path:?}\nrecord-input = true\n");
        assert!(
            with_file(&file_setting, &[])
                .unwrap()
                .record
                .unwrap()
                .record_input
        );
        let file_setting = format!("record-dir = {path:?}\nrecord-input = false\n");
        assert!(
            !with_file(&file_setting, &[])
                .unwrap()
                .record
                .unwrap()
                .record_input
        );
        let e = with_file("record-input = \"yes\"\n", &[]).unwrap_err();
        assert!(e.0.contains("`record-input` must be true or false"), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = parse(&["--record-dir", file.to_str().unwrap()]).unwrap_err();
        assert!(e.0.starts_with("--record-dir "), "{e}");
    }

    #[test]
    fn webhook_flags() {
        assert!(parse(&[]).unwrap().webhook.is_none());
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("webhook-secret");
        std::fs::write(&secret, "  s3cret-s3cret-s3cret\n").unwrap();
        let c = parse(&[
            "--webhook",
            "https://hooks.example.com/services/T0/B0/SECRETPATH?x=1",
            "--webhook",
            "http://127.0.0.1:9000/hook",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
            "--webhook-format",
            "slack",
        ])
        .unwrap();
        let w = c.webhook.unwrap();
        assert_eq!(w.format, WebhookFormat::Slack);
        assert_eq!(w.secret.as_ref().unwrap().expose(), b"s3cret-s3cret-s3cret");
        let shown: Vec<String> = w.endpoints.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            ["https://hooks.example.com", "http://127.0.0.1:9000"]
        );
        assert_eq!(w.endpoints[0].expose().path(), "/services/T0/B0/SECRETPATH");
        // Neither the secret nor a URL's path reaches a Debug print of the config.
        let debug = format!("{w:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("SECRETPATH"),
            "{debug}"
        );

        for (args, start) in [
            (
                &["--webhook", "ftp://example.com/x"][..],
                "--webhook #1: only http",
            ),
            (
                &[
                    "--webhook",
                    "http://a.example",
                    "--webhook",
                    "file:///etc/passwd",
                ][..],
                "--webhook #2: only http",
            ),
            (&["--webhook", "not a url"][..], "--webhook #1: not a URL"),
            (
                &["--webhook-secret-file", "/nonexistent"][..],
                "--webhook-secret-file needs --webhook",
            ),
            (
                &[
                    "--webhook",
                    "https://a.example",
                    "--webhook-secret-file",
                    "/nonexistent/f",
                ][..],
                "--webhook-secret-file /nonexistent/f: ",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.0.starts_with(start), "{args:?}: {err}");
        }
        std::fs::write(&secret, "short-SECRET\n").unwrap();
        let err = parse(&[
            "--webhook",
            "https://a.example",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(
            err.0.contains("at least 16 bytes") && !err.0.contains("SECRET"),
            "{err}"
        );
        assert!(Args::try_parse_from(["alfresco-ssh", "--webhook-format", "xml"]).is_err());
        // In a --config file, a list.
        let c = with_file(
            "webhook = [\"https://a.example/x\", \"http://127.0.0.1:9/y\"]\nwebhook-format = \"slack\"\n",
            &[],
        )
        .unwrap();
        let w = c.webhook.unwrap();
        assert_eq!(w.endpoints.len(), 2);
        assert_eq!(w.format, WebhookFormat::Slack);
        assert!(w.secret.is_none());
    }

    #[test]
    fn a_name_is_needed_only_off_loopback() {
        assert!(!parse(&[]).unwrap().reached_only_by_address());
        assert!(
            parse(&["--listen", "0.0.0.0:8022"])
                .unwrap()
                .reached_only_by_address()
        );
        for named in [
            &[
                "--listen",
                "0.0.0.0:8022",
                "--public-url",
                "https://gw.example",
            ][..],
            &["--listen", "0.0.0.0:8022", "--allowed-host", "gw.example"][..],
        ] {
            assert!(
                !parse(named).unwrap().reached_only_by_address(),
                "{named:?}"
            );
        }
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
