//! `/sessions`: a session as a resource for the job that created it. `GET /sessions/<id>`
//! answers its status (and, with `?wait=`, long-polls for a state), `DELETE` ends it, `POST
//! …/extend` pushes its deadline, `GET /sessions` lists the caller's.
//!
//! Only the creating token (or an admin token) sees a session; to any other it does not
//! exist (`404 unknown_session`, as for an unknown id). A waiting request is an async task
//! on the session's `watch` channel: no thread, woken by its own session's changes, its
//! deadline or the drain, and dropped with its connection.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::{self, Raw};
use super::auth::Caller;
use super::error::ApiError;
use super::{State, uncached};
use crate::ledger::{End, Filter, Snapshot, State as SessionState};
use crate::store::SessionId;

/// A wait that names no timeout waits this long.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Most sessions one list page holds, and the default.
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 50;
/// An extend body is a few bytes.
pub const MAX_EXTEND_BODY: usize = 1024;

/// What follows `/sessions/`.
#[derive(Debug, PartialEq, Eq)]
pub enum Path {
    Session(Uuid),
    Extend(Uuid),
    Share(Uuid),
    ShareLink(Uuid, Uuid),
}

/// Parses the path after `/sessions/`; `None` for any other shape (a malformed id too).
pub fn parse_path(rest: &str) -> Option<Path> {
    let (id, rest) = match rest.split_once('/') {
        Some((id, rest)) => (id, Some(rest)),
        None => (rest, None),
    };
    let id = Uuid::parse_str(id).ok()?;
    match rest {
        None => Some(Path::Session(id)),
        Some("extend") => Some(Path::Extend(id)),
        Some("share") => Some(Path::Share(id)),
        Some(rest) => {
            let link = rest.strip_prefix("share/")?;
            Some(Path::ShareLink(id, Uuid::parse_str(link).ok()?))
        }
    }
}

/// Waiting requests now, for `/metrics` and leak checks; each holds a `Waiter`.
#[derive(Debug, Default)]
pub struct Waiters(AtomicUsize);

impl Waiters {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One waiting request's place in the count, given back when it is dropped (answered, or
/// its client went away and hyper dropped the request).
struct Waiter<'a>(&'a Waiters);

impl<'a> Waiter<'a> {
    fn new(waiters: &'a Waiters) -> Self {
        waiters.0.fetch_add(1, Ordering::AcqRel);
        Waiter(waiters)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The session's status, if `caller` may see it; a pending session past its deadline is
/// expired first, so nobody is told `pending` for a link that can no longer be opened.
fn owned(state: &State, caller: &Caller, id: SessionId) -> Result<Snapshot, ApiError> {
    settle(state, id);
    state
        .ledger
        .get(&id)
        .filter(|s| caller.owns(&s.status.token))
        .ok_or_else(ApiError::unknown_session)
}

/// Expires `id` now if it is pending past its deadline (the sweep would, a little later).
pub fn settle(state: &State, id: SessionId) {
    if state.store.expire(&id) {
        state.ledger.expire(&id);
    }
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    uncached(status, "application/json", body.to_string().into())
}

/// `GET /sessions/<id>[?wait=…&timeout=…]`.
pub async fn get(
    headers: &HeaderMap,
    query: Option<&str>,
    state: &State,
    client: std::net::IpAddr,
    id: Uuid,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let caller = state.authenticate(headers, client)?;
    let id = SessionId::from(id);
    let wait = parse_wait(query, state.max_wait)?;
    let snapshot = owned(state, &caller, id)?;
    let Some((states, timeout)) = wait else {
        return Ok(answer(StatusCode::OK, snapshot.to_json()));
    };
    let (body, _) = wait_for(state, id, &states, timeout).await?;
    Ok(answer(StatusCode::OK, body))
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    Reached,
    TimedOut,
    Draining,
}

/// Waits until `id` is in one of `states`, `timeout` passes, or the gateway drains; the
/// status then, with `timed_out` (and `draining` when the drain answered).
async fn wait_for(
    state: &State,
    id: SessionId,
    states: &HashSet<SessionState>,
    timeout: Duration,
) -> Result<(Value, Woken), ApiError> {
    let (mut rx, expires) = state
        .ledger
        .watch(&id)
        .ok_or_else(ApiError::unknown_session)?;
    let _waiter = Waiter::new(&state.waiters);
    let deadline = tokio::time::Instant::now() + timeout;
    // The join deadline is checked once when it passes: then the expiry or the claim that
    // beat it changes the status, which `changed` sees.
    let mut expiry_checked = false;
    let woken = loop {
        let current = rx.borrow_and_update().state;
        // A final state is an answer too: nothing follows it, so the wait could never be met.
        if states.contains(&current) || current.is_final() {
            break Woken::Reached;
        }
        let pending = current == SessionState::Pending && !expiry_checked;
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // Dropped from the history meanwhile: the last status is still ours.
                    break Woken::Reached;
                }
            }
            () = tokio::time::sleep_until(deadline) => break Woken::TimedOut,
            () = tokio::time::sleep_until(expires), if pending => {
                expiry_checked = true;
                settle(state, id);
            }
            () = state.ws.draining.cancelled() => break Woken::Draining,
        }
    };
    let status = rx.borrow().clone();
    let traffic = state.ledger.get(&id);
    let snapshot = traffic.unwrap_or(Snapshot {
        status,
        bytes_in: 0,
        bytes_out: 0,
    });
    let mut body = snapshot.to_json();
    body["timed_out"] = Value::Bool(woken == Woken::TimedOut);
    if woken == Woken::Draining {
        body["draining"] = Value::Bool(true);
    }
    Ok((body, woken))
}

/// `wait=<states>&timeout=<duration>`; `None` without `wait`. Unknown parameters, unknown
/// states, repeated parameters and timeouts out of range are errors.
pub fn parse_wait(
    query: Option<&str>,
    max_wait: Duration,
) -> Result<Option<(HashSet<SessionState>, Duration)>, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let [wait, timeout] = query_params(query, ["wait", "timeout"])?;
    let Some(wait) = wait else {
        return Err(ApiError::invalid_query("`timeout` needs `wait`"));
    };
    let states = parse_states(&wait, true)?;
    let timeout = match timeout {
        None => DEFAULT_WAIT.min(max_wait),
        Some(t) => api::duration("timeout", Some(Raw::Text(t)))
            .map_err(|_| {
                ApiError::invalid_query(
                    "`timeout` must be a duration such as \"30s\" or \"5m\", or whole seconds, more than zero",
                )
            })?
            .unwrap_or(DEFAULT_WAIT),
    };
    if timeout > max_wait {
        return Err(ApiError::invalid_query(format!(
            "`timeout` must be at most {} on this gateway (--max-wait)",
            humantime::format_duration(max_wait)
        )));
    }
    Ok(Some((states, timeout)))
}

/// The values of the parameters `names` in `query`, in that order: any other parameter, or
/// one given twice, is `invalid_query`.
fn query_params<const N: usize>(
    query: &str,
    names: [&str; N],
) -> Result<[Option<String>; N], ApiError> {
    let mut values = [const { None }; N];
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let Some(i) = names.iter().position(|n| *n == key) else {
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            return Err(ApiError::invalid_query(format!(
                "the query may hold only {}",
                names.join(", ")
            )));
        };
        if values[i].replace(value.into_owned()).is_some() {
            return Err(ApiError::invalid_query(format!(
                "`{key}` is given more than once"
            )));
        }
    }
    Ok(values)
}

/// A comma list of states; with `shorthands`, `opened` (every state but pending) and
/// `ended` (every final state) too.
fn parse_states(list: &str, shorthands: bool) -> Result<HashSet<SessionState>, ApiError> {
    let mut states = HashSet::new();
    for name in list.split(',').map(str::trim) {
        match name {
            "opened" if shorthands => {
                states.extend(
                    SessionState::ALL
                        .into_iter()
                        .filter(|s| *s != SessionState::Pending),
                );
            }
            "ended" if shorthands => {
                states.extend(SessionState::ALL.into_iter().filter(|s| s.is_final()));
            }
            _ => match SessionState::parse(name) {
                Some(s) => {
                    states.insert(s);
                }
                None => {
                    let known: Vec<_> = SessionState::ALL.iter().map(|s| s.code()).collect();
                    let extra = if shorthands { ", opened, ended" } else { "" };
                    return Err(ApiError::invalid_query(format!(
                        "unknown state; the states are {}{extra}",
                        known.join(", ")
                    )));
                }
            },
        }
    }
    Ok(states)
}

/// `DELETE /sessions/<id>`: a pending link dies at once, a running session is ended.
/// Idempotent: an ended session is answered as it is.
pub fn revoke(
    headers: &HeaderMap,
    state: &State,
    client: std::net::IpAddr,
    id: Uuid,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let caller = state.authenticate(headers, client)?;
    let id = SessionId::from(id);
    let snapshot = owned(state, &caller, id)?;
    if !snapshot.status.state.is_final() {
        if state.store.remove(&id) {
            // The link's credentials are gone with the removal; nobody can claim it now.
            let mut end = End::new(SessionState::Revoked, "revoked");
            end.message = Some("the session was ended through the API".into());
            state.ledger.close_pending(&id, end);
        } else if let Some(control) = state.ledger.control(&id) {
            // Claimed (or claiming this instant): its task ends it with `revoked`.
            control.revoked.cancel();
        }
        tracing::info!(session = %id, by = caller.name, "session revoked");
    }
    let snapshot = state.ledger.get(&id).unwrap_or(snapshot);
    Ok(answer(StatusCode::OK, snapshot.to_json()))
}

/// `POST /sessions/<id>/extend {"by": "30m"}`: a pending session's join deadline, or a
/// running one's cap, moves later, never past the operator's bound.
pub fn extend(
    headers: &HeaderMap,
    state: &State,
    client: std::net::IpAddr,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let caller = state.authenticate(headers, client)?;
    let id = SessionId::from(id);
    let snapshot = owned(state, &caller, id)?;
    let by = api::parse_extend(body)?;
    let status = &snapshot.status;
    match status.state {
        s if s.is_final() => return Err(ApiError::session_ended()),
        SessionState::Pending => {
            let max = state.timers.max_ttl;
            match state.store.extend(&id, by, max) {
                Ok((expires, expires_at)) => state.ledger.set_expires(&id, expires, expires_at),
                Err(crate::store::ExtendRefused::Bound) => {
                    return Err(ApiError::invalid_field(
                        "by",
                        &format!(
                            "would take the link past {} after its creation (--max-session-ttl)",
                            humantime::format_duration(max)
                        ),
                    ));
                }
                // Claimed or expired meanwhile: say what it is now.
                Err(crate::store::ExtendRefused::Gone) => {}
            }
        }
        _ => {
            let control = state
                .ledger
                .control(&id)
                .ok_or_else(ApiError::unknown_session)?;
            let current = *control.deadline.borrow();
            // A session without a cap has nothing to push.
            if let Some(current) = current {
                let later = current + by;
                // The cap started when the shell was ready: the bound counts from there.
                if let (Some(bound), Some(ready)) = (state.timers.max_session_time, status.ready_at)
                {
                    let ready_ago = SystemTime::now().duration_since(ready).unwrap_or_default();
                    let ready_at = tokio::time::Instant::now().checked_sub(ready_ago);
                    if ready_at.is_some_and(|r| later.duration_since(r) > bound) {
                        return Err(ApiError::invalid_field(
                            "by",
                            &format!(
                                "would take the session past {} (--max-session-time)",
                                humantime::format_duration(bound)
                            ),
                        ));
                    }
                }
                control.deadline.send_replace(Some(later));
                let ends_at = SystemTime::now()
                    + later.saturating_duration_since(tokio::time::Instant::now());
                state.ledger.set_ends_at(&id, Some(ends_at));
            }
        }
    }
    tracing::info!(session = %id, by_secs = by.as_secs(), "session extended");
    let snapshot = state.ledger.get(&id).unwrap_or(snapshot);
    Ok(answer(StatusCode::OK, snapshot.to_json()))
}

/// `GET /sessions?state=…&limit=…&cursor=…`: newest first.
pub fn list(
    headers: &HeaderMap,
    query: Option<&str>,
    state: &State,
    client: std::net::IpAddr,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let caller = state.authenticate(headers, client)?;
    let [states, limit, cursor] =
        query_params(query.unwrap_or_default(), ["state", "limit", "cursor"])?;
    let states: Vec<SessionState> = match states {
        Some(list) => parse_states(&list, true)?.into_iter().collect(),
        None => Vec::new(),
    };
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::invalid_query(format!("`limit` must be from 1 to {MAX_PAGE}"))
            })?,
    };
    let before = match cursor {
        None => None,
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| ApiError::invalid_query("`cursor` is not one this gateway gave"))?,
        ),
    };
    let filter = Filter {
        token: (!caller.admin).then_some(caller.name.as_str()),
        states: &states,
        before,
        limit,
    };
    let (page, next) = state.ledger.list(&filter);
    let sessions: Vec<Value> = page.iter().map(Snapshot::to_json).collect();
    let body = json!({"sessions": sessions, "next_cursor": next.map(|n| n.to_string())});
    Ok(answer(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let id = Uuid::new_v4();
        let link = Uuid::new_v4();
        assert_eq!(parse_path(&id.to_string()), Some(Path::Session(id)));
        assert_eq!(parse_path(&format!("{id}/extend")), Some(Path::Extend(id)));
        assert_eq!(parse_path(&format!("{id}/share")), Some(Path::Share(id)));
        assert_eq!(
            parse_path(&format!("{id}/share/{link}")),
            Some(Path::ShareLink(id, link))
        );
        for bad in [
            String::new(),
            "x".to_owned(),
            format!("{id}/"),
            format!("{id}/share/"),
            format!("{id}/share/x"),
            format!("{id}/sharex"),
            format!("{id}/extend/x"),
            "x/share".to_owned(),
            format!("{id}/share/{link}/more"),
            format!("/{id}/share"),
        ] {
            assert_eq!(parse_path(&bad), None, "{bad}");
        }
    }

    #[test]
    fn wait_queries() {
        let max = Duration::from_secs(600);
        assert_eq!(parse_wait(None, max).unwrap(), None);
        let (states, timeout) = parse_wait(Some("wait=live,ended&timeout=90s"), max)
            .unwrap()
            .unwrap();
        assert!(states.contains(&SessionState::Live) && states.contains(&SessionState::Expired));
        assert!(!states.contains(&SessionState::Pending));
        assert_eq!(timeout, Duration::from_secs(90));
        let (states, timeout) = parse_wait(Some("wait=opened"), max).unwrap().unwrap();
        assert_eq!(states.len(), 7);
        assert_eq!(timeout, DEFAULT_WAIT);
        assert_eq!(
            parse_wait(Some("wait=live&timeout=120"), max)
                .unwrap()
                .unwrap()
                .1,
            Duration::from_secs(120)
        );
        for bad in [
            "wait=asleep",
            "wait=",
            "wait=live&timeout=-5s",
            "wait=live&timeout=0",
            "wait=live&timeout=11m",
            "wait=live&timeout=999999999999999999999",
            "wait=live&timeout=soon",
            "wait=live&wait=ended",
            "timeout=5s",
            "wait=live&x=1",
        ] {
            assert_eq!(
                parse_wait(Some(bad), max).unwrap_err().code(),
                "invalid_query",
                "{bad}"
            );
        }
    }
}
