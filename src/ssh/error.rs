//! `SshError`: why a session could not start or went away, with the stable code the
//! WebSocket reports in `ssh-error`. Messages are for people and never hold credentials.
//! An error at a jump host says which one (`hop`, 1 = the first).

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
    /// A jump host refused to open a `direct-tcpip` channel to the next host (OpenSSH's
    /// `AllowTcpForwarding no`, or `PermitOpen`).
    ForwardingRefused,
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
            SshErrorKind::ForwardingRefused => "forwarding_refused",
            SshErrorKind::AuthTimeout => "auth_timeout",
        }
    }

    pub const ALL: [SshErrorKind; 12] = [
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
        SshErrorKind::ForwardingRefused,
        SshErrorKind::AuthTimeout,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshError {
    pub kind: SshErrorKind,
    pub message: String,
    /// The jump host it happened at (1 = the one dialled); `None`: the target, or no hop.
    pub hop: Option<u8>,
}

impl SshError {
    pub fn new(kind: SshErrorKind, message: impl Into<String>) -> Self {
        SshError {
            kind,
            message: message.into(),
            hop: None,
        }
    }

    /// The same error, at jump host `hop`; the message says so too, for logs and status.
    pub fn at_hop(self, hop: u8) -> Self {
        SshError {
            message: format!("jump host {hop}: {}", self.message),
            hop: Some(hop),
            ..self
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
