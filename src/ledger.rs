//! Every session's public story, from create-session to its end and for a while after: the
//! state, times, outcome and traffic that `GET /sessions/<id>` answers and that waiters wait
//! on. It holds no credential and no resume token (`store` holds the credentials until the
//! claim); the session task reports each change through its `Tracker`.
//!
//! Each entry's status sits in a `watch` channel: a waiter is a receiver on an async task,
//! no thread, woken only by its own session's changes. Ended entries stay for
//! `--session-history` and at most `--session-history-entries` of them, oldest dropped
//! first. The lock is never held across an `.await`, and observers (webhooks) are told after
//! it is released.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::SessionId;

/// Where a session is in its life (the `state` field; the diagram is in docs/PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Created; the link has not been opened.
    Pending,
    /// Claimed by a client; the SSH connection and authentication are under way.
    Connecting,
    /// The shell is ready and a client is attached.
    Live,
    /// The shell runs, its client is gone, and it waits for a resume.
    Detached,
    /// It went live and is over.
    Ended,
    /// Nobody opened the link before its deadline.
    Expired,
    /// Ended through the API before it went live.
    Revoked,
    /// The connection, host key check or authentication failed.
    Failed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Connecting,
        State::Live,
        State::Detached,
        State::Ended,
        State::Expired,
        State::Revoked,
        State::Failed,
    ];

    /// The state's name in JSON and in `wait=` lists.
    pub fn code(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Connecting => "connecting",
            State::Live => "live",
            State::Detached => "detached",
            State::Ended => "ended",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.code() == name)
    }

    /// Nothing follows: the session is over, one way or another.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Ended | State::Expired | State::Revoked | State::Failed
        )
    }
}

/// The person's verdict, handed back to the job from the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Fail,
}

impl Verdict {
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Fail => "fail",
        }
    }

    pub fn parse(name: &str) -> Option<Verdict> {
        match name {
            "continue" => Some(Verdict::Continue),
            "fail" => Some(Verdict::Fail),
            _ => None,
        }
    }
}

/// What is public about a session (never a credential, never a resume token).
#[derive(Debug, Clone)]
pub struct Status {
    pub id: SessionId,
    pub state: State,
    /// `user@host:port`.
    pub target: String,
    /// The name of the API token that created it.
    pub token: String,
    pub created_at: SystemTime,
    /// The join deadline, while pending.
    pub expires_at: Option<SystemTime>,
    pub claimed_at: Option<SystemTime>,
    pub ready_at: Option<SystemTime>,
    /// The session's current cap (`max_duration`, moved by extend).
    pub ends_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    /// The outcome, in the vocabulary of `ssh-closed` reasons, `ssh-error` codes and the
    /// metrics: `exited`, `revoked`, `auth_failed`, `expired`, …
    pub end_reason: Option<&'static str>,
    pub end_message: Option<String>,
    pub exit_status: Option<i32>,
    pub exit_signal: Option<String>,
    pub attached: bool,
    /// The attached client's address.
    pub client: Option<IpAddr>,
    pub viewers: usize,
    /// The recording's name, when the session is recorded.
    pub recording: Option<String>,
    /// The page offers "done, continue" and "done, fail".
    pub handback_enabled: bool,
    pub handback: Option<Verdict>,
}

/// How a session ended, as its task reports it.
#[derive(Debug, Clone)]
pub struct End {
    pub state: State,
    pub reason: &'static str,
    pub message: Option<String>,
    pub exit_status: Option<i32>,
    pub exit_signal: Option<String>,
    pub handback: Option<Verdict>,
}

impl End {
    pub fn new(state: State, reason: &'static str) -> End {
        End {
            state,
            reason,
            message: None,
            exit_status: None,
            exit_signal: None,
            handback: None,
        }
    }
}

/// Bytes each way, counted by the session task without a lock.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// What the API may do to a running session: end it, or move its cap.
#[derive(Debug)]
pub struct Control {
    /// Cancelled by `DELETE /sessions/<id>`.
    pub revoked: CancellationToken,
    /// The cap on tokio's clock (`None`: none), moved by extend; the session task watches it.
    pub deadline: watch::Sender<Option<Instant>>,
}

/// Someone who hears of every change (webhooks): the event's name, the status object as
/// `GET /sessions/<id>` shows it, and on `created` the link.
pub trait Observer: Send + Sync {
    fn notify(&self, event: &'static str, session: &Value, url: Option<&str>);
}

/// A status, its traffic read at the same moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: Status,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Snapshot {
    /// The status object of the API.
    pub fn to_json(&self) -> Value {
        let s = &self.status;
        let time =
            |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_seconds(t).to_string());
        json!({
            "id": s.id.full().to_string(),
            "state": s.state.code(),
            "target": s.target,
            "token": s.token,
            "created_at": time(Some(s.created_at)),
            "expires_at": time(s.expires_at),
            "claimed_at": time(s.claimed_at),
            "ready_at": time(s.ready_at),
            "ends_at": time(s.ends_at),
            "ended_at": time(s.ended_at),
            "end_reason": s.end_reason,
            "end_message": s.end_message,
            "exit_status": s.exit_status,
            "exit_signal": s.exit_signal,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "attached": s.attached,
            "client": s.client.map(|c| c.to_string()),
            "viewers": s.viewers,
            "recording": s.recording,
            "handback_enabled": s.handback_enabled,
            "handback": s.handback.map(Verdict::code),
        })
    }
}

/// A new session, as create-session records it.
pub struct New {
    pub id: SessionId,
    pub target: String,
    pub token: String,
    /// The join deadline, on tokio's clock (the store's) and the wall clock.
    pub expires: Instant,
    pub expires_at: SystemTime,
    pub handback: bool,
}

/// Which sessions `list` shows.
pub struct Filter<'a> {
    /// `None`: every token's (an admin).
    pub token: Option<&'a str>,
    /// Empty: every state.
    pub states: &'a [State],
    /// Only sessions created before this one (the cursor: its creation number).
    pub before: Option<u64>,
    pub limit: usize,
}

struct Entry {
    status: watch::Sender<Status>,
    traffic: Arc<Traffic>,
    control: Arc<Control>,
    /// The join deadline on tokio's clock, while pending.
    expires: Instant,
    /// Creation order, for listing newest first and for cursors.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SessionId, Entry>,
    /// Ended sessions in the order they ended, with when, for the history bounds.
    ended: VecDeque<(SessionId, Instant)>,
    next_seq: u64,
}

pub struct Ledger {
    inner: Mutex<Inner>,
    history: Duration,
    max_history: usize,
    observer: Option<Arc<dyn Observer>>,
}

/// An event for the observer, gathered under the lock and told after it.
type Told = Option<(&'static str, Value)>;

impl Ledger {
    pub fn new(history: Duration, max_history: usize, observer: Option<Arc<dyn Observer>>) -> Self {
        Ledger {
            inner: Mutex::default(),
            history,
            max_history,
            observer,
        }
    }

    /// Records a session create-session has just stored; `url` goes to the observer only.
    pub fn create(&self, new: New, url: &str) {
        let status = Status {
            id: new.id,
            state: State::Pending,
            target: new.target,
            token: new.token,
            created_at: SystemTime::now(),
            expires_at: Some(new.expires_at),
            claimed_at: None,
            ready_at: None,
            ends_at: None,
            ended_at: None,
            end_reason: None,
            end_message: None,
            exit_status: None,
            exit_signal: None,
            attached: false,
            client: None,
            viewers: 0,
            recording: None,
            handback_enabled: new.handback,
            handback: None,
        };
        let traffic = Arc::new(Traffic::default());
        let snapshot = snapshot(&status, &traffic).to_json();
        {
            let mut inner = self.inner.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let control = Arc::new(Control {
                revoked: CancellationToken::new(),
                deadline: watch::Sender::new(None),
            });
            inner.entries.insert(
                new.id,
                Entry {
                    status: watch::Sender::new(status),
                    traffic,
                    control,
                    expires: new.expires,
                    seq,
                },
            );
        }
        if let Some(observer) = &self.observer {
            observer.notify("created", &snapshot, Some(url));
        }
    }

    /// The session's status now.
    pub fn get(&self, id: &SessionId) -> Option<Snapshot> {
        let inner = self.inner.lock();
        let entry = inner.entries.get(id)?;
        Some(snapshot(&entry.status.borrow(), &entry.traffic))
    }

    /// A receiver that sees every change of the session's status, and its join deadline.
    pub fn watch(&self, id: &SessionId) -> Option<(watch::Receiver<Status>, Instant)> {
        let inner = self.inner.lock();
        let entry = inner.entries.get(id)?;
        Some((entry.status.subscribe(), entry.expires))
    }

    /// The session's controls (revoke, the cap), for the API.
    pub fn control(&self, id: &SessionId) -> Option<Arc<Control>> {
        self.inner.lock().entries.get(id).map(|e| e.control.clone())
    }

    /// The handle the session task reports through, once it has claimed `id`.
    pub fn tracker(self: &Arc<Self>, id: SessionId) -> Option<Tracker> {
        let inner = self.inner.lock();
        let entry = inner.entries.get(&id)?;
        Some(Tracker {
            ledger: self.clone(),
            id,
            traffic: entry.traffic.clone(),
            control: entry.control.clone(),
            ended: false,
        })
    }

    /// A pending session is over before anyone opened it: `expired`, or `revoked`. Its
    /// credentials are already gone from the store (the caller took or swept them).
    pub fn close_pending(&self, id: &SessionId, end: End) {
        self.change(id, |s| {
            if s.state != State::Pending {
                return None;
            }
            s.expires_at = None;
            finish(s, end)
        });
    }

    /// A pending session's join deadline moved (extend), as the store now holds it.
    pub fn set_expires(&self, id: &SessionId, expires: Instant, expires_at: SystemTime) {
        if let Some(entry) = self.inner.lock().entries.get_mut(id) {
            entry.expires = expires;
        }
        self.change(id, |s| {
            if s.state == State::Pending {
                s.expires_at = Some(expires_at);
            }
            None
        });
    }

    /// A running session's cap moved (extend).
    pub fn set_ends_at(&self, id: &SessionId, ends_at: Option<SystemTime>) {
        self.change(id, |s| {
            s.ends_at = ends_at;
            None
        });
    }

    /// Records the expiry of a pending session whose credentials the store has dropped.
    pub fn expire(&self, id: &SessionId) {
        let mut end = End::new(State::Expired, "expired");
        end.message = Some("nobody opened the link before it expired".into());
        self.close_pending(id, end);
    }

    /// Sessions newest first, and the cursor for the next page (if there may be one).
    pub fn list(&self, filter: &Filter) -> (Vec<Snapshot>, Option<u64>) {
        let inner = self.inner.lock();
        let mut found: Vec<(u64, &Entry)> = inner
            .entries
            .values()
            .filter(|e| filter.before.is_none_or(|b| e.seq < b))
            .filter(|e| {
                let s = e.status.borrow();
                filter.token.is_none_or(|t| s.token == t)
                    && (filter.states.is_empty() || filter.states.contains(&s.state))
            })
            .map(|e| (e.seq, e))
            .collect();
        found.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        let more = found.len() > filter.limit;
        found.truncate(filter.limit);
        let next = more.then(|| found.last().map(|(seq, _)| *seq)).flatten();
        let page = found
            .into_iter()
            .map(|(_, e)| snapshot(&e.status.borrow(), &e.traffic))
            .collect();
        (page, next)
    }

    /// Drops ended sessions past the history's age or count.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        while let Some(&(id, at)) = inner.ended.front() {
            if inner.ended.len() <= self.max_history && now.duration_since(at) < self.history {
                break;
            }
            inner.ended.pop_front();
            inner.entries.remove(&id);
        }
    }

    /// Whether the recording `name` is of a session the token `token` created (while the
    /// session is in the ledger).
    pub fn recorded_by(&self, name: &str, token: &str) -> bool {
        let inner = self.inner.lock();
        inner.entries.values().any(|e| {
            let s = e.status.borrow();
            s.token == token && s.recording.as_deref() == Some(name)
        })
    }

    /// Sessions known (pending, running and in history), for health and leak checks.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to the session's status and, if it says an event happened, notifies the
    /// waiters (always, on any change) and the observer (after the lock).
    fn change(&self, id: &SessionId, f: impl FnOnce(&mut Status) -> Told) {
        let told = {
            let mut inner = self.inner.lock();
            let Some(entry) = inner.entries.get(id) else {
                return;
            };
            let mut told = None;
            let traffic = entry.traffic.clone();
            entry.status.send_modify(|s| {
                let before = s.state;
                if before.is_final() {
                    return;
                }
                if let Some((event, _)) = f(s) {
                    told = Some((event, snapshot(s, &traffic).to_json()));
                }
            });
            let ended = entry.status.borrow().state.is_final();
            if ended && told.as_ref().is_some_and(|(e, _)| is_end_event(e)) {
                inner.ended.push_back((*id, Instant::now()));
                if inner.ended.len() > self.max_history {
                    if let Some((old, _)) = inner.ended.pop_front() {
                        inner.entries.remove(&old);
                    }
                }
            }
            told
        };
        if let (Some((event, value)), Some(observer)) = (told, &self.observer) {
            observer.notify(event, &value, None);
        }
    }
}

/// The events that put a session in a final state.
fn is_end_event(event: &str) -> bool {
    matches!(event, "ended" | "expired" | "revoked" | "failed")
}

fn snapshot(status: &Status, traffic: &Traffic) -> Snapshot {
    Snapshot {
        status: status.clone(),
        bytes_in: traffic.bytes_in.load(Ordering::Relaxed),
        bytes_out: traffic.bytes_out.load(Ordering::Relaxed),
    }
}

/// Puts `end` into the status; the event it makes.
fn finish(s: &mut Status, end: End) -> Told {
    s.state = end.state;
    s.ended_at = Some(SystemTime::now());
    s.end_reason = Some(end.reason);
    s.end_message = end.message;
    s.exit_status = end.exit_status;
    s.exit_signal = end.exit_signal;
    s.handback = end.handback;
    s.attached = false;
    s.client = None;
    s.viewers = 0;
    let event = match end.state {
        State::Expired => "expired",
        State::Revoked => "revoked",
        State::Failed => "failed",
        _ => "ended",
    };
    Some((event, Value::Null))
}

/// A claimed session's reporter: the session task tells each change through it. Dropped
/// without `ended` (a task that panicked or was cancelled), it records `failed`, so no
/// waiter waits on a session that is gone.
pub struct Tracker {
    ledger: Arc<Ledger>,
    id: SessionId,
    pub traffic: Arc<Traffic>,
    pub control: Arc<Control>,
    ended: bool,
}

impl Tracker {
    /// A client opened the link from `client`.
    pub fn claimed(&self, client: IpAddr) {
        self.ledger.change(&self.id, |s| {
            s.state = State::Connecting;
            s.expires_at = None;
            s.claimed_at = Some(SystemTime::now());
            s.client = Some(client);
            s.attached = true;
            Some(("opened", Value::Null))
        });
    }

    /// The shell is ready; `ends_at` is the session's cap, which starts now.
    pub fn ready(&self, ends_at: Option<SystemTime>, recording: Option<String>) {
        self.ledger.change(&self.id, |s| {
            s.state = if s.attached {
                State::Live
            } else {
                State::Detached
            };
            s.ready_at = Some(SystemTime::now());
            s.ends_at = ends_at;
            s.recording = recording;
            Some(("ready", Value::Null))
        });
    }

    /// The client left; the session waits for a resume.
    pub fn detached(&self) {
        self.ledger.change(&self.id, |s| {
            let was_live = s.state == State::Live;
            s.attached = false;
            if was_live {
                s.state = State::Detached;
            }
            was_live.then_some(("detached", Value::Null))
        });
    }

    /// A client (back) from `client`.
    pub fn resumed(&self, client: IpAddr) {
        self.ledger.change(&self.id, |s| {
            s.attached = true;
            s.client = Some(client);
            let was_detached = s.state == State::Detached;
            if was_detached {
                s.state = State::Live;
            }
            Some(("resumed", Value::Null)).filter(|_| was_detached)
        });
    }

    pub fn viewers(&self, n: usize) {
        self.ledger.change(&self.id, |s| {
            s.viewers = n;
            None
        });
    }

    /// The session is over.
    pub fn ended(mut self, end: End) {
        self.ended = true;
        self.ledger.change(&self.id, |s| finish(s, end));
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.ended {
            let end = End::new(State::Failed, "internal_error");
            self.ledger.change(&self.id, |s| finish(s, end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Arc<Ledger> {
        Arc::new(Ledger::new(Duration::from_secs(3600), 2, None))
    }

    fn new(ledger: &Ledger, token: &str) -> SessionId {
        let id = SessionId::from(uuid::Uuid::new_v4());
        ledger.create(
            New {
                id,
                target: "u@h:22".into(),
                token: token.into(),
                expires: Instant::now() + Duration::from_secs(60),
                expires_at: SystemTime::now() + Duration::from_secs(60),
                handback: false,
            },
            "http://x/id",
        );
        id
    }

    #[tokio::test]
    async fn a_session_goes_through_its_states_and_waiters_see_each() {
        let ledger = ledger();
        let id = new(&ledger, "ci");
        let (mut rx, _) = ledger.watch(&id).unwrap();
        assert_eq!(rx.borrow_and_update().state, State::Pending);
        let tracker = ledger.tracker(id).unwrap();
        tracker.claimed("127.0.0.1".parse().unwrap());
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().state, State::Connecting);
        tracker.ready(None, None);
        assert_eq!(ledger.get(&id).unwrap().status.state, State::Live);
        tracker.detached();
        assert_eq!(ledger.get(&id).unwrap().status.state, State::Detached);
        tracker.resumed("127.0.0.2".parse().unwrap());
        let s = ledger.get(&id).unwrap().status;
        assert_eq!((s.state, s.client), (State::Live, "127.0.0.2".parse().ok()));
        let mut end = End::new(State::Ended, "exited");
        end.exit_status = Some(7);
        tracker.ended(end);
        let s = ledger.get(&id).unwrap().status;
        assert_eq!(
            (s.state, s.end_reason, s.exit_status),
            (State::Ended, Some("exited"), Some(7))
        );
        assert!(!s.attached);
        // A final state is final: nothing later changes it.
        ledger.close_pending(&id, End::new(State::Revoked, "revoked"));
        assert_eq!(ledger.get(&id).unwrap().status.state, State::Ended);
    }

    #[test]
    fn a_dropped_tracker_records_a_failure() {
        let ledger = ledger();
        let id = new(&ledger, "ci");
        drop(ledger.tracker(id).unwrap());
        let s = ledger.get(&id).unwrap().status;
        assert_eq!(
            (s.state, s.end_reason),
            (State::Failed, Some("internal_error"))
        );
    }

    #[test]
    fn history_keeps_the_newest_ended_sessions() {
        let ledger = ledger();
        let ids: Vec<_> = (0..3).map(|_| new(&ledger, "ci")).collect();
        for id in &ids {
            ledger.close_pending(id, End::new(State::Expired, "expired"));
        }
        assert!(
            ledger.get(&ids[0]).is_none(),
            "over the count, the oldest goes"
        );
        assert!(ledger.get(&ids[1]).is_some() && ledger.get(&ids[2]).is_some());
        let running = new(&ledger, "ci");
        ledger.prune();
        assert!(
            ledger.get(&running).is_some(),
            "running sessions are never pruned"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn history_expires_with_age() {
        let ledger = Arc::new(Ledger::new(Duration::from_secs(60), 100, None));
        let id = new(&ledger, "ci");
        ledger.close_pending(&id, End::new(State::Revoked, "revoked"));
        tokio::time::advance(Duration::from_secs(59)).await;
        ledger.prune();
        assert!(ledger.get(&id).is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        ledger.prune();
        assert!(ledger.get(&id).is_none());
        assert!(ledger.is_empty());
    }

    #[test]
    fn list_is_newest_first_filtered_and_paged() {
        let ledger = Arc::new(Ledger::new(Duration::from_secs(60), 100, None));
        let a = new(&ledger, "ci");
        let b = new(&ledger, "other");
        let c = new(&ledger, "ci");
        let d = new(&ledger, "ci");
        ledger.close_pending(&c, End::new(State::Revoked, "revoked"));
        let ids = |page: &[Snapshot]| page.iter().map(|s| s.status.id).collect::<Vec<_>>();
        let mut filter = Filter {
            token: Some("ci"),
            states: &[],
            before: None,
            limit: 2,
        };
        let (page, next) = ledger.list(&filter);
        assert_eq!(ids(&page), vec![d, c]);
        filter.before = next;
        let (page, next) = ledger.list(&filter);
        assert_eq!((ids(&page), next), (vec![a], None));
        let all = Filter {
            token: None,
            states: &[State::Pending],
            before: None,
            limit: 10,
        };
        assert_eq!(ids(&ledger.list(&all).0), vec![d, b, a]);
    }
}
