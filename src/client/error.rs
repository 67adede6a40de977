//! `ClientError`: why a `session` command could not do its job, with the kind that picks its
//! exit code. Messages are for the job log: they name flags, files and the gateway's own
//! error code, never a credential.

use std::fmt;

use super::exit::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// Bad flags, an unreadable file or variable, a bad `--ca-file`.
    Usage,
    /// No answer from the gateway (connection, timeout, 5xx) within the retry bound.
    Unreachable,
    /// The gateway answered with a refusal (4xx): its code and message are in ours.
    Refused,
    /// Something answered that is not the gateway (not JSON, not a status object).
    BadAnswer,
}

impl ClientErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ClientErrorKind::Usage => "usage",
            ClientErrorKind::Unreachable => "unreachable",
            ClientErrorKind::Refused => "refused",
            ClientErrorKind::BadAnswer => "bad_answer",
        }
    }

    pub const ALL: [ClientErrorKind; 4] = [
        ClientErrorKind::Usage,
        ClientErrorKind::Unreachable,
        ClientErrorKind::Refused,
        ClientErrorKind::BadAnswer,
    ];

    pub fn exit(self) -> Exit {
        match self {
            ClientErrorKind::Usage => Exit::Usage,
            ClientErrorKind::Refused => Exit::Refused,
            // What answered was not the gateway: for the job, as good as not reached.
            ClientErrorKind::Unreachable | ClientErrorKind::BadAnswer => Exit::Unreachable,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub kind: ClientErrorKind,
    pub message: String,
}

impl ClientError {
    pub fn new(kind: ClientErrorKind, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        ClientError::new(ClientErrorKind::Usage, message)
    }

    pub fn bad_answer(message: impl Into<String>) -> Self {
        ClientError::new(ClientErrorKind::BadAnswer, message)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}
