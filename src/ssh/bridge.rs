//! `Bridge`: the async side's handle on one SSH session, which lives on its own thread.
//!
//! The thread alone touches the libssh2 session and channel (libssh2 is not thread-safe).
//! It talks to the async side through two bounded queues: `Input` in, `BridgeEvent` out.
//! Dropping the `Bridge` tells the thread to close the channel and disconnect; `finish`
//! also waits until the thread has exited, so a finished session holds no thread.
//! The handle is not tied to a WebSocket: whoever owns it owns the session.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::connect::{self, Shell};
use super::error::SshError;
use super::hostkey::HostKeys;
use super::pump::{self, End};
use super::wake::Wake;
use crate::request::SessionRequest;

/// Stack for a bridge thread. libssh2 and OpenSSL need little; small stacks make thousands
/// of sessions cheap.
const THREAD_STACK: usize = 256 * 1024;
/// Input messages (keystrokes, paste chunks, resizes) queued for the thread. When full, the
/// WebSocket reader waits, and TCP pushes back on the browser.
const INPUT_QUEUE: usize = 64;
/// Output events queued for the WebSocket: up to 16 × 64 KiB in flight per session.
const EVENT_QUEUE: usize = 16;
/// How long closing the channel and disconnecting may take before the socket is dropped.
pub const CLOSE_TIMEOUT_MS: u32 = 2000;
/// How long `finish` waits for the thread after telling it to stop. Its own steps are
/// bounded by `CLOSE_TIMEOUT_MS` (twice) and the connect deadline.
const FINISH_WAIT: Duration = Duration::from_secs(15);

/// What the async side sends to the thread.
#[derive(Debug)]
pub enum Input {
    Data(Bytes),
    Resize { cols: u16, rows: u16 },
}

/// What the thread reports.
#[derive(Debug)]
pub enum BridgeEvent {
    /// The shell is up with this size.
    Ready {
        cols: u16,
        rows: u16,
    },
    Output(Bytes),
    /// The remote side ended the session.
    Closed(ExitInfo),
    Failed(SshError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_status: Option<i32>,
    pub exit_signal: Option<String>,
}

impl ExitInfo {
    pub fn reason(&self) -> &'static str {
        match (self.exit_status, &self.exit_signal) {
            (_, Some(_)) => "signalled",
            (Some(_), None) => "exited",
            (None, None) => "eof",
        }
    }
}

/// State shared by the handle and its thread.
pub(super) struct Shared {
    pub wake: Wake,
    /// Set by the thread when the event queue was full: the async side wakes it after
    /// taking an event.
    pub want_wake: AtomicBool,
    /// Set when the handle is dropped; the thread checks it every turn.
    pub closing: AtomicBool,
    /// Set while the client asked for no output (flow control): the thread stops reading
    /// the channel, so the SSH window stops the remote program. Input still flows.
    pub paused: AtomicBool,
    /// A second handle on the socket while the blocking handshake runs, so that closing can
    /// shut the socket down and end it at once rather than at the connect deadline.
    handshake_socket: Mutex<Option<TcpStream>>,
}

/// Where the bridge starts: the target already connected, the host keys to check it
/// against, and the terminal size.
pub struct Start {
    pub stream: TcpStream,
    pub request: SessionRequest,
    pub host_keys: Arc<HostKeys>,
    /// `LANG` asked for on the channel (as OpenSSH's `SendEnv`); `None` asks for nothing.
    pub remote_lang: Option<Arc<str>>,
    pub cols: u16,
    pub rows: u16,
    pub deadline: Instant,
}

pub struct Bridge {
    input: mpsc::Sender<Input>,
    events: mpsc::Receiver<BridgeEvent>,
    shared: Arc<Shared>,
    done: oneshot::Receiver<()>,
    _close: CloseOnDrop,
}

/// Tells the thread to stop when the handle goes, however it goes.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        if let Some(socket) = self.0.handshake_socket.lock().take() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.0.wake.signal();
    }
}

/// Counts the thread while it runs and reports its end, even if it panics.
struct ThreadGuard {
    threads: Arc<AtomicUsize>,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.threads.fetch_sub(1, Ordering::AcqRel);
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl Bridge {
    /// Starts the session's thread. `threads` counts live bridge threads.
    pub fn spawn(start: Start, threads: &Arc<AtomicUsize>) -> io::Result<Bridge> {
        let shared = Arc::new(Shared {
            wake: Wake::new()?,
            want_wake: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            handshake_socket: Mutex::new(Some(start.stream.try_clone()?)),
        });
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        threads.fetch_add(1, Ordering::AcqRel);
        let guard = ThreadGuard {
            threads: threads.clone(),
            done: Some(done_tx),
        };
        let thread_shared = shared.clone();
        // The thread logs into the caller's subscriber and session span, like a task would.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new()
            .name("ssh-bridge".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _guard = guard;
                tracing::dispatcher::with_default(&dispatch, || {
                    span.in_scope(|| run_thread(start, &thread_shared, input_rx, events_tx))
                });
            });
        // On a spawn failure the closure, and with it the guard, is dropped: the count is right.
        spawned?;
        Ok(Bridge {
            input: input_tx,
            events: events_rx,
            shared: shared.clone(),
            done: done_rx,
            _close: CloseOnDrop(shared),
        })
    }

    /// A sender for input, usable while `next_event` is awaited.
    pub fn input(&self) -> InputSender {
        InputSender {
            input: self.input.clone(),
            shared: self.shared.clone(),
        }
    }

    /// The next event from the thread; `None` once the thread is gone. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<BridgeEvent> {
        let event = self.events.recv().await;
        if self.shared.want_wake.swap(false, Ordering::AcqRel) {
            self.shared.wake.signal();
        }
        event
    }

    /// Ends the session and waits (bounded) until its thread has exited.
    pub async fn finish(self) {
        let Bridge {
            input,
            events,
            shared,
            done,
            _close,
        } = self;
        drop((input, events, shared, _close));
        if tokio::time::timeout(FINISH_WAIT, done).await.is_err() {
            tracing::error!("ssh bridge thread did not stop in time");
        }
    }
}

/// Sends input to the bridge thread and wakes it.
pub struct InputSender {
    input: mpsc::Sender<Input>,
    shared: Arc<Shared>,
}

impl InputSender {
    /// Waits for room in the input queue; `None` once the thread is gone. Cancel-safe:
    /// nothing is lost if the wait is dropped.
    pub async fn reserve(&self) -> Option<InputPermit<'_>> {
        let permit = self.input.reserve().await.ok()?;
        Some(InputPermit {
            permit,
            wake: &self.shared.wake,
        })
    }

    /// Stops (or restarts) reading output from the SSH channel, at the client's request.
    pub fn set_paused(&self, paused: bool) {
        if self.shared.paused.swap(paused, Ordering::AcqRel) != paused {
            self.shared.wake.signal();
        }
    }
}

pub struct InputPermit<'a> {
    permit: mpsc::Permit<'a, Input>,
    wake: &'a Wake,
}

impl InputPermit<'_> {
    pub fn send(self, input: Input) {
        self.permit.send(input);
        self.wake.signal();
    }
}

fn run_thread(
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
        deadline,
    } = start;
    let opened = connect::open_shell(
        stream,
        request,
        &host_keys,
        remote_lang.as_deref(),
        cols.into(),
        rows.into(),
        deadline,
    );
    // From here on closing goes through the wake fd.
    shared.handshake_socket.lock().take();
    let mut shell = match opened {
        Ok(shell) => shell,
        Err(e) => {
            let _ = events_tx.blocking_send(BridgeEvent::Failed(e));
            return;
        }
    };
    if events_tx
        .blocking_send(BridgeEvent::Ready { cols, rows })
        .is_err()
    {
        close(&mut shell);
        return;
    }
    match pump::run(&mut shell, shared, &mut input_rx, &events_tx) {
        End::Remote => {
            let info = pump::exit_info(&mut shell);
            let _ = events_tx.blocking_send(BridgeEvent::Closed(info));
        }
        End::Failed(e) => {
            let _ = events_tx.blocking_send(BridgeEvent::Failed(e));
        }
        End::ClientGone => {}
    }
    close(&mut shell);
}

/// Closes the channel (the remote shell gets SIGHUP) and says goodbye. Blocking with a
/// short timeout, so that CLOSE is actually sent rather than lost to EAGAIN.
fn close(shell: &mut Shell) {
    shell.session.set_blocking(true);
    shell.session.set_timeout(CLOSE_TIMEOUT_MS);
    let _ = shell.channel.close();
    let _ = shell.session.disconnect(None, "session closed", None);
    let _ = shell.socket.shutdown(Shutdown::Both);
}
