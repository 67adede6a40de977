//! The started binary, as another process on its host sees it: it can leave no core dump,
//! its log at `--log trace` holds no typed input or capability, and its memory (read
//! through /proc/<pid>/mem: the tests run as root, so the undumpable binary stays readable)
//! holds as few copies of a private key as we can manage.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::WAIT;
use crate::support::gateway::TEST_TOKEN;
use crate::support::key_body;
use crate::support::sshd::Sshd;
use crate::support::term::Term;

/// The gateway binary, stopped by its PID when dropped; its log lines arrive on `lines`.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// What `wait_for` has read so far.
    log: String,
}

impl Binary {
    /// Starts it on a free loopback port with `--log log`; returns it and its address.
    fn start(state_dir: &std::path::Path, log: &str) -> (Binary, String) {
        Self::start_with(state_dir, log, &[])
    }

    /// `start`, with more flags.
    fn start_with(state_dir: &std::path::Path, log: &str, extra: &[&str]) -> (Binary, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--resume-grace",
                "60s",
                "--log",
                log,
            ])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("ALFRESCO_API_TOKEN", TEST_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Ends when stdout closes, at the kill in Drop at the latest.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut binary = Binary {
            child,
            lines,
            log: String::new(),
        };
        let line = binary.wait_for("listening on http://");
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .expect("the address")
            .to_owned();
        (binary, addr)
    }

    /// The first log line with `needle`; every line read meanwhile is kept in `log`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?} in time"));
            self.log.push_str(&line);
            self.log.push('\n');
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Occurrences of `needle` in the process's readable memory.
    fn count_in_memory(&self, needle: &[u8]) -> usize {
        let pid = self.child.id();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut count = 0;
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((start, end)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            else {
                continue;
            };
            // Writable private mappings are where heap and stacks live; code and the
            // binary's read-only data cannot hold a copy made at run time.
            if !perms.starts_with("rw") {
                continue;
            }
            let mut region = vec![0; (end - start) as usize];
            // Some mappings (guard pages, vvar) cannot be read; they hold nothing of ours.
            if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
                continue;
            }
            count += region
                .windows(needle.len())
                .filter(|w| *w == needle)
                .count();
        }
        count
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(addr: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

async fn create(addr: &str, body: &serde_json::Value) -> String {
    let (status, value) = create_as(addr, TEST_TOKEN, body).await;
    assert_eq!(status, 201, "{value}");
    value["id"].as_str().expect("an id").to_owned()
}

/// Posts create-session with `token`; the status code and the JSON answer.
async fn create_as(addr: &str, token: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let mut stream = connect(addr).await;
    let head = format!(
        "POST /create-session HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let json = answer.split("\r\n\r\n").nth(1).expect("a body");
    let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_token_file_again() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "ci:first-token-0123456789abcdef\n").unwrap();
    let file = tokens.to_str().unwrap();
    let (mut binary, addr) = Binary::start_with(dir.path(), "info", &["--api-token-file", file]);
    let body = crate::support::password_body(&sshd);
    assert_eq!(
        create_as(&addr, "first-token-0123456789abcdef", &body)
            .await
            .0,
        201
    );
    std::fs::write(&tokens, "ci:second-token-0123456789abcdef\n").unwrap();
    let pid = rustix::process::Pid::from_raw(binary.child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    binary.wait_for("API tokens reloaded");
    assert_eq!(
        create_as(&addr, "first-token-0123456789abcdef", &body)
            .await
            .0,
        401
    );
    assert_eq!(
        create_as(&addr, "second-token-0123456789abcdef", &body)
            .await
            .0,
        201
    );
    assert!(!binary.log.contains("second-token"), "no token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_copies_in_memory() {
    let sshd = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let (mut binary, addr) = Binary::start(state.path(), "info");
    let keys = sshd.keys();
    // A base64 line from the middle of the key: it appears nowhere but in the key.
    let line = keys.ed25519.lines().nth(2).unwrap().to_owned();
    let before = binary.count_in_memory(line.as_bytes());

    let id = create(&addr, &key_body(&sshd, &keys.ed25519, None)).await;
    let pending = binary.count_in_memory(line.as_bytes());

    let mut term = Term::connect(Box::new(connect(&addr).await), &format!("ws://{addr}/ws")).await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    let live = binary.count_in_memory(line.as_bytes());
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    term.close().await;
    binary.wait_for("session ended");
    let after = binary.count_in_memory(line.as_bytes());
    eprintln!(
        "copies of a key line: before {before}, pending {pending}, live {live}, after {after}"
    );
    assert_eq!(before, 0);
    // While pending, the `Secret` alone: before the create-session body was parsed with raw
    // values, serde_json's scratch buffer left a second copy, freed unwiped.
    assert!(pending <= 1, "{pending} copies while pending");
    // After the logout the `Secret` is wiped; what remains is beyond reach without unsafe
    // code: the ssh2 crate's CString copy for libssh2, and libssh2's and OpenSSL's own
    // buffers (docs/SECURITY.md). Reuse of freed memory can only lower these counts.
    assert!(after <= 2, "{after} copies after the logout");
}

/// Its core limit is 0 before it reads anything. (It is also undumpable, `PR_SET_DUMPABLE`
/// 0, which `main`'s unit test checks: /proc shows that to root only as file ownership.)
/// Before the fix the hard limit was whatever the parent's was.
#[test]
fn the_running_binary_leaves_no_core_dump() {
    let state = tempfile::tempdir().unwrap();
    let (binary, _) = Binary::start(state.path(), "info");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", binary.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in {limits}"));
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(fields.get(4..6), Some(&["0", "0"][..]), "{core}");
}

/// `--log trace`, naming tungstenite too, as the binary's own set-up applies it: no typed
/// input, full session id or resume token in what it writes (the in-process version, with
/// more cases, is `secrets::credentials_are_never_logged_or_echoed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_no_keystrokes_at_trace() {
    let sshd = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let (mut binary, addr) = Binary::start(state.path(), "trace,tungstenite=trace");
    let id = create(&addr, &crate::support::password_body(&sshd)).await;
    let mut term = Term::connect(Box::new(connect(&addr).await), &format!("ws://{addr}/ws")).await;
    term.start(&id, 80, 24).await;
    let ready = term.ready().await;
    let token = ready["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    let typed = "typed-marker-93be41";
    term.input(&format!("echo {typed}\r")).await;
    term.wait_for(&format!("{typed}\r\n")).await;
    // Logged at DEBUG: shows the verbose levels are written.
    term.send_event("no-such-event", serde_json::json!({}))
        .await;
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    term.close().await;
    binary.wait_for("session ended");
    let log = binary.log.clone();
    assert!(log.contains("unknown event ignored"), "at trace:\n{log}");
    assert!(!log.contains(typed), "typed input in the log:\n{log}");
    assert!(!log.contains(&id[8..]), "the full session id in the log");
    assert!(!log.contains(&token[8..]), "the resume token in the log");
}
