//! How a socket's part in a session ends: the `Outcome` every task of `ws` returns, the
//! codes a client can be sent in `ssh-error` and `warning`, and the close code for each.
//! A leaf: it knows the wire events, never a socket or a session.

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::protocol::ServerEvent;
use crate::ssh::{ExitInfo, SshError, SshErrorKind};

pub const SESSION_ERROR_CODES: &[&str] = &[
    "unknown_session",
    "bad_message",
    "start_timeout",
    "message_too_large",
    "too_many_sessions",
    "server_shutdown",
    "idle_timeout",
    "session_time_limit",
    "resume_invalid",
    "session_taken_over",
    "unknown_view",
    "too_many_viewers",
    "share_revoked",
    "viewer_too_slow",
];
pub const WARNING_CODES: &[&str] = &[
    "unknown_event",
    "already_started",
    "server_draining",
    "read_only",
];

/// Why a session (or a socket's part in one) ends, and what the client is told.
pub(super) enum Outcome {
    Closed(ExitInfo),
    Error {
        code: &'static str,
        message: String,
        close: CloseCode,
    },
    /// The client left and the session could not wait for it to come back.
    ClientGone,
    /// The client left and did not resume within the grace period.
    Abandoned,
}

impl Outcome {
    pub(super) fn error(code: &'static str, message: impl Into<String>, close: CloseCode) -> Self {
        Outcome::Error {
            code,
            message: message.into(),
            close,
        }
    }

    /// The SSH side failed: its code, and its message (written for the user).
    pub(super) fn ssh(e: SshError) -> Self {
        let close = close_code(&e);
        Outcome::error(e.code(), e.message, close)
    }

    /// The event and close code that tell a client this outcome; `None` when there is no
    /// client left to tell.
    pub(super) fn last_event(&self) -> Option<(Message, CloseCode)> {
        match self {
            Outcome::ClientGone | Outcome::Abandoned => None,
            Outcome::Closed(info) => Some((ServerEvent::Closed(info).encode(), CloseCode::Normal)),
            Outcome::Error {
                code,
                message,
                close,
            } => Some((ServerEvent::Error { code, message }.encode(), *close)),
        }
    }

    /// The outcome's name in metrics and logs.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Outcome::Closed(info) => info.reason(),
            Outcome::Error { code, .. } => code,
            Outcome::ClientGone => "client_gone",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// A refusal by policy is the client's to fix (1008); anything else failed on the SSH side.
fn close_code(e: &SshError) -> CloseCode {
    match e.kind {
        SshErrorKind::DestinationForbidden => CloseCode::Policy,
        _ => CloseCode::Error,
    }
}

pub(super) fn bad_message(message: impl Into<String>) -> Outcome {
    Outcome::error("bad_message", message, CloseCode::Policy)
}

/// A message over the limit: tungstenite reads nothing more from the socket after it.
pub(super) fn too_large() -> Outcome {
    Outcome::error(
        "message_too_large",
        "message too large (limit 1 MiB)",
        CloseCode::Size,
    )
}

pub(super) fn shutdown() -> Outcome {
    Outcome::error(
        "server_shutdown",
        "the gateway is shutting down",
        CloseCode::Away,
    )
}

pub(super) fn resume_invalid() -> Outcome {
    Outcome::error(
        "resume_invalid",
        "this resume token is unknown, already used or expired, or the session is over",
        CloseCode::Policy,
    )
}

pub(super) fn unknown_view() -> Outcome {
    Outcome::error(
        "unknown_view",
        "this view link is unknown, revoked, or its session is over",
        CloseCode::Policy,
    )
}
