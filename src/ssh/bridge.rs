//! `Bridge`: the async side's handle on one SSH session, which lives on its own thread
//! (`thread.rs`). Nothing here touches libssh2: the thread alone does (it is not
//! thread-safe), and the two talk through two bounded queues, `Input` in and `BridgeEvent`
//! out (`exchange.rs`). Dropping the `Bridge` tells the thread to close the channel and
//! disconnect; `finish` also waits until the thread has exited, so a finished session holds
//! no thread. The handle is not tied to a WebSocket: whoever owns it owns the session.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::exchange::{BridgeEvent, ConnectDeadline, Input, Shared};
use super::hostkey::HostKeys;
use super::thread;
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
/// How long `finish` waits for the thread after telling it to stop. Its own steps are
/// bounded by `CLOSE_TIMEOUT_MS` (twice) and the connect deadline.
const FINISH_WAIT: Duration = Duration::from_secs(15);

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
    /// How long the person may take over one authentication prompt; that time does not
    /// count against `deadline` (`--auth-prompt-timeout`).
    pub auth_prompt_timeout: Duration,
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
        self.0.abort_handshake();
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
            deadline: ConnectDeadline::new(start.deadline),
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
        abort_at_deadline(
            Arc::downgrade(&shared),
            shared.deadline.moved(),
            start.deadline,
            start.auth_prompt_timeout,
        );
        // The thread logs into the caller's subscriber and session span, like a task would.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new()
            .name("ssh-bridge".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _guard = guard;
                tracing::dispatcher::with_default(&dispatch, || {
                    span.in_scope(|| thread::run(start, &thread_shared, input_rx, events_tx))
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

/// Ends the handshake when the connect deadline passes, however busy the server keeps it: a
/// server that sends an endless banner line satisfies every one of libssh2's per-read
/// timeouts and would otherwise hold the thread (at a full core) for as long as it likes.
/// The timer holds only a weak reference, so it keeps nothing of a finished session alive.
///
/// The deadline stands still while a person is asked (`ConnectDeadline`): the timer then
/// waits until the clock starts again (`moved`), or at the latest until that wait must be
/// over (`prompt_timeout`), and sleeps on to the moved deadline. A few turns per prompt
/// round, and it ends once the shell is up.
fn abort_at_deadline(
    shared: Weak<Shared>,
    moved: Arc<tokio::sync::Notify>,
    deadline: Instant,
    prompt_timeout: Duration,
) {
    tokio::spawn(async move {
        let mut at = deadline;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = moved.notified() => {}
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.handshake_socket.lock().is_none() {
                return;
            }
            match shared.deadline.running() {
                Some(deadline) if deadline <= Instant::now() => {
                    shared.abort_handshake();
                    return;
                }
                Some(deadline) => at = deadline,
                None => at = Instant::now() + prompt_timeout,
            }
        }
    });
}
