//! `Term`: a WebSocket client for `/ws` that keeps the terminal output it receives and
//! reads events with every wait bounded by `WAIT`.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Stream, WAIT};

/// The test user's prompt (tests/setup-test-user.sh).
pub const PROMPT: &str = "alfresco-test$ ";

#[derive(Debug)]
pub enum Event {
    /// A text frame `[name, data]`.
    Named(String, Value),
    /// A binary frame (also appended to `Term::output`).
    Output(Vec<u8>),
    /// The server's close frame code, or `None` when the socket ended without one.
    Closed(Option<u16>),
}

pub struct Term {
    ws: WebSocketStream<Stream>,
    /// All terminal output received so far.
    pub output: Vec<u8>,
    /// How much of `output` `wait_for` has already matched.
    seen: usize,
}

impl Term {
    /// Upgrades `stream` (plain or TLS, already connected) at `url` (`ws://…` or `wss://…`).
    pub async fn connect(stream: Stream, url: &str) -> Term {
        let (ws, response) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("websocket upgrade");
        assert_eq!(response.status(), 101);
        Term {
            ws,
            output: Vec::new(),
            seen: 0,
        }
    }

    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send to the gateway");
    }

    pub async fn send_event(&mut self, event: &str, data: Value) {
        self.send(Message::text(json!([event, data]).to_string()))
            .await;
    }

    pub async fn start(&mut self, id: &str, cols: u16, rows: u16) {
        self.send_event(
            "start-session",
            json!({"id": id, "cols": cols, "rows": rows}),
        )
        .await;
    }

    pub async fn input(&mut self, text: &str) {
        self.send_event("ssh-input", json!(text)).await;
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) {
        self.send_event("resize", json!({"cols": cols, "rows": rows}))
            .await;
    }

    /// The next event, within `WAIT`. Pings and pongs are skipped.
    pub async fn next(&mut self) -> Event {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("an event from the gateway in time");
            return match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("text frames are JSON");
                    let name = value[0].as_str().expect("event name").to_owned();
                    Event::Named(name, value[1].clone())
                }
                Some(Ok(Message::Binary(bytes))) => {
                    self.output.extend_from_slice(&bytes);
                    Event::Output(bytes.to_vec())
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Event::Closed(None),
            };
        }
    }

    /// Reads until the named event, keeping output; panics on any other named event or a close.
    pub async fn expect(&mut self, name: &str) -> Value {
        loop {
            match self.next().await {
                Event::Named(n, data) if n == name => return data,
                Event::Named(n, data) if n == "warning" => eprintln!("warning: {data}"),
                Event::Named(n, data) => panic!(
                    "expected {name}, got {n} {data}; output so far: {}",
                    self.text()
                ),
                Event::Output(_) => {}
                Event::Closed(code) => panic!(
                    "expected {name}, socket closed ({code:?}); output: {}",
                    self.text()
                ),
            }
        }
    }

    /// Waits for `connection-ready` and then the prompt.
    pub async fn ready(&mut self) -> Value {
        let data = self.expect("connection-ready").await;
        self.wait_for(PROMPT).await;
        data
    }

    /// Expects `ssh-error` with `code`, then the close frame; returns (message, close code).
    pub async fn expect_error(&mut self, code: &str) -> (String, Option<u16>) {
        let data = self.expect("ssh-error").await;
        assert_eq!(data["code"], code, "ssh-error {data}");
        let message = data["message"].as_str().expect("message").to_owned();
        (message, self.expect_close().await)
    }

    /// Reads (keeping output) until the socket closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Event::Closed(code) => return code,
                Event::Named(n, data) if n == "warning" => eprintln!("warning: {data}"),
                Event::Named(n, data) => panic!("expected a close, got {n} {data}"),
                Event::Output(_) => {}
            }
        }
    }

    /// Reads until the output after the last match contains `needle`; returns that output.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        // Where the search resumes: only new bytes (and the tail a match could straddle)
        // are searched again, so waiting through megabytes of output stays linear.
        let mut from = self.seen;
        loop {
            if let Some(pos) = find(&self.output[from..], needle.as_bytes()) {
                let start = self.seen;
                self.seen = from + pos + needle.len();
                return String::from_utf8_lossy(&self.output[start..self.seen]).into_owned();
            }
            from = from.max((self.output.len() + 1).saturating_sub(needle.len()));
            match self.next().await {
                Event::Output(_) => {}
                Event::Named(n, data) if n == "warning" => eprintln!("warning: {data}"),
                other => panic!(
                    "waiting for {needle:?}: got {other:?}; output: {}",
                    self.text()
                ),
            }
        }
    }

    /// Runs `command` in the shell and returns what it printed between two markers.
    pub async fn run(&mut self, command: &str) -> String {
        let marker = format!("m{}", std::process::id() ^ self.output.len() as u32);
        // The markers are split in the typed line so the echo of the command cannot match.
        self.input(&format!(
            "echo {marker}''-start; {command}; echo {marker}''-end\r"
        ))
        .await;
        self.wait_for(&format!("{marker}-start\r\n")).await;
        let out = self.wait_for(&format!("{marker}-end\r\n")).await;
        out[..out.len() - format!("{marker}-end\r\n").len()].to_owned()
    }

    /// Reads whatever arrives for `duration` (output is kept); returns the bytes read.
    pub async fn read_for(&mut self, duration: std::time::Duration) -> usize {
        let before = self.output.len();
        let _ = tokio::time::timeout(duration, async {
            loop {
                if let Event::Closed(code) = self.next().await {
                    panic!("socket closed ({code:?}) while reading");
                }
            }
        })
        .await;
        self.output.len() - before
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Closes the socket from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the TCP connection without a close handshake (a vanished client).
    pub fn vanish(self) {
        drop(self);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Term {
    /// Pastes `len` bytes of `byte` with no newline, as a browser sends a paste: `chunk`-byte
    /// `ssh-input` frames as fast as the socket takes them. Output that arrives meanwhile is
    /// read (and kept) between frames, so an echoing terminal cannot stall the sender.
    pub async fn paste(&mut self, byte: u8, len: usize, chunk: usize) {
        assert!(
            byte.is_ascii_graphic(),
            "one byte per character on the wire"
        );
        let frame = String::from_utf8(vec![byte; chunk]).unwrap();
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk);
            let message = Message::text(json!(["ssh-input", &frame[..n]]).to_string());
            tokio::time::timeout(WAIT, self.ws.send(message))
                .await
                .expect("the gateway takes a paste frame in time")
                .expect("send a paste frame");
            left -= n;
            self.drain_ready().await;
        }
    }

    /// Reads every event that is already waiting, without waiting for more.
    async fn drain_ready(&mut self) {
        use futures_util::FutureExt;
        while let Some(message) = self.ws.next().now_or_never() {
            match message {
                Some(Ok(Message::Binary(bytes))) => self.output.extend_from_slice(&bytes),
                Some(Ok(Message::Text(text))) => panic!("event during a paste: {text}"),
                Some(Ok(Message::Close(frame))) => panic!("closed during a paste: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error during a paste: {e}"),
                None => panic!("socket ended during a paste"),
            }
        }
    }
}
