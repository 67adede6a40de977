//! The WebSocket side: admission checks before the upgrade, then one task per socket that
//! takes its first steps (`start`) and claims a pending session, bridged to SSH by its
//! `live` task, speaking the Socket.IO-lite format of `protocol`. `socket` and `outcome`
//! are the vocabulary those tasks share.
//!
//! Every refusal that can be known before the 101 (not an upgrade request, no capacity,
//! shutting down) is answered as plain HTTP; the rest arrive as `ssh-error` events.

mod charset;
mod live;
mod outcome;
mod protocol;
mod registry;
mod ring;
mod socket;
mod start;
mod viewer;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::record::RecordSettings;
use crate::ssh::{Dialer, HostKeys, SshErrorKind};
use crate::store::Store;

pub use outcome::{ErrorCode, ErrorKind, WarningKind};
pub use protocol::{Answers, AuthResponse, ClientEvent, decode_text};
pub use protocol::{MAX_MESSAGE, name as event_name};
pub use registry::{Registry, ShareError};

/// Bytes tungstenite reads from the socket at a time (see `upgrade`).
const WS_READ_BUFFER: usize = 8 * 1024;

/// An upgraded socket, as every task of this module holds it.
type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// What the WebSocket side needs from the server, and nothing more.
pub struct Context {
    pub store: Arc<Store>,
    /// Where each session's public status is kept; sessions report through a `Tracker`.
    pub ledger: Arc<Ledger>,
    pub dialer: Dialer,
    pub slots: Slots,
    /// Live bridge threads, for leak checks and health.
    pub threads: Arc<AtomicUsize>,
    /// Cancelled when a shutdown signal arrives: no new sessions, live ones are told.
    pub draining: CancellationToken,
    /// What the servers' host keys are checked against.
    pub host_keys: Arc<HostKeys>,
    /// Cancelled when the drain is over; live sessions end with `server_shutdown`.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// Upgraded sockets, which hyper no longer tracks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Live sessions, for resumes, share links and viewers.
    pub registry: Arc<Registry>,
    /// What every session is given, as the flags set it.
    pub settings: SessionSettings,
}

/// The timers, buffers and options each session of this gateway runs with (from the flags),
/// apart from the services in `Context` that sessions share.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// DNS, TCP, handshake and authentication together (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// How long one authentication prompt waits for the person (`--auth-prompt-timeout`).
    pub auth_prompt_timeout: Duration,
    /// End a session after this long without input or output.
    pub idle_timeout: Option<Duration>,
    /// End a session after this long, busy or not.
    pub max_session_time: Option<Duration>,
    /// The locale asked for on each channel (`--remote-lang`).
    pub remote_lang: Option<Arc<str>>,
    /// How long a session whose client left waits for it to resume (`--resume-grace`);
    /// `None`: it ends at once.
    pub resume_grace: Option<Duration>,
    /// Output bytes kept per session for resumes and viewers (`--resume-buffer`).
    pub resume_buffer: usize,
    /// Viewers at once per session, and share links per session (`--max-viewers`).
    pub max_viewers: usize,
    /// Where and what to record (`--record-dir`); `None`: sessions are not recorded.
    pub record: Option<RecordSettings>,
}

/// Why an upgrade was refused before the 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotWebSocket,
    TooManySessions,
    /// Draining or shut down: no new sessions.
    ShuttingDown,
}

/// Counts live sessions against `--max-sessions`. A slot is held from the claim of a
/// session until its bridge thread has exited. (Sessions per API token are the store's
/// `Booking`s, which count pending sessions too.)
pub struct Slots {
    live: AtomicUsize,
    max: usize,
}

pub struct Slot<'a> {
    slots: &'a Slots,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Slots {
            live: AtomicUsize::new(0),
            max,
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub fn is_full(&self) -> bool {
        self.live() >= self.max
    }

    pub fn try_acquire(&self) -> Option<Slot<'_>> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot { slots: self })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every code the WebSocket side can send in `ssh-error` (documented in PROTOCOL.md): its
/// own and the SSH side's, taken from the kind enums so no code can be missing.
pub fn error_codes() -> Vec<&'static str> {
    let own = ErrorKind::ALL.iter().map(|k| k.code());
    own.chain(SshErrorKind::ALL.iter().map(|k| k.code()))
        .collect()
}

/// Every code the WebSocket side can send in `warning`.
pub fn warning_codes() -> Vec<&'static str> {
    WarningKind::ALL.iter().map(|k| k.code()).collect()
}

/// Checks an upgrade request and, if it passes, answers 101 and serves the socket on a
/// tracked task.
pub fn upgrade<B>(
    mut req: Request<B>,
    ctx: Arc<Context>,
    client: IpAddr,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let accept = websocket_key(req.headers())
        .map(derive_accept_key)
        .ok_or(Refusal::NotWebSocket)?;
    // A full or draining gateway still upgrades: the socket may be resuming or viewing a
    // live session, which takes no new slot and may go on until the drain ends. A new
    // session is refused after its `start-session` instead.
    if ctx.shutdown.is_cancelled() {
        return Err(Refusal::ShuttingDown);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tracker = ctx.tracker.clone();
    // The socket's task outlives the request but belongs to its connection: it logs (and
    // its session span nests) under the connection's span, with the client's address.
    let connection = tracing::Span::current();
    tracker.spawn(tracing::Instrument::instrument(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    // tungstenite zero-fills its whole read buffer before every read: the
                    // 128 KiB default cost each idle session 128 KiB of RSS and each keystroke
                    // a 128 KiB memset. Input is keystrokes and pastes; 8 KiB reads suffice.
                    let config = WebSocketConfig::default()
                        .read_buffer_size(WS_READ_BUFFER)
                        .max_message_size(Some(MAX_MESSAGE))
                        .max_frame_size(Some(MAX_MESSAGE));
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    start::serve(ws, &ctx, client).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        },
        connection,
    ));
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    Ok(res)
}

/// The `Sec-WebSocket-Key` of a valid version-13 upgrade request.
fn websocket_key(headers: &HeaderMap) -> Option<&[u8]> {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    (has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket") && version_ok)
        .then(|| {
            headers
                .get(SEC_WEBSOCKET_KEY)
                .map(|k| k.as_bytes())
                .filter(|k| !k.is_empty())
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_and_release() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        assert!(slots.is_full());
        drop(a);
        assert_eq!(slots.live(), 1);
        assert!(slots.try_acquire().is_some());
    }

    #[test]
    fn upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert!(websocket_key(&h).is_none());
        h.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(websocket_key(&h).is_some());
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(websocket_key(&h).is_none());
    }
}
