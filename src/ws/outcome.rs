//! How a socket's part in a session ends: the `Outcome` every task of `ws` returns, the
//! codes a client can be sent in `ssh-error` and `warning`, and the close code for each.
//! A leaf: it knows the wire events, never a socket or a session.

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::protocol::ServerEvent;
use crate::ledger::{End, State, Verdict};
use crate::ssh::{ExitInfo, SshError, SshErrorKind};

/// Declares a code enum with `code()` (its wire string) and `ALL` (every variant), both
/// written from one list, so neither can miss a variant.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $code:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code as the wire and docs/PROTOCOL.md spell it.
            pub fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)*
                }
            }
        }
    };
}

codes! {
    /// The `ssh-error` codes of the WebSocket side itself; the SSH side's are `SshErrorKind`.
    ErrorKind {
        UnknownSession => "unknown_session",
        BadMessage => "bad_message",
        StartTimeout => "start_timeout",
        MessageTooLarge => "message_too_large",
        TooManySessions => "too_many_sessions",
        ServerShutdown => "server_shutdown",
        IdleTimeout => "idle_timeout",
        SessionTimeLimit => "session_time_limit",
        ResumeInvalid => "resume_invalid",
        SessionTakenOver => "session_taken_over",
        UnknownView => "unknown_view",
        TooManyViewers => "too_many_viewers",
        ShareRevoked => "share_revoked",
        ViewerTooSlow => "viewer_too_slow",
    }
}

codes! {
    /// The `warning` codes: the session goes on.
    WarningKind {
        UnknownEvent => "unknown_event",
        AlreadyStarted => "already_started",
        ServerDraining => "server_draining",
        ReadOnly => "read_only",
        HandbackOff => "handback_off",
        /// An `auth-response` with no prompt open (none yet, already answered, or over).
        NoAuthPrompt => "no_auth_prompt",
        /// An `auth-response` whose answers are not one per prompt; the prompt stays open.
        AuthAnswersMismatch => "auth_answers_mismatch",
        /// An `auth-response` over the bounds (answers, or bytes per answer).
        AuthResponseTooLarge => "auth_response_too_large",
    }
}

impl ErrorKind {
    /// The close code the socket ends with after this error: 1008 for what the client must
    /// change, 1013 (try again later) for a full gateway or session, 1001 when the gateway
    /// ends the session, 1009 for size.
    pub fn close_code(self) -> CloseCode {
        match self {
            ErrorKind::UnknownSession
            | ErrorKind::BadMessage
            | ErrorKind::StartTimeout
            | ErrorKind::ResumeInvalid
            | ErrorKind::SessionTakenOver
            | ErrorKind::UnknownView
            | ErrorKind::ShareRevoked => CloseCode::Policy,
            ErrorKind::MessageTooLarge => CloseCode::Size,
            ErrorKind::TooManySessions | ErrorKind::TooManyViewers | ErrorKind::ViewerTooSlow => {
                CloseCode::Again
            }
            ErrorKind::ServerShutdown | ErrorKind::IdleTimeout | ErrorKind::SessionTimeLimit => {
                CloseCode::Away
            }
        }
    }
}

/// What an `ssh-error` names: a code of the WebSocket side or of the SSH side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Ws(ErrorKind),
    Ssh(SshErrorKind),
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::Ws(kind) => kind.code(),
            ErrorCode::Ssh(kind) => kind.code(),
        }
    }

    pub fn close_code(self) -> CloseCode {
        match self {
            ErrorCode::Ws(kind) => kind.close_code(),
            // A refusal by policy is the client's to fix; anything else failed on the SSH side.
            ErrorCode::Ssh(SshErrorKind::DestinationForbidden) => CloseCode::Policy,
            ErrorCode::Ssh(_) => CloseCode::Error,
        }
    }
}

impl From<ErrorKind> for ErrorCode {
    fn from(kind: ErrorKind) -> Self {
        ErrorCode::Ws(kind)
    }
}

impl From<SshErrorKind> for ErrorCode {
    fn from(kind: SshErrorKind) -> Self {
        ErrorCode::Ssh(kind)
    }
}

/// A `warning` event; the session goes on.
pub(super) fn warning(kind: WarningKind, message: &str) -> Message {
    ServerEvent::Warning {
        code: kind.code(),
        message,
    }
    .encode()
}

/// Why a session (or a socket's part in one) ends, and what the client is told.
pub(super) enum Outcome {
    Closed(ExitInfo),
    Error {
        code: ErrorCode,
        message: String,
        /// The jump host an SSH error happened at (1 = the first).
        hop: Option<u8>,
    },
    /// The client left and the session could not wait for it to come back.
    ClientGone,
    /// The client left and did not resume within the grace period.
    Abandoned,
    /// Ended through the API (`DELETE /sessions/<id>`).
    Revoked,
    /// The person handed the session back to the job, with this verdict.
    Handback(Verdict),
}

impl Outcome {
    pub(super) fn error(code: impl Into<ErrorCode>, message: impl Into<String>) -> Self {
        Outcome::Error {
            code: code.into(),
            message: message.into(),
            hop: None,
        }
    }

    /// The SSH side failed: its code, and its message (written for the user).
    pub(super) fn ssh(e: SshError) -> Self {
        Outcome::Error {
            code: e.kind.into(),
            message: e.message,
            hop: e.hop,
        }
    }

    /// The event and close code that tell a client this outcome; `None` when there is no
    /// client left to tell.
    pub(super) fn last_event(&self) -> Option<(Message, CloseCode)> {
        match self {
            Outcome::ClientGone | Outcome::Abandoned => None,
            Outcome::Closed(info) => Some((ServerEvent::Closed(info).encode(), CloseCode::Normal)),
            Outcome::Revoked => {
                let event = ServerEvent::EndedBy {
                    reason: "revoked",
                    handback: None,
                };
                Some((event.encode(), CloseCode::Normal))
            }
            Outcome::Handback(verdict) => {
                let event = ServerEvent::EndedBy {
                    reason: "handback",
                    handback: Some(*verdict),
                };
                Some((event.encode(), CloseCode::Normal))
            }
            Outcome::Error { code, message, hop } => {
                let event = ServerEvent::Error {
                    code: code.code(),
                    message,
                    hop: *hop,
                };
                Some((event.encode(), code.close_code()))
            }
        }
    }

    /// The outcome's name in metrics and logs.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Outcome::Closed(info) => info.reason(),
            Outcome::Error { code, .. } => code.code(),
            Outcome::ClientGone => "client_gone",
            Outcome::Abandoned => "abandoned",
            Outcome::Revoked => "revoked",
            Outcome::Handback(_) => "handback",
        }
    }

    /// The end the ledger records: `ready` says whether the shell was ever ready (a
    /// session that never was has `failed`, or `revoked`, rather than `ended`).
    pub(super) fn end(&self, ready: bool) -> End {
        let state = match self {
            _ if ready => State::Ended,
            Outcome::Revoked => State::Revoked,
            _ => State::Failed,
        };
        let mut end = End::new(state, self.label());
        match self {
            Outcome::Closed(info) => {
                end.exit_status = info.exit_status;
                end.exit_signal = info.exit_signal.clone();
            }
            Outcome::Error { message, .. } => end.message = Some(message.clone()),
            Outcome::Revoked => end.message = Some("the session was ended through the API".into()),
            Outcome::Handback(verdict) => end.handback = Some(*verdict),
            Outcome::ClientGone | Outcome::Abandoned => {}
        }
        end
    }
}

pub(super) fn bad_message(message: impl Into<String>) -> Outcome {
    Outcome::error(ErrorKind::BadMessage, message)
}

/// A message over the limit: tungstenite reads nothing more from the socket after it.
pub(super) fn too_large() -> Outcome {
    Outcome::error(
        ErrorKind::MessageTooLarge,
        "message too large (limit 1 MiB)",
    )
}

pub(super) fn shutdown() -> Outcome {
    Outcome::error(ErrorKind::ServerShutdown, "the gateway is shutting down")
}

pub(super) fn resume_invalid() -> Outcome {
    Outcome::error(
        ErrorKind::ResumeInvalid,
        "this resume token is unknown, already used or expired, or the session is over",
    )
}

pub(super) fn unknown_view() -> Outcome {
    Outcome::error(
        ErrorKind::UnknownView,
        "this view link is unknown, revoked, or its session is over",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire strings as they were before they became enums: a rename here breaks pages.
    #[test]
    fn codes_keep_their_wire_strings() {
        let errors: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(
            errors,
            [
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
            ]
        );
        let warnings: Vec<&str> = WarningKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(
            warnings,
            [
                "unknown_event",
                "already_started",
                "server_draining",
                "read_only",
                "handback_off",
                "no_auth_prompt",
                "auth_answers_mismatch",
                "auth_response_too_large",
            ]
        );
    }

    #[test]
    fn no_code_is_spelled_twice_across_both_sides() {
        let mut all: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        all.extend(SshErrorKind::ALL.iter().map(|k| k.code()));
        all.extend(WarningKind::ALL.iter().map(|k| k.code()));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a code names one thing");
    }

    #[test]
    fn close_codes_follow_the_kind() {
        let code = |c: ErrorCode| u16::from(c.close_code());
        assert_eq!(code(ErrorKind::BadMessage.into()), 1008);
        assert_eq!(code(ErrorKind::MessageTooLarge.into()), 1009);
        assert_eq!(code(ErrorKind::TooManySessions.into()), 1013);
        assert_eq!(code(ErrorKind::ServerShutdown.into()), 1001);
        assert_eq!(code(SshErrorKind::DestinationForbidden.into()), 1008);
        assert_eq!(code(SshErrorKind::AuthFailed.into()), 1011);
        let event = Outcome::error(SshErrorKind::AuthFailed, "no").last_event();
        let (message, _) = event.expect("an error is told");
        assert!(
            message
                .to_text()
                .unwrap()
                .contains(r#""code":"auth_failed""#)
        );
    }
}
