//! Live sessions that sockets can reach again: by resume token (a client coming back after a
//! dropped socket or a reload), by session id (share requests, the page on reload) and by
//! view link (read-only viewers).
//!
//! The registry only finds a session's command queue; the session task itself checks the
//! token again and decides, so two racing resumes with one token cannot both win. Entries
//! leave with their `Registration`, when the session task ends. The lock is never held
//! across an `.await`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Socket;
use crate::store::SessionId;

/// What other tasks ask of a live session.
pub enum Command {
    /// A client presents `token` to take the session (back) over.
    Resume {
        ws: Socket,
        /// The resuming client's address, for the session's status.
        client: std::net::IpAddr,
        token: String,
        offset: u64,
        cols: u16,
        rows: u16,
    },
    /// A viewer arrives through the share link `link`.
    View { ws: Socket, link: Uuid },
    /// The share link `link` is revoked: its viewers are closed.
    Revoke { link: Uuid },
}

/// Commands queued per session; a full queue makes the sender wait (bounded, see `ws`).
const COMMAND_QUEUE: usize = 8;

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, Entry>,
    tokens: HashMap<String, SessionId>,
    /// View link → the session it shows.
    views: HashMap<Uuid, SessionId>,
}

struct Entry {
    commands: mpsc::Sender<Command>,
    token: Option<String>,
    links: Vec<Uuid>,
}

/// Why a share link was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum ShareError {
    /// No live session has this id (never claimed, or over).
    UnknownSession,
    /// The session already has `max` links.
    TooManyLinks { max: usize },
}

impl Registry {
    /// Enters the live session `id`; it leaves when the `Registration` is dropped.
    pub fn register(self: &Arc<Self>, id: SessionId) -> (Registration, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.inner.lock().sessions.insert(
            id,
            Entry {
                commands: tx,
                token: None,
                links: Vec::new(),
            },
        );
        (
            Registration {
                registry: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Whether `id` is a live session (its page may be reloaded).
    pub fn contains(&self, id: &Uuid) -> bool {
        self.inner.lock().sessions.contains_key(id)
    }

    /// The command queue of the session whose current resume token is `token`.
    pub fn by_token(&self, token: &str) -> Option<mpsc::Sender<Command>> {
        let inner = self.inner.lock();
        let id = inner.tokens.get(token)?;
        inner.sessions.get(id).map(|e| e.commands.clone())
    }

    /// The command queue of the session the share link `link` shows.
    pub fn by_link(&self, link: &Uuid) -> Option<mpsc::Sender<Command>> {
        let inner = self.inner.lock();
        let id = inner.views.get(link)?;
        inner.sessions.get(id).map(|e| e.commands.clone())
    }

    /// Whether `token` is the current resume token of session `id` (constant time).
    pub fn token_matches(&self, id: impl Into<SessionId>, token: &str) -> bool {
        let inner = self.inner.lock();
        inner
            .sessions
            .get(&id.into())
            .and_then(|e| e.token.as_deref())
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
    }

    /// A new share link for session `id`, at most `max` per session.
    pub fn share(&self, id: impl Into<SessionId>, max: usize) -> Result<Uuid, ShareError> {
        let id = id.into();
        let mut inner = self.inner.lock();
        let entry = inner
            .sessions
            .get_mut(&id)
            .ok_or(ShareError::UnknownSession)?;
        if entry.links.len() >= max {
            return Err(ShareError::TooManyLinks { max });
        }
        let link = Uuid::new_v4();
        entry.links.push(link);
        inner.views.insert(link, id);
        Ok(link)
    }

    /// Revokes share link `link` of session `id`: no new viewers, and the session closes
    /// the ones it has. `false` when there is no such link.
    pub fn revoke(&self, id: impl Into<SessionId>, link: &Uuid) -> bool {
        let id = id.into();
        let commands = {
            let mut inner = self.inner.lock();
            if inner.views.get(link) != Some(&id) {
                return false;
            }
            inner.views.remove(link);
            let Some(entry) = inner.sessions.get_mut(&id) else {
                return false;
            };
            entry.links.retain(|l| l != link);
            entry.commands.clone()
        };
        // A full queue means a busy session; its viewers of this link then stay until they
        // leave, but no new one can join. Rare enough not to wait for.
        if commands.try_send(Command::Revoke { link: *link }).is_err() {
            tracing::warn!("revoked link's viewers could not be told now");
        }
        true
    }
}

/// A live session's place in the registry. Dropping it removes the session, its token and
/// its share links.
pub struct Registration {
    registry: Arc<Registry>,
    id: SessionId,
}

impl Registration {
    /// Replaces the session's resume token with a fresh one and returns it: each attach
    /// gets its own, and the one before stops working.
    pub fn rotate_token(&self) -> String {
        let token = new_token();
        let mut inner = self.registry.inner.lock();
        let Inner {
            sessions, tokens, ..
        } = &mut *inner;
        if let Some(entry) = sessions.get_mut(&self.id) {
            if let Some(old) = entry.token.replace(token.clone()) {
                tokens.remove(&old);
            }
            tokens.insert(token.clone(), self.id);
        }
        token
    }

    /// The session's resume token now, if it has one: the one the client already holds.
    pub fn token(&self) -> Option<String> {
        let inner = self.registry.inner.lock();
        inner.sessions.get(&self.id)?.token.clone()
    }

    /// Whether `token` is the session's current resume token (constant time).
    pub fn is_current(&self, token: &str) -> bool {
        self.registry.token_matches(self.id, token)
    }

    /// Whether `link` is still one of this session's share links.
    pub fn has_link(&self, link: &Uuid) -> bool {
        self.registry.inner.lock().views.get(link) == Some(&self.id)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock();
        if let Some(entry) = inner.sessions.remove(&self.id) {
            if let Some(token) = entry.token {
                inner.tokens.remove(&token);
            }
            for link in entry.links {
                inner.views.remove(&link);
            }
        }
    }
}

/// 244 random bits from the OS CSPRNG (two UUID v4s), as 64 hex digits.
fn new_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rotate_and_entries_leave_with_the_registration() {
        let registry = Arc::new(Registry::default());
        let id = SessionId::from(Uuid::new_v4());
        let (reg, _rx) = registry.register(id);
        assert!(registry.contains(&id.full()));
        let first = reg.rotate_token();
        assert!(crate::ws::protocol::is_resume_token(&first));
        assert!(registry.by_token(&first).is_some());
        assert!(reg.is_current(&first));
        let second = reg.rotate_token();
        assert_ne!(first, second);
        assert!(registry.by_token(&first).is_none(), "the old token is gone");
        assert!(!reg.is_current(&first));
        assert!(registry.token_matches(id, &second));
        let link = registry.share(id, 2).unwrap();
        assert!(registry.by_link(&link).is_some());
        drop(reg);
        assert!(!registry.contains(&id.full()));
        assert!(registry.by_token(&second).is_none());
        assert!(registry.by_link(&link).is_none());
    }

    #[test]
    fn share_links_are_capped_and_revocable() {
        let registry = Arc::new(Registry::default());
        let id = SessionId::from(Uuid::new_v4());
        let (reg, mut rx) = registry.register(id);
        let a = registry.share(id, 2).unwrap();
        let _b = registry.share(id, 2).unwrap();
        assert_eq!(
            registry.share(id, 2),
            Err(ShareError::TooManyLinks { max: 2 })
        );
        assert_eq!(
            registry.share(Uuid::new_v4(), 2),
            Err(ShareError::UnknownSession)
        );
        assert!(!registry.revoke(Uuid::new_v4(), &a), "wrong session");
        assert!(registry.revoke(id, &a));
        assert!(!registry.revoke(id, &a), "already revoked");
        assert!(!reg.has_link(&a));
        assert!(registry.by_link(&a).is_none());
        assert!(matches!(rx.try_recv(), Ok(Command::Revoke { link }) if link == a));
        assert!(
            registry.share(id, 2).is_ok(),
            "a revoked link frees its place"
        );
    }
}
