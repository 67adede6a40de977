//! `alfresco-ssh session …`, the started binary, against the in-process gateway and the real
//! sshd: what a CI job sees on stdout and in the exit status, the retry bound for a gateway
//! that is down or drops connections, TLS verification, and refusals.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::support::WAIT;
use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::sshd::{self, Sshd};
use crate::support::tls::TestCert;

/// Variables the client reads, removed so the tests' own CI cannot change what they see.
const CLIENT_VARS: [&str; 5] = [
    "ALFRESCO_TOKEN",
    "ALFRESCO_GATEWAY",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "SSH_PASSWORD",
];

/// `alfresco-ssh session <args>` with only `env` among the client's variables.
pub fn session(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"));
    cmd.arg("session").args(args);
    for var in CLIENT_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// A started `session` command: its stdout line by line, stopped by its PID when dropped.
pub struct Running {
    child: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Every stdout line read so far.
    pub stdout: Vec<String>,
}

/// How a command ended.
#[derive(Debug)]
pub struct Ended {
    pub code: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: String,
    /// From the start to the end of its stdout.
    pub took: Duration,
}

// `line` and `line_with` serve the tests that follow a session as it runs.
#[allow(dead_code)]
impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        // Both readers end when the process's pipes close, at the kill in Drop at the latest.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
            stdout: Vec::new(),
        }
    }

    /// The next stdout line, within `WAIT`.
    pub async fn line(&mut self) -> String {
        let line = tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no line in time; so far: {:?}", self.stdout))
            .unwrap_or_else(|| panic!("stdout closed; so far: {:?}", self.stdout));
        self.stdout.push(line.clone());
        line
    }

    /// Reads stdout lines until one contains `needle`; returns it.
    pub async fn line_with(&mut self, needle: &str) -> String {
        // Bounded: a session prints a handful of lines.
        for _ in 0..100 {
            let line = self.line().await;
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no line with {needle:?} in {:?}", self.stdout)
    }

    /// Waits (within `bound`) for the command to end.
    pub async fn ended_within(mut self, bound: Duration, started: Instant) -> Ended {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.stdout.push(line),
                Ok(None) => break,
                Err(_) => panic!(
                    "the command did not end within {bound:?}; stdout: {:?}",
                    self.stdout
                ),
            }
        }
        let took = started.elapsed();
        // Its stdout closed: the process is exiting, so this wait is short.
        let status = self.child.wait().expect("the exit status");
        let stderr = self.stderr.take().unwrap().join().unwrap();
        Ended {
            code: status.code(),
            stdout: std::mem::take(&mut self.stdout),
            stderr,
            took,
        }
    }

    pub async fn ended(self) -> Ended {
        self.ended_within(WAIT, Instant::now()).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to its end within `WAIT`.
pub async fn run(cmd: Command) -> Ended {
    let started = Instant::now();
    Running::start(cmd).ended_within(WAIT, started).await
}

fn http(gw: &Gateway) -> String {
    format!("http://{}", gw.addr)
}

fn port(sshd: &Sshd) -> String {
    sshd.addr().port().to_string()
}

/// `create` arguments for the test user with the password in `SSH_PASSWORD`.
fn create_args<'a>(gateway: &'a str, port: &'a str) -> Vec<&'a str> {
    vec![
        "create",
        "--gateway",
        gateway,
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--user",
        sshd::TEST_USER,
        "--password-env",
        "SSH_PASSWORD",
    ]
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The URL printed on its own line, then the GitHub annotation; the link really opens a
/// shell on the target (the body carried host, port, user and password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_prints_the_url_and_the_github_notice() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (gateway, port) = (http(&gw), port(&sshd));
    let password = sshd::test_password();
    let env = [
        ("ALFRESCO_TOKEN", TEST_TOKEN),
        ("SSH_PASSWORD", password.as_str()),
        ("GITHUB_ACTIONS", "true"),
    ];
    let ended = run(session(&create_args(&gateway, &port), &env)).await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    let [url, notice] = &ended.stdout[..] else {
        panic!("two lines: {:?}", ended.stdout)
    };
    let id = url
        .strip_prefix(&format!("{gateway}/"))
        .unwrap_or_else(|| panic!("a session URL: {url}"));
    assert_eq!(notice, &format!("::notice title=alfresco-ssh::{url}"));
    assert!(!ended.stderr.contains(&password), "{}", ended.stderr);
    assert_eq!(gw.handle.pending(), 1);

    let mut term = gw.ws().await;
    term.start(id, 80, 24).await;
    term.ready().await;
    assert_eq!(term.run("whoami").await, format!("{}\r\n", sshd::TEST_USER));
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
}

/// `--json` prints the API's answer alone on stdout; the GitLab line goes to stderr then.
/// A key file works as the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_json_with_a_key_file() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.keys().ed25519).unwrap();
    let (gateway, port) = (http(&gw), port(&sshd));
    let key = key.to_str().unwrap();
    let args = [
        "create",
        "--gateway",
        &gateway,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        sshd::TEST_USER,
        "--key-file",
        key,
        "--json",
    ];
    let env = [("ALFRESCO_TOKEN", TEST_TOKEN), ("GITLAB_CI", "true")];
    let ended = run(session(&args, &env)).await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    let [json] = &ended.stdout[..] else {
        panic!("one line: {:?}", ended.stdout)
    };
    let answer: serde_json::Value = serde_json::from_str(json).unwrap();
    let id = answer["id"].as_str().unwrap();
    assert!(
        ended
            .stderr
            .contains(&format!(">>> alfresco-ssh: open {gateway}/{id}"))
    );

    let mut term = gw.ws().await;
    term.start(id, 80, 24).await;
    term.ready().await;
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
}

/// A wrong token is the gateway's refusal: 206 with its code, at once, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_exits_206() {
    let gw = Gateway::start().await;
    let gateway = http(&gw);
    let env = [
        ("ALFRESCO_TOKEN", "not-the-token"),
        ("SSH_PASSWORD", "hunter2-password"),
    ];
    let ended = run(session(&create_args(&gateway, "22"), &env)).await;
    assert_eq!(ended.code, Some(206), "{ended:?}");
    assert!(ended.stderr.contains("401"), "{}", ended.stderr);
    assert!(ended.stderr.contains("unauthorized"), "{}", ended.stderr);
    assert!(!ended.stderr.contains("trying again"), "{}", ended.stderr);
    assert!(ended.stdout.is_empty(), "{:?}", ended.stdout);
    for secret in ["not-the-token", "hunter2-password"] {
        assert!(!ended.stderr.contains(secret), "{}", ended.stderr);
    }
    assert_eq!(gw.handle.pending(), 0);
}

/// Secrets never come from argv, and a missing one is a usage error (2), before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secrets_are_usage_errors() {
    let gateway = format!("http://127.0.0.1:{}", closed_port());
    let ended = run(session(
        &create_args(&gateway, "22"),
        &[("ALFRESCO_TOKEN", "t")],
    ))
    .await;
    assert_eq!(ended.code, Some(2), "{ended:?}");
    assert!(
        ended.stderr.contains("SSH_PASSWORD is not set"),
        "{}",
        ended.stderr
    );
    let ended = run(session(&["status", "--gateway", &gateway, "abc"], &[])).await;
    assert_eq!(ended.code, Some(2), "{ended:?}");
    assert!(ended.stderr.contains("ALFRESCO_TOKEN"), "{}", ended.stderr);
    let mut args = create_args(&gateway, "22");
    args.extend(["--password", "hunter2"]);
    let ended = run(session(&args, &[("ALFRESCO_TOKEN", "t")])).await;
    assert_eq!(ended.code, Some(2), "{ended:?}");
}

/// Nothing listens: retried with back-off, then 205 within the `--retry-for` bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_exits_205_within_its_bound() {
    let gateway = format!("http://127.0.0.1:{}", closed_port());
    let args = [
        "status",
        "--gateway",
        &gateway,
        "--retry-for",
        "2s",
        "abc-123",
    ];
    let ended = run(session(&args, &[("ALFRESCO_TOKEN", TEST_TOKEN)])).await;
    assert_eq!(ended.code, Some(205), "{ended:?}");
    assert!(
        ended.took < Duration::from_secs(2) + WAIT / 4,
        "{:?}",
        ended.took
    );
    let retries = ended.stderr.matches("trying again").count();
    assert!(retries >= 2, "retried with back-off: {}", ended.stderr);
    assert!(ended.stderr.contains("gave up after"), "{}", ended.stderr);
}

/// A listener that accepts and drops every connection, counting them; aborted when dropped.
struct Dropper {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Dropper {
    async fn start() -> Dropper {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Dropper {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Dropped connections: a status read is retried, then 205; a create is sent once only,
/// since the gateway may have made the session before the connection dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_retry_reads_but_not_creates() {
    let dropper = Dropper::start().await;
    let gateway = format!("http://{}", dropper.addr);
    let env = [("ALFRESCO_TOKEN", TEST_TOKEN), ("SSH_PASSWORD", "pw")];
    let args = [
        "status",
        "--gateway",
        &gateway,
        "--retry-for",
        "2s",
        "abc-123",
    ];
    let ended = run(session(&args, &env)).await;
    assert_eq!(ended.code, Some(205), "{ended:?}");
    assert!(dropper.accepted.load(Ordering::SeqCst) >= 3, "{ended:?}");

    let before = dropper.accepted.load(Ordering::SeqCst);
    let mut args = create_args(&gateway, "22");
    args.extend(["--retry-for", "2s"]);
    let ended = run(session(&args, &env)).await;
    assert_eq!(ended.code, Some(205), "{ended:?}");
    assert_eq!(
        dropper.accepted.load(Ordering::SeqCst),
        before + 1,
        "{ended:?}"
    );
}

/// TLS is verified: the test gateway's self-signed certificate is refused at once (no
/// retries), and trusted with `--ca-file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_and_ca_file_trusts_a_private_ca() {
    let cert = TestCert::generate();
    let gw = Gateway::start_tls(&cert).await;
    let gateway = format!("https://{}", gw.addr);
    let env = [("ALFRESCO_TOKEN", TEST_TOKEN), ("SSH_PASSWORD", "pw")];
    let ended = run(session(&create_args(&gateway, "22"), &env)).await;
    assert_eq!(ended.code, Some(205), "{ended:?}");
    assert!(!ended.stderr.contains("trying again"), "{}", ended.stderr);
    assert!(
        ended.stderr.to_lowercase().contains("certificate"),
        "{}",
        ended.stderr
    );
    assert_eq!(gw.handle.pending(), 0);

    let mut args = create_args(&gateway, "22");
    args.extend(["--ca-file", cert.cert.to_str().unwrap()]);
    let ended = run(session(&args, &env)).await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    assert!(
        ended.stdout[0].starts_with(&format!("{gateway}/")),
        "{ended:?}"
    );
    assert_eq!(gw.handle.pending(), 1);
}
