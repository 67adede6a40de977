//! What the async handle (`bridge`) and the bridge thread (`thread`) exchange: the input
//! and event types of their two bounded queues, and the flags and wake-up they share. A leaf:
//! it names no libssh2 type, so both sides depend on it and neither on the other.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::error::SshError;
use super::wake::Wake;
use crate::secret::Secret;

/// What the async side sends to the thread.
#[derive(Debug)]
pub enum Input {
    Data(Bytes),
    Resize {
        cols: u16,
        rows: u16,
    },
    /// The person's answers to the open `AuthPrompt`, one per prompt, in order.
    AuthAnswers(Vec<Secret<String>>),
}

/// One round of questions from the server (keyboard-interactive), or the gateway's own
/// "Password:" question, for the person at the page. Texts come from the server and are
/// already bounded (`auth::MAX_PROMPT_TEXT`); the page shows them as text, never as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPrompt {
    /// Who asks: `user@host:port` of the target or of a jump host.
    pub target: String,
    /// The jump host that asks (1 = the first), `None` for the target.
    pub hop: Option<u8>,
    pub name: String,
    pub instruction: String,
    pub prompts: Vec<PromptText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptText {
    pub text: String,
    /// Whether the answer may be shown as it is typed; `false`: mask it.
    pub echo: bool,
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
    /// Authentication waits for the person's answers (`Input::AuthAnswers`).
    AuthPrompt(AuthPrompt),
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
    /// A second handle on the socket while the blocking handshake runs, so that closing, or
    /// the connect deadline passing, can shut the socket down and end the handshake at once:
    /// libssh2's timeout bounds each wait, not the whole handshake.
    pub handshake_socket: Mutex<Option<TcpStream>>,
    /// When connecting must be over; it stands still while a person is asked.
    pub deadline: ConnectDeadline,
}

impl Shared {
    /// Ends a handshake still in progress; a no-op once the thread has taken the socket back.
    pub fn abort_handshake(&self) {
        if let Some(socket) = self.handshake_socket.lock().take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The connect deadline, which stops while the thread waits for a person's answers: the
/// time a person takes at a prompt is theirs (bounded by `--auth-prompt-timeout`), not the
/// server's. Shared so that the deadline timer (`bridge::abort_at_deadline`) sees it move.
pub struct ConnectDeadline {
    state: Mutex<DeadlineState>,
    /// Told when the clock starts again, so the timer sleeps to the moved deadline at once
    /// rather than on its fallback wake-up.
    moved: Arc<Notify>,
}

struct DeadlineState {
    at: Instant,
    /// Set while a person is asked.
    asking_since: Option<Instant>,
}

impl ConnectDeadline {
    pub fn new(at: Instant) -> Self {
        ConnectDeadline {
            state: Mutex::new(DeadlineState {
                at,
                asking_since: None,
            }),
            moved: Arc::new(Notify::new()),
        }
    }

    /// What the timer waits on besides the deadline; it keeps nothing else alive.
    pub fn moved(&self) -> Arc<Notify> {
        self.moved.clone()
    }

    /// The deadline as it stands (while asking, as it stood when the asking began).
    pub fn at(&self) -> Instant {
        self.state.lock().at
    }

    /// The deadline, or `None` while a person is asked.
    pub fn running(&self) -> Option<Instant> {
        let state = self.state.lock();
        state.asking_since.is_none().then_some(state.at)
    }

    /// Stops the clock: a person is asked from now on.
    pub fn pause(&self) {
        let mut state = self.state.lock();
        if state.asking_since.is_none() {
            state.asking_since = Some(Instant::now());
        }
    }

    /// Starts the clock again, the deadline moved by the time the person took.
    pub fn resume(&self) {
        let mut state = self.state.lock();
        if let Some(since) = state.asking_since.take() {
            state.at += since.elapsed();
            // A permit is kept if the timer is not waiting yet: no wake-up is lost.
            self.moved.notify_one();
        }
    }
}
