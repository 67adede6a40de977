//! A live session: the task that owns the `Bridge` from start to end, and the sockets
//! attached to it: at most one interactive client, which may drop and come back
//! (`resume-session`), and read-only viewers (`view-session`).
//!
//! Every output chunk goes to the ring (for resumes and new viewers), the viewers (never
//! waited for) and the client (waited for, so a slow client slows the SSH channel, not the
//! gateway's memory). Without a client the session keeps running for the resume grace
//! period, its output kept in the ring; once the ring is full and no one (client or viewer)
//! is attached, the bridge stops reading (`held`), so a flooding program waits in the SSH
//! window instead of churning the ring for the whole grace. The loop never blocks one
//! direction on the other: while input waits for room in the bridge's queue, output keeps
//! flowing. Every wait is bounded.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::charset::Charset;
use super::outcome::{self, ErrorKind, Outcome, WarningKind, bad_message};
use super::protocol::{Answers, AuthResponse, ClientEvent, ServerEvent};
use super::registry::{Command, Registration};
use super::ring::Ring;
use super::socket::{PING_INTERVAL, Read, finish, read_event, send, warn_unknown};
use super::viewer::Viewers;
use super::{Context, Socket};
use crate::ledger::Tracker;
use crate::record::{FLUSH_EVERY, Recording};
use crate::request::SessionOptions;
use crate::ssh::{AuthPrompt, Bridge, BridgeEvent, Input, MAX_ANSWER, MAX_PROMPTS, SshErrorKind};

/// Largest binary frame a replay or a viewer's snapshot is cut into (the bridge's own
/// output frames are no larger).
const REPLAY_FRAME: usize = 64 * 1024;
/// At most this many frames are salvaged from a client as it is let go (see `salvage`).
const SALVAGE_FRAMES: usize = 256;

/// The session's end, and the client socket (if one is attached) to tell it to.
pub(super) type Ended = (Outcome, Option<Socket>);

/// A claimed, connecting session, as `start` hands it over.
pub(super) struct Session {
    pub bridge: Bridge,
    /// Its place in the registry, and the queue other sockets reach it through.
    pub registered: (Registration, mpsc::Receiver<Command>),
    pub recording: Recording,
    /// The terminal size the client asked for.
    pub size: (u16, u16),
    /// `user@host:port`, told to the page with connection-ready.
    pub target: String,
    /// When the session was claimed, for the time-to-shell histogram and the end log.
    pub claimed: Instant,
    /// Where the session's public status goes, and the API's controls (revoke, the cap).
    pub tracker: Tracker,
    /// The session's own timers and options.
    pub options: SessionOptions,
}

/// What one session moved, for the traffic metrics and its end log.
#[derive(Default)]
struct Counts {
    bytes_in: u64,
    bytes_out: u64,
    frames_in: u64,
    frames_out: u64,
}

/// Runs the session until the remote side ends, the client leaves for good, or the server
/// stops; logs its end (once, here), tells the client, and returns once the bridge thread
/// has exited too. The caller's slot is therefore held as long as the thread lives, so
/// `--max-sessions` bounds threads, and a drained tracker means no threads are left.
pub(super) async fn run(ctx: &Context, ws: Socket, session: Session) -> Outcome {
    let Session {
        mut bridge,
        registered: (registration, commands),
        recording,
        size,
        target,
        claimed,
        tracker,
        options,
    } = session;
    let mut live = Live {
        ctx,
        client: Some(ws),
        registration,
        recording,
        ring: Ring::new(ctx.settings.resume_buffer),
        viewers: Viewers::default(),
        size,
        target,
        claimed,
        tracker,
        charset: Charset::new(options.encoding),
        options,
        viewers_told: 0,
        counts: Counts::default(),
        ready: false,
        resumable: false,
        paused: false,
        held: false,
        told_draining: false,
        open_prompt: None,
        commands,
        deferred: VecDeque::new(),
        queued: VecDeque::new(),
    };
    let (outcome, client) = live.run(&mut bridge).await;
    // Viewers are told as the client would be; if the session ended because its client
    // left, as an abandoned session.
    let last = outcome
        .last_event()
        .unwrap_or_else(|| (ServerEvent::Abandoned.encode(), CloseCode::Normal));
    live.viewers.end_all(last.0, last.1);
    live.log_end(&outcome);
    let Live {
        tracker,
        recording,
        ready,
        ..
    } = live;
    tracker.ended(outcome.end(ready));
    recording.finish();
    // The client hears at once; the thread closes meanwhile (bounded by `Bridge::finish`).
    let tell = async {
        if let Some(mut ws) = client {
            finish(&mut ws, &outcome).await;
        }
    };
    tokio::join!(tell, bridge.finish());
    outcome
}

struct Live<'c> {
    ctx: &'c Context,
    /// The interactive client, when one is attached.
    client: Option<Socket>,
    registration: Registration,
    /// The asciicast file (`--record-dir`); inert when recording is off.
    recording: Recording,
    ring: Ring,
    viewers: Viewers,
    /// The terminal size last asked for.
    size: (u16, u16),
    /// `user@host:port`, for connection-ready.
    target: String,
    /// When the session was claimed.
    claimed: Instant,
    tracker: Tracker,
    /// The remote's encoding to and from the page's UTF-8 (`charset.rs`).
    charset: Charset,
    options: SessionOptions,
    /// The viewer count the ledger last heard.
    viewers_told: usize,
    counts: Counts,
    /// The shell has been ready.
    ready: bool,
    /// The shell is ready and resume is on: the session has a resume token (which only the
    /// registry holds) and can wait for its client to come back.
    resumable: bool,
    /// The attached client asked for no output (flow control).
    paused: bool,
    /// Reads are stopped because no one is attached and the ring is full (see `hold`).
    held: bool,
    /// The attached client has been told the server is draining.
    told_draining: bool,
    /// The `auth-prompt` the client was sent and has not answered. Only the client sees
    /// prompts; one that resumes while a prompt is open is sent it again.
    open_prompt: Option<AuthPrompt>,
    /// Resumes, viewers and revocations from other tasks.
    commands: mpsc::Receiver<Command>,
    /// Commands taken off the queue while a send to the client was in flight (see
    /// `send_client`), handled before the queue.
    deferred: VecDeque<Command>,
    /// Input taken from a client, waiting for room in the bridge's queue, in order. The
    /// client is read only when it is empty, so it holds one event, plus a resize and what
    /// `salvage` took from a client let go.
    queued: VecDeque<Input>,
}

impl Live<'_> {
    async fn run(&mut self, bridge: &mut Bridge) -> Ended {
        let ctx = self.ctx;
        let input = bridge.input();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let now = tokio::time::Instant::now();
        // Far enough away to mean "never" for a timer that is off.
        let never = now + Duration::from_secs(100 * 365 * 86_400);
        // The cap, set when the shell is ready; an extend moves it (`deadline.changed()`).
        let mut deadline = self.tracker.control.deadline.subscribe();
        let lifetime = tokio::time::sleep_until(deadline.borrow_and_update().unwrap_or(never));
        let revoked = self.tracker.control.revoked.clone();
        let idle_timeout = self.options.idle_timeout;
        // The idle timer is reset lazily: activity only records the time, and when the timer
        // fires early it is pushed to `last_activity + idle`. No timer work per frame.
        let idle = tokio::time::sleep_until(idle_timeout.map_or(never, |t| now + t));
        let grace = tokio::time::sleep_until(never);
        // Recording: buffered events reach the file at least this often.
        let mut record_flush = tokio::time::interval(FLUSH_EVERY);
        tokio::pin!(lifetime, idle, grace);
        let mut last_activity = now;
        // Whether the session is running without a client, waiting for one to resume.
        let mut detached = false;
        loop {
            if self.client.is_none() && !detached {
                // The client left. Without a token it cannot come back: the session ends.
                let Some(grace_period) = self.options.resume_grace.filter(|_| self.resumable)
                else {
                    return (Outcome::ClientGone, None);
                };
                detached = true;
                self.tracker.detached();
                self.set_paused(&input, false);
                grace
                    .as_mut()
                    .reset(tokio::time::Instant::now() + grace_period);
                tracing::info!(grace_secs = grace_period.as_secs(), "client detached");
            }
            // After every turn, since output, attaches and viewers all change the answer.
            self.hold(&input);
            if self.viewers.len() != self.viewers_told {
                self.viewers_told = self.viewers.len();
                self.tracker.viewers(self.viewers_told);
            }
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => return (outcome::shutdown(), self.client.take()),
                () = ctx.draining.cancelled(), if !self.told_draining && self.client.is_some() => {
                    self.told_draining = true;
                    let warning = outcome::warning(
                        WarningKind::ServerDraining,
                        "the gateway is shutting down; finish your work, this session will be ended soon",
                    );
                    self.send_client(warning).await;
                }
                () = revoked.cancelled() => {
                    tracing::info!("session revoked through the API");
                    return self.end(Outcome::Revoked);
                }
                changed = deadline.changed() => {
                    // The sender lives in the ledger's control as long as the tracker does.
                    if changed.is_ok() {
                        let cap = *deadline.borrow_and_update();
                        lifetime.as_mut().reset(cap.unwrap_or(never));
                        let ends_in = ends_in(cap);
                        tracing::info!(ends_in, "session cap moved");
                        let timer = ServerEvent::SessionTimer { ends_in }.encode();
                        self.viewers.broadcast(&timer);
                        self.send_client(timer).await;
                    }
                }
                () = &mut lifetime => {
                    return self.end(Outcome::error(ErrorKind::SessionTimeLimit, "the session reached its time limit"));
                }
                () = &mut idle => {
                    let limit = idle_timeout.map_or(never, |t| last_activity + t);
                    if limit <= tokio::time::Instant::now() {
                        return self.end(Outcome::error(ErrorKind::IdleTimeout, "the session was idle too long"));
                    }
                    idle.as_mut().reset(limit);
                }
                () = &mut grace, if detached => {
                    tracing::info!("no client came back in time");
                    return (Outcome::Abandoned, None);
                }
                command = next_command(&mut self.deferred, &mut self.commands),
                    if !self.deferred.is_empty() || !self.commands.is_closed() => match command {
                    Some(Command::Resume { ws, client, token, offset, cols, rows }) => {
                        let attached = self.resume(ws, &token, offset).await;
                        if attached {
                            self.tracker.resumed(client);
                            // The new page has not paused output, whatever the old one did.
                            self.set_paused(&input, false);
                        }
                        detached &= !attached;
                        if attached && (cols, rows) != self.size {
                            self.resized(cols, rows);
                            self.queued.push_back(Input::Resize { cols, rows });
                        }
                    }
                    Some(Command::View { ws, link }) => self.view(ws, link),
                    Some(Command::Revoke { link }) => self.viewers.revoke(&link),
                    // The registry holds a sender for as long as the registration lives, so
                    // this does not happen; the guard above keeps it from spinning if it did.
                    None => {}
                },
                event = bridge.next_event(), if !self.paused => match event {
                    Some(BridgeEvent::Output(raw)) => {
                        // Decoded before anything sees it, so all count the page's bytes.
                        let bytes = self.charset.decode(raw);
                        if bytes.is_empty() {
                            continue;
                        }
                        last_activity = tokio::time::Instant::now();
                        self.counts.bytes_out += bytes.len() as u64;
                        self.tracker.traffic.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        self.ring.push(&bytes);
                        self.recording.output(&bytes);
                        self.viewers.output(&bytes);
                        if self.client.is_some() {
                            self.counts.frames_out += 1;
                            self.send_client(ServerEvent::Output(bytes).encode()).await;
                        }
                    }
                    Some(BridgeEvent::Ready { cols, rows }) => {
                        tracing::info!("shell ready");
                        ctx.metrics.connected(self.claimed.elapsed().as_secs_f64());
                        self.size = (cols, rows);
                        self.recording.start(cols, rows, &self.target);
                        self.ready = true;
                        // The cap starts now; the API moves it through the same channel.
                        let cap = self.options.max_duration.map(|d| tokio::time::Instant::now() + d);
                        self.tracker.control.deadline.send_replace(cap);
                        deadline.borrow_and_update();
                        lifetime.as_mut().reset(cap.unwrap_or(never));
                        let ends_at = self.options.max_duration.map(|d| std::time::SystemTime::now() + d);
                        self.tracker.ready(ends_at, self.recording.name());
                        // A token given at a prompt stays: the client holds it already.
                        let token = match self.registration.token() {
                            Some(token) if self.resumable => Some(token),
                            _ => self.options.resume_grace.map(|_| self.registration.rotate_token()),
                        };
                        self.resumable = token.is_some();
                        let ready = ServerEvent::ConnectionReady {
                            cols,
                            rows,
                            target: &self.target,
                            resume_token: token.as_deref(),
                            read_only: false,
                            handback: self.options.handback,
                            ends_in: ends_in(*deadline.borrow()),
                        };
                        self.send_client(ready.encode()).await;
                    }
                    Some(BridgeEvent::AuthPrompt(prompt)) => {
                        tracing::info!(prompts = prompt.prompts.len(), "asking the person to authenticate");
                        // The first prompt makes the session resumable: a person who loses
                        // the socket while reading a code off a phone can come back to it.
                        let token = match self.options.resume_grace {
                            Some(_) if !self.resumable => Some(self.registration.rotate_token()),
                            _ => None,
                        };
                        self.resumable |= token.is_some();
                        let ask = ServerEvent::AuthPrompt { prompt: &prompt, resume_token: token.as_deref() };
                        let ask = ask.encode();
                        self.open_prompt = Some(prompt);
                        self.send_client(ask).await;
                    }
                    Some(BridgeEvent::Closed(info)) => return self.end(Outcome::Closed(info)),
                    Some(BridgeEvent::Failed(e)) => {
                        tracing::info!(code = e.code(), error = %e.message, "ssh failed");
                        return self.end(Outcome::ssh(e));
                    }
                    None => return self.end(Outcome::error(SshErrorKind::SshFailed, "the SSH session ended unexpectedly")),
                },
                permit = input.reserve(), if !self.queued.is_empty() => match permit {
                    Some(permit) => {
                        permit.send(self.queued.pop_front().expect("guarded by !queued.is_empty()"));
                    }
                    // The thread is gone; its last event says why.
                    None => self.queued.clear(),
                },
                read = next_event(&mut self.client), if self.queued.is_empty() => {
                    let event = match read {
                        Read::Event(event) => event,
                        Read::Invalid(e) => return self.end(bad_message(e.0)),
                        Read::TooLarge => return self.end(outcome::too_large()),
                        Read::Gone => {
                            self.client = None;
                            continue;
                        }
                    };
                    match event {
                        ClientEvent::Input(bytes) if bytes.is_empty() => {}
                        ClientEvent::Input(bytes) => {
                            last_activity = tokio::time::Instant::now();
                            self.take_input(bytes);
                        }
                        ClientEvent::Resize { cols, rows } => self.take_resize(cols, rows),
                        ClientEvent::Handback(verdict) if self.options.handback && self.ready => {
                            tracing::info!(verdict = verdict.code(), "session handed back");
                            return self.end(Outcome::Handback(verdict));
                        }
                        ClientEvent::Handback(_) => {
                            let warning = outcome::warning(WarningKind::HandbackOff, "this session was not created with handback");
                            self.send_client(warning).await;
                        }
                        ClientEvent::AuthResponse(response) => self.auth_response(response).await,
                        ClientEvent::Pause => self.set_paused(&input, true),
                        ClientEvent::Resume => self.set_paused(&input, false),
                        ClientEvent::StartSession { .. } | ClientEvent::ResumeSession { .. } | ClientEvent::ViewSession { .. } => {
                            let warning = outcome::warning(WarningKind::AlreadyStarted, "this socket already has a session");
                            self.send_client(warning).await;
                        }
                        ClientEvent::Unknown(name) => {
                            if let Some(ws) = self.client.as_mut() {
                                warn_unknown(ws, &name).await;
                            }
                        }
                    }
                }
                _ = record_flush.tick(), if self.recording.is_active() => self.recording.tick(),
                _ = ping.tick(), if self.client.is_some() => {
                    self.send_client(Message::Ping(Default::default())).await;
                }
            }
        }
    }

    /// Counts the session's traffic and logs how it ended: the one line a session's end
    /// leaves in the log.
    fn log_end(&self, outcome: &Outcome) {
        let counts = &self.counts;
        self.ctx.metrics.traffic(
            counts.bytes_in,
            counts.bytes_out,
            counts.frames_in,
            counts.frames_out,
        );
        let (exit_status, exit_signal) = match outcome {
            Outcome::Closed(info) => (info.exit_status, info.exit_signal.clone()),
            _ => (None, None),
        };
        tracing::info!(
            outcome = outcome.label(),
            exit_status,
            exit_signal,
            secs = self.claimed.elapsed().as_secs_f32(),
            bytes_in = counts.bytes_in,
            bytes_out = counts.bytes_out,
            "session ended"
        );
    }

    /// The session ends with `outcome`; the attached client (if any) is told.
    fn end(&mut self, outcome: Outcome) -> Ended {
        (outcome, self.client.take())
    }

    /// Sends to the attached client; a client that cannot take it is dropped (detached).
    ///
    /// A client whose network went away without a word (no FIN: a laptop lid, a dropped
    /// link) still looks attached, and a send to it waits until the send timeout. A resume
    /// arriving meanwhile is the same user back on a new socket: it must not wait that long,
    /// so it cuts the send short and the stale client is dropped. Other commands wait their
    /// turn.
    async fn send_client(&mut self, message: Message) {
        let Some(ws) = self.client.as_mut() else {
            return;
        };
        let keep = {
            let sending = send(ws, message);
            tokio::pin!(sending);
            loop {
                tokio::select! {
                    biased;
                    sent = &mut sending => break sent,
                    command = self.commands.recv(), if !self.commands.is_closed() => match command {
                        Some(resume @ Command::Resume { .. }) => {
                            self.deferred.push_front(resume);
                            break false;
                        }
                        Some(other) => self.deferred.push_back(other),
                        None => {}
                    },
                }
            }
        };
        if !keep && let Some(mut old) = self.client.take() {
            self.salvage(&mut old);
        }
    }

    /// Hands the answers to the open prompt to the bridge, or warns and keeps it open. The
    /// answers are neither counted nor recorded: they are not terminal input.
    async fn auth_response(&mut self, response: AuthResponse) {
        let Some(expected) = self.open_prompt.as_ref().map(|p| p.prompts.len()) else {
            let warning = outcome::warning(
                WarningKind::NoAuthPrompt,
                "no authentication prompt is open",
            );
            self.send_client(warning).await;
            return;
        };
        let warning = match response {
            AuthResponse::Answers(Answers(answers)) if answers.len() == expected => {
                self.open_prompt = None;
                self.queued.push_back(Input::AuthAnswers(answers));
                return;
            }
            AuthResponse::Answers(_) => outcome::warning(
                WarningKind::AuthAnswersMismatch,
                &format!("the prompt wants {expected} answer(s), one per prompt"),
            ),
            AuthResponse::Oversized => outcome::warning(
                WarningKind::AuthResponseTooLarge,
                &format!("at most {MAX_PROMPTS} answers of at most {MAX_ANSWER} bytes each"),
            ),
        };
        self.send_client(warning).await;
    }

    /// Queues input for the bridge, counted and recorded.
    fn take_input(&mut self, bytes: bytes::Bytes) {
        self.counts.bytes_in += bytes.len() as u64;
        self.tracker
            .traffic
            .bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.counts.frames_in += 1;
        self.recording.input(&bytes);
        let bytes = self.charset.encode(bytes);
        if !bytes.is_empty() {
            self.queued.push_back(Input::Data(bytes));
        }
    }

    fn take_resize(&mut self, cols: u16, rows: u16) {
        self.resized(cols, rows);
        self.queued.push_back(Input::Resize { cols, rows });
    }

    /// Keeps the input a client let go of had already sent. Frames the gateway received but
    /// had not read yet (a keystroke typed just before the network dropped, while output
    /// to it was stuck or a resume came first) are read without waiting and queued, so a
    /// resume on a new socket loses none of them. Other events are moot with the client gone.
    fn salvage(&mut self, old: &mut Socket) {
        for _ in 0..SALVAGE_FRAMES {
            match read_event(old).now_or_never() {
                Some(Read::Event(ClientEvent::Input(bytes))) if !bytes.is_empty() => {
                    self.take_input(bytes);
                }
                Some(Read::Event(ClientEvent::Resize { cols, rows })) => {
                    self.take_resize(cols, rows);
                }
                Some(Read::Event(_)) => {}
                Some(Read::Invalid(_) | Read::TooLarge | Read::Gone) | None => break,
            }
        }
    }

    /// Stops the bridge reading while no one is attached and the ring is full, and starts
    /// it again when someone attaches. More output would only push bytes no one has seen
    /// out of the ring; stopped, the program waits in the SSH window. Events already
    /// queued are still taken, so the session sees its end while held.
    fn hold(&mut self, input: &crate::ssh::InputSender) {
        let hold = self.client.is_none() && self.viewers.len() == 0 && self.ring.is_full();
        if hold != self.held {
            self.held = hold;
            input.set_paused(hold || self.paused);
            tracing::debug!(held = hold, "reads while detached");
        }
    }

    fn set_paused(&mut self, input: &crate::ssh::InputSender, paused: bool) {
        self.paused = paused;
        input.set_paused(paused);
    }

    fn resized(&mut self, cols: u16, rows: u16) {
        self.size = (cols, rows);
        self.recording.resize(cols, rows);
        self.viewers
            .broadcast(&ServerEvent::TerminalSize { cols, rows }.encode());
    }

    /// Attaches `ws` as the client if `token` is the current one, replaying what it missed
    /// after `offset`. A client already attached is taken over. `false` if refused.
    async fn resume(&mut self, ws: Socket, token: &str, offset: u64) -> bool {
        let metrics = &self.ctx.metrics;
        // Before the shell is ready, or with resume off, the registry holds no token.
        if !self.registration.is_current(token) {
            metrics.attach("resume_refused");
            self.refuse(ws, outcome::resume_invalid());
            return false;
        }
        let replay = match self.ring.since(offset, REPLAY_FRAME) {
            Ok(replay) => replay,
            Err(_) => {
                metrics.attach("resume_refused");
                self.refuse(
                    ws,
                    bad_message("offset is past the end of the session's output"),
                );
                return false;
            }
        };
        metrics.attach("resumed");
        if let Some(mut old) = self.client.replace(ws) {
            self.salvage(&mut old);
            metrics.attach("taken_over");
            tracing::info!("session taken over by another client");
            self.refuse(
                old,
                Outcome::error(
                    ErrorKind::SessionTakenOver,
                    "this session was resumed elsewhere (another tab or window)",
                ),
            );
        }
        let token = self.registration.rotate_token();
        self.told_draining = false;
        tracing::info!(
            offset,
            from = replay.from,
            truncated = replay.truncated,
            "client resumed"
        );
        let resumed = ServerEvent::SessionResumed {
            cols: self.size.0,
            rows: self.size.1,
            target: &self.target,
            resume_token: &token,
            offset: replay.from,
            truncated: replay.truncated,
            handback: self.options.handback,
            ends_in: ends_in(*self.tracker.control.deadline.borrow()),
            authenticating: !self.ready,
        };
        self.send_client(resumed.encode()).await;
        for chunk in replay.chunks {
            self.counts.frames_out += 1;
            self.send_client(ServerEvent::Output(chunk).encode()).await;
        }
        // The prompt the client before it was shown, after the text it came with.
        if let Some(prompt) = &self.open_prompt {
            let ask = ServerEvent::AuthPrompt {
                prompt,
                resume_token: None,
            }
            .encode();
            self.send_client(ask).await;
        }
        true
    }

    /// Adds a viewer through share link `link`: it gets the size, then the current screen
    /// as the ring holds it, then live output.
    fn view(&mut self, ws: Socket, link: uuid::Uuid) {
        if !self.registration.has_link(&link) {
            self.ctx.metrics.attach("viewer_refused");
            self.refuse(ws, outcome::unknown_view());
            return;
        }
        if self.viewers.len() >= self.ctx.settings.max_viewers {
            self.ctx.metrics.attach("viewer_refused");
            let max = self.ctx.settings.max_viewers;
            self.refuse(
                ws,
                Outcome::error(
                    ErrorKind::TooManyViewers,
                    format!("this session already has {max} viewers"),
                ),
            );
            return;
        }
        let ready = ServerEvent::ConnectionReady {
            cols: self.size.0,
            rows: self.size.1,
            target: &self.target,
            resume_token: None,
            read_only: true,
            handback: false,
            ends_in: ends_in(*self.tracker.control.deadline.borrow()),
        };
        let mut first = vec![ready.encode()];
        if let Ok(snapshot) = self.ring.since(0, REPLAY_FRAME) {
            first.extend(snapshot.chunks.into_iter().map(Message::Binary));
        }
        self.ctx.metrics.attach("viewer");
        tracing::info!(viewers = self.viewers.len() + 1, "viewer joined");
        self.viewers.add(ws, link, first, &self.ctx.tracker);
    }

    /// Tells `ws` why it was refused and closes it, on its own task so the session goes on.
    fn refuse(&self, mut ws: Socket, outcome: Outcome) {
        self.ctx
            .tracker
            .spawn(async move { finish(&mut ws, &outcome).await });
    }
}

/// Whole seconds from now to the cap, for the page's countdown; `None`: no cap.
fn ends_in(cap: Option<tokio::time::Instant>) -> Option<u64> {
    cap.map(|c| {
        c.saturating_duration_since(tokio::time::Instant::now())
            .as_secs()
    })
}

/// The next command: a deferred one first, then the queue's. Cancel-safe.
async fn next_command(
    deferred: &mut VecDeque<Command>,
    queue: &mut mpsc::Receiver<Command>,
) -> Option<Command> {
    match deferred.pop_front() {
        Some(command) => Some(command),
        None => queue.recv().await,
    }
}

/// What the attached client sent next; never, while none is attached. Cancel-safe.
async fn next_event(client: &mut Option<Socket>) -> Read {
    match client {
        Some(ws) => read_event(ws).await,
        None => std::future::pending().await,
    }
}
