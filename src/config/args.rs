//! What the operator types: the flags (with `ALFRESCO_*` environment fallbacks), the
//! optional `--config` TOML file filled in beneath them, and the parsers of their values.
//! Nothing here checks how values fit together; `Config::try_from` (the module above) does.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

use super::{ConfigError, HostKeyPolicy, WebhookFormat};

/// The flags, as the user types them. `Config::try_from` checks them.
#[derive(Debug, Parser)]
#[command(
    name = "alfresco-ssh",
    version = env!("ALFRESCO_VERSION_DETAIL"),
    about = "A web SSH gateway: POST /create-session, open the one-time URL, get a terminal."
)]
pub struct Args {
    /// A TOML file of settings, keys named as the flags without dashes (`listen = "…"`,
    /// `allow = ["10.0.0.0/8"]`). Flags and ALFRESCO_* variables win over it.
    #[arg(long, env = "ALFRESCO_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the configuration (flags, environment, --config file), print a summary and
    /// exit: 0 when it is valid. For deploy pipelines.
    #[arg(long)]
    pub check_config: bool,

    /// Address and port to listen on.
    #[arg(long, env = "ALFRESCO_LISTEN", default_value = "127.0.0.1:8022")]
    pub listen: SocketAddr,

    /// Public base URL of the gateway (e.g. https://ssh.example.com), used to build session
    /// URLs. Default: http://<the request's Host header>.
    #[arg(long, env = "ALFRESCO_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How long a created session waits to be opened before it expires ("60s", "5m"), unless
    /// create-session asks for its own `ttl`. Links are posted into job logs and chats and
    /// opened minutes later; the one-time, unguessable id is what protects them.
    #[arg(long, env = "ALFRESCO_SESSION_TTL", default_value = "10m", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// The longest `ttl` a create-session may ask for; more is refused, never clamped.
    #[arg(long, env = "ALFRESCO_MAX_SESSION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub max_session_ttl: Duration,

    /// The longest `timeout` a `GET /sessions/<id>?wait=` may ask for.
    #[arg(long, env = "ALFRESCO_MAX_WAIT", default_value = "10m", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// How long an ended session stays queryable (`GET /sessions/<id>`) after its end.
    #[arg(long, env = "ALFRESCO_SESSION_HISTORY", default_value = "1h", value_parser = parse_duration)]
    pub session_history: Duration,

    /// Most ended sessions kept queryable at once; the oldest are dropped first.
    #[arg(
        long,
        env = "ALFRESCO_SESSION_HISTORY_ENTRIES",
        default_value = "10000"
    )]
    pub session_history_entries: usize,

    /// Most live (connected) sessions at once; more get `too_many_sessions`.
    #[arg(long, env = "ALFRESCO_MAX_SESSIONS", default_value = "1000")]
    pub max_sessions: NonZeroUsize,

    /// Most sessions, pending or live, created with one API token (0 = only --max-sessions
    /// applies); more get `too_many_sessions` at create-session.
    #[arg(long, env = "ALFRESCO_MAX_SESSIONS_PER_TOKEN", default_value = "0")]
    pub max_sessions_per_token: usize,

    /// Most created-but-unopened sessions held at once; more get `too_many_pending`.
    #[arg(long, env = "ALFRESCO_MAX_PENDING", default_value = "1000")]
    pub max_pending: NonZeroUsize,

    /// Time allowed for DNS, the TCP connection and the SSH handshake and authentication.
    #[arg(long, env = "ALFRESCO_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time the person has to answer one authentication prompt in the page (a password, a
    /// one-time code); it does not count against --connect-timeout. Unanswered: `auth_timeout`.
    #[arg(long, env = "ALFRESCO_AUTH_PROMPT_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub auth_prompt_timeout: Duration,

    /// PEM certificate chain (leaf first) to serve HTTPS and WSS with. Needs --tls-key.
    #[arg(long, env = "ALFRESCO_TLS_CERT", value_name = "PEM_FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, RSA or EC) for --tls-cert.
    #[arg(long, env = "ALFRESCO_TLS_KEY", value_name = "PEM_FILE")]
    pub tls_key: Option<PathBuf>,

    /// The locale asked for on each SSH channel, as OpenSSH's `SendEnv LANG` does (the page
    /// is UTF-8). Servers that refuse it (AcceptEnv) still work. Empty: ask for none.
    #[arg(long, env = "ALFRESCO_REMOTE_LANG", default_value = "C.UTF-8")]
    pub remote_lang: String,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, env = "ALFRESCO_LOG", default_value = "info")]
    pub log: String,

    /// Log format: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, env = "ALFRESCO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// File of API tokens, one per line as `name:token` (creates sessions, sees and ends its
    /// own; the name appears in logs), `name:token:admin` (all sessions, recordings,
    /// metrics) or a bare token. Blank lines and `#` comments are skipped. Re-read on SIGHUP.
    #[arg(long, env = "ALFRESCO_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,

    /// One API token (prefer the environment variable: flags show in `ps`). With neither
    /// this nor --api-token-file, a token is generated at start-up and printed once.
    #[arg(long, env = "ALFRESCO_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Another origin (scheme://host[:port]) whose pages may open WebSockets; repeatable.
    /// The gateway's own origin is always allowed.
    #[arg(long, env = "ALFRESCO_ALLOW_ORIGIN", value_delimiter = ',')]
    pub allow_origin: Vec<String>,

    /// A host name under which the gateway is reached (as in the browser's address bar),
    /// whose pages may open WebSockets; repeatable. The address reached, --public-url and, on
    /// a loopback listener, loopback origins are always allowed; the Host header is not
    /// trusted (DNS rebinding).
    #[arg(long, env = "ALFRESCO_ALLOWED_HOST", value_delimiter = ',')]
    pub allowed_host: Vec<String>,

    /// An origin (scheme://host[:port]) whose pages may embed the terminal page in a frame;
    /// repeatable. Without any, the page refuses to be framed (clickjacking).
    #[arg(long, env = "ALFRESCO_ALLOW_FRAME_ANCESTORS", value_delimiter = ',')]
    pub allow_frame_ancestors: Vec<String>,

    /// Most create-session requests per minute, per API token and per client IP (0 = no limit).
    #[arg(long, env = "ALFRESCO_CREATE_RATE_LIMIT", default_value = "60")]
    pub create_rate_limit: u32,

    /// Destinations sessions may connect to: CIDR, host name (`*.example.com`), optionally
    /// with `:port`; repeatable. Without any, every destination not denied is allowed.
    #[arg(long, env = "ALFRESCO_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,

    /// Destinations refused even when allowed (same forms as --allow); repeatable.
    /// Link-local and cloud metadata addresses are refused unless an --allow rule names them.
    #[arg(long, env = "ALFRESCO_DENY", value_delimiter = ',')]
    pub deny: Vec<String>,

    /// End a session after this long without input or output (0 = never); also the
    /// highest `idle_timeout` a create-session may ask for.
    #[arg(long, env = "ALFRESCO_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// On SIGTERM/SIGINT, how long live sessions may go on (new ones are refused) before
    /// they are ended. 0 = end them at once.
    #[arg(long, env = "ALFRESCO_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a session whose browser went away (network drop, reload, closed tab) keeps
    /// running for the page to resume it (0 = end it at once, no resume); also the highest
    /// `resume_grace` a create-session may ask for.
    #[arg(long, env = "ALFRESCO_RESUME_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub resume_grace: Duration,

    /// Most recent output kept per session, replayed to a resuming page and shown to new
    /// viewers ("1MiB", "256KiB", bytes; at most 64MiB). Memory grows only as output arrives.
    #[arg(long, env = "ALFRESCO_RESUME_BUFFER", default_value = "1MiB", value_parser = parse_size)]
    pub resume_buffer: usize,

    /// Most read-only viewers watching one session at once, and share links per session
    /// (0 = sharing off).
    #[arg(long, env = "ALFRESCO_MAX_VIEWERS", default_value = "10")]
    pub max_viewers: usize,

    /// End a session after this long, however busy (0 = never); also the highest
    /// `max_duration` a create-session may ask for, and the bound of an extend.
    #[arg(long, env = "ALFRESCO_MAX_SESSION_TIME", default_value = "12h", value_parser = parse_duration)]
    pub max_session_time: Duration,

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

    /// Record every session as an asciicast v2 file in DIR (created 0700 if missing; files
    /// are 0600). Play one with `alfresco-ssh replay FILE`, or at /recordings/<name>.
    #[arg(long, env = "ALFRESCO_RECORD_DIR", value_name = "DIR")]
    pub record_dir: Option<PathBuf>,

    /// Also record what is typed, which includes passwords typed at prompts. Needs
    /// --record-dir.
    #[arg(long, env = "ALFRESCO_RECORD_INPUT")]
    pub record_input: bool,

    /// POST each session event (created, opened, ready, … ended) to this http(s) URL;
    /// repeatable (in --config, a list). Deliveries are queued, retried and dropped without
    /// ever slowing a session. The environment variable holds one URL.
    #[arg(long, env = "ALFRESCO_WEBHOOK", value_name = "URL")]
    pub webhook: Vec<String>,

    /// A file holding the secret that signs webhook bodies (HMAC-SHA256 in
    /// X-Alfresco-Signature), read once at start-up. Needs --webhook.
    #[arg(long, env = "ALFRESCO_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Webhook body: `json` (the event and the session's status) or `slack` (`{"text": …}`,
    /// for Slack and Mattermost incoming webhooks).
    #[arg(long, env = "ALFRESCO_WEBHOOK_FORMAT", value_enum, default_value_t = WebhookFormat::Json)]
    pub webhook_format: WebhookFormat,
}

/// Parses the command line and, with `--config FILE`, fills in from the file whatever no
/// flag or ALFRESCO_* variable set. Errors name the file and the key.
/// `Err(Ok(e))` is clap's own answer (help, version, a bad flag): print it with `e.exit()`.
pub fn parse_command_line(argv: Vec<OsString>) -> Result<Args, Result<clap::Error, ConfigError>> {
    let matches = Args::command().try_get_matches_from(&argv).map_err(Ok)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Args::try_parse_from(&argv).map_err(Ok);
    };
    with_config_file(argv, &matches, &path).map_err(Err)
}

fn with_config_file(
    argv: Vec<OsString>,
    matches: &clap::ArgMatches,
    path: &std::path::Path,
) -> Result<Args, ConfigError> {
    let where_ = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {where_}: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("{where_}: {e}")))?;
    let command = Args::command();
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(key.as_str())
                    && !matches!(key.as_str(), "config" | "check-config" | "help" | "version")
            })
            .ok_or_else(|| {
                ConfigError(format!(
                    "{where_}: unknown key `{key}` (keys are the flags' names, e.g. `listen`)"
                ))
            })?;
        // Flags and environment variables win over the file.
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        // A switch (`record-input = true`) is the bare flag; `false` leaves it off.
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => injected.push(format!("--{key}").into()),
                toml::Value::Boolean(false) => {}
                _ => {
                    return Err(ConfigError(format!(
                        "{where_}: key `{key}` must be true or false"
                    )));
                }
            }
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
            other => scalar(other).map(|v| vec![v]),
        }
        .ok_or_else(|| {
            ConfigError(format!(
                "{where_}: key `{key}` must be a string, a number or a list of them"
            ))
        })?;
        for v in values {
            injected.push(format!("--{key}").into());
            injected.push(v.into());
        }
    }
    let mut full = vec![
        argv.first()
            .cloned()
            .unwrap_or_else(|| "alfresco-ssh".into()),
    ];
    full.extend(injected);
    full.extend(argv.into_iter().skip(1));
    Args::try_parse_from(full)
        .map_err(|e| ConfigError(format!("{where_}: {}", e.to_string().trim())))
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A byte count: digits with an optional KiB/MiB (or K/M) suffix.
fn parse_size(s: &str) -> Result<usize, String> {
    const MAX: usize = 64 << 20;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let unit_size = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        _ => return Err("expected bytes, or a number with KiB or MiB".into()),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit_size))
        .filter(|&n| n <= MAX)
        .ok_or_else(|| "expected a size of at most 64MiB".into())
}

impl Args {
    /// The flags' defaults alone: no command line, no `ALFRESCO_*` variable, no file.
    pub fn defaults() -> Args {
        let command = Args::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["alfresco-ssh"])
            .expect("no flag is required");
        Args::from_arg_matches(&matches).expect("clap's own defaults parse")
    }
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "MiB",
            "1GiB",
            "65MiB",
            "-1",
            "1.5MiB",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
