//! Pending sessions: credentials held in memory under a one-time id until a browser claims
//! them or they expire.
//!
//! `take` moves the request out, so a claimed id is gone before any SSH work starts, and a
//! dropped request zeroizes its credentials. Expiry uses tokio's clock so tests can drive it.
//! The lock is never held across an `.await` or any I/O.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use crate::request::SessionRequest;

struct Pending {
    request: SessionRequest,
    expires: Instant,
}

/// The store is full: `--max-pending` sessions are waiting to be claimed.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreFull;

pub struct Store {
    ttl: Duration,
    capacity: usize,
    sessions: Mutex<HashMap<Uuid, Pending>>,
}

impl Store {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Store {
            ttl,
            capacity,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Holds `request` under a fresh random id (UUID v4, from the OS CSPRNG).
    /// Returns the id and the wall-clock time it expires.
    pub fn insert(&self, request: SessionRequest) -> Result<(Uuid, SystemTime), StoreFull> {
        let id = Uuid::new_v4();
        let expires = Instant::now() + self.ttl;
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.capacity {
            // Expired entries must not keep the door shut until the next sweep.
            let now = Instant::now();
            sessions.retain(|_, p| p.expires > now);
            if sessions.len() >= self.capacity {
                return Err(StoreFull);
            }
        }
        sessions.insert(id, Pending { request, expires });
        Ok((id, SystemTime::now() + self.ttl))
    }

    /// Whether `id` is pending and unexpired (the page renders only for those).
    pub fn contains(&self, id: &Uuid) -> bool {
        let now = Instant::now();
        self.sessions
            .lock()
            .get(id)
            .is_some_and(|p| p.expires > now)
    }

    /// Claims `id`: removes it and hands over the request, once.
    pub fn take(&self, id: &Uuid) -> Option<SessionRequest> {
        let pending = self.sessions.lock().remove(id)?;
        (pending.expires > Instant::now()).then_some(pending.request)
    }

    /// Drops expired requests (which zeroizes their credentials); returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<Pending> = {
            let mut sessions = self.sessions.lock();
            let ids: Vec<Uuid> = sessions
                .iter()
                .filter(|(_, p)| p.expires <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        // Dropped outside the lock: zeroizing is cheap, but the lock is for the map only.
        expired.len()
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
        }
    }

    #[tokio::test(start_paused = true)]
    async fn take_is_one_time() {
        let store = Store::new(Duration::from_secs(60), 10);
        let (id, _) = store.insert(request()).unwrap();
        assert!(store.contains(&id));
        assert!(store.take(&id).is_some());
        assert!(store.take(&id).is_none());
        assert!(!store.contains(&id));
        assert!(store.take(&Uuid::new_v4()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_ttl() {
        let store = Store::new(Duration::from_secs(60), 10);
        let (id, _) = store.insert(request()).unwrap();
        let (other, _) = store.insert(request()).unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.contains(&id));
        assert_eq!(store.sweep(), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!store.contains(&id));
        assert!(
            store.take(&other).is_none(),
            "an expired id cannot be claimed"
        );
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_counts_only_live_entries() {
        let store = Store::new(Duration::from_secs(1), 2);
        store.insert(request()).unwrap();
        store.insert(request()).unwrap();
        assert_eq!(store.insert(request()).unwrap_err(), StoreFull);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.insert(request()).is_ok());
        assert_eq!(store.len(), 1);
    }
}
