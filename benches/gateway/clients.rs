//! The clients: a direct libssh2 shell, the OpenSSH client, and the gateway over its
//! WebSocket, behind one `Shell` trait.

use crate::*;

/// Direct: a libssh2 PTY shell driven from this process, like the gateway's bridge thread.
pub(crate) struct Direct {
    pub(crate) _session: Session,
    pub(crate) channel: Channel,
    pub(crate) buf: Vec<u8>,
}

impl Direct {
    pub(crate) fn open(addr: SocketAddr, key: &str) -> Direct {
        let tcp = TcpStream::connect_timeout(&addr, WAIT).expect("direct: connect to sshd");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let mut session = Session::new().expect("direct: libssh2 session");
        session.set_tcp_stream(tcp);
        for dir in [MethodType::CryptCs, MethodType::CryptSc] {
            let _ = session.method_pref(dir, CIPHERS);
        }
        // Every blocking libssh2 call fails after this instead of hanging.
        session.set_timeout(WAIT.as_millis() as u32);
        session.handshake().expect("direct: SSH handshake");
        session
            .userauth_pubkey_memory(sshd::TEST_USER, None, key, None)
            .expect("direct: key authentication");
        let mut channel = session.channel_session().expect("direct: channel");
        channel
            .handle_extended_data(ExtendedData::Merge)
            .expect("direct: merge stderr");
        let _ = channel.setenv("LANG", "C.UTF-8");
        channel
            .request_pty(TERM, None, Some((COLS.into(), ROWS.into(), 0, 0)))
            .expect("direct: PTY");
        channel.shell().expect("direct: shell");
        Direct {
            _session: session,
            channel,
            buf: vec![0; 64 << 10],
        }
    }
}

impl Shell for Direct {
    fn send(&mut self, text: &str) {
        self.channel
            .write_all(text.as_bytes())
            .and_then(|()| self.channel.flush())
            .expect("direct: write to the shell");
    }

    fn recv(&mut self, out: &mut Vec<u8>) {
        let limit = Instant::now() + WAIT;
        loop {
            let n = self
                .channel
                .read(&mut self.buf)
                .unwrap_or_else(|e| panic!("direct: read from the shell: {e}"));
            if n > 0 {
                out.extend_from_slice(&self.buf[..n]);
                return;
            }
            assert!(!self.channel.eof(), "direct: the shell closed");
            assert!(Instant::now() < limit, "direct: no output within {WAIT:?}");
        }
    }
}

/// The gateway: `POST /create-session`, then the WebSocket, driven by a current-thread
/// runtime on the calling thread (no cross-thread wake-up in the timed path).
pub(crate) struct Gw {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) ws: WebSocketStream<tokio::net::TcpStream>,
}

impl Gw {
    pub(crate) fn open(rt: Arc<Runtime>, addr: SocketAddr, body: &Value) -> Gw {
        let ws = rt.block_on(ws_open(addr, body));
        Gw { rt, ws }
    }

    pub(crate) fn close(mut self) {
        self.rt.block_on(async {
            let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
        });
    }
}

impl Shell for Gw {
    fn send(&mut self, text: &str) {
        // As the page sends keystrokes: a binary frame of UTF-8.
        let frame = Message::binary(text.as_bytes().to_vec());
        self.rt.block_on(async {
            tokio::time::timeout(WAIT, self.ws.send(frame))
                .await
                .expect("gateway: send in time")
                .expect("gateway: send");
        });
    }

    fn recv(&mut self, out: &mut Vec<u8>) {
        self.rt.block_on(ws_recv(&mut self.ws, out));
    }
}

pub(crate) fn current_thread_runtime() -> Arc<Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
    )
}

/// Creates a session and starts it on a new WebSocket; the prompt is still to come.
pub(crate) async fn ws_open(
    addr: SocketAddr,
    body: &Value,
) -> WebSocketStream<tokio::net::TcpStream> {
    let work = async {
        let id = create_session(addr, body).await;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("gateway: connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        // A small read buffer, as the gateway uses: tungstenite zero-fills the whole buffer
        // before each read, and a browser pays no such cost, so the default 128 KiB would
        // bill the gateway for the benchmark client's memsets.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024);
        let (mut ws, response) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/ws"),
            stream,
            Some(config),
        )
        .await
        .expect("gateway: WebSocket upgrade");
        assert_eq!(response.status(), 101);
        let start = json!(["start-session", {"id": id, "cols": COLS, "rows": ROWS}]);
        ws.send(Message::text(start.to_string()))
            .await
            .expect("gateway: send start-session");
        ws
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("gateway: session opened in time")
}

/// Appends the next binary frame to `out`; skips `connection-ready`, panics on errors.
pub(crate) async fn ws_recv(ws: &mut WebSocketStream<tokio::net::TcpStream>, out: &mut Vec<u8>) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("gateway: no output within {WAIT:?}"));
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                out.extend_from_slice(&bytes);
                return;
            }
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text).expect("text frames are JSON");
                match event[0].as_str() {
                    Some("connection-ready") => {}
                    Some("warning") => eprintln!("gateway warning: {text}"),
                    _ => panic!("gateway: unexpected event {text}"),
                }
            }
            Some(Ok(Message::Close(frame))) => panic!("gateway: socket closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("gateway: WebSocket error: {e}"),
            None => panic!("gateway: WebSocket ended"),
        }
    }
}

/// Runs `job` on every item, at most `limit` at once, each as its own task on the current
/// runtime so that a panic (a failed wait, a closed socket) fails that item alone: its
/// `Err` holds the panic message. In the items' order.
pub(crate) async fn bounded<I, F, Fut>(
    items: impl IntoIterator<Item = I>,
    limit: usize,
    job: F,
) -> Vec<Result<Fut::Output, String>>
where
    F: Fn(I) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let permits = permits.clone();
            let work = job(item);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                work.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| {
            match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".to_owned()),
                Err(e) => e.to_string(),
            }
        }));
    }
    out
}

/// The successes, and the error messages.
pub(crate) fn split_results<T>(results: Vec<Result<T, String>>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

/// `POST /create-session` with a JSON body; returns the id.
pub(crate) async fn create_session(addr: SocketAddr, body: &Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("gateway: connect for create-session");
    let request = format!(
        "POST /create-session HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {BENCH_TOKEN}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("gateway: send create-session");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("gateway: read create-session answer");
    let json = json_body(&response);
    json["id"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "create-session answered {}",
                String::from_utf8_lossy(&response)
            )
        })
        .to_owned()
}

/// The JSON object in an HTTP answer, whether sent with a length or chunked.
pub(crate) fn json_body(response: &[u8]) -> Value {
    let text = String::from_utf8_lossy(response);
    let (start, end) = (text.find('{'), text.rfind('}'));
    match (start, end) {
        (Some(s), Some(e)) if s < e => serde_json::from_str(&text[s..=e])
            .unwrap_or_else(|err| panic!("bad JSON in {text:?}: {err}")),
        _ => panic!("no JSON in {text:?}"),
    }
}

/// The OpenSSH client, `ssh -tt` with key auth, its stdout read by a thread.
pub(crate) struct OpenSsh {
    /// Held for its drop, which stops the process.
    pub(crate) _child: Owned,
    pub(crate) stdin: ChildStdin,
    pub(crate) output: mpsc::Receiver<Vec<u8>>,
}

impl OpenSsh {
    pub(crate) fn open(addr: SocketAddr, key_file: &Path) -> OpenSsh {
        let mut child = Command::new("ssh")
            .arg("-tt")
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(key_file)
            .args(["-p", &addr.port().to_string()])
            .args(["-e", "none"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", &format!("Ciphers={CIPHERS}")])
            .arg(format!("{}@{}", sshd::TEST_USER, addr.ip()))
            .env("TERM", TERM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ssh (openssh-client)");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, output) = mpsc::sync_channel(64);
        thread::spawn(move || {
            let mut buf = vec![0; 64 << 10];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OpenSsh {
            _child: Owned::new(child),
            stdin,
            output,
        }
    }
}

impl Shell for OpenSsh {
    fn send(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("ssh: write to stdin");
    }

    fn recv(&mut self, out: &mut Vec<u8>) {
        match self.output.recv_timeout(WAIT) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => panic!("ssh -tt: no output within {WAIT:?} ({e})"),
        }
    }
}
