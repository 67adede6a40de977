//! Raw request lines, headers and bodies, generated, sent over loopback to the real gateway
//! binary: whatever arrives, the process must not panic, and it must answer or close.
//!
//! The binary runs as a child rather than in-process: an in-process gateway shares the test's
//! panic hook and its panics would be caught as the test's own. Its stderr goes to a file, and
//! each case reads what was added: the panic hook writes before the unwinding drops the
//! connection, so a panic caused by a case is in the file by the time the case sees EOF.
//! (The log lines, on stdout, go to the same file.)

use std::fmt;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::fuzz_cases;
use crate::support::gateway::TEST_TOKEN;
use crate::support::watchdog::Watchdog;

/// Cases: each is one loopback connection to a debug build, about a millisecond, so the
/// property runs in a second or two (it found the `GET host:80` panic within its first).
const CASES: u32 = 1000;
/// Once a client has sent everything and shut its side, the gateway answers or closes
/// within this (in practice at once; the bound is for a loaded machine).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// The binary prints its listening line within this.
const START_WAIT: Duration = Duration::from_secs(20);
/// What the default panic hook prints; nothing else in the log says it.
const PANIC_MARK: &str = "panicked";

/// The gateway binary on `127.0.0.1:0`, its output in a file; killed by PID on drop.
struct GatewayProcess {
    child: Child,
    watchdog: Option<Watchdog>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    fn start() -> GatewayProcess {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("stderr.log");
        // Logs go to stdout, panics to stderr: both into one file, appending, so neither
        // overwrites the other.
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            // Plain text, no colours: the listening line is read back below.
            .args(["--log-format", "text", "--create-rate-limit", "0"])
            .arg("--state-dir")
            .arg(dir.path())
            .env("ALFRESCO_API_TOKEN", TEST_TOKEN)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("the log file"))
            .stderr(output)
            .spawn()
            .expect("start the gateway binary");
        let watchdog = Watchdog::spawn(&child.id().to_string(), None);
        let mut gateway = GatewayProcess {
            child,
            watchdog: Some(watchdog),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_WAIT;
        loop {
            let text = std::fs::read_to_string(&gateway.log).unwrap_or_default();
            let addr = text
                .split_once("listening on http://")
                .and_then(|(_, rest)| rest.split_once(';'))
                .and_then(|(addr, _)| addr.parse().ok());
            if let Some(addr) = addr {
                gateway.addr = addr;
                return gateway;
            }
            if let Some(status) = gateway.child.try_wait().expect("poll the gateway") {
                panic!("the gateway exited at start ({status}): {text}");
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not say where it listens: {text}"
            );
            // Readiness polling, bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        // The watchdog goes first: once the child is reaped its PID may be reused.
        self.watchdog.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the log gained since `offset`, which moves past it.
fn log_since(log: &Path, offset: &AtomicU64) -> String {
    let mut file = std::fs::File::open(log).expect("the gateway's log");
    let from = offset.load(Ordering::Acquire);
    file.seek(SeekFrom::Start(from)).expect("seek the log");
    let mut added = Vec::new();
    file.read_to_end(&mut added).expect("read the log");
    offset.store(from + added.len() as u64, Ordering::Release);
    String::from_utf8_lossy(&added).into_owned()
}

/// One request as bytes on the wire, shown escaped when a case fails.
#[derive(Clone)]
struct Wire(Vec<u8>);

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE", "get",
];
/// The start of every route, and some shapes next to them.
const ROUTES: [&str; 18] = [
    "",
    "/",
    "//",
    "/ws",
    "/create-session",
    "/healthz",
    "/readyz",
    "/metrics",
    "/favicon.ico",
    "/assets/",
    "/recordings",
    "/recordings/",
    "/sessions/",
    "/sessions/5b0e6f1c-9c1f-4a57-b2a2-3f1d2e4c5a6b/share/",
    "/view/",
    "/5b0e6f1c-9c1f-4a57-b2a2-3f1d2e4c5a6b",
    "/%2e%2e/",
    "/\u{e9}",
];
const HEADERS: [&str; 14] = [
    "Host",
    "Origin",
    "Authorization",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "If-None-Match",
    "Expect",
    "X-Forwarded-For",
    "Cookie",
];

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "example.com",
            "127.0.0.1",
            "[::1]",
            "",
            "evil.example",
            "a:b"
        ])
        .prop_map(str::to_owned),
        "[a-z0-9.-]{1,12}",
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,6}".prop_map(|p| format!(":{p}"))
    ]
}

fn path() -> impl Strategy<Value = String> {
    (select(ROUTES.to_vec()), "[A-Za-z0-9%./_~?=&:@+*-]{0,30}")
        .prop_map(|(route, rest)| format!("{route}{rest}"))
}

/// The four forms of RFC 9112 §3.2 (origin, absolute, authority, asterisk), and noise.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => path(),
        2 => (select(vec!["http", "https", "ws", "HTTP"]), host(), port(), path())
            .prop_map(|(scheme, host, port, path)| format!("{scheme}://{host}{port}{path}")),
        2 => (host(), port()).prop_map(|(host, port)| format!("{host}{port}")),
        1 => Just("*".to_owned()),
        1 => "[ -~]{0,30}",
    ]
}

fn request_line() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        select(METHODS.to_vec()).prop_map(str::to_owned),
        "[A-Z]{1,8}"
    ];
    let version = select(vec![
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "http/1.1",
        "HTTP/1.1 ",
        "",
    ]);
    prop_oneof![
        8 => (method, target(), version)
            .prop_map(|(m, t, v)| format!("{m} {t} {v}").into_bytes()),
        1 => vec(any::<u8>(), 0..64),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let known: Vec<String> = [
        "",
        " ",
        "evil.example:8022",
        "127.0.0.1",
        "[::1]:80",
        "http://evil.example",
        "null",
        "Bearer ",
        "bearer x",
        "application/json",
        "application/x-www-form-urlencoded; charset=x",
        "0",
        "-1",
        "18446744073709551616",
        "100",
        "chunked",
        "gzip, chunked",
        "Upgrade",
        "keep-alive, Upgrade",
        "websocket",
        "13",
        "dGhlIHNhbXBsZSBub25jZQ==",
        "*",
        "\"x\", W/\"y\"",
        "100-continue",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("Bearer {TEST_TOKEN}")])
    .collect();
    prop_oneof![
        4 => select(known).prop_map(String::into_bytes),
        2 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..40),
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(HEADERS.to_vec()).prop_map(str::to_owned),
        1 => "[!-~]{1,12}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => vec(any::<u8>(), 0..64),
        1 => Just(br#"{"hostname":"10.0.0.5","username":"u","password":"p"}"#.to_vec()),
        1 => Just(b"hostname=10.0.0.5&username=u&password=p".to_vec()),
    ]
}

/// A whole request: line, headers, maybe the blank line, maybe a body, with CRLF or LF.
fn request() -> impl Strategy<Value = Wire> {
    (
        request_line(),
        vec((header_name(), header_value()), 0..8),
        prop_oneof![9 => Just(true), 1 => Just(false)],
        select(vec!["\r\n", "\n"]),
        body(),
    )
        .prop_map(|(line, headers, end, eol, body)| {
            let mut wire = line;
            wire.extend_from_slice(eol.as_bytes());
            for (name, value) in headers {
                wire.extend_from_slice(name.as_bytes());
                wire.extend_from_slice(b": ");
                wire.extend_from_slice(&value);
                wire.extend_from_slice(eol.as_bytes());
            }
            if end {
                wire.extend_from_slice(eol.as_bytes());
            }
            wire.extend_from_slice(&body);
            Wire(wire)
        })
}

/// Sends one request, shuts the write side, and reads until the gateway closes.
fn exchange(addr: SocketAddr, wire: &Wire) -> Result<(), TestCaseError> {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    stream.set_write_timeout(Some(ANSWER_WAIT)).unwrap();
    // The gateway may answer (400) and close before it has read everything.
    let _ = stream.write_all(&wire.0);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(TestCaseError::fail(format!(
                "neither answered nor closed within {ANSWER_WAIT:?}"
            )))
        }
        // Reset after an early answer: closed, which is all this asks.
        Err(_) => Ok(()),
    }
}

#[test]
fn raw_requests_never_panic_the_gateway() {
    let mut gateway = GatewayProcess::start();
    let (addr, log) = (gateway.addr, gateway.log.clone());
    let seen = AtomicU64::new(0);
    let log_in_cases = log.clone();
    fuzz_cases(CASES, request, move |wire| {
        exchange(addr, &wire)?;
        let added = log_since(&log_in_cases, &seen);
        prop_assert!(
            !added.contains(PANIC_MARK),
            "the gateway panicked: {}",
            added
        );
        Ok(())
    });
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "the gateway is still running"
    );
    // And still serving: nothing the cases sent wedged it.
    let mut health = TcpStream::connect(addr).expect("connect to the gateway");
    health.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    health
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    health
        .read_to_string(&mut answer)
        .expect("a /healthz answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Whatever a case's check could have missed is in the file now.
    let whole = std::fs::read_to_string(&log).unwrap();
    assert!(!whole.contains(PANIC_MARK), "the gateway panicked: {whole}");
    assert!(
        whole.contains("listening on"),
        "the log is the gateway's: {whole}"
    );
}
