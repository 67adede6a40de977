//! The socket vocabulary every task of `ws` shares: reading the next event, sending with a
//! deadline, and closing with a last word. These helpers decide nothing about a session:
//! `read_event` says what arrived, and each caller (the first steps, the live session, a
//! viewer) applies its own policy to it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Socket;
use super::outcome::{self, Outcome, WarningKind};
use super::protocol::{self, ClientEvent, ProtocolError};

/// A client that takes no bytes for this long is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings keep proxies from closing an idle socket and find dead clients.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);
/// How long the closing handshake may take before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the client sent next, control frames aside.
pub(super) enum Read {
    /// A text event, or binary input (`Input`, possibly empty).
    Event(ClientEvent),
    /// A text frame that is no valid event; its reason names no content.
    Invalid(ProtocolError),
    /// A message over `MAX_MESSAGE`; tungstenite reads nothing more from this socket.
    TooLarge,
    /// The client closed the socket, or it failed.
    Gone,
}

/// Reads until the next data frame or the end of the socket. Ping, pong and raw frames are
/// skipped here (tungstenite answers pings itself), so no caller handles them. Cancel-safe:
/// a frame is decoded only after it was taken whole, and nothing else is held.
pub(super) async fn read_event(ws: &mut Socket) -> Read {
    loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(_))) => return Read::TooLarge,
            Some(Err(_)) | None => return Read::Gone,
        };
        match message {
            Message::Text(text) => {
                return match protocol::decode_text(&text) {
                    Ok(event) => Read::Event(event),
                    Err(e) => Read::Invalid(e),
                };
            }
            Message::Binary(bytes) => return Read::Event(protocol::decode_binary(bytes)),
            Message::Close(_) => return Read::Gone,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// Tells the client an unknown event was ignored: a newer page may speak events this
/// gateway does not know, and that must not end its session.
pub(super) async fn warn_unknown(ws: &mut Socket, name: &str) {
    tracing::debug!(event = name, "unknown event ignored");
    let warning = outcome::warning(WarningKind::UnknownEvent, "unknown event ignored");
    let _ = send(ws, warning).await;
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
