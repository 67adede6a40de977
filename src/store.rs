//! Pending sessions: credentials held in memory under a one-time id until a browser claims
//! them or they expire.
//!
//! `take` moves the request out, so a claimed id is gone before any SSH work starts, and a
//! dropped request zeroizes its credentials. Expiry uses tokio's clock so tests can drive it.
//! The lock is never held across an `.await` or any I/O.
//!
//! The store also counts sessions per API token for `--max-sessions-per-token`: a `Booking`
//! is taken at create-session, travels with the request through `take` into the live
//! session, and is given back when it drops (expiry, or the session's end). So pending
//! and live sessions are one count, and no moment between them escapes it. Lock order:
//! the sessions map, then the bookings; never the other way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use crate::request::SessionRequest;

/// A session's id: 122 random bits (UUID v4, from the OS CSPRNG). The full id is a
/// capability (whoever holds it may claim the session), so `Display` and `Debug` print only
/// its first 8 hex digits, enough to follow one session through the logs; the full form is
/// asked for by name (`full`), for the session's URL and the create-session answer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(Uuid);

impl SessionId {
    fn new() -> Self {
        SessionId(Uuid::new_v4())
    }

    /// The whole id, which unlocks the session: for its link, never for a log line.
    pub fn full(&self) -> Uuid {
        self.0
    }
}

/// A parsed id from the network (a link, a `start-session`), to look a session up by.
impl From<Uuid> for SessionId {
    fn from(id: Uuid) -> Self {
        SessionId(id)
    }
}

impl From<&Uuid> for SessionId {
    fn from(id: &Uuid) -> Self {
        SessionId(*id)
    }
}

/// Lookups by a parsed `Uuid` need no conversion; the hash is the `Uuid`'s own.
impl std::borrow::Borrow<Uuid> for SessionId {
    fn borrow(&self) -> &Uuid {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hex = Uuid::encode_buffer();
        let hex = self.0.simple().encode_lower(&mut hex);
        // 32 ASCII hex digits, so the first 8 are a char boundary.
        f.write_str(hex.get(..8).unwrap_or(hex))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self}…)")
    }
}

struct Pending {
    request: SessionRequest,
    booking: Booking,
    created: Instant,
    expires: Instant,
}

/// Why a pending session's deadline did not move.
#[derive(Debug, PartialEq, Eq)]
pub enum ExtendRefused {
    /// It would end more than the bound after its creation.
    Bound,
    /// It is no longer pending (claimed, expired or revoked).
    Gone,
}

/// A stored request's id and deadline.
#[derive(Debug, Clone, Copy)]
pub struct Inserted {
    pub id: SessionId,
    /// On tokio's clock, which expiry and claims compare against.
    pub expires: Instant,
    pub expires_at: SystemTime,
}

/// Why a request was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--max-pending` sessions are waiting to be claimed.
    Full,
    /// The request's token has `--max-sessions-per-token` sessions, pending or live.
    TokenLimit,
}

/// Sessions per API token name, pending or claimed.
type Bookings = Arc<Mutex<HashMap<String, usize>>>;

/// One session's place in its API token's count, from create-session until the session
/// ends; dropping it gives the place back.
pub struct Booking {
    bookings: Bookings,
    token: String,
}

impl Booking {
    /// A place for `token` if it has fewer than `max` (0: no limit). Checked and counted
    /// under one lock, so racing creates cannot both take the last place.
    fn try_new(bookings: &Bookings, token: &str, max: usize) -> Option<Booking> {
        let mut counts = bookings.lock();
        let n = counts.entry(token.to_owned()).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Booking {
            bookings: bookings.clone(),
            token: token.to_owned(),
        })
    }
}

impl Drop for Booking {
    fn drop(&mut self) {
        let mut counts = self.bookings.lock();
        if let Some(n) = counts.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.token);
            }
        }
    }
}

/// A claimed session: its request, and its place in the token's count, which the live
/// session holds until it ends.
pub struct Claimed {
    pub request: SessionRequest,
    pub booking: Booking,
}

pub struct Store {
    /// The sweep's pace: the shortest ttl sessions get by default.
    ttl: Duration,
    capacity: usize,
    sessions: Mutex<HashMap<SessionId, Pending>>,
    bookings: Bookings,
}

impl Store {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Store {
            ttl,
            capacity,
            sessions: Mutex::new(HashMap::new()),
            bookings: Default::default(),
        }
    }

    /// Holds `request` under a fresh random id for its `options.ttl`, if the store
    /// has room and its creator has fewer than `max_per_token` sessions pending or live
    /// (0: no limit). Returns the id and when it expires, on tokio's clock and the wall's.
    pub fn insert(
        &self,
        request: SessionRequest,
        max_per_token: usize,
    ) -> Result<Inserted, Refused> {
        let id = SessionId::new();
        let ttl = request.options.ttl;
        let expires = Instant::now() + ttl;
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.capacity {
            // Expired entries must not keep the door shut until the next sweep.
            let now = Instant::now();
            sessions.retain(|_, p| p.expires > now);
            if sessions.len() >= self.capacity {
                return Err(Refused::Full);
            }
        }
        let creator = &request.creator;
        let booking = match Booking::try_new(&self.bookings, creator, max_per_token) {
            Some(booking) => booking,
            None => {
                // An expired request must not hold its token's place until the next sweep.
                let now = Instant::now();
                sessions.retain(|_, p| p.expires > now);
                Booking::try_new(&self.bookings, creator, max_per_token)
                    .ok_or(Refused::TokenLimit)?
            }
        };
        sessions.insert(
            id,
            Pending {
                request,
                booking,
                created: Instant::now(),
                expires,
            },
        );
        Ok(Inserted {
            id,
            expires,
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// Removes `id` if it is still pending and past its deadline (wiping its credentials):
    /// `true` when this call expired it. A claim and an expiry cannot both happen, since
    /// both take the entry out under the one lock.
    pub fn expire(&self, id: &SessionId) -> bool {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let due = sessions.get(id).is_some_and(|p| p.expires <= now);
        let removed = due.then(|| sessions.remove(id)).flatten();
        drop(sessions);
        removed.is_some()
    }

    /// Removes `id` while it is pending (not expired), wiping its credentials: the revoke
    /// of an unopened link.
    pub fn remove(&self, id: &SessionId) -> bool {
        self.take(*id).is_some()
    }

    /// Sessions created with the API token named `token` that are pending (unexpired) or
    /// live.
    pub fn booked(&self, token: &str) -> usize {
        self.sweep();
        self.bookings.lock().get(token).copied().unwrap_or(0)
    }

    /// Whether `id` is pending and unexpired (the page renders only for those).
    pub fn contains(&self, id: &Uuid) -> bool {
        let now = Instant::now();
        self.sessions
            .lock()
            .get(id)
            .is_some_and(|p| p.expires > now)
    }

    /// Claims `id`: removes it and hands over the request with its booking, once. An
    /// expired entry stays for `expire` or the sweep, which record its expiry.
    pub fn take(&self, id: impl Into<SessionId>) -> Option<Claimed> {
        let id = id.into();
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        if sessions.get(&id).is_none_or(|p| p.expires <= now) {
            return None;
        }
        let pending = sessions.remove(&id)?;
        drop(sessions);
        Some(Claimed {
            request: pending.request,
            booking: pending.booking,
        })
    }

    /// Moves a pending session's deadline `by` later, at most `bound` after its creation.
    pub fn extend(
        &self,
        id: &SessionId,
        by: Duration,
        bound: Duration,
    ) -> Result<(Instant, SystemTime), ExtendRefused> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let pending = sessions
            .get_mut(id)
            .filter(|p| p.expires > now)
            .ok_or(ExtendRefused::Gone)?;
        let later = pending.expires + by;
        if later.duration_since(pending.created) > bound {
            return Err(ExtendRefused::Bound);
        }
        pending.expires = later;
        Ok((later, SystemTime::now() + later.duration_since(now)))
    }

    /// Drops expired requests (which zeroizes their credentials); returns their ids.
    pub fn sweep(&self) -> Vec<SessionId> {
        let now = Instant::now();
        let expired: Vec<(SessionId, Pending)> = {
            let mut sessions = self.sessions.lock();
            let ids: Vec<SessionId> = sessions
                .iter()
                .filter(|(_, p)| p.expires <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| sessions.remove(&id).map(|p| (id, p)))
                .collect()
        };
        // Dropped outside the lock: zeroizing is cheap, but the lock is for the map only.
        expired.into_iter().map(|(id, _)| id).collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Credentials, Target};

    fn request() -> SessionRequest {
        SessionRequest {
            target: Target {
                host: "h".into(),
                port: 22,
                username: "u".into(),
            },
            credentials: Credentials::Password(String::from("pw").into()),
            term: "xterm".into(),
            host_key: None,
            creator: "ci".into(),
            options: crate::request::SessionOptions {
                ttl: Duration::from_secs(60),
                ..Default::default()
            },
            jump: Vec::new(),
        }
    }

    #[test]
    fn a_session_id_shows_only_its_short_form() {
        let uuid = Uuid::new_v4();
        let id = SessionId::from(uuid);
        let short = &uuid.simple().to_string()[..8];
        assert_eq!(id.to_string(), short);
        assert_eq!(format!("{id:?}"), format!("SessionId({short}…)"));
        assert_eq!(id.full(), uuid);
    }

    #[tokio::test(start_paused = true)]
    async fn take_is_one_time() {
        let store = Store::new(Duration::from_secs(60), 10);
        let id = store.insert(request(), 0).unwrap().id;
        assert!(store.contains(&id.full()));
        assert!(store.take(id).is_some());
        assert!(store.take(id).is_none());
        assert!(!store.contains(&id.full()));
        assert!(store.take(Uuid::new_v4()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_ttl() {
        let store = Store::new(Duration::from_secs(60), 10);
        let id = store.insert(request(), 0).unwrap().id;
        let other = store.insert(request(), 0).unwrap().id;
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.contains(&id.full()));
        assert!(store.sweep().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!store.contains(&id.full()));
        assert!(
            store.take(other).is_none(),
            "an expired id cannot be claimed"
        );
        let mut swept = store.sweep();
        swept.sort_by_key(|id| id.full());
        let mut both = vec![id, other];
        both.sort_by_key(|id| id.full());
        assert_eq!(swept, both, "an expired id is swept, claimed or not");
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_keeps_its_own_ttl_and_expires_once() {
        let store = Store::new(Duration::from_secs(60), 10);
        let mut short = request();
        short.options.ttl = Duration::from_secs(5);
        let short = store.insert(short, 0).unwrap();
        let long = store.insert(request(), 0).unwrap();
        assert!(!store.expire(&short.id), "not due yet");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(store.contains(&long.id.full()));
        assert!(store.expire(&short.id));
        assert!(!store.expire(&short.id), "once");
        assert!(!store.expire(&long.id));
        assert_eq!(
            store.extend(&long.id, Duration::from_secs(30), Duration::from_secs(80)),
            Err(ExtendRefused::Bound)
        );
        assert!(
            store
                .extend(&long.id, Duration::from_secs(30), Duration::from_secs(120))
                .is_ok()
        );
        tokio::time::advance(Duration::from_secs(80)).await;
        assert!(
            store.contains(&long.id.full()),
            "the extended deadline holds"
        );
        assert_eq!(
            store.extend(&short.id, Duration::from_secs(30), Duration::from_secs(120)),
            Err(ExtendRefused::Gone)
        );
        assert!(store.remove(&long.id));
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_counts_only_live_entries() {
        let store = Store::new(Duration::from_secs(1), 2);
        store.insert(request(), 0).unwrap();
        store.insert(request(), 0).unwrap();
        assert_eq!(store.insert(request(), 0).unwrap_err(), Refused::Full);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(store.insert(request(), 0).is_ok());
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_books_pending_and_claimed_sessions() {
        let store = Store::new(Duration::from_secs(60), 10);
        let id = store.insert(request(), 1).unwrap().id;
        assert_eq!(store.booked("ci"), 1);
        assert_eq!(
            store.insert(request(), 1).unwrap_err(),
            Refused::TokenLimit,
            "a pending session counts"
        );
        let claimed = store.take(id).unwrap();
        assert_eq!(store.booked("ci"), 1, "and still counts once claimed");
        assert_eq!(store.insert(request(), 1).unwrap_err(), Refused::TokenLimit);
        drop(claimed);
        assert_eq!(
            store.booked("ci"),
            0,
            "the session's end gives the place back"
        );
        store.insert(request(), 1).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(store.booked("ci"), 0, "so does expiry, swept or not");
        store.insert(request(), 1).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(store.insert(request(), 1).is_ok(), "even before a sweep");
        assert_eq!(store.len(), 1);
        assert!(
            store.insert(request(), 2).is_ok(),
            "a second place under a limit of 2"
        );
        assert_eq!(store.insert(request(), 2).unwrap_err(), Refused::TokenLimit);
        assert_eq!(
            store.insert(request(), 0).map(|_| ()),
            Ok(()),
            "0: no limit"
        );
    }
}
