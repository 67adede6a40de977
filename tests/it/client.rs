//! `alfresco-ssh session …`, the started binary, against the in-process gateway and the real
//! sshd: what a CI job sees on stdout and in the exit status, the retry bound for a gateway
//! that is down or drops connections, TLS verification, and refusals. And docs/CI.md: its
//! `sh test` snippets run against the gateway and sshd, and its exit-code table (and the
//! README's) is `Exit::ALL`.

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

/// `--json` prints the API's answer alone on stdout; the GitHub and GitLab lines go to stderr
/// then. A key file works as the credential, a token file as the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_json_with_a_key_file() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.keys().ed25519).unwrap();
    // The token from a file (with the newline `echo` leaves), none in the environment.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TEST_TOKEN}\n")).unwrap();
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
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let env = [("GITHUB_ACTIONS", "true"), ("GITLAB_CI", "true")];
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
    let notice = format!("::notice title=alfresco-ssh::{gateway}/{id}");
    assert!(
        ended.stderr.lines().any(|l| l == notice),
        "{}",
        ended.stderr
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

/// Starts `create … --wait` (plus `extra`) for the test user; returns it and the id from
/// the URL line, after the "pending" line.
async fn create_waiting(
    gw: &Gateway,
    sshd: &Sshd,
    password: &str,
    extra: &[&str],
) -> (Running, String) {
    let (gateway, port) = (http(gw), port(sshd));
    let mut args = create_args(&gateway, &port);
    args.push("--wait");
    args.extend(extra);
    let env = [("ALFRESCO_TOKEN", TEST_TOKEN), ("SSH_PASSWORD", password)];
    let mut running = Running::start(session(&args, &env));
    let url = running.line().await;
    let id = url
        .strip_prefix(&format!("{gateway}/"))
        .unwrap_or_else(|| panic!("a session URL: {url}"))
        .to_owned();
    assert_eq!(
        running.line().await,
        "pending: waiting for the link to be opened"
    );
    (running, id)
}

/// The lines after "pending", and the exit status, of a finished `create --wait`.
async fn outcome(running: Running) -> (Vec<String>, Option<i32>, String) {
    let ended = running.ended().await;
    let lines = ended.stdout[2..].to_vec();
    (lines, ended.code, ended.stderr)
}

/// The whole story of a CI job: create --wait, someone opens the link, the shell exits 7,
/// the command has printed each change and exits 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_follows_the_session_and_exits_with_the_shell() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (running, id) = create_waiting(&gw, &sshd, &sshd::test_password(), &[]).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    term.input("exit 7\r").await;
    term.expect("ssh-closed").await;
    let (lines, code, stderr) = outcome(running).await;
    assert_eq!(
        lines,
        ["opened from 127.0.0.1", "ready", "ended: exited 7"],
        "{stderr}"
    );
    assert_eq!(code, Some(7));
    gw.assert_idle().await;
}

/// Nobody opens the link before `--ttl`: "expired", 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_opens_it_exits_200() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (running, _id) = create_waiting(&gw, &sshd, "pw", &["--ttl", "1s"]).await;
    let (lines, code, stderr) = outcome(running).await;
    assert_eq!(
        lines,
        ["expired: nobody opened the link in time"],
        "{stderr}"
    );
    assert_eq!(code, Some(200));
}

/// `session revoke` from a second process: a pending link dies (202 for the waiting job);
/// a live shell is ended the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_from_a_second_process_exits_202() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let gateway = http(&gw);
    let env = [("ALFRESCO_TOKEN", TEST_TOKEN)];

    let (running, id) = create_waiting(&gw, &sshd, "pw", &[]).await;
    let revoke = run(session(&["revoke", "--gateway", &gateway, &id], &env)).await;
    assert_eq!(revoke.code, Some(0), "{revoke:?}");
    assert!(
        revoke.stdout[0].starts_with("revoke asked; revoked"),
        "{revoke:?}"
    );
    let (lines, code, _) = outcome(running).await;
    assert_eq!((lines, code), (vec!["revoked".to_owned()], Some(202)));

    let (running, id) = create_waiting(&gw, &sshd, &sshd::test_password(), &[]).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    let revoke = run(session(
        &["revoke", "--gateway", &gateway, &id, "--json"],
        &env,
    ))
    .await;
    assert_eq!(revoke.code, Some(0), "{revoke:?}");
    let answer: serde_json::Value = serde_json::from_str(&revoke.stdout[0]).unwrap();
    assert_eq!(answer["id"], id.as_str());
    let closed = term.expect("ssh-closed").await;
    assert_eq!(closed["reason"], "revoked");
    let (lines, code, stderr) = outcome(running).await;
    // The gateway's end_message follows the reason: "ended: revoked (…)".
    let last = lines.last().map(String::as_str).unwrap_or("");
    assert!(last.starts_with("ended: revoked"), "{lines:?} {stderr}");
    assert_eq!(code, Some(202));
    gw.assert_idle().await;
}

/// The person's verdict: "continue" exits 0, "fail" 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handback_verdicts_exit_0_and_204() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    for (verdict, exit) in [("continue", 0), ("fail", 204)] {
        let (running, id) =
            create_waiting(&gw, &sshd, &sshd::test_password(), &["--handback"]).await;
        let mut term = gw.ws().await;
        term.start(&id, 80, 24).await;
        assert_eq!(term.ready().await["handback"], true);
        term.send_event("handback", serde_json::json!(verdict))
            .await;
        term.expect("ssh-closed").await;
        let (lines, code, _) = outcome(running).await;
        assert_eq!(lines.last().unwrap(), &format!("ended: handback {verdict}"));
        assert_eq!(code, Some(exit), "{verdict}");
    }
    gw.assert_idle().await;
}

/// A wrong password: the session fails, the job learns it (201), and a shell killed by a
/// signal exits 128+N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_auth_exits_201_and_a_killed_shell_128_plus_n() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (running, id) = create_waiting(&gw, &sshd, "not-the-password", &[]).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.expect_error("auth_failed").await;
    let (lines, code, _) = outcome(running).await;
    assert!(
        lines.last().unwrap().starts_with("failed: auth_failed"),
        "{lines:?}"
    );
    assert_eq!(code, Some(201));

    let (running, id) = create_waiting(&gw, &sshd, &sshd::test_password(), &[]).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    term.input("kill -KILL $$\r").await;
    term.expect("ssh-closed").await;
    let (lines, code, _) = outcome(running).await;
    assert_eq!(lines.last().unwrap(), "ended: signalled KILL");
    assert_eq!(code, Some(128 + 9));
    gw.assert_idle().await;
}

/// `status`, `wait --for opened --timeout` (207 when nobody comes), `extend` and `list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_wait_extend_and_list() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let gateway = http(&gw);
    let env = [("ALFRESCO_TOKEN", TEST_TOKEN)];
    let id = gw.create_id(&crate::support::password_body(&sshd)).await;

    let status = run(session(
        &["status", "--gateway", &gateway, &id, "--json"],
        &env,
    ))
    .await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let answer: serde_json::Value = serde_json::from_str(&status.stdout[0]).unwrap();
    assert_eq!(answer["state"], "pending");

    let args = [
        "wait",
        "--gateway",
        &gateway,
        &id,
        "--for",
        "opened",
        "--timeout",
        "1s",
    ];
    let wait = run(session(&args, &env)).await;
    assert_eq!(wait.code, Some(207), "{wait:?}");
    assert!(wait.stderr.contains("still pending"), "{wait:?}");

    let extend = run(session(
        &["extend", "--gateway", &gateway, &id, "--by", "5m"],
        &env,
    ))
    .await;
    assert_eq!(extend.code, Some(0), "{extend:?}");
    assert!(extend.stdout[0].starts_with("pending "), "{extend:?}");

    let list = run(session(
        &["list", "--gateway", &gateway, "--state", "pending"],
        &env,
    ))
    .await;
    assert_eq!(list.code, Some(0), "{list:?}");
    assert_eq!(list.stdout.len(), 1, "{list:?}");
    assert!(list.stdout[0].starts_with(&format!("{id} ")), "{list:?}");

    // `wait` for the opening, while the test opens it: 0 once it is opened.
    let args = ["wait", "--gateway", &gateway, &id, "--for", "live"];
    let mut waiting = Running::start(session(&args, &env));
    assert_eq!(
        waiting.line().await,
        "pending: waiting for the link to be opened"
    );
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    let ended = waiting.ended().await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    assert_eq!(ended.stdout[1..], ["opened from 127.0.0.1", "ready"]);

    let unknown = run(session(
        &["status", "--gateway", &gateway, "0000-nope"],
        &env,
    ))
    .await;
    assert_eq!(unknown.code, Some(206), "{unknown:?}");
    assert!(unknown.stderr.contains("unknown_session"), "{unknown:?}");
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
}

/// The long poll's connection is cut under a waiting job (a proxy restarting, a NAT
/// dropping it) after it was held longer than `--retry-for`: the client asks again, since the
/// bound counts from the failure, not from the start of a poll, and still exits with the
/// shell's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_long_poll_is_asked_again() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let proxy = crate::support::proxy::Proxy::start(gw.addr).await;
    let id = gw.create_id(&crate::support::password_body(&sshd)).await;
    let via = format!("http://{}", proxy.addr);
    let args = ["wait", "--gateway", &via, &id, "--retry-for", "1s"];
    let mut waiting = Running::start(session(&args, &[("ALFRESCO_TOKEN", TEST_TOKEN)]));
    assert_eq!(
        waiting.line().await,
        "pending: waiting for the link to be opened"
    );
    // The second request is the long poll: once the gateway holds it, let it be held past
    // the retry bound (time passing is the point here, not a synchronisation), then cut it.
    wait_until(|| gw.handle.waiters() == 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    term.input("exit 3\r").await;
    term.expect("ssh-closed").await;
    let ended = waiting.ended().await;
    assert_eq!(ended.code, Some(3), "{ended:?}");
    assert!(ended.stderr.contains("trying again"), "{ended:?}");
    assert_eq!(ended.stdout.last().unwrap(), "ended: exited 3");
    gw.assert_idle().await;
}

/// Polls `cond` until it holds, within `WAIT`.
async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `sh test` blocks of docs/CI.md, run as a CI job would run them (the variables set,
/// `alfresco-ssh` on the PATH): each prints a link, the test opens it and exits the shell,
/// and the snippet ends with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_doc_snippets_run() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CI.md")).unwrap();
    let snippets: Vec<&str> = doc
        .split("```sh test\n")
        .skip(1)
        .map(|rest| rest.split_once("\n```").expect("a closed block").0)
        .collect();
    assert_eq!(snippets.len(), 2, "the curl and the client snippet");
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (gateway, port, password) = (http(&gw), port(&sshd), sshd::test_password());
    for snippet in snippets {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(snippet);
        for var in CLIENT_VARS {
            cmd.env_remove(var);
        }
        cmd.envs([
            ("PATH", path.as_str()),
            ("ALFRESCO_GATEWAY", gateway.as_str()),
            ("ALFRESCO_TOKEN", TEST_TOKEN),
            ("SSH_HOST", "127.0.0.1"),
            ("SSH_PORT", port.as_str()),
            ("SSH_USER", sshd::TEST_USER),
            ("SSH_PASSWORD", password.as_str()),
        ]);
        let mut running = Running::start(cmd);
        let url = running.line().await;
        let id = url
            .strip_prefix(&format!("{gateway}/"))
            .unwrap_or_else(|| panic!("a session URL first: {url}\n{snippet}"))
            .to_owned();
        let mut term = gw.ws().await;
        term.start(&id, 80, 24).await;
        term.ready().await;
        term.input("exit 0\r").await;
        term.expect("ssh-closed").await;
        let ended = running.ended().await;
        assert_eq!(ended.code, Some(0), "{ended:?}\n{snippet}");
        assert_eq!(ended.stdout.last().unwrap(), "ended: exited 0", "{snippet}");
    }
    gw.assert_idle().await;
}

/// The exit-code tables of README.md and docs/CI.md are exactly `Exit::ALL`, in order.
#[test]
fn exit_code_tables_match_the_codes() {
    use alfresco_ssh::client::exit::Exit;
    let expected: Vec<String> = Exit::ALL
        .iter()
        .map(|e| match e {
            Exit::Signalled(_) => "128+N".to_owned(),
            e => e.code().to_string(),
        })
        .collect();
    for file in ["README.md", "docs/CI.md"] {
        let doc =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // The first table after the "Exit codes" heading; rows are `| code | meaning |`.
        let (_, after) = doc
            .split_once("# Exit codes\n")
            .unwrap_or_else(|| panic!("{file} has an Exit codes heading"));
        let codes: Vec<String> = after
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_owned()))
            .filter(|c| c != "code" && !c.starts_with('-'))
            .collect();
        assert_eq!(codes, expected, "{file}");
    }
}

/// Once the create request is sent, the waiting client holds no copy of the private key it
/// read: the file's bytes, the `Secret` and the request body are wiped. (The tests run as
/// root, so /proc/<pid>/mem of the undumpable client stays readable.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_holds_no_copy_of_the_key() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, &sshd.keys().ed25519).unwrap();
    // A base64 line from the middle of the key: it appears nowhere but in the key.
    let line = sshd.keys().ed25519.lines().nth(2).unwrap().to_owned();
    let (gateway, port) = (http(&gw), port(&sshd));
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
        key.to_str().unwrap(),
        "--wait",
    ];
    let mut running = Running::start(session(&args, &[("ALFRESCO_TOKEN", TEST_TOKEN)]));
    let url = running.line().await;
    // The line after the URL comes after the first status answer: the create is long done.
    assert_eq!(
        running.line().await,
        "pending: waiting for the link to be opened"
    );
    let copies = count_in_memory(running.child.id(), line.as_bytes());
    assert_eq!(copies, 0, "copies of a key line in the waiting client");

    let id = url.strip_prefix(&format!("{gateway}/")).unwrap();
    let mut term = gw.ws().await;
    term.start(id, 80, 24).await;
    term.ready().await;
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    assert_eq!(running.ended().await.code, Some(0));
    gw.assert_idle().await;
}

/// Occurrences of `needle` in the writable mappings (heap, stacks) of process `pid`.
fn count_in_memory(pid: u32, needle: &[u8]) -> usize {
    use std::io::{Read, Seek, SeekFrom};
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
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let mut region = vec![0; (end - start) as usize];
        // Guard pages and vvar cannot be read; they hold nothing of ours.
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

/// A cancelled job (SIGTERM, as CI systems send) revokes the session it created, so no link
/// or shell outlives the job; the command exits 128+15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_wait_revokes_its_session() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (running, id) = create_waiting(&gw, &sshd, "pw", &[]).await;
    let pid = rustix::process::Pid::from_raw(running.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let ended = running.ended().await;
    assert_eq!(ended.code, Some(143), "{ended:?}");
    assert!(ended.stderr.contains("revoked"), "{ended:?}");
    let status = gw.get_as(&format!("/sessions/{id}"), TEST_TOKEN).await;
    assert_eq!(status.json()["state"], "revoked");
}

/// A browser that drops and comes back: "detached", then "resumed", in the job's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_and_resume_are_one_line_each() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.resume_grace = Some(Duration::from_secs(60))).await;
    let (mut running, id) = create_waiting(&gw, &sshd, &sshd::test_password(), &[]).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    let ready = term.ready().await;
    let token = ready["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    assert_eq!(running.line().await, "opened from 127.0.0.1");
    assert_eq!(running.line().await, "ready");
    let offset = term.output.len();
    term.vanish();
    assert_eq!(running.line().await, "detached");

    let mut term = gw.ws().await;
    let resume = serde_json::json!({"token": token, "offset": offset, "cols": 80, "rows": 24});
    term.send_event("resume-session", resume).await;
    term.expect("session-resumed").await;
    assert_eq!(running.line().await, "resumed");
    term.input("exit 5\r").await;
    term.expect("ssh-closed").await;
    let (lines, code, _) = outcome(running).await;
    assert_eq!(lines.last().unwrap(), "ended: exited 5");
    assert_eq!(code, Some(5));
    gw.assert_idle().await;
}

/// The gateway shuts down under a live session: the job learns "ended by the gateway" (203),
/// not "unreachable", because the drain answers its wait with the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_shutdown_exits_203() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (mut running, id) = create_waiting(&gw, &sshd, &sshd::test_password(), &[]).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    assert_eq!(running.line().await, "opened from 127.0.0.1");
    assert_eq!(running.line().await, "ready");
    gw.stop().await;
    let (lines, code, stderr) = outcome(running).await;
    eprintln!("the job's log: {lines:?}");
    let last = lines.last().map(String::as_str).unwrap_or("");
    assert!(
        last.starts_with("ended: server_shutdown"),
        "{lines:?} {stderr}"
    );
    assert_eq!(code, Some(203), "{stderr}");
}

/// `create --wait --json`: the create answer, then the API's status object at each change,
/// one per line, the last one final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_json_prints_each_status() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (gateway, port, password) = (http(&gw), port(&sshd), sshd::test_password());
    let mut args = create_args(&gateway, &port);
    args.extend(["--wait", "--json"]);
    let env = [
        ("ALFRESCO_TOKEN", TEST_TOKEN),
        ("SSH_PASSWORD", password.as_str()),
    ];
    let mut running = Running::start(session(&args, &env));
    let created: serde_json::Value = serde_json::from_str(&running.line().await).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status_url"], format!("{gateway}/sessions/{id}"));
    // Opened only once the job has printed its first status: opened earlier, the first
    // status the job sees may already be `connecting` (this test failed so once).
    let first: serde_json::Value = serde_json::from_str(&running.line().await).unwrap();
    assert_eq!(first["state"], "pending", "{first}");
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    term.input("exit 4\r").await;
    term.expect("ssh-closed").await;
    let ended = running.ended().await;
    assert_eq!(ended.code, Some(4), "{ended:?}");
    let states: Vec<serde_json::Value> = ended.stdout[1..]
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(states.first().unwrap()["state"], "pending");
    let last = states.last().unwrap();
    assert_eq!(
        (&last["state"], &last["exit_status"]),
        (&"ended".into(), &4.into())
    );
    assert!(states.iter().all(|s| s["id"] == id.as_str()));
}

/// A redirect is not followed (it would carry the token to another host): 206, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = tokio::time::timeout(WAIT, stream.read(&mut head)).await;
            let answer = "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/elsewhere\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let gateway = format!("http://{addr}");
    let ended = run(session(
        &["status", "--gateway", &gateway, "abc-123"],
        &[("ALFRESCO_TOKEN", TEST_TOKEN)],
    ))
    .await;
    task.abort();
    assert_eq!(ended.code, Some(206), "{ended:?}");
    assert!(
        ended.stderr.contains("redirects are not followed"),
        "{ended:?}"
    );
    assert!(ended.stderr.contains("127.0.0.2:9/elsewhere"), "{ended:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "asked once, not again elsewhere"
    );
}
