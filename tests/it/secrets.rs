//! Credentials and capabilities never reach the logs, at the most verbose level, nor any
//! answer. (What the started binary keeps in memory, and logs at trace: `process`.)
//!
//! The gateway runs on a current-thread runtime with the subscriber `main` builds
//! (`logging::subscriber`) installed for this thread only: every task runs here, and
//! bridge threads inherit the subscriber, so the capture holds everything this test's
//! sessions log, and nothing from other tests. A TRACE capture holds every level's lines.

use serde_json::json;

use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::logs::Capture;
use crate::support::sshd::Sshd;
use crate::support::{key_body, password_body};

/// What `--log` may say: the default, and the most verbose there is, naming the
/// payload-carrying dependencies explicitly (before the fix, tungstenite's TRACE lines held
/// every frame: typed input, ids, tokens and links).
const LOG_SPECS: [&str; 2] = [
    "info",
    "trace,tungstenite=trace,tungstenite::protocol=trace,tokio_tungstenite=trace,hyper=trace",
];

#[test]
fn credentials_are_never_logged_or_echoed() {
    for spec in LOG_SPECS {
        credentials_are_never_logged_at(spec);
    }
}

fn credentials_are_never_logged_at(spec: &str) {
    // Dependencies (tungstenite) log through `log`; route it to tracing. Process-wide, once.
    let _ = tracing_log::LogTracer::init();
    let capture = Capture::default();
    let subscriber = alfresco_ssh::logging::subscriber(spec, false, false, capture.clone())
        .expect("the log filter");
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let sshd = Sshd::start();
    let keys = sshd.keys();
    let password = crate::support::sshd::test_password();
    // A line from the middle of the key: it appears nowhere but in the key.
    let key_line = keys.ed25519.lines().nth(2).unwrap().to_owned();
    let passphrase = "passphrase-marker-7f3a9c".to_owned();
    // Typed at a prompt that does not echo, as a password at `sudo` would be.
    let typed = "typed-marker-c41d0e".to_owned();
    let mut answers = String::new();
    let mut capabilities = Vec::new();

    runtime.block_on(async {
        let gw = Gateway::start_with(|c| {
            c.resume_grace = Some(std::time::Duration::from_secs(60));
        })
        .await;
        // A password session, typed into, shared, run and ended.
        let id = gw.create_id(&password_body(&sshd)).await;
        let mut term = gw.ws().await;
        term.start(&id, 80, 24).await;
        let ready = term.ready().await;
        let resume_token = ready["resume_token"].as_str().expect("a resume token").to_owned();
        // Typed only once the prompt is up: stty may flush input that arrived before it.
        term.input("stty -echo; echo no''echo; read -r line; stty echo; echo got-${#line}\r")
            .await;
        term.wait_for("noecho").await;
        term.input(&format!("{typed}\r")).await;
        term.wait_for(&format!("got-{}", typed.len())).await;
        // Logged at DEBUG: shows the capture holds the verbose levels.
        term.send_event("no-such-event", json!({})).await;
        let share = gw
            .raw(
                &format!("POST /sessions/{id}/share HTTP/1.1\r\nAuthorization: Bearer {TEST_TOKEN}"),
                b"",
            )
            .await;
        assert_eq!(share.status, 201, "{}", share.text());
        let view_id = share.json()["view_id"].as_str().unwrap().to_owned();
        let mut viewer = gw.ws().await;
        viewer.send_event("view-session", json!({"id": view_id})).await;
        viewer.expect("connection-ready").await;
        term.run("echo typed").await;
        viewer.close().await;
        // With resume on, a closed socket would leave the shell running for the grace.
        term.input("exit\r").await;
        term.expect("ssh-closed").await;
        term.close().await;
        capabilities.push(("session id", id));
        capabilities.push(("resume token", resume_token));
        capabilities.push(("view link", view_id));
        // A key session, and a wrong passphrase (which fails authentication).
        let mut term = gw.open(&key_body(&sshd, &keys.ed25519, None), 80, 24).await;
        term.ready().await;
        term.input("exit\r").await;
        term.expect("ssh-closed").await;
        term.close().await;
        let mut term = gw.open(&key_body(&sshd, &keys.ed25519_encrypted, Some(&passphrase)), 80, 24).await;
        let (message, _) = term.expect_error("key_invalid").await;
        answers.push_str(&message);
        // Bad bodies that carry secrets get errors that do not repeat them.
        for body in [
            serde_json::json!({"hostname": "h", "username": "u", "password": password, "private_key": key_line}),
            serde_json::json!({"hostname": "h", "username": "u", "password": password, "passphrase": passphrase}),
        ] {
            answers.push_str(&gw.create(&body).await.text());
        }
        gw.assert_idle().await;
        gw.stop().await;
    });

    let logs = capture.text();
    assert!(
        logs.contains("session claimed"),
        "the capture works:\n{logs}"
    );
    if spec.starts_with("trace") {
        assert!(logs.contains("unknown event ignored"), "{spec}:\n{logs}");
    }
    for (what, secret) in [
        ("password", &password),
        ("key", &key_line),
        ("passphrase", &passphrase),
        ("typed input", &typed),
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "--log {spec}: the {what} is in the logs"
        );
        assert!(
            !answers.contains(secret.as_str()),
            "the {what} is in an answer: {answers}"
        );
    }
    for (what, capability) in &capabilities {
        // The first 8 characters are the short form logs may carry; the rest must not be.
        let tail = capability.get(8..).expect("a long capability");
        assert!(
            !logs.contains(tail),
            "--log {spec}: the {what} is in the logs"
        );
    }
}
