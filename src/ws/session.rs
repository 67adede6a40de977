//! One WebSocket's first steps: wait for its first event, then either claim a pending
//! session, connect and run it (`live`), or hand the socket to a live session it resumes
//! or views. Also the helpers every socket task shares: sending with a deadline, and
//! closing with a reason.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;
use uuid::Uuid;

use super::live;
use super::protocol::{self, ClientEvent, ServerEvent};
use super::registry::Command;
use super::{Context, Socket};
use crate::record::Recording;
use crate::ssh::{Bridge, ExitInfo, SshError, SshErrorKind, Start};

/// The client must say which session it wants this soon after the upgrade.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// A client that takes no bytes for this long is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long handing a socket to a live session may wait for its command queue.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Pings keep proxies from closing an idle socket and find dead clients.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);
/// How long the closing handshake may take before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub const SESSION_ERROR_CODES: &[&str] = &[
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
];
pub const WARNING_CODES: &[&str] = &[
    "unknown_event",
    "already_started",
    "server_draining",
    "read_only",
];

/// Why a session (or a socket's part in one) ends, and what the client is told.
pub(super) enum Outcome {
    Closed(ExitInfo),
    Error {
        code: &'static str,
        message: String,
        close: CloseCode,
    },
    /// The client left and the session could not wait for it to come back.
    ClientGone,
    /// The client left and did not resume within the grace period.
    Abandoned,
}

impl Outcome {
    pub(super) fn error(code: &'static str, message: impl Into<String>, close: CloseCode) -> Self {
        Outcome::Error {
            code,
            message: message.into(),
            close,
        }
    }

    /// The event and close code that tell a client this outcome; `None` when there is no
    /// client left to tell.
    pub(super) fn last_event(&self) -> Option<(Message, CloseCode)> {
        match self {
            Outcome::ClientGone | Outcome::Abandoned => None,
            Outcome::Closed(info) => Some((ServerEvent::Closed(info).encode(), CloseCode::Normal)),
            Outcome::Error {
                code,
                message,
                close,
            } => Some((ServerEvent::Error { code, message }.encode(), *close)),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Outcome::Closed(info) => info.reason(),
            Outcome::Error { code, .. } => code,
            Outcome::ClientGone => "client_gone",
            Outcome::Abandoned => "abandoned",
        }
    }
}

pub(super) fn bad_message(message: impl Into<String>) -> Outcome {
    Outcome::error("bad_message", message, CloseCode::Policy)
}

pub(super) fn read_error(e: &WsError) -> Outcome {
    match e {
        WsError::Capacity(_) => Outcome::error(
            "message_too_large",
            "message too large (limit 1 MiB)",
            CloseCode::Size,
        ),
        _ => Outcome::ClientGone,
    }
}

pub async fn serve(mut ws: Socket, ctx: &Context) {
    let waited = tokio::time::timeout(START_DEADLINE, wait_for_start(&mut ws)).await;
    let first = match waited.unwrap_or_else(|_| {
        Err(Outcome::error(
            "start_timeout",
            "no start-session within 10 seconds",
            CloseCode::Policy,
        ))
    }) {
        Ok(first) => first,
        Err(outcome) => {
            ctx.metrics.session_ended(outcome.label());
            return finish(&mut ws, &outcome).await;
        }
    };
    match first {
        ClientEvent::StartSession { id, cols, rows } => {
            let span = tracing::info_span!("session", id = tracing::field::Empty);
            // Only the first 8 characters: the full id is a capability and stays out of logs.
            span.record("id", &id.simple().to_string()[..8]);
            let (outcome, client) = run(ws, ctx, id, (cols, rows))
                .instrument(span.clone())
                .await;
            ctx.metrics.session_ended(outcome.label());
            if let Some(mut ws) = client {
                finish(&mut ws, &outcome).instrument(span).await;
            }
        }
        ClientEvent::ResumeSession {
            token,
            offset,
            cols,
            rows,
        } => {
            let found = ctx.registry.by_token(&token);
            let command = Command::Resume {
                ws,
                token,
                offset,
                cols,
                rows,
            };
            hand_over(
                ctx,
                found,
                command,
                (live::resume_invalid(), "resume_refused"),
            )
            .await;
        }
        ClientEvent::ViewSession { id } => {
            let found = ctx.registry.by_link(&id);
            let command = Command::View { ws, link: id };
            hand_over(
                ctx,
                found,
                command,
                (live::unknown_view(), "viewer_refused"),
            )
            .await;
        }
        _ => unreachable!("wait_for_start returns only first events"),
    }
}

/// Gives the socket in `command` to the live session `found`; if there is none (or it ended
/// meanwhile), the socket is closed with `refusal`, counted in the attach metric as `label`.
async fn hand_over(
    ctx: &Context,
    found: Option<tokio::sync::mpsc::Sender<Command>>,
    command: Command,
    (refusal, label): (Outcome, &'static str),
) {
    let command = match found {
        Some(session) => {
            match tokio::time::timeout(HANDOVER_TIMEOUT, session.send(command)).await {
                Ok(Ok(())) => return,
                Ok(Err(returned)) => returned.0,
                Err(_) => {
                    // The command was dropped with the timed-out send; its socket with it.
                    tracing::warn!("a live session did not take a socket in time");
                    return;
                }
            }
        }
        None => command,
    };
    if let Command::Resume { mut ws, .. } | Command::View { mut ws, .. } = command {
        ctx.metrics.attach(label);
        finish(&mut ws, &refusal).await;
    }
}

/// Claims session `id`, connects, and runs it until it ends. Returns how it ended and the
/// client socket attached at the end, if any.
async fn run(ws: Socket, ctx: &Context, id: Uuid, size: (u16, u16)) -> live::Ended {
    if ctx.draining.is_cancelled() {
        let outcome = Outcome::error(
            "server_shutdown",
            "the gateway is shutting down and takes no new sessions",
            CloseCode::Away,
        );
        return (outcome, Some(ws));
    }
    // The slot first: a full gateway must not burn the one-time link.
    let Some(mut slot) = ctx.slots.try_acquire() else {
        let outcome = Outcome::error(
            "too_many_sessions",
            "the gateway is at its session limit; try again later",
            CloseCode::Again,
        );
        return (outcome, Some(ws));
    };
    let Some(request) = ctx.store.take(&id) else {
        let outcome = Outcome::error(
            "unknown_session",
            "this session link is unknown, already used or expired",
            CloseCode::Policy,
        );
        return (outcome, Some(ws));
    };
    slot.assign(&request.creator);
    let target = request.target.clone();
    // Recording (--record-dir): the file is created once the shell is ready.
    let recording = Recording::new(
        ctx.record.as_ref(),
        &id.simple().to_string()[..8],
        &request.term,
    );
    tracing::info!(%target, auth = request.credentials.method(), "session claimed");
    let started = Instant::now();

    let deadline = tokio::time::Instant::now() + ctx.connect_timeout;
    let dialed = tokio::select! {
        dialed = ctx.dialer.dial(&target.host, target.port, deadline) => dialed,
        () = ctx.shutdown.cancelled() => return (shutdown(), Some(ws)),
    };
    let stream = match dialed {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(code = e.code(), "connect failed");
            let close = close_code(&e);
            return (Outcome::error(e.code(), e.message, close), Some(ws));
        }
    };
    let start = Start {
        stream,
        request,
        host_keys: ctx.host_keys.clone(),
        remote_lang: ctx.remote_lang.clone(),
        cols: size.0,
        rows: size.1,
        deadline: deadline.into_std(),
    };
    let bridge = match Bridge::spawn(start, &ctx.threads) {
        Ok(bridge) => bridge,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a bridge thread");
            let outcome = Outcome::error(
                "ssh_failed",
                "the gateway cannot start a session now",
                CloseCode::Error,
            );
            return (outcome, Some(ws));
        }
    };
    let mut counts = Counts {
        bytes_in: 0,
        bytes_out: 0,
        frames_in: 0,
        frames_out: 0,
        claimed: started,
        target: target.to_string(),
    };
    let (registration, commands) = ctx.registry.register(id);
    let ended = live::run(
        ctx,
        ws,
        bridge,
        (registration, commands),
        recording,
        &mut counts,
        size,
    )
    .await;
    ctx.metrics.traffic(
        counts.bytes_in,
        counts.bytes_out,
        counts.frames_in,
        counts.frames_out,
    );
    let outcome = &ended.0;
    let (exit_status, exit_signal) = match outcome {
        Outcome::Closed(info) => (info.exit_status, info.exit_signal.clone()),
        _ => (None, None),
    };
    tracing::info!(
        outcome = outcome.label(),
        exit_status,
        exit_signal,
        secs = started.elapsed().as_secs_f32(),
        bytes_in = counts.bytes_in,
        bytes_out = counts.bytes_out,
        "session ended"
    );
    ended
}

/// Reads until the first event: `start-session`, `resume-session` or `view-session`.
/// Input or garbage before it is a protocol error.
async fn wait_for_start(ws: &mut Socket) -> Result<ClientEvent, Outcome> {
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(read_error(&e)),
            None => return Err(Outcome::ClientGone),
        };
        match message {
            Message::Text(text) => match protocol::decode_text(&text) {
                Ok(
                    first @ (ClientEvent::StartSession { .. }
                    | ClientEvent::ResumeSession { .. }
                    | ClientEvent::ViewSession { .. }),
                ) => return Ok(first),
                Ok(ClientEvent::Unknown(name)) => warn_unknown(ws, &name).await,
                Ok(_) => return Err(bad_message("start-session must be the first message")),
                Err(e) => return Err(bad_message(e.0)),
            },
            Message::Binary(_) => {
                return Err(bad_message("start-session must be the first message"));
            }
            Message::Close(_) => return Err(Outcome::ClientGone),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

pub(super) struct Counts {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// When the session was claimed, for the time-to-shell histogram.
    pub claimed: Instant,
    /// `user@host:port`, told to the page with connection-ready.
    pub target: String,
}

/// A refusal by policy is the client's to fix (1008); anything else failed on the SSH side.
pub(super) fn close_code(e: &SshError) -> CloseCode {
    match e.kind {
        SshErrorKind::DestinationForbidden => CloseCode::Policy,
        _ => CloseCode::Error,
    }
}

pub(super) fn shutdown() -> Outcome {
    Outcome::error(
        "server_shutdown",
        "the gateway is shutting down",
        CloseCode::Away,
    )
}

pub(super) async fn warn_unknown(ws: &mut Socket, name: &str) {
    tracing::debug!(event = name, "unknown event ignored");
    let _ = send(
        ws,
        ServerEvent::Warning {
            code: "unknown_event",
            message: "unknown event ignored",
        }
        .encode(),
    )
    .await;
}

/// Sends one message; `false` when the client is gone or stopped reading.
pub(super) async fn send(ws: &mut Socket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, ws.send(message)).await,
        Ok(Ok(()))
    )
}

/// Tells the client how it ended and closes the socket, within `CLOSE_WAIT`.
pub(super) async fn finish(ws: &mut Socket, outcome: &Outcome) {
    if let Some((event, code)) = outcome.last_event() {
        finish_with(ws, event, code).await;
    }
}

/// Sends `event`, then closes the socket with `code`, within `CLOSE_WAIT`.
pub(super) async fn finish_with(ws: &mut Socket, event: Message, code: CloseCode) {
    let close = async {
        let _ = ws.send(event).await;
        let _ = ws
            .close(Some(CloseFrame {
                code,
                reason: "".into(),
            }))
            .await;
        // Wait for the client's close frame so the close handshake completes.
        while ws.next().await.is_some_and(|m| m.is_ok()) {}
        // Lingering close: discard what the client is still sending (the rest of an
        // oversized message, say). Closing with unread data makes the kernel send a reset,
        // and the reset can destroy the error event before the client reads it.
        let mut scratch = [0u8; 16 * 1024];
        while ws.get_mut().read(&mut scratch).await.is_ok_and(|n| n > 0) {}
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
}
