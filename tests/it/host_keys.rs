//! Host-key verification against a real sshd: a pinned `host_key`, an operator
//! `--known-hosts` file (plain, hashed and pattern entries), and each `--host-key-policy`,
//! including a key that changes under accept-new. A refused key never gets credentials.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use alfresco_ssh::config::HostKeyPolicy;
use alfresco_ssh::ssh::RECORDED_FILE;
use serde_json::Value;

use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;

/// The session body with a pinned `host_key`.
fn pinned(sshd: &Sshd, host_key: &str) -> Value {
    let mut body = password_body(sshd);
    body["host_key"] = host_key.into();
    body
}

/// Opens a session and expects a shell; closes it again.
async fn expect_shell(gw: &Gateway, body: &Value) {
    let mut term = gw.open(body, 80, 24).await;
    term.ready().await;
    assert_eq!(term.run("echo ok").await, "ok\r\n");
    term.close().await;
}

/// Opens a session and expects `ssh-error` `code` and close 1011; returns the message.
async fn expect_refusal(gw: &Gateway, body: &Value, code: &str) -> String {
    let mut term = gw.open(body, 80, 24).await;
    let (message, close) = term.expect_error(code).await;
    assert_eq!(close, Some(1011));
    message
}

/// A gateway that reads `known_hosts` at start-up, with `policy` for the hosts it misses.
async fn gateway_with_file(known_hosts: &Path, policy: HostKeyPolicy) -> Gateway {
    let path = known_hosts.to_owned();
    Gateway::start_with(move |c| {
        c.known_hosts = Some(path);
        c.host_key_policy = policy;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_host_key_alone_decides() {
    let sshd = Sshd::start();
    // Strict, so nothing but the pin can let the session through.
    let gw = Gateway::start_with(|c| c.host_key_policy = HostKeyPolicy::Strict).await;

    let ed25519 = sshd.host_key_fingerprint_sha256("ed25519");
    expect_shell(&gw, &pinned(&sshd, &ed25519)).await;
    // A known_hosts line pins its key type too: the RSA key is negotiated and matches.
    expect_shell(&gw, &pinned(&sshd, &sshd.known_hosts_line("rsa"))).await;
    expect_shell(&gw, &pinned(&sshd, &sshd.host_public_key("ecdsa"))).await;

    // A fingerprint of another of its keys: the ed25519 key is offered, and refused.
    let rsa = sshd.host_key_fingerprint_sha256("rsa");
    let message = expect_refusal(&gw, &pinned(&sshd, &rsa), "host_key_mismatch").await;
    let expected = format!(
        "the server's ssh-ed25519 key {ed25519} does not match the session's host_key for 127.0.0.1:{}",
        sshd.port
    );
    assert_eq!(message, expected);
    assert!(!message.contains(&crate::support::sshd::test_password()));

    // A malformed pin is refused at create-session.
    let res = gw.create(&pinned(&sshd, "SHA256:not-a-fingerprint")).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.error_code(), "invalid_field");
    assert!(res.text().contains("host_key"), "{}", res.text());
    gw.assert_idle().await;
    gw.stop().await;
}

/// The strong form of "no credential before the host key": the right user and password,
/// sent to a server whose key is not the pinned one, would log in. The session is refused
/// with `host_key_mismatch`, so authentication never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatch_sends_no_credentials() {
    let expected = Sshd::start();
    let impostor = Sshd::start();
    let gw = Gateway::start().await;
    let pin = expected.host_key_fingerprint_sha256("ed25519");
    let message = expect_refusal(&gw, &pinned(&impostor, &pin), "host_key_mismatch").await;
    assert!(
        message.contains(&impostor.host_key_fingerprint_sha256("ed25519")),
        "{message}"
    );
    // With a wrong password the answer is the same: it was never tried.
    let mut body = pinned(&impostor, &pin);
    body["password"] = "wrong".into();
    expect_refusal(&gw, &body, "host_key_mismatch").await;
    // And the impostor's own key lets the same body in (the credentials were good).
    let own = impostor.host_key_fingerprint_sha256("ed25519");
    expect_shell(&gw, &pinned(&impostor, &own)).await;
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_file_entries() {
    let sshd = Sshd::start();
    let other = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let body = password_body(&sshd);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    };

    // A plain [host]:port entry among lines the gateway skips without failing.
    let plain = write(
        "plain",
        &format!(
            "# comment\n\
             garbage\n\
             @cert-authority *.example.com {ca}\n\
             @revoked [127.0.0.1]:1 {ca}\n\
             {line}\n",
            ca = other.host_public_key("ed25519"),
            line = sshd.known_hosts_line("ecdsa"),
        ),
    );
    let gw = gateway_with_file(&plain, HostKeyPolicy::Strict).await;
    expect_shell(&gw, &body).await;
    gw.stop().await;

    // Hashed by OpenSSH itself.
    let hashed = write("hashed", &format!("{}\n", sshd.known_hosts_line("ed25519")));
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let gw = gateway_with_file(&hashed, HostKeyPolicy::Strict).await;
    expect_shell(&gw, &body).await;
    gw.stop().await;

    // A pattern for the port.
    let pattern = write(
        "pattern",
        &format!(
            "[127.0.0.*]:{} {}\n",
            sshd.port,
            sshd.host_public_key("rsa")
        ),
    );
    let gw = gateway_with_file(&pattern, HostKeyPolicy::Strict).await;
    expect_shell(&gw, &body).await;
    gw.stop().await;

    // An entry without a port is for port 22 only.
    let port22 = write(
        "port22",
        &format!("127.0.0.1 {}\n", sshd.host_public_key("ed25519")),
    );
    let gw = gateway_with_file(&port22, HostKeyPolicy::Strict).await;
    expect_refusal(&gw, &body, "host_key_unknown").await;
    gw.stop().await;

    // Another server's key listed for this host:port: refused whatever the policy.
    let wrong = write(
        "wrong",
        &format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port,
            other.host_public_key("ed25519")
        ),
    );
    let gw = gateway_with_file(&wrong, HostKeyPolicy::InsecureAcceptAny).await;
    let message = expect_refusal(&gw, &body, "host_key_mismatch").await;
    assert!(
        message.contains(&sshd.host_key_fingerprint_sha256("ed25519")),
        "{message}"
    );
    gw.assert_idle().await;
    gw.stop().await;

    // An unreadable file stops the start-up.
    let mut config = alfresco_ssh::Config::new("127.0.0.1:0".parse().unwrap());
    config.known_hosts = Some(dir.path().join("missing"));
    assert!(alfresco_ssh::Server::new(&config).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_then_refuses_a_changed_key() {
    let mut sshd = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let start = || {
        let dir = state.path().to_owned();
        Gateway::start_with(move |c| c.state_dir = Some(dir))
    };
    let gw = start().await;
    let body = password_body(&sshd);
    expect_shell(&gw, &body).await;
    let recorded = state.path().join(RECORDED_FILE);
    assert_eq!(
        fs::read_to_string(&recorded).unwrap(),
        format!("{}\n", sshd.known_hosts_line("ed25519"))
    );
    let mode = fs::metadata(&recorded).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    expect_shell(&gw, &body).await;

    sshd.restart_with_new_host_keys();
    let message = expect_refusal(&gw, &body, "host_key_mismatch").await;
    let new = sshd.host_key_fingerprint_sha256("ed25519");
    assert!(message.contains(&new), "{message}");
    assert!(message.contains("recorded on first use"), "{message}");
    gw.assert_idle().await;
    gw.stop().await;

    // The record outlives the gateway.
    let gw = start().await;
    expect_refusal(&gw, &body, "host_key_mismatch").await;
    gw.stop().await;

    // Without a state directory, keys are remembered in memory only.
    let gw = Gateway::start().await;
    expect_shell(&gw, &body).await;
    sshd.restart_with_new_host_keys();
    expect_refusal(&gw, &body, "host_key_mismatch").await;
    gw.assert_idle().await;
    gw.stop().await;
}

/// Trust on first use is keyed by the host, not by its spelling: once keys are recorded for
/// `127.0.0.1:P` and `localhost:P`, a changed key is refused under `::ffff:127.0.0.1`,
/// `localhost.` and `LOCALHOST.` too. Before, each spelling was a new host, recorded anew.
/// (`localhost` and `127.0.0.1` are two hosts by choice, as in OpenSSH: docs/SECURITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_knows_a_host_under_every_spelling() {
    let mut sshd = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_owned();
    let gw = Gateway::start_with(move |c| c.state_dir = Some(dir)).await;
    let spelled = |host: &str| {
        let mut body = password_body(&sshd);
        body["hostname"] = host.into();
        body
    };
    expect_shell(&gw, &spelled("127.0.0.1")).await;
    expect_shell(&gw, &spelled("localhost")).await;
    for host in [
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "localhost.",
        "LOCALHOST.",
    ] {
        expect_shell(&gw, &spelled(host)).await;
    }
    let recorded = fs::read_to_string(state.path().join(RECORDED_FILE)).unwrap();
    assert_eq!(recorded.lines().count(), 2, "one line per host: {recorded}");

    sshd.restart_with_new_host_keys();
    let spelled = |host: &str| {
        let mut body = password_body(&sshd);
        body["hostname"] = host.into();
        body
    };
    for host in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "localhost",
        "localhost.",
        "LOCALHOST.",
        "LocalHost",
    ] {
        let message = expect_refusal(&gw, &spelled(host), "host_key_mismatch").await;
        assert!(
            message.contains("recorded on first use"),
            "{host}: {message}"
        );
    }
    let after = fs::read_to_string(state.path().join(RECORDED_FILE)).unwrap();
    assert_eq!(after, recorded, "nothing new was recorded");
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_an_unknown_host() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.host_key_policy = HostKeyPolicy::Strict).await;
    let message = expect_refusal(&gw, &password_body(&sshd), "host_key_unknown").await;
    assert!(
        message.contains(&sshd.host_key_fingerprint_sha256("ed25519")),
        "{message}"
    );
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_accept_any_connects_after_a_key_change() {
    let mut sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.host_key_policy = HostKeyPolicy::InsecureAcceptAny).await;
    let body = password_body(&sshd);
    expect_shell(&gw, &body).await;
    sshd.restart_with_new_host_keys();
    expect_shell(&gw, &body).await;
    gw.assert_idle().await;
    gw.stop().await;
}

/// Concurrent first sessions to one new host record one line, not several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sessions_record_once() {
    let sshd = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_owned();
    let gw = Gateway::start_with(move |c| c.state_dir = Some(dir)).await;
    let body = password_body(&sshd);
    let sessions = (0..4).map(|_| expect_shell(&gw, &body));
    futures_util::future::join_all(sessions).await;
    let text = fs::read_to_string(state.path().join(RECORDED_FILE)).unwrap();
    assert_eq!(text, format!("{}\n", sshd.known_hosts_line("ed25519")));
    gw.assert_idle().await;
    gw.stop().await;
}
