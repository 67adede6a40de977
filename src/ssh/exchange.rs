//! What the async handle (`bridge`) and the bridge thread (`thread`) exchange: the input
//! and event types of their two bounded queues, and the flags and wake-up they share. A leaf:
//! it names no libssh2 type, so both sides depend on it and neither on the other.

use std::net::TcpStream;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use parking_lot::Mutex;

use super::error::SshError;
use super::wake::Wake;

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
    /// A second handle on the socket while the blocking handshake runs, so that closing, or
    /// the connect deadline passing, can shut the socket down and end the handshake at once:
    /// libssh2's timeout bounds each wait, not the whole handshake.
    pub handshake_socket: Mutex<Option<TcpStream>>,
}

impl Shared {
    /// Ends a handshake still in progress; a no-op once the thread has taken the socket back.
    pub fn abort_handshake(&self) {
        if let Some(socket) = self.handshake_socket.lock().take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}
