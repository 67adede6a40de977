//! The flags of `alfresco-ssh session …`, parsed by clap into checked values. No flag takes a
//! secret: the token, passwords and passphrases are named (a variable, a file), never given,
//! because argv shows in `ps` and in CI logs that echo commands.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `alfresco-ssh session <command>`.
#[derive(Debug, Parser)]
#[command(
    name = "alfresco-ssh session",
    bin_name = "alfresco-ssh session",
    about = "Create a session and follow it, from a CI job: status, wait, revoke, extend, list.",
    after_help = "The API token comes from ALFRESCO_TOKEN or --token-file. Exit codes: the remote \
                  shell's status (0-255), 128+N for signal N, 200 nobody opened it, 201 connect \
                  or auth failed, 202 revoked, 203 ended by the gateway, 204 handback \"fail\", \
                  205 gateway unreachable, 206 gateway refused, 207 wait --timeout passed, \
                  2 usage."
)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: Command,
}

impl SessionArgs {
    /// Parses `session …` (the subcommand name first, as clap expects a program name).
    pub fn try_parse(argv: impl IntoIterator<Item = OsString>) -> Result<Self, clap::Error> {
        Self::try_parse_from(argv)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a session, print its URL; with --wait, follow it to its end.
    Create(CreateArgs),
    /// Print a session's state.
    Status(IdArgs),
    /// Wait until a session reaches a state (by default: until it ends).
    Wait(WaitArgs),
    /// End a session (a pending link dies at once; a live shell is closed).
    Revoke(IdArgs),
    /// Push a session's time limit (or a pending link's deadline) later.
    Extend(ExtendArgs),
    /// List the sessions this token created (an admin token: all), newest first.
    List(ListArgs),
}

/// How to reach the gateway; every command takes these.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's base URL, e.g. https://ssh.example.com.
    #[arg(long, env = "ALFRESCO_GATEWAY", value_parser = gateway_url)]
    pub gateway: String,

    /// A file holding the API token (else the ALFRESCO_TOKEN variable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM file of the CA (or certificates) to trust for the gateway, instead of the
    /// bundled and the system's roots.
    #[arg(long, value_name = "PEM_FILE")]
    pub ca_file: Option<PathBuf>,

    /// How long to keep retrying an unreachable or restarting gateway before exiting 205.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,

    /// Print the API's JSON answers (one per line) instead of text lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// The SSH server to connect to (a host name or IP address, as the gateway sees it).
    #[arg(long)]
    pub host: String,

    #[arg(long, default_value = "22")]
    pub port: u16,

    /// The account on the SSH server.
    #[arg(long)]
    pub user: String,

    #[command(flatten)]
    pub credentials: CredentialArgs,

    /// The server's expected host key: `SHA256:…` as `ssh-keygen -lf` prints it, or a
    /// public key line.
    #[arg(long)]
    pub host_key: Option<String>,

    /// How long the link waits to be opened ("10m").
    #[arg(long, value_parser = whole_seconds)]
    pub ttl: Option<Duration>,

    /// The session's time limit once live ("1h").
    #[arg(long, value_parser = whole_seconds)]
    pub max_duration: Option<Duration>,

    /// End the session after this long without input or output.
    #[arg(long, value_parser = whole_seconds)]
    pub idle_timeout: Option<Duration>,

    /// How long a session whose browser went away waits to be resumed.
    #[arg(long, value_parser = whole_seconds)]
    pub resume_grace: Option<Duration>,

    /// Show "done, continue the job" and "done, fail the job" on the page; with --wait the
    /// command then exits 0 or 204.
    #[arg(long)]
    pub handback: bool,

    /// Follow the session until it ends, one line per change, and exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

/// Exactly one way to authenticate; secrets are read from where these point.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CredentialArgs {
    /// A private key file (OpenSSH or PEM).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// The name of the environment variable holding the password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,

    /// A file holding the password (one trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// The name of the environment variable holding the key's passphrase.
    #[arg(
        long,
        value_name = "VAR",
        requires = "key_file",
        conflicts_with = "passphrase_file"
    )]
    pub passphrase_env: Option<String>,

    /// A file holding the key's passphrase (one trailing newline is dropped).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// The session's id (the `id` of the create answer, the last part of its URL).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    pub id: String,

    /// The states to wait for, comma-separated; `opened` is every state but pending,
    /// `ended` every final one.
    #[arg(long = "for", default_value = "ended")]
    pub states: String,

    /// Give up after this long (exit 207); without it, wait as long as the session lasts.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ExtendArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    pub id: String,

    /// How much later ("30m").
    #[arg(long, value_parser = whole_seconds)]
    pub by: Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Only sessions in these states (comma-separated, as `wait --for`).
    #[arg(long)]
    pub state: Option<String>,
}

/// `http://` or `https://` and a host, without a query; the trailing slash is dropped so
/// paths join with one.
fn gateway_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be http(s)://host[:port]".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must have no query, fragment or user name".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A duration the gateway takes in seconds: at least one, whole (sub-second parts are
/// refused rather than rounded away).
fn whole_seconds(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err("must be whole seconds, at least 1s".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<SessionArgs, clap::Error> {
        SessionArgs::try_parse(
            std::iter::once("session")
                .chain(line.split_whitespace())
                .map(OsString::from),
        )
    }

    const GW: &str = "--gateway http://127.0.0.1:8022/";

    #[test]
    fn create_takes_one_credential() {
        let args = parse(&format!(
            "create {GW} --host h --user u --key-file k --ttl 10m --wait"
        ))
        .unwrap();
        let Command::Create(c) = args.command else {
            panic!("create")
        };
        assert_eq!(c.gateway.gateway, "http://127.0.0.1:8022");
        assert_eq!(c.port, 22);
        assert_eq!(c.ttl, Some(Duration::from_secs(600)));
        assert!(c.wait && !c.handback);
        assert_eq!(c.credentials.key_file, Some(PathBuf::from("k")));

        for bad in [
            "--host h --user u",
            "--host h --user u --key-file k --password-env P",
            "--host h --user u --password-env P --passphrase-env Q",
            "--host h --user u --key-file k --passphrase-env Q --passphrase-file f",
            "--host h --user u --key-file k --ttl 1.5s",
            "--host h --user u --key-file k --ttl 0s",
            "--host h --user u --key-file k --password secret",
        ] {
            assert!(parse(&format!("create {GW} {bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_urls() {
        assert_eq!(
            gateway_url("https://ssh.example.com/prefix/").unwrap(),
            "https://ssh.example.com/prefix"
        );
        for bad in [
            "ftp://h",
            "h:8022",
            "http://h/?x=1",
            "http://u@h",
            "http://",
        ] {
            assert!(gateway_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_commands() {
        let args = parse(&format!("wait {GW} abc --for opened --timeout 5m")).unwrap();
        let Command::Wait(w) = args.command else {
            panic!("wait")
        };
        assert_eq!((w.id.as_str(), w.states.as_str()), ("abc", "opened"));
        assert_eq!(w.timeout, Some(Duration::from_secs(300)));
        assert!(
            parse(&format!("extend {GW} abc")).is_err(),
            "--by is required"
        );
        assert!(parse(&format!("status {GW} abc --json")).is_ok());
        assert!(parse(&format!("list {GW} --state live,detached")).is_ok());
    }
}
