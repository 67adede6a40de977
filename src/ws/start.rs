//! A socket's first steps: wait for its first event, then either claim a pending session,
//! connect and hand it to a new `Live` task, or hand the socket to a live session it
//! resumes or views. Holds no session itself: what follows the claim is `live`'s.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tracing::Instrument;
use uuid::Uuid;

use super::live;
use super::outcome::{self, ErrorKind, Outcome, bad_message};
use super::protocol::ClientEvent;
use super::registry::Command;
use super::socket::{Read, finish, read_event, warn_unknown};
use super::{Context, Socket};
use crate::record::Recording;
use crate::ssh::{Bridge, SshErrorKind, Start};
use crate::store::{Claimed, SessionId};

/// The client must say which session it wants this soon after the upgrade.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long handing a socket to a live session may wait for its command queue.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a socket asks for first.
enum First {
    /// Claim pending session `id` and run it at this size.
    Start { id: SessionId, cols: u16, rows: u16 },
    /// Take a live session (back) over with its current resume token.
    Resume {
        token: String,
        offset: u64,
        cols: u16,
        rows: u16,
    },
    /// Watch a live session through share link `link`.
    View { link: Uuid },
}

pub async fn serve(mut ws: Socket, ctx: &Context, client: IpAddr) {
    let waited = tokio::time::timeout(START_DEADLINE, wait_for_start(&mut ws)).await;
    let first = match waited.unwrap_or_else(|_| {
        Err(Outcome::error(
            ErrorKind::StartTimeout,
            "no start-session within 10 seconds",
        ))
    }) {
        Ok(first) => first,
        Err(outcome) => {
            ctx.metrics.session_ended(outcome.label());
            return finish(&mut ws, &outcome).await;
        }
    };
    match first {
        First::Start { id, cols, rows } => {
            // A SessionId shows only its short form: the full id stays out of logs.
            let span = tracing::info_span!("session", %id);
            let (outcome, socket) = run(ws, ctx, id, (cols, rows), client)
                .instrument(span.clone())
                .await;
            ctx.metrics.session_ended(outcome.label());
            if let Some(mut ws) = socket {
                finish(&mut ws, &outcome).instrument(span).await;
            }
        }
        First::Resume {
            token,
            offset,
            cols,
            rows,
        } => {
            let found = ctx.registry.by_token(&token);
            let command = Command::Resume {
                ws,
                client,
                token,
                offset,
                cols,
                rows,
            };
            let refusal = (outcome::resume_invalid(), "resume_refused");
            hand_over(ctx, found, command, refusal).await;
        }
        First::View { link } => {
            let found = ctx.registry.by_link(&link);
            let command = Command::View { ws, link };
            let refusal = (outcome::unknown_view(), "viewer_refused");
            hand_over(ctx, found, command, refusal).await;
        }
    }
}

/// Reads until the first event: `start-session`, `resume-session` or `view-session`.
/// Unknown events are warned about and skipped; input or garbage before the first event is
/// a protocol error.
async fn wait_for_start(ws: &mut Socket) -> Result<First, Outcome> {
    loop {
        let event = match read_event(ws).await {
            Read::Event(event) => event,
            Read::Invalid(e) => return Err(bad_message(e.0)),
            Read::TooLarge => return Err(outcome::too_large()),
            Read::Gone => return Err(Outcome::ClientGone),
        };
        return Ok(match event {
            ClientEvent::StartSession { id, cols, rows } => First::Start {
                id: id.into(),
                cols,
                rows,
            },
            ClientEvent::ResumeSession {
                token,
                offset,
                cols,
                rows,
            } => First::Resume {
                token,
                offset,
                cols,
                rows,
            },
            ClientEvent::ViewSession { id } => First::View { link: id },
            ClientEvent::Unknown(name) => {
                warn_unknown(ws, &name).await;
                continue;
            }
            _ => return Err(bad_message("start-session must be the first message")),
        });
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
/// client socket attached at the end, if any. From the claim on, every end is told to the
/// ledger (`live` tells its own).
async fn run(
    ws: Socket,
    ctx: &Context,
    id: SessionId,
    size: (u16, u16),
    client: IpAddr,
) -> live::Ended {
    if ctx.draining.is_cancelled() {
        let outcome = Outcome::error(
            ErrorKind::ServerShutdown,
            "the gateway is shutting down and takes no new sessions",
        );
        return (outcome, Some(ws));
    }
    // The slot first: a full gateway must not burn the one-time link.
    let Some(_slot) = ctx.slots.try_acquire() else {
        let outcome = Outcome::error(
            ErrorKind::TooManySessions,
            "the gateway is at its session limit; try again later",
        );
        return (outcome, Some(ws));
    };
    // The booking comes with the request and is held until the session ends: the
    // session counts against its token's --max-sessions-per-token while it is live, as
    // it did while pending.
    let unknown = || {
        Outcome::error(
            ErrorKind::UnknownSession,
            "this session link is unknown, already used, revoked or expired",
        )
    };
    let Some(Claimed {
        request,
        booking: _booking,
    }) = ctx.store.take(id)
    else {
        return (unknown(), Some(ws));
    };
    // Only a claim makes a tracker: a dropped tracker records `failed`, which must never
    // overwrite a revoke or an expiry that won.
    let Some(tracker) = ctx.ledger.tracker(id) else {
        return (unknown(), Some(ws));
    };
    // The route (`user@target:port via user@jump:port`) names the session in logs and status.
    let target = request.route();
    let options = request.options.clone();
    // Recording (--record-dir): the file is created once the shell is ready.
    let recording = Recording::new(ctx.settings.record.as_ref(), &id.to_string(), &request.term);
    tracing::info!(%target, auth = request.credentials.method(), "session claimed");
    let claimed = Instant::now();
    // The cap (`max_duration`) starts when the shell is ready: connecting is bounded by
    // --connect-timeout, and the person's time is what the cap is about.
    tracker.claimed(client);

    let deadline = tokio::time::Instant::now() + ctx.settings.connect_timeout;
    let revoked = tracker.control.revoked.clone();
    let dialed = tokio::select! {
        dialed = ctx.dialer.dial_route(&request, deadline) => dialed.map_err(|e| {
            tracing::info!(code = e.code(), "connect failed");
            Outcome::ssh(e)
        }),
        () = ctx.shutdown.cancelled() => Err(outcome::shutdown()),
        () = revoked.cancelled() => Err(Outcome::Revoked),
    };
    let stream = match dialed {
        Ok(stream) => stream,
        Err(outcome) => {
            tracker.ended(outcome.end(false));
            return (outcome, Some(ws));
        }
    };
    let start = Start {
        stream,
        request,
        host_keys: ctx.host_keys.clone(),
        remote_lang: ctx.settings.remote_lang.clone(),
        cols: size.0,
        rows: size.1,
        deadline: deadline.into_std(),
        auth_prompt_timeout: ctx.settings.auth_prompt_timeout,
    };
    let bridge = match Bridge::spawn(start, &ctx.threads) {
        Ok(bridge) => bridge,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a bridge thread");
            let outcome = Outcome::error(
                SshErrorKind::SshFailed,
                "the gateway cannot start a session now",
            );
            tracker.ended(outcome.end(false));
            return (outcome, Some(ws));
        }
    };
    let registered = ctx.registry.register(id);
    let session = live::Session {
        bridge,
        registered,
        recording,
        size,
        target: target.to_string(),
        claimed,
        tracker,
        options,
    };
    // The live session tells its own client how it ended.
    (live::run(ctx, ws, session).await, None)
}
