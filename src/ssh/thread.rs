//! Everything that runs on a session's bridge thread, which alone touches its libssh2
//! session and channel: `run` (connect, then the pump, then close), the pump itself, the exit
//! status and the goodbye. `connect.rs` holds the blocking start that `run` calls; while it
//! authenticates, `ConnectPage` carries prompts out and answers back over the same queues.
//!
//! The pump shuttles bytes between a non-blocking libssh2 channel and the session's queues,
//! sleeping in `poll(2)` on the SSH socket and the wake fd.
//!
//! Order of each turn: take queued input, send it and its resizes in the order they came,
//! read output until
//! libssh2 says WouldBlock (a packet libssh2 already buffered would never wake `poll`), then
//! poll. When the output queue is full the thread stops reading the channel, so the SSH
//! window pushes back on the remote program, but it keeps writing input (Ctrl-C gets
//! through). It never busy-waits: with nothing to do it sleeps until a fd is ready.
//!
//! A session through jump hosts (`jump.rs`) has a `Relay` beside its shell: each turn it
//! forwards through the relay's links before polling (and turns again if bytes moved), and
//! the poll waits on the links' descriptors too. Closing drives the shell's goodbye, then
//! the hops', through the links rather than blocking on a socket nobody forwards.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use ssh2::{BlockDirections, ErrorCode};
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use super::auth::Page;
use super::bridge::Start;
use super::connect::{self, Shell};
use super::error::{SshError, SshErrorKind};
use super::exchange::{AuthPrompt, BridgeEvent, ExitInfo, Input, Shared};
use super::jump::{self, Relay, Until};
use crate::secret::Secret;

/// Output is coalesced up to this many bytes per event (one WebSocket frame each).
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// The read buffer an idle session starts with.
const INITIAL_READ_BUFFER: usize = 4 * 1024;
/// SSH keepalive interval: keeps NAT and proxies from dropping an idle session.
const KEEPALIVE_SECS: u32 = 30;
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
/// How long closing the channel and disconnecting may take before the socket is dropped.
const CLOSE_TIMEOUT_MS: u32 = 2000;

/// The thread's whole life: connect and authenticate, report `Ready`, pump until one side
/// ends, report how it ended, and close.
pub(super) fn run(
    start: Start,
    shared: &Shared,
    mut input_rx: mpsc::Receiver<Input>,
    events_tx: mpsc::Sender<BridgeEvent>,
) {
    let Start {
        stream,
        request,
        host_keys,
        remote_lang,
        cols,
        rows,
        auth_prompt_timeout,
        ..
    } = start;
    let mut page = ConnectPage {
        shared,
        input_rx: &mut input_rx,
        events_tx: &events_tx,
        prompt_timeout: auth_prompt_timeout,
        size: None,
    };
    let opened = if request.jump.is_empty() {
        connect::open_shell(
            stream,
            request,
            &host_keys,
            remote_lang.as_deref(),
            cols.into(),
            rows.into(),
            &mut page,
        )
        .map(|shell| (shell, None))
    } else {
        jump::open_shell(
            stream,
            request,
            &host_keys,
            remote_lang.as_deref(),
            cols.into(),
            rows.into(),
            &mut page,
            shared,
        )
        .map(|(shell, relay)| (shell, Some(relay)))
    };
    // From here on closing goes through the wake fd.
    shared.handshake_socket.lock().take();
    let (mut shell, mut relay) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let deadline = shared.deadline.at();
            let _ = events_tx.blocking_send(BridgeEvent::Failed(past_deadline(e, deadline)));
            return;
        }
    };
    // The size the PTY was opened with: the page may have resized while it was asked.
    let (cols, rows) = (shell.size.0 as u16, shell.size.1 as u16);
    if events_tx
        .blocking_send(BridgeEvent::Ready { cols, rows })
        .is_err()
    {
        close(&mut shell, relay);
        return;
    }
    match pump(
        &mut shell,
        relay.as_mut(),
        shared,
        &mut input_rx,
        &events_tx,
    ) {
        End::Remote => {
            let info = exit_info(&mut shell, relay.as_mut());
            let _ = events_tx.blocking_send(BridgeEvent::Closed(info));
        }
        End::Failed(e) => {
            let _ = events_tx.blocking_send(BridgeEvent::Failed(e));
        }
        End::ClientGone => {}
    }
    close(&mut shell, relay);
}

/// A start that failed once the deadline had passed failed because of it: the socket was
/// shut down under libssh2 (see `bridge::abort_at_deadline`), whatever libssh2 then said.
fn past_deadline(e: SshError, deadline: Instant) -> SshError {
    let timed_out = Instant::now() >= deadline
        && !matches!(
            e.kind,
            SshErrorKind::AuthFailed
                | SshErrorKind::KeyInvalid
                | SshErrorKind::HostKeyMismatch
                | SshErrorKind::HostKeyUnknown
                | SshErrorKind::AuthTimeout
        );
    if timed_out {
        // Still at the hop it happened at, if any.
        match e.hop {
            Some(hop) => SshError::connect_timeout().at_hop(hop),
            None => SshError::connect_timeout(),
        }
    } else {
        e
    }
}

/// The page, as authentication reaches it from this thread: a round of prompts goes out as
/// `BridgeEvent::AuthPrompt`, and the thread sleeps on the wake fd until the answers come
/// back as `Input::AuthAnswers`, the handle closes, or `--auth-prompt-timeout` passes. The
/// connect deadline stands still meanwhile.
struct ConnectPage<'a> {
    shared: &'a Shared,
    input_rx: &'a mut mpsc::Receiver<Input>,
    events_tx: &'a mpsc::Sender<BridgeEvent>,
    prompt_timeout: Duration,
    /// The last size the page asked for while it was asked.
    size: Option<(u32, u32)>,
}

impl ConnectPage<'_> {
    fn wait_for_answers(&mut self) -> Result<Vec<Secret<String>>, SshError> {
        let gone = || {
            SshError::new(
                SshErrorKind::SshFailed,
                "the client left during authentication",
            )
        };
        let until = Instant::now() + self.prompt_timeout;
        // Bounded by `until`: every turn sleeps in poll until input, closing or then.
        loop {
            if self.shared.closing.load(Ordering::Acquire) {
                return Err(gone());
            }
            loop {
                match self.input_rx.try_recv() {
                    Ok(Input::AuthAnswers(answers)) => return Ok(answers),
                    Ok(Input::Resize { cols, rows }) => {
                        self.size = Some((cols.into(), rows.into()))
                    }
                    // Keys typed into the terminal, not the form: they must not reach the
                    // shell later (an answer typed in the wrong place would be echoed there).
                    Ok(Input::Data(_)) => tracing::debug!("input dropped during authentication"),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(gone()),
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::info!(
                    secs = self.prompt_timeout.as_secs(),
                    "authentication prompt not answered in time"
                );
                self.shared.abort_handshake();
                return Err(SshError::new(
                    SshErrorKind::AuthTimeout,
                    "the authentication prompt was not answered in time",
                ));
            }
            let timeout = Timespec {
                tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: left.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(&self.shared.wake, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(SshError::new(
                        SshErrorKind::SshFailed,
                        format!("poll failed: {e}"),
                    ));
                }
            }
            if !fds[0].revents().is_empty() {
                self.shared.wake.clear();
            }
        }
    }
}

impl Page for ConnectPage<'_> {
    fn ask(&mut self, prompt: AuthPrompt) -> Result<Vec<Secret<String>>, SshError> {
        // The queue is all but empty while connecting; a full one means no one reads it.
        if self
            .events_tx
            .try_send(BridgeEvent::AuthPrompt(prompt))
            .is_err()
        {
            return Err(SshError::new(
                SshErrorKind::SshFailed,
                "the page cannot be asked",
            ));
        }
        self.shared.deadline.pause();
        let answers = self.wait_for_answers();
        self.shared.deadline.resume();
        answers
    }

    fn show(&mut self, text: bytes::Bytes) {
        if self.events_tx.try_send(BridgeEvent::Output(text)).is_err() {
            tracing::debug!("server text not shown: the event queue is full");
        }
    }

    fn abort(&mut self) {
        self.shared.abort_handshake();
    }

    fn deadline(&self) -> Instant {
        self.shared.deadline.at()
    }

    fn wait_bound(&self) -> Duration {
        self.prompt_timeout
    }

    fn size(&self) -> Option<(u32, u32)> {
        self.size
    }
}

/// How the pump ended.
enum End {
    /// The remote side closed the channel (shell exited, or EOF).
    Remote,
    /// The async side dropped the bridge: the browser left or the server is shutting down.
    ClientGone,
    Failed(SshError),
}

fn pump(
    shell: &mut Shell,
    mut relay: Option<&mut Relay>,
    shared: &Shared,
    input_rx: &mut mpsc::Receiver<Input>,
    events_tx: &mpsc::Sender<BridgeEvent>,
) -> End {
    shell.session.set_keepalive(false, KEEPALIVE_SECS);
    shell.session.set_blocking(false);
    // Starts small and grows to OUTPUT_CHUNK under bulk output: an idle session should not
    // keep 64 KiB resident for a prompt.
    let mut read_buf = vec![0u8; INITIAL_READ_BUFFER];
    // Output read but not yet queued: `read_buf[..held]`.
    let mut held = 0;
    // Input and resizes not yet sent, in the order they came (see `write_pending`).
    let mut pending: VecDeque<Input> = VecDeque::new();
    // An output chunk the full queue refused; nothing more is read until it is delivered.
    let mut stalled: Option<BridgeEvent> = None;

    loop {
        if shared.closing.load(Ordering::Acquire) {
            return End::ClientGone;
        }
        loop {
            match input_rx.try_recv() {
                // Too late (authentication is over): dropped, and so wiped.
                Ok(Input::AuthAnswers(_)) => {}
                Ok(input) => queue_input(&mut pending, input),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return End::ClientGone,
            }
        }

        if let Err(e) = write_pending(&mut shell.channel, &mut pending) {
            return End::Failed(lost(&shell.session, &e));
        }

        // Deliver what is stalled before reading more, keeping output in order.
        if let Some(event) = stalled.take() {
            match try_deliver(event, shared, events_tx) {
                Delivery::Sent => {}
                Delivery::Full(event) => stalled = Some(event),
                Delivery::Gone => return End::ClientGone,
            }
        }
        let mut more_to_read = false;
        let reading = stalled.is_none() && !shared.paused.load(Ordering::Acquire);
        if reading {
            let (added, state) = match read_output(&mut shell.channel, &mut read_buf[held..]) {
                Ok(read) => read,
                Err(e) => return End::Failed(lost(&shell.session, &e)),
            };
            held += added;
            // Send at once when the WebSocket side is idle (a keystroke's echo must not
            // wait); while it is still busy with earlier output, gather up to a full chunk
            // instead: fewer, larger frames cost far fewer wake-ups and syscalls.
            let full = held == OUTPUT_CHUNK;
            let send_now =
                full || matches!(state, ReadState::Eof) || consumer_idle(shared, events_tx);
            if held > 0 && send_now {
                let event = BridgeEvent::Output(Bytes::copy_from_slice(&read_buf[..held]));
                held = 0;
                match try_deliver(event, shared, events_tx) {
                    Delivery::Sent => {}
                    Delivery::Full(event) => stalled = Some(event),
                    Delivery::Gone => return End::ClientGone,
                }
            }
            match state {
                ReadState::Eof => {
                    if let Some(event) = stalled.take() {
                        // The end is near: waiting here is bounded by the async side, which
                        // drains events until it drops the receiver.
                        if events_tx.blocking_send(event).is_err() {
                            return End::ClientGone;
                        }
                    }
                    return End::Remote;
                }
                // More is waiting: grow a small buffer for bulk output (it stays grown), and
                // read on before polling.
                ReadState::BufferFull => {
                    if read_buf.len() < OUTPUT_CHUNK {
                        read_buf.resize((read_buf.len() * 4).min(OUTPUT_CHUNK), 0);
                    }
                    more_to_read = stalled.is_none();
                }
                ReadState::WouldBlock => {}
            }
        }
        if more_to_read {
            continue;
        }
        // What the shell just wrote goes on through the hops, and what they brought in may
        // be readable now: another turn before any sleep.
        if let Some(relay) = relay.as_deref_mut() {
            match relay.forward() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return End::Failed(e),
            }
        }

        // Ask libssh2 what it waits for only when something is held back by it.
        let mut socket_flags = PollFlags::empty();
        if reading && stalled.is_none() {
            socket_flags |= PollFlags::IN;
        }
        if !pending.is_empty() {
            socket_flags |= match shell.session.block_directions() {
                BlockDirections::Inbound => PollFlags::IN,
                BlockDirections::Outbound => PollFlags::OUT,
                BlockDirections::Both => PollFlags::IN | PollFlags::OUT,
                BlockDirections::None => PollFlags::empty(),
            };
        }
        let mut next_keepalive = shell
            .session
            .keepalive_send()
            .unwrap_or(KEEPALIVE_SECS)
            .max(1);
        if let Some(relay) = relay.as_deref() {
            next_keepalive = next_keepalive.min(relay.keepalive().max(1));
        }
        let timeout = Timespec {
            tv_sec: next_keepalive.into(),
            tv_nsec: 0,
        };
        // The socket is left out when nothing is wanted from it: a hung-up socket reports
        // POLLHUP whatever the flags, which would spin while output is stalled.
        let mut fds = [
            PollFd::new(&shared.wake, PollFlags::IN),
            PollFd::new(&*shell.socket, socket_flags),
        ];
        let watched = if socket_flags.is_empty() { 1 } else { 2 };
        // Whether the wake fd was signalled (it is first in either set).
        let woken = match relay.as_deref() {
            None => poll(&mut fds[..watched], Some(&timeout)).map(|_| fds[0].revents()),
            Some(relay) => {
                let mut all: Vec<PollFd<'_>> = fds[..watched].to_vec();
                all.extend(relay.poll_fds());
                poll(&mut all, Some(&timeout)).map(|_| all[0].revents())
            }
        };
        match woken {
            Ok(revents) if !revents.is_empty() => shared.wake.clear(),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return End::Failed(SshError::new(
                    SshErrorKind::SshFailed,
                    format!("poll failed: {e}"),
                ));
            }
        }
    }
}

/// Queues input for `write_pending`. A resize behind another resize replaces it (only the
/// newest size matters), unless that one is at the front, where it may be half-sent.
fn queue_input(pending: &mut VecDeque<Input>, input: Input) {
    if let Input::Resize { .. } = input
        && pending.len() > 1
        && let Some(last @ Input::Resize { .. }) = pending.back_mut()
    {
        *last = input;
        return;
    }
    pending.push_back(input);
}

/// Sends queued input and resizes in the order they came, until all are sent or libssh2
/// would block: text typed after a resize reaches the shell after the new size (a `stty
/// size` typed right after it must see it). libssh2 wants a call that returned EAGAIN
/// repeated before anything else, so the front is retried as it stands: a partial write
/// with the bytes left, a window-change with the size it was built with (libssh2 re-sends
/// the packet it built, whatever size the retry names).
fn write_pending(channel: &mut ssh2::Channel, pending: &mut VecDeque<Input>) -> io::Result<()> {
    while let Some(front) = pending.front_mut() {
        let done = match front {
            Input::Data(bytes) => match channel.write(bytes) {
                Ok(n) => {
                    bytes.advance(n);
                    bytes.is_empty()
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            },
            // Never queued (see the pump's drain); nothing to send.
            Input::AuthAnswers(_) => true,
            Input::Resize { cols, rows } => {
                match channel.request_pty_size((*cols).into(), (*rows).into(), None, None) {
                    Ok(()) => true,
                    Err(e) if e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if done {
            pending.pop_front();
        }
    }
    Ok(())
}

enum ReadState {
    WouldBlock,
    BufferFull,
    Eof,
}

/// Reads into `buf` until it is full, libssh2 would block, or the remote sent EOF.
fn read_output(channel: &mut ssh2::Channel, buf: &mut [u8]) -> io::Result<(usize, ReadState)> {
    let mut filled = 0;
    while filled < buf.len() {
        match channel.read(&mut buf[filled..]) {
            Ok(0) => {
                // Ok(0) is only EOF when libssh2 says so; otherwise nothing was ready.
                let state = if channel.eof() {
                    ReadState::Eof
                } else {
                    ReadState::WouldBlock
                };
                return Ok((filled, state));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok((filled, ReadState::WouldBlock));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((filled, ReadState::BufferFull))
}

/// Whether the WebSocket side has taken every queued event. When it has not, the caller
/// may hold output back; the wake-up asked for here ends the wait when it takes one.
fn consumer_idle(shared: &Shared, events_tx: &mpsc::Sender<BridgeEvent>) -> bool {
    if events_tx.capacity() == events_tx.max_capacity() {
        return true;
    }
    shared.want_wake.store(true, Ordering::Release);
    // Checked again after asking, so a queue emptied in between cannot be missed.
    events_tx.capacity() == events_tx.max_capacity()
}

enum Delivery {
    Sent,
    Full(BridgeEvent),
    Gone,
}

/// Queues an event without blocking. When the queue is full, asks the async side for a
/// wake-up once it takes an event, then tries once more so that wake-up cannot be missed.
fn try_deliver(
    event: BridgeEvent,
    shared: &Shared,
    events_tx: &mpsc::Sender<BridgeEvent>,
) -> Delivery {
    let event = match events_tx.try_send(event) {
        Ok(()) => return Delivery::Sent,
        Err(TrySendError::Closed(_)) => return Delivery::Gone,
        Err(TrySendError::Full(event)) => event,
    };
    shared.want_wake.store(true, Ordering::Release);
    match events_tx.try_send(event) {
        Ok(()) => Delivery::Sent,
        Err(TrySendError::Closed(_)) => Delivery::Gone,
        Err(TrySendError::Full(event)) => Delivery::Full(event),
    }
}

fn lost(session: &ssh2::Session, e: &io::Error) -> SshError {
    // libssh2's words here ("transport read") mean nothing to the person at the terminal,
    // and the io::Error has lost its code; the session still knows it (libssh2.h names them).
    let code = ssh2::Error::last_session_error(session).map(|e| e.code().to_string());
    tracing::debug!(error = %e, libssh2_code = code.as_deref(), "ssh connection lost");
    SshError::new(
        SshErrorKind::ConnectionLost,
        "the connection to the SSH server was lost",
    )
}

/// Reads the exit status after EOF. Blocking with a short timeout: the status and CLOSE
/// follow EOF closely, and a server that never sends them must not hold the thread.
fn exit_info(shell: &mut Shell, relay: Option<&mut Relay>) -> ExitInfo {
    match relay {
        None => {
            shell.session.set_blocking(true);
            shell.session.set_timeout(CLOSE_TIMEOUT_MS);
            let _ = shell.channel.wait_close();
        }
        Some(relay) => {
            let deadline = close_deadline();
            let channel = &mut shell.channel;
            let _ = relay.drive(
                &shell.session,
                &shell.socket,
                Until::Close(deadline),
                || channel.wait_close(),
            );
        }
    }
    let exit_signal = shell.channel.exit_signal().ok().and_then(|s| s.exit_signal);
    let exit_status = match shell.channel.exit_status() {
        // libssh2 reports 0 when no status arrived; a signal death has no status.
        Ok(status) if exit_signal.is_none() => Some(status),
        _ => None,
    };
    ExitInfo {
        exit_status,
        exit_signal,
    }
}

/// Closes the channel (the remote shell gets SIGHUP) and says goodbye. Blocking with a
/// short timeout, so that CLOSE is actually sent rather than lost to EAGAIN.
fn close(shell: &mut Shell, relay: Option<Relay>) {
    let Some(mut relay) = relay else {
        shell.session.set_blocking(true);
        shell.session.set_timeout(CLOSE_TIMEOUT_MS);
        let _ = shell.channel.close();
        let _ = shell.session.disconnect(None, "session closed", None);
        let _ = shell.socket.shutdown(Shutdown::Both);
        return;
    };
    // Non-blocking through the links, the target first, then each hop inwards out.
    let deadline = close_deadline();
    let (session, socket, channel) = (&shell.session, &*shell.socket, &mut shell.channel);
    let until = Until::Close(deadline);
    let _ = relay.drive(session, socket, until, || channel.close());
    let _ = relay.drive(session, socket, until, || {
        session.disconnect(None, "session closed", None)
    });
    let _ = shell.socket.shutdown(Shutdown::Both);
    relay.close(close_deadline());
}

fn close_deadline() -> Instant {
    Instant::now() + std::time::Duration::from_millis(CLOSE_TIMEOUT_MS.into())
}
