//! `SshError`: why a session could not start or went away, with the stable code the
//! WebSocket reports in `ssh-error`. Messages are for people and never hold credentials.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshErrorKind {
    DnsFailed,
    ConnectFailed,
    ConnectTimeout,
    AuthFailed,
    KeyInvalid,
    SshFailed,
    ConnectionLost,
    DestinationForbidden,
    /// The server's host key differs from the pinned, listed or recorded one.
    HostKeyMismatch,
    /// No key is known for the host and the policy is strict.
    HostKeyUnknown,
    /// The person did not answer an authentication prompt within `--auth-prompt-timeout`.
    AuthTimeout,
}

impl SshErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            SshErrorKind::DnsFailed => "dns_failed",
            SshErrorKind::ConnectFailed => "connect_failed",
            SshErrorKind::ConnectTimeout => "connect_timeout",
            SshErrorKind::AuthFailed => "auth_failed",
            SshErrorKind::KeyInvalid => "key_invalid",
            SshErrorKind::SshFailed => "ssh_failed",
            SshErrorKind::ConnectionLost => "connection_lost",
            SshErrorKind::DestinationForbidden => "destination_forbidden",
            SshErrorKind::HostKeyMismatch => "host_key_mismatch",
            SshErrorKind::HostKeyUnknown => "host_key_unknown",
            SshErrorKind::AuthTimeout => "auth_timeout",
        }
    }

    pub const ALL: [SshErrorKind; 11] = [
        SshErrorKind::DnsFailed,
        SshErrorKind::ConnectFailed,
        SshErrorKind::ConnectTimeout,
        SshErrorKind::AuthFailed,
        SshErrorKind::KeyInvalid,
        SshErrorKind::SshFailed,
        SshErrorKind::ConnectionLost,
        SshErrorKind::DestinationForbidden,
        SshErrorKind::HostKeyMismatch,
        SshErrorKind::HostKeyUnknown,
        SshErrorKind::AuthTimeout,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshError {
    pub kind: SshErrorKind,
    pub message: String,
}

impl SshError {
    pub fn new(kind: SshErrorKind, message: impl Into<String>) -> Self {
        SshError {
            kind,
            message: message.into(),
        }
    }

    /// The connect deadline passed, whichever step was running (see `thread::past_deadline`).
    pub fn connect_timeout() -> Self {
        SshError::new(
            SshErrorKind::ConnectTimeout,
            "the SSH server did not answer in time",
        )
    }

    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code())
    }
}

impl std::error::Error for SshError {}
