//! Following a session: the long-poll loop (`follow`) and the one line printed per change of
//! state (`change_lines`, pure). The loop asks `wait=<every state but the current one>`, so
//! each answer is a change, a timeout to re-ask after, or a draining gateway's prompt reply.
//!
//! A change and its reversal between two answers (detached and resumed within one poll's
//! round trip) is not seen; the outcome never depends on it.

use std::io::Write;
use std::time::{Duration, Instant};

use super::api::{Api, SessionRef};
use super::error::{ClientError, ClientErrorKind};
use super::status::{State, Status};

/// The longest single poll; the gateway's default `--max-wait` is 10m, this stays well under
/// it so a proxy's idle timeout (often 60s) does not cut the request.
const POLL: Duration = Duration::from_secs(30);
/// A draining gateway answers at once; pause before asking again so the loop does not spin.
const DRAIN_PAUSE: Duration = Duration::from_secs(1);
/// After a draining answer, how long the gateway may stay unreachable before its shutdown
/// is taken as the session's end: a restarted gateway would not know the session anyway
/// (sessions live in its memory), so waiting out all of `--retry-for` would only delay the
/// job's verdict.
const AFTER_DRAIN_RETRY: Duration = Duration::from_secs(5);
/// Polls in one `follow`, a bound in count besides the session's own limits: 30 s polls
/// for well over a month.
const MAX_POLLS: u32 = 100_000;

/// How a `follow` ended.
pub enum Followed {
    /// The session reached one of the states asked for (or a final state).
    Reached(Status),
    /// `timeout` passed first; the last status seen.
    TimedOut(Status),
}

/// Follows `id` from `last` (the state already known, if any) until it is in one of
/// `until` or final, or `timeout` passes, printing each change to `out` (as the API's JSON
/// with `json`).
pub async fn follow(
    api: &Api,
    id: &SessionRef,
    mut last: Option<Status>,
    until: &[State],
    timeout: Option<Duration>,
    json: bool,
    out: &mut dyn Write,
) -> Result<Followed, ClientError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    // Set once the gateway said it is draining: from then on it may go away for good.
    let mut drained: Option<Api> = None;
    for _ in 0..MAX_POLLS {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if let (Some(last), Some(Duration::ZERO)) = (&last, left) {
            return Ok(Followed::TimedOut(last.clone()));
        }
        let asking = drained.as_ref().unwrap_or(api);
        let asked = match &last {
            // The first look: the current state, at once.
            None => asking.status(id, None).await,
            Some(known) => {
                let poll = left.map_or(POLL, |l| l.min(POLL));
                let states = State::all_but(known.state);
                asking.status(id, Some((&states, poll))).await
            }
        };
        let answer = match (asked, &last) {
            (Ok(answer), _) => answer,
            // The gateway that was draining is gone, or back without the session: it ended
            // with the shutdown.
            (Err(e), Some(known)) if drained.is_some() && e.kind != ClientErrorKind::Usage => {
                let ended = shut_down(known, &e);
                let note = format!("ended: {}", ended.outcome());
                if json {
                    eprintln!("alfresco-ssh session: {note}");
                } else {
                    write_line(out, &note);
                }
                return Ok(Followed::Reached(ended));
            }
            (Err(e), _) => return Err(e),
        };
        let status: Status = serde_json::from_value(answer.clone())
            .map_err(|e| ClientError::bad_answer(format!("not a status object: {e}")))?;
        let changed = last.as_ref().is_none_or(|l| l.state != status.state);
        if changed {
            if json {
                write_line(out, &answer.to_string());
            } else {
                for line in change_lines(last.as_ref(), &status) {
                    write_line(out, &line);
                }
            }
        }
        if status.draining && drained.is_none() {
            drained = Some(api.with_retry_for(AFTER_DRAIN_RETRY.min(api.retry_for())));
        }
        let done = until.contains(&status.state) || status.state.is_final();
        // A draining gateway, or a state this client cannot name (a newer gateway: every
        // state it can name is "another" one, so the poll answers at once), would spin.
        let pause = (status.draining && !changed) || status.state == State::Unknown;
        last = Some(status);
        if done {
            return Ok(Followed::Reached(last.expect("just set")));
        }
        if pause {
            tokio::time::sleep(DRAIN_PAUSE).await;
        }
    }
    Err(ClientError::bad_answer(format!(
        "no final state after {MAX_POLLS} polls"
    )))
}

/// What a session that was live on a gateway that shut down has become: ended by the
/// gateway (exit 203).
fn shut_down(known: &Status, then: &ClientError) -> Status {
    let mut ended = known.clone();
    ended.state = State::Ended;
    ended.end_reason = Some("server_shutdown".into());
    ended.end_message = Some(format!("the gateway drained, then: {then}"));
    ended.draining = false;
    ended
}

/// Writes one line and flushes, so a CI log shows it at once. A closed stdout (the job's
/// log reader gone) must not end the wait: the exit status is what the job acts on.
pub fn write_line(out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The lines for going from `before` (`None`: nothing seen yet, as if pending) to `now`.
/// Steps skipped between two answers are filled in, so the log always reads in order:
/// "opened from …", "ready", "detached", "resumed", and the end.
pub fn change_lines(before: Option<&Status>, now: &Status) -> Vec<String> {
    let from = before.map_or(State::Pending, |s| s.state);
    let opened = || {
        let at = now.client.as_deref().unwrap_or("an unknown address");
        format!("opened from {at}")
    };
    let mut lines = Vec::new();
    match now.state {
        State::Pending if before.is_none() => {
            lines.push("pending: waiting for the link to be opened".into())
        }
        State::Pending | State::Unknown => {}
        State::Connecting => lines.push(opened()),
        State::Live | State::Detached => {
            match from {
                State::Pending => lines.extend([opened(), "ready".into()]),
                State::Connecting => lines.push("ready".into()),
                _ => {}
            }
            match (from, now.state) {
                (State::Detached, State::Live) => lines.push("resumed".into()),
                (_, State::Detached) if from != State::Detached => lines.push("detached".into()),
                _ => {}
            }
        }
        State::Ended => lines.push(format!("ended: {}", now.outcome())),
        State::Expired => lines.push("expired: nobody opened the link in time".into()),
        State::Revoked => lines.push("revoked".into()),
        State::Failed => lines.push(format!("failed: {}", now.outcome())),
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, client: Option<&str>) -> Status {
        let mut s = Status::test(state);
        s.client = client.map(str::to_owned);
        s
    }

    fn walk(states: &[&str]) -> Vec<String> {
        let mut last: Option<Status> = None;
        let mut lines = Vec::new();
        for state in states {
            let mut now = status(state, Some("127.0.0.1"));
            if *state == "ended" {
                now.end_reason = Some("exited".into());
                now.exit_status = Some(7);
            }
            lines.extend(change_lines(last.as_ref(), &now));
            last = Some(now);
        }
        lines
    }

    #[test]
    fn each_change_is_one_line() {
        assert_eq!(
            walk(&["pending", "connecting", "live", "detached", "live", "ended"]),
            [
                "pending: waiting for the link to be opened",
                "opened from 127.0.0.1",
                "ready",
                "detached",
                "resumed",
                "ended: exited 7"
            ]
        );
    }

    #[test]
    fn skipped_steps_are_filled_in() {
        assert_eq!(
            walk(&["pending", "live", "ended"]),
            [
                "pending: waiting for the link to be opened",
                "opened from 127.0.0.1",
                "ready",
                "ended: exited 7"
            ]
        );
        assert_eq!(
            walk(&["pending", "detached"])[1..],
            ["opened from 127.0.0.1", "ready", "detached"]
        );
    }

    #[test]
    fn ends_that_never_went_live() {
        let lines = |s: &Status| change_lines(Some(&Status::test("pending")), s);
        assert_eq!(
            lines(&Status::test("expired")),
            ["expired: nobody opened the link in time"]
        );
        assert_eq!(lines(&Status::test("revoked")), ["revoked"]);
        let mut failed = Status::test("failed");
        failed.end_reason = Some("auth_failed".into());
        failed.end_message = Some("the server refused the password".into());
        assert_eq!(
            lines(&failed),
            ["failed: auth_failed (the server refused the password)"]
        );
        let mut ended = status("ended", None);
        ended.handback = Some("fail".into());
        ended.end_reason = Some("handback".into());
        assert_eq!(
            change_lines(Some(&status("live", None)), &ended),
            ["ended: handback fail"]
        );
    }
}
