//! One WebSocket, one session: wait for `start-session`, claim the pending request, connect,
//! then shuttle events between the socket and the `Bridge` until one side ends.
//!
//! The loop never blocks one direction on the other: while input waits for room in the
//! bridge's queue, output keeps flowing (a remote program that stops reading stdin while it
//! floods stdout must not deadlock the session). Every wait is bounded.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;
use uuid::Uuid;

use super::Context;
use super::protocol::{self, ClientEvent, ServerEvent};
use crate::record::Recording;
use crate::ssh::{Bridge, BridgeEvent, ExitInfo, Input, SshError, SshErrorKind, Start};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The client must say which session it wants this soon after the upgrade.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// A client that takes no bytes for this long is gone; its session ends.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings keep proxies from closing an idle socket and find dead clients.
const PING_INTERVAL: Duration = Duration::from_secs(25);
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
];
pub const WARNING_CODES: &[&str] = &["unknown_event", "already_started", "server_draining"];

/// Why a session ends, and what the client is told.
enum Outcome {
    Closed(ExitInfo),
    Error {
        code: &'static str,
        message: String,
        close: CloseCode,
    },
    ClientGone,
}

impl Outcome {
    fn error(code: &'static str, message: impl Into<String>, close: CloseCode) -> Self {
        Outcome::Error {
            code,
            message: message.into(),
            close,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Outcome::Closed(info) => info.reason(),
            Outcome::Error { code, .. } => code,
            Outcome::ClientGone => "client_gone",
        }
    }
}

fn bad_message(message: impl Into<String>) -> Outcome {
    Outcome::error("bad_message", message, CloseCode::Policy)
}

fn read_error(e: &WsError) -> Outcome {
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
    let span = tracing::info_span!("session", id = tracing::field::Empty);
    let outcome = run(&mut ws, ctx, &span).instrument(span.clone()).await;
    ctx.metrics.session_ended(outcome.label());
    finish(&mut ws, &outcome).instrument(span).await;
}

async fn run(ws: &mut Socket, ctx: &Context, span: &tracing::Span) -> Outcome {
    let (id, cols, rows) = match tokio::time::timeout(START_DEADLINE, wait_for_start(ws)).await {
        Ok(Ok(start)) => start,
        Ok(Err(outcome)) => return outcome,
        Err(_) => {
            return Outcome::error(
                "start_timeout",
                "no start-session within 10 seconds",
                CloseCode::Policy,
            );
        }
    };
    // Only the first 8 characters: the full id is a capability and stays out of logs.
    span.record("id", &id.simple().to_string()[..8]);
    // The slot first: a full gateway must not burn the one-time link.
    let Some(mut slot) = ctx.slots.try_acquire() else {
        return Outcome::error(
            "too_many_sessions",
            "the gateway is at its session limit; try again later",
            CloseCode::Again,
        );
    };
    let Some(request) = ctx.store.take(&id) else {
        return Outcome::error(
            "unknown_session",
            "this session link is unknown, already used or expired",
            CloseCode::Policy,
        );
    };
    slot.assign(&request.creator);
    let target = request.target.clone();
    // Recording (--record-dir): the file is created once the shell is ready (see pump).
    let mut recording = Recording::new(
        ctx.record.as_ref(),
        &id.simple().to_string()[..8],
        &request.term,
    );
    tracing::info!(%target, auth = request.credentials.method(), "session claimed");
    let started = Instant::now();

    let deadline = tokio::time::Instant::now() + ctx.connect_timeout;
    let dialed = tokio::select! {
        dialed = ctx.dialer.dial(&target.host, target.port, deadline) => dialed,
        () = ctx.shutdown.cancelled() => return shutdown(),
    };
    let stream = match dialed {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(code = e.code(), "connect failed");
            let close = close_code(&e);
            return Outcome::error(e.code(), e.message, close);
        }
    };
    let start = Start {
        stream,
        request,
        host_keys: ctx.host_keys.clone(),
        remote_lang: ctx.remote_lang.clone(),
        cols,
        rows,
        deadline: deadline.into_std(),
    };
    let bridge = match Bridge::spawn(start, &ctx.threads) {
        Ok(bridge) => bridge,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a bridge thread");
            return Outcome::error(
                "ssh_failed",
                "the gateway cannot start a session now",
                CloseCode::Error,
            );
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
    let outcome = pump(ws, ctx, &mut { bridge }, &mut counts, &mut recording).await;
    recording.finish();
    ctx.metrics.traffic(
        counts.bytes_in,
        counts.bytes_out,
        counts.frames_in,
        counts.frames_out,
    );
    let (exit_status, exit_signal) = match &outcome {
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
    outcome
}

/// Reads until `start-session`. Input or garbage before it is a protocol error.
async fn wait_for_start(ws: &mut Socket) -> Result<(Uuid, u16, u16), Outcome> {
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(read_error(&e)),
            None => return Err(Outcome::ClientGone),
        };
        match message {
            Message::Text(text) => match protocol::decode_text(&text) {
                Ok(ClientEvent::StartSession { id, cols, rows }) => return Ok((id, cols, rows)),
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

struct Counts {
    bytes_in: u64,
    bytes_out: u64,
    frames_in: u64,
    frames_out: u64,
    /// When the session was claimed, for the time-to-shell histogram.
    claimed: Instant,
    /// `user@host:port`, told to the page with connection-ready.
    target: String,
}

/// The live session: until the remote side ends, the client leaves, or the server stops.
async fn pump(
    ws: &mut Socket,
    ctx: &Context,
    bridge: &mut Bridge,
    counts: &mut Counts,
    recording: &mut Recording,
) -> Outcome {
    let input = bridge.input();
    let mut pending: Option<Input> = None;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let now = tokio::time::Instant::now();
    // Far enough away to mean "never" for a timer that is off.
    let never = now + Duration::from_secs(100 * 365 * 86_400);
    let lifetime = tokio::time::sleep_until(ctx.max_session_time.map_or(never, |t| now + t));
    // The idle timer is reset lazily: activity only records the time, and when the timer
    // fires early it is pushed to `last_activity + idle`. No timer work per frame.
    let idle = tokio::time::sleep_until(ctx.idle_timeout.map_or(never, |t| now + t));
    tokio::pin!(lifetime, idle);
    // Recording: buffered events reach the file at least this often.
    let mut record_flush = tokio::time::interval(crate::record::FLUSH_EVERY);
    let mut last_activity = now;
    let mut told_draining = false;
    // While the client has paused output, events stay in the bridge's queue too, so what is
    // in flight to a paused page is only what the sockets already hold.
    let mut paused = false;
    loop {
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return shutdown(),
            () = ctx.draining.cancelled(), if !told_draining => {
                told_draining = true;
                let warning = ServerEvent::Warning {
                    code: "server_draining",
                    message: "the gateway is shutting down; finish your work, this session will be ended soon",
                };
                if !send(ws, warning.encode()).await {
                    return Outcome::ClientGone;
                }
            }
            () = &mut lifetime => {
                return Outcome::error("session_time_limit", "the session reached its time limit", CloseCode::Away);
            }
            () = &mut idle => {
                let limit = ctx.idle_timeout.map_or(never, |t| last_activity + t);
                if limit <= tokio::time::Instant::now() {
                    return Outcome::error("idle_timeout", "the session was idle too long", CloseCode::Away);
                }
                idle.as_mut().reset(limit);
            }
            event = bridge.next_event(), if !paused => {
                let message = match event {
                    Some(BridgeEvent::Output(bytes)) => {
                        last_activity = tokio::time::Instant::now();
                        counts.bytes_out += bytes.len() as u64;
                        counts.frames_out += 1;
                        recording.output(&bytes);
                        ServerEvent::Output(bytes).encode()
                    }
                    Some(BridgeEvent::Ready { cols, rows }) => {
                        tracing::info!("shell ready");
                        ctx.metrics.connected(counts.claimed.elapsed().as_secs_f64());
                        recording.start(cols, rows, &counts.target);
                        ServerEvent::ConnectionReady { cols, rows, target: &counts.target }.encode()
                    }
                    Some(BridgeEvent::Closed(info)) => return Outcome::Closed(info),
                    Some(BridgeEvent::Failed(e)) => {
                        tracing::info!(code = e.code(), error = %e.message, "ssh failed");
                        let close = close_code(&e);
            return Outcome::error(e.code(), e.message, close);
                    }
                    None => return Outcome::error("ssh_failed", "the SSH session ended unexpectedly", CloseCode::Error),
                };
                if !send(ws, message).await {
                    return Outcome::ClientGone;
                }
            }
            permit = input.reserve(), if pending.is_some() => match permit {
                Some(permit) => permit.send(pending.take().expect("guarded by pending.is_some()")),
                // The thread is gone; its last event says why.
                None => pending = None,
            },
            message = ws.next(), if pending.is_none() => {
                let event = match message {
                    Some(Ok(Message::Text(text))) => protocol::decode_text(&text),
                    Some(Ok(Message::Binary(bytes))) => Ok(protocol::decode_binary(bytes)),
                    Some(Ok(Message::Close(_))) | None => return Outcome::ClientGone,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return read_error(&e),
                };
                match event {
                    Ok(ClientEvent::Input(bytes)) if bytes.is_empty() => {}
                    Ok(ClientEvent::Input(bytes)) => {
                        last_activity = tokio::time::Instant::now();
                        counts.bytes_in += bytes.len() as u64;
                        counts.frames_in += 1;
                        recording.input(&bytes);
                        pending = Some(Input::Data(bytes));
                    }
                    Ok(ClientEvent::Resize { cols, rows }) => {
                        recording.resize(cols, rows);
                        pending = Some(Input::Resize { cols, rows });
                    }
                    Ok(ClientEvent::Pause) => {
                        paused = true;
                        input.set_paused(true);
                    }
                    Ok(ClientEvent::Resume) => {
                        paused = false;
                        input.set_paused(false);
                    }
                    Ok(ClientEvent::StartSession { .. }) => {
                        let warning = ServerEvent::Warning { code: "already_started", message: "this socket already has a session" };
                        if !send(ws, warning.encode()).await {
                            return Outcome::ClientGone;
                        }
                    }
                    Ok(ClientEvent::Unknown(name)) => warn_unknown(ws, &name).await,
                    Err(e) => return bad_message(e.0),
                }
            }
            _ = record_flush.tick(), if recording.is_active() => recording.tick(),
            _ = ping.tick() => {
                if !send(ws, Message::Ping(Default::default())).await {
                    return Outcome::ClientGone;
                }
            }
        }
    }
}

/// A refusal by policy is the client's to fix (1008); anything else failed on the SSH side.
fn close_code(e: &SshError) -> CloseCode {
    match e.kind {
        SshErrorKind::DestinationForbidden => CloseCode::Policy,
        _ => CloseCode::Error,
    }
}

fn shutdown() -> Outcome {
    Outcome::error(
        "server_shutdown",
        "the gateway is shutting down",
        CloseCode::Away,
    )
}

async fn warn_unknown(ws: &mut Socket, name: &str) {
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
async fn send(ws: &mut Socket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, ws.send(message)).await,
        Ok(Ok(()))
    )
}

/// Tells the client how it ended and closes the socket, within `CLOSE_WAIT`.
async fn finish(ws: &mut Socket, outcome: &Outcome) {
    let (event, code) = match outcome {
        Outcome::ClientGone => return,
        Outcome::Closed(info) => (ServerEvent::Closed(info).encode(), CloseCode::Normal),
        Outcome::Error {
            code,
            message,
            close,
        } => (ServerEvent::Error { code, message }.encode(), *close),
    };
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
