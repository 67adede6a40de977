//! How `alfresco-ssh session` ends: one `Exit` per outcome a CI job can branch on, and the
//! mapping from a session's final status to it. The numbers are a public contract (README
//! and docs/CI.md carry the table, a test checks it against `Exit::ALL`): never renumber.
//!
//! The remote shell's own status passes through as is (0–255), so the fixed codes sit
//! high, where shells rarely exit on purpose.

use super::status::{State, Status};

/// What the command tells its caller through the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what it was asked (and a handback said "continue").
    Success,
    /// Bad flags, or a flag naming a file or variable that cannot be read.
    Usage,
    /// The remote shell exited with this status.
    Exited(u8),
    /// The remote shell was killed by this signal (`None`: a name we cannot number).
    Signalled(Option<u8>),
    /// Nobody opened the link before its deadline.
    Expired,
    /// The gateway could not connect or authenticate to the target.
    Failed,
    /// Ended through the API (`DELETE /sessions/<id>`).
    Revoked,
    /// Ended by the gateway: a time limit, the idle timeout, an abandoned or lost
    /// connection, a shutdown.
    EndedByGateway,
    /// The person handed back "fail the job".
    HandbackFail,
    /// The gateway could not be reached within `--retry-for`.
    Unreachable,
    /// The gateway refused the request (unauthorized, unknown session, invalid field).
    Refused,
    /// `wait --timeout` passed before the session reached the state asked for.
    WaitTimedOut,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Usage => 2,
            Exit::Exited(status) => status,
            // As a shell reports a killed child; 255 when the name has no number here.
            Exit::Signalled(Some(n)) => 128u8.saturating_add(n),
            Exit::Signalled(None) => 255,
            Exit::Expired => 200,
            Exit::Failed => 201,
            Exit::Revoked => 202,
            Exit::EndedByGateway => 203,
            Exit::HandbackFail => 204,
            Exit::Unreachable => 205,
            Exit::Refused => 206,
            Exit::WaitTimedOut => 207,
        }
    }

    /// The codes with a fixed meaning, the rows of the documented table (`Exited` and
    /// `Signalled` stand for their ranges).
    pub const ALL: [Exit; 11] = [
        Exit::Success,
        Exit::Usage,
        Exit::Signalled(None),
        Exit::Expired,
        Exit::Failed,
        Exit::Revoked,
        Exit::EndedByGateway,
        Exit::HandbackFail,
        Exit::Unreachable,
        Exit::Refused,
        Exit::WaitTimedOut,
    ];

    /// How a session in a final state ended, for its caller. `None` while it is not final.
    pub fn of(status: &Status) -> Option<Exit> {
        let reason = status.end_reason.as_deref();
        let exit = match status.state {
            State::Pending | State::Connecting | State::Live | State::Detached | State::Unknown => {
                return None;
            }
            State::Expired => Exit::Expired,
            State::Failed => Exit::Failed,
            State::Revoked => Exit::Revoked,
            State::Ended => match (status.handback.as_deref(), reason) {
                (Some("continue"), _) => Exit::Success,
                (Some("fail"), _) => Exit::HandbackFail,
                (_, Some("revoked")) => Exit::Revoked,
                (_, Some("signalled")) => {
                    Exit::Signalled(status.exit_signal.as_deref().and_then(signal_number))
                }
                // A status outside 0–255 cannot come from a POSIX shell; say so rather
                // than wrap it into a success.
                (_, Some("exited")) => match status.exit_status.map(u8::try_from) {
                    Some(Ok(code)) => Exit::Exited(code),
                    _ => Exit::EndedByGateway,
                },
                // Everything else (time limit, idle timeout, abandoned, client gone,
                // eof without a status, shutdown, a lost connection) was not the shell's
                // verdict: the gateway or the network ended it.
                _ => Exit::EndedByGateway,
            },
        };
        Some(exit)
    }
}

/// The number of a signal as SSH names it (RFC 4254 section 6.10: `TERM`, no `SIG`), as
/// Linux numbers it. OpenSSH sends only these; others (`name@domain`) have no number.
pub fn signal_number(name: &str) -> Option<u8> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    let number = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    };
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: &str) -> Status {
        let mut s = Status::test("ended");
        s.end_reason = Some(reason.into());
        s
    }

    #[test]
    fn codes_are_distinct_and_fixed() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 2, 255, 200, 201, 202, 203, 204, 205, 206, 207]);
    }

    #[test]
    fn shell_status_passes_through() {
        for code in [0u8, 1, 7, 255] {
            let mut s = ended("exited");
            s.exit_status = Some(code.into());
            assert_eq!(Exit::of(&s).map(Exit::code), Some(code));
        }
        let mut s = ended("exited");
        s.exit_status = Some(300);
        assert_eq!(Exit::of(&s), Some(Exit::EndedByGateway));
    }

    #[test]
    fn signals_are_128_plus_their_number() {
        let mut s = ended("signalled");
        s.exit_signal = Some("TERM".into());
        assert_eq!(Exit::of(&s).map(Exit::code), Some(143));
        s.exit_signal = Some("KILL".into());
        assert_eq!(Exit::of(&s).map(Exit::code), Some(137));
        s.exit_signal = Some("custom@example.com".into());
        assert_eq!(Exit::of(&s).map(Exit::code), Some(255));
    }

    #[test]
    fn final_states_map_to_their_codes() {
        let code = |s: &Status| Exit::of(s).map(Exit::code);
        assert_eq!(code(&Status::test("expired")), Some(200));
        assert_eq!(code(&Status::test("failed")), Some(201));
        assert_eq!(code(&Status::test("revoked")), Some(202));
        assert_eq!(code(&ended("revoked")), Some(202));
        for reason in [
            "session_time_limit",
            "idle_timeout",
            "abandoned",
            "client_gone",
            "server_shutdown",
            "connection_lost",
            "eof",
        ] {
            assert_eq!(code(&ended(reason)), Some(203), "{reason}");
        }
        let mut s = ended("handback");
        s.handback = Some("continue".into());
        assert_eq!(code(&s), Some(0));
        s.handback = Some("fail".into());
        assert_eq!(code(&s), Some(204));
        for state in ["pending", "connecting", "live", "detached"] {
            assert_eq!(code(&Status::test(state)), None, "{state}");
        }
    }
}
