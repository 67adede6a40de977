//! Credentials never reach the logs, at the most verbose level, nor any answer.
//!
//! The gateway runs on a current-thread runtime with a TRACE subscriber installed for this
//! thread only: every task runs here, and bridge threads inherit the subscriber, so the
//! capture holds everything this test's sessions log, and nothing from other tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

use crate::support::gateway::Gateway;
use crate::support::sshd::Sshd;
use crate::support::{key_body, password_body};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[test]
fn credentials_are_never_logged_or_echoed() {
    // Dependencies (tungstenite) log through `log`; route it to tracing. Process-wide, once.
    let _ = tracing_log::LogTracer::init();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
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
    let mut answers = String::new();

    runtime.block_on(async {
        let gw = Gateway::start().await;
        // A password session, typed into, run and ended.
        let mut term = gw.open(&password_body(&sshd), 80, 24).await;
        term.ready().await;
        term.run("echo typed").await;
        term.close().await;
        // A key session, and a wrong passphrase (which fails authentication).
        let mut term = gw.open(&key_body(&sshd, &keys.ed25519, None), 80, 24).await;
        term.ready().await;
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

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("session claimed") && logs.contains("DEBUG"),
        "the capture works:\n{logs}"
    );
    for (what, secret) in [
        ("password", &password),
        ("key", &key_line),
        ("passphrase", &passphrase),
    ] {
        assert!(!logs.contains(secret.as_str()), "the {what} is in the logs");
        assert!(
            !answers.contains(secret.as_str()),
            "the {what} is in an answer: {answers}"
        );
    }
}
