//! What a session asks for: where to connect, as whom, with which credentials.
//!
//! A leaf type shared by the layers: `http::api` builds it from a create-session body, the
//! store holds it until a browser claims it, and `ssh` consumes it. Credentials are
//! `Secret`s, so none of this can be logged or serialized by accident.

use std::fmt;

use crate::secret::Secret;

/// The longest host name DNS allows.
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Generous for user names (Linux allows 32) without letting a body smuggle megabytes.
pub const MAX_USERNAME_LEN: usize = 256;
/// Terminal type names are short (`xterm-256color`); the cap keeps them sane.
pub const MAX_TERM_LEN: usize = 64;
pub const DEFAULT_TERM: &str = "xterm-256color";
/// Jump hosts a session may go through. Each adds a handshake to the start and a copy of
/// every byte on the bridge thread; three reach through any bastion layout we have heard of.
pub const MAX_HOPS: usize = 3;

/// A validated create-session request.
#[derive(Debug)]
pub struct SessionRequest {
    pub target: Target,
    pub credentials: Credentials,
    pub term: String,
    /// The session's own expectation of the server's host key; when set, it alone decides.
    pub host_key: Option<HostKeyPin>,
    /// The name of the API token that created the session (for per-token limits and logs).
    pub creator: String,
    /// The session's own timers and options, within the operator's bounds.
    pub options: SessionOptions,
    /// Jump hosts, in the order they are connected to (the first is dialled); empty for a
    /// direct session. At most `MAX_HOPS`.
    pub jump: Vec<Hop>,
}

/// One jump host: where, as whom, and how it proves itself, with the same rules as the
/// target. The gateway dials the first hop; each hop opens a `direct-tcpip` channel to the
/// next one, or to the target.
#[derive(Debug)]
pub struct Hop {
    pub target: Target,
    pub credentials: Credentials,
    pub host_key: Option<HostKeyPin>,
}

impl SessionRequest {
    /// The session's route for status and logs: `user@target:port`, followed by
    /// ` via user@jump1:port, user@jump2:port` when it goes through jump hosts.
    pub fn route(&self) -> Route {
        Route {
            target: self.target.clone(),
            hops: self.jump.iter().map(|h| h.target.clone()).collect(),
        }
    }
}

/// The endpoints a session goes through (see `SessionRequest::route`). Safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub hops: Vec<Target>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        for (n, hop) in self.hops.iter().enumerate() {
            f.write_str(if n == 0 { " via " } else { ", " })?;
            write!(f, "{hop}")?;
        }
        Ok(())
    }
}

/// What one session runs with, asked for at create-session or taken from the flags.
/// Public data, not secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// How long the link waits to be opened.
    pub ttl: std::time::Duration,
    /// The cap once live (`None`: none).
    pub max_duration: Option<std::time::Duration>,
    pub idle_timeout: Option<std::time::Duration>,
    /// `None`: the session ends as soon as its client leaves.
    pub resume_grace: Option<std::time::Duration>,
    /// The page offers to hand a verdict back to the job.
    pub handback: bool,
    /// The character encoding the remote side speaks.
    pub encoding: RemoteEncoding,
}

/// The timers a create-session body asked for; `None`: the gateway's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AskedTimers {
    pub ttl: Option<std::time::Duration>,
    pub max_duration: Option<std::time::Duration>,
    pub idle_timeout: Option<std::time::Duration>,
    pub resume_grace: Option<std::time::Duration>,
    pub handback: bool,
    /// Not a timer, but asked for beside them and passed through as asked.
    pub encoding: RemoteEncoding,
}

/// The character encoding of the remote side's terminal (`encoding` in create-session).
/// The page always speaks UTF-8; `ws::charset` converts at the session's edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RemoteEncoding {
    /// UTF-8, as the page: bytes pass through untouched, at no cost.
    #[default]
    Utf8,
    /// Any other WHATWG encoding: output is decoded, input encoded back.
    Other(&'static encoding_rs::Encoding),
}

impl RemoteEncoding {
    /// The encoding a WHATWG label names (case and surrounding blanks ignored, as browsers
    /// do), or `None` for a label WHATWG does not know, and for the few a terminal cannot
    /// speak: UTF-16 (every control character would be two bytes, and its encoder writes
    /// UTF-8) and `replacement` (the labels of ISO-2022-KR and HZ, which decode to a single
    /// U+FFFD by design).
    pub fn from_label(label: &str) -> Option<RemoteEncoding> {
        let encoding = encoding_rs::Encoding::for_label(label.as_bytes())?;
        if encoding == encoding_rs::UTF_8 {
            Some(RemoteEncoding::Utf8)
        } else if encoding == encoding_rs::UTF_16LE
            || encoding == encoding_rs::UTF_16BE
            || encoding == encoding_rs::REPLACEMENT
        {
            None
        } else {
            Some(RemoteEncoding::Other(encoding))
        }
    }

    /// The encoding's canonical WHATWG name (`GBK`, `Shift_JIS`, `UTF-8`), for logs.
    pub fn name(self) -> &'static str {
        match self {
            RemoteEncoding::Utf8 => encoding_rs::UTF_8.name(),
            RemoteEncoding::Other(encoding) => encoding.name(),
        }
    }
}

/// The `host_key` of a create-session request. Public data, not a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    /// SHA-256 of the key blob, given as `SHA256:<base64>` as `ssh-keygen -lf` prints it.
    Sha256([u8; 32]),
    /// A whole public key blob, from a known_hosts or `.pub` line; its type name is inside.
    Key(Vec<u8>),
}

/// The SSH endpoint and account. Safe to log (see `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A DNS name or an IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub username: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.username, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.username, self.host, self.port)
        }
    }
}

#[derive(Debug)]
pub enum Credentials {
    Password(Secret<String>),
    PrivateKey {
        /// OpenSSH or PEM private key text.
        key: Secret<String>,
        passphrase: Option<Secret<String>>,
    },
    /// Both, for servers that ask for two methods in turn (`AuthenticationMethods
    /// publickey,password`); either alone also logs in where it suffices.
    KeyAndPassword {
        key: Secret<String>,
        passphrase: Option<Secret<String>>,
        password: Secret<String>,
    },
    /// No credential: the person types the password (and any code) in the page
    /// (`"auth": "interactive"`).
    Interactive,
}

impl Credentials {
    /// How the session authenticates, for logs.
    pub fn method(&self) -> &'static str {
        match self {
            Credentials::Password(_) => "password",
            Credentials::PrivateKey { .. } => "publickey",
            Credentials::KeyAndPassword { .. } => "publickey+password",
            Credentials::Interactive => "interactive",
        }
    }

    /// The password, if the session has one.
    pub fn password(&self) -> Option<&Secret<String>> {
        match self {
            Credentials::Password(password) | Credentials::KeyAndPassword { password, .. } => {
                Some(password)
            }
            Credentials::PrivateKey { .. } | Credentials::Interactive => None,
        }
    }

    /// The private key and its passphrase, if the session has one.
    pub fn private_key(&self) -> Option<(&Secret<String>, Option<&Secret<String>>)> {
        match self {
            Credentials::PrivateKey { key, passphrase }
            | Credentials::KeyAndPassword {
                key, passphrase, ..
            } => Some((key, passphrase.as_ref())),
            Credentials::Password(_) | Credentials::Interactive => None,
        }
    }

    /// Whether the person at the page answers for the session.
    pub fn is_interactive(&self) -> bool {
        matches!(self, Credentials::Interactive)
    }
}

/// A host name or IP literal we are willing to hand to the resolver: no spaces, control
/// characters or URL syntax, within DNS length limits. Returns it without IPv6 brackets.
pub fn normalize_host(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // Brackets are only for IPv6 literals, as in URLs.
        return inner
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
            .then(|| inner.to_owned());
    }
    let host = raw;
    // IP literals in their canonical text form, so `::FFFF:A9FE:A9FE` and its lower-case
    // twin are one host in logs and known-hosts records.
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let valid = !host.is_empty()
        && host.len() <= MAX_HOSTNAME_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !host.starts_with(['-', '.']);
    valid.then(|| host.to_ascii_lowercase())
}

pub fn valid_username(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USERNAME_LEN && !name.chars().any(char::is_control)
}

pub fn valid_term(term: &str) -> bool {
    !term.is_empty()
        && term.len() <= MAX_TERM_LEN
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("10.0.0.5").as_deref(), Some("10.0.0.5"));
        assert_eq!(normalize_host("[::1]").as_deref(), Some("::1"));
        assert_eq!(
            normalize_host("::FFFF:A9FE:A9FE").as_deref(),
            Some("::ffff:169.254.169.254")
        );
        assert_eq!(normalize_host("::1").as_deref(), Some("::1"));
        for bad in [
            "",
            "a b",
            "-x",
            ".x",
            "a/b",
            "a\n",
            "h:22",
            "[a.b]",
            &"a".repeat(254),
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn target_display_brackets_ipv6() {
        let t = Target {
            host: "::1".into(),
            port: 22,
            username: "u".into(),
        };
        assert_eq!(t.to_string(), "u@[::1]:22");
    }

    #[test]
    fn encoding_labels() {
        let name = |label| RemoteEncoding::from_label(label).map(RemoteEncoding::name);
        assert_eq!(name("gbk"), Some("GBK"));
        assert_eq!(name(" Shift_JIS "), Some("Shift_JIS"));
        assert_eq!(name("latin1"), Some("windows-1252"), "WHATWG's alias");
        assert_eq!(name("ISO-8859-2"), Some("ISO-8859-2"));
        assert_eq!(name("koi8-r"), Some("KOI8-R"));
        assert_eq!(
            RemoteEncoding::from_label("utf8"),
            Some(RemoteEncoding::Utf8)
        );
        for bad in [
            "",
            "gbk2",
            "utf-16",
            "utf-16be",
            "iso-2022-kr",
            "replacement",
            "x\0",
        ] {
            assert_eq!(RemoteEncoding::from_label(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn route_names_the_hops_in_order() {
        let t = |host: &str| Target {
            host: host.into(),
            port: 22,
            username: "u".into(),
        };
        let route = |hops: Vec<Target>| Route {
            target: t("db"),
            hops,
        };
        assert_eq!(route(vec![]).to_string(), "u@db:22");
        assert_eq!(route(vec![t("j1")]).to_string(), "u@db:22 via u@j1:22");
        assert_eq!(
            route(vec![t("j1"), t("::1")]).to_string(),
            "u@db:22 via u@j1:22, u@[::1]:22"
        );
    }

    #[test]
    fn usernames_and_terms() {
        assert!(valid_username("deploy"));
        assert!(!valid_username(""));
        assert!(!valid_username("a\u{7}b"));
        assert!(valid_term("xterm-256color"));
        assert!(!valid_term("xterm;rm"));
        assert!(!valid_term(""));
    }
}
