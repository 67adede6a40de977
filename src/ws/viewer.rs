//! Read-only viewers of a live session. The session task hands each viewer's socket to its
//! own task and feeds it through a bounded queue without ever waiting: a viewer that cannot
//! keep up is closed (`viewer_too_slow`) rather than slowing the session or its owner.
//! Anything a viewer sends besides control frames is ignored, with one `read_only` warning.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use uuid::Uuid;

use super::Socket;
use super::outcome::{self, ErrorKind, Outcome, WarningKind};
use super::protocol::{ClientEvent, ServerEvent};
use super::socket::{PING_INTERVAL, Read, finish_with, read_event, send};

/// Messages queued per viewer: up to 64 output frames (4 MiB) before it counts as too slow.
const VIEWER_QUEUE: usize = 64;

/// How a viewer's socket ends, set by the session before it drops the viewer's queue.
type Ending = Arc<Mutex<Option<(Message, CloseCode)>>>;

/// The session's side of one viewer.
pub struct Viewer {
    pub link: Uuid,
    queue: mpsc::Sender<Message>,
    ending: Ending,
}

/// The viewers of one session.
#[derive(Default)]
pub struct Viewers {
    list: Vec<Viewer>,
}

impl Viewers {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Starts serving `ws` as a viewer on `tracker`; `first` (connection-ready and the
    /// current screen) is queued before any live output.
    pub fn add(
        &mut self,
        ws: Socket,
        link: Uuid,
        first: Vec<Message>,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let (queue, rx) = mpsc::channel(VIEWER_QUEUE.max(first.len() + 1));
        for message in first {
            let _ = queue.try_send(message);
        }
        let ending: Ending = Default::default();
        tracker.spawn(serve(ws, rx, ending.clone()));
        self.list.push(Viewer {
            link,
            queue,
            ending,
        });
    }

    /// Gives every viewer `message`; closes those whose queue is full.
    pub fn broadcast(&mut self, message: &Message) {
        self.list
            .retain(|v| match v.queue.try_send(message.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    end(
                        v,
                        Outcome::error(
                            ErrorKind::ViewerTooSlow,
                            "this viewer fell too far behind the session; reload to watch again",
                        ),
                    );
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            });
    }

    pub fn output(&mut self, bytes: &Bytes) {
        if !self.list.is_empty() {
            self.broadcast(&ServerEvent::Output(bytes.clone()).encode());
        }
    }

    /// Closes the viewers that came through `link`.
    pub fn revoke(&mut self, link: &Uuid) {
        self.list.retain(|v| {
            if v.link != *link {
                return true;
            }
            end(
                v,
                Outcome::error(
                    ErrorKind::ShareRevoked,
                    "the owner of this session revoked the share link",
                ),
            );
            false
        });
    }

    /// Closes every viewer with `event`: the session is over.
    pub fn end_all(&mut self, event: Message, close: CloseCode) {
        for v in self.list.drain(..) {
            *v.ending.lock() = Some((event.clone(), close));
        }
    }
}

/// Sets how `viewer` ends; dropping its queue (with the viewer) tells its task to finish.
fn end(viewer: &Viewer, outcome: Outcome) {
    *viewer.ending.lock() = outcome.last_event();
}

/// One viewer's socket: what the session queues goes out; what the viewer sends is ignored.
async fn serve(mut ws: Socket, mut queue: mpsc::Receiver<Message>, ending: Ending) {
    let mut warned = false;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            message = queue.recv() => match message {
                Some(message) => {
                    if !send(&mut ws, message).await {
                        return;
                    }
                }
                None => {
                    let ending = ending.lock().take();
                    if let Some((event, close)) = ending {
                        finish_with(&mut ws, event, close).await;
                    }
                    return;
                }
            },
            read = read_event(&mut ws) => match read {
                // A viewer's page is not flow-controlled by the session: too slow is
                // handled by closing it.
                Read::Event(ClientEvent::Pause | ClientEvent::Resume) => {}
                Read::Event(_) | Read::Invalid(_) => warn_read_only(&mut ws, &mut warned).await,
                Read::TooLarge | Read::Gone => return,
            },
            _ = ping.tick() => {
                if !send(&mut ws, Message::Ping(Default::default())).await {
                    return;
                }
            }
        }
    }
}

async fn warn_read_only(ws: &mut Socket, warned: &mut bool) {
    if !std::mem::replace(warned, true) {
        let warning = outcome::warning(
            WarningKind::ReadOnly,
            "this is a read-only view; input and resizes are ignored",
        );
        let _ = send(ws, warning).await;
    }
}
