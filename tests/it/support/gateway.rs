//! The gateway in-process on an ephemeral loopback port, and a minimal HTTP/1.1 client for
//! it (one request per connection, `Connection: close`, every read bounded by `WAIT`). A
//! gateway started with `start_tls` is spoken to over TLS by the same methods.

use std::net::SocketAddr;
use std::time::Duration;

use alfresco_ssh::{Config, Handle, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use super::term::Term;
use super::tls::{TestCert, server_name};
use super::{Stream, WAIT};

/// The API token every test gateway accepts (tests that check tokens set their own),
/// named `test`: it creates sessions and sees its own.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";
/// The admin token of every test gateway, named `ops`: all sessions, recordings, metrics.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

pub struct Gateway {
    pub addr: SocketAddr,
    client: Client,
    pub handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Speaks the gateway's HTTP and WebSocket contract to an address. A `Gateway` is one too
/// (through `Deref`); a bare `Client` reaches a gateway whose handle is gone (being stopped).
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// Set for a gateway started with `start_tls`: connections then speak TLS.
    tls: Option<TlsConnector>,
}

impl std::ops::Deref for Gateway {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Client {
    /// `https` for a gateway started with `start_tls`, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// A new client connection, through the TLS handshake for a TLS gateway.
    pub async fn connect(&self) -> Stream {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let handshake = connector.connect(server_name(), tcp);
                let tls = tokio::time::timeout(WAIT, handshake)
                    .await
                    .expect("TLS handshake in time")
                    .expect("TLS handshake");
                Box::new(tls)
            }
        }
    }

    /// Sends one raw request (`head` without the final blank line) and reads the response.
    pub async fn raw(&self, head: &str, body: &[u8]) -> HttpResponse {
        let mut stream = self.connect().await;
        let request = format!(
            "{head}\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // The server may answer (e.g. 413) before reading all of a large body.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("response in time")
            .ok();
        parse_response(&response)
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        self.raw(&format!("GET {path} HTTP/1.1"), b"").await
    }

    /// A GET with the test API token.
    pub async fn get_authorized(&self, path: &str) -> HttpResponse {
        self.raw(
            &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {TEST_TOKEN}"),
            b"",
        )
        .await
    }

    /// A request with `token` (if any) and a JSON body (if any).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> HttpResponse {
        let mut head = format!("{method} {path} HTTP/1.1");
        if let Some(token) = token {
            head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            head.push_str("\r\nContent-Type: application/json");
        }
        self.raw(&head, body.as_bytes()).await
    }

    /// A GET with `token`.
    pub async fn get_as(&self, path: &str, token: &str) -> HttpResponse {
        self.call("GET", path, Some(token), None).await
    }

    /// A POST with the test API token.
    pub async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> HttpResponse {
        self.raw(
            &format!("POST {path} HTTP/1.1\r\nContent-Type: {content_type}\r\nAuthorization: Bearer {TEST_TOKEN}"),
            body,
        )
        .await
    }

    pub async fn create(&self, body: &Value) -> HttpResponse {
        self.post(
            "/create-session",
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
    }

    /// Creates a session and returns its id, asserting the 201 answer's shape.
    pub async fn create_id(&self, body: &Value) -> String {
        let res = self.create(body).await;
        assert_eq!(res.status, 201, "create-session: {}", res.text());
        let json = res.json();
        let id = json["id"].as_str().expect("id").to_owned();
        assert_eq!(
            json["url"].as_str().unwrap(),
            format!("{}://{}/{id}", self.scheme(), self.addr)
        );
        assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));
        id
    }

    /// A WebSocket on `/ws`, not yet started.
    pub async fn ws(&self) -> Term {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}/ws", self.addr);
        Term::connect(self.connect().await, &url).await
    }

    /// Creates a session from `body` and starts it on a new socket at `cols`×`rows`.
    pub async fn open(&self, body: &Value, cols: u16, rows: u16) -> Term {
        let id = self.create_id(body).await;
        let mut term = self.ws().await;
        term.start(&id, cols, rows).await;
        term
    }
}

pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error.code` of a JSON error answer.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.json()))
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Gateway {
    /// A client that outlives this handle (to probe a gateway being stopped).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts the gateway serving HTTPS and WSS with `cert`; the clients trust it.
    pub async fn start_tls(cert: &TestCert) -> Gateway {
        let server = cert.server_config();
        let mut gw = Self::start_with(|c| c.tls = Some(server)).await;
        gw.client.tls = Some(cert.connector());
        gw
    }

    pub async fn start() -> Gateway {
        Self::start_with(|_| {}).await
    }

    /// Starts the gateway recording sessions into `dir` (made as `--record-dir` makes it),
    /// with or without `--record-input`.
    pub async fn start_recording(dir: &std::path::Path, record_input: bool) -> Gateway {
        alfresco_ssh::record::prepare_dir(dir).expect("the recording directory");
        let settings = alfresco_ssh::record::RecordSettings {
            dir: dir.to_owned(),
            record_input,
        };
        Self::start_with(|c| c.record = Some(settings)).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::new(addr);
        config.api_tokens = std::sync::Arc::new(vec![
            alfresco_ssh::config::ApiToken {
                name: "test".into(),
                token: alfresco_ssh::secret::Secret::new(TEST_TOKEN.into()),
                admin: false,
            },
            alfresco_ssh::config::ApiToken {
                name: "ops".into(),
                token: alfresco_ssh::secret::Secret::new(ADMIN_TOKEN.into()),
                admin: true,
            },
        ]);
        // Tests that stop a gateway with live sessions do not wait for a drain unless
        // they ask for one.
        config.drain_timeout = Duration::ZERO;
        // Nor for a client to resume: a session ends when its socket does, unless a test
        // turns resume on.
        config.resume_grace = None;
        configure(&mut config);
        let server = Server::new(&config).expect("the gateway starts");
        let handle = server.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            client: Client { addr, tls: None },
            handle,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until no session is live, no bridge thread runs and no request waits on a
    /// session: nothing leaked.
    pub async fn assert_idle(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (live, threads) = (self.handle.live(), self.handle.bridge_threads());
            let waiters = self.handle.waiters();
            if live == 0 && threads == 0 && waiters == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {live} live sessions, {threads} bridge threads and {waiters} waiters"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts the server down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).ok();
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}
