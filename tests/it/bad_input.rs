//! Every bad input gets its error code, and nothing is left behind.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::gateway::Gateway;
use crate::support::sshd::Sshd;
use crate::support::{WAIT, key_body, password_body};

#[tokio::test]
async fn create_session_rejects_bad_bodies() {
    let gw = Gateway::start().await;
    let json_post =
        |body: &'static str| gw.post("/create-session", "application/json", body.as_bytes());
    let cases = [
        ("{", "malformed_body"),
        ("[1]", "malformed_body"),
        (r#"{"username":"u","password":"p"}"#, "missing_field"),
        (r#"{"hostname":"h","password":"p"}"#, "missing_field"),
        (r#"{"hostname":"h","username":"u"}"#, "missing_field"),
        (
            r#"{"hostname":"h","username":"u","auth":"interactive","password":"p"}"#,
            "ambiguous_credentials",
        ),
        (
            r#"{"hostname":"h","username":"u","password":"p","port":0}"#,
            "invalid_field",
        ),
        (
            r#"{"hostname":"h","username":"u","password":"p","port":70000}"#,
            "invalid_field",
        ),
        (
            r#"{"hostname":"h","username":"u","password":"p","port":"x"}"#,
            "invalid_field",
        ),
        (
            r#"{"hostname":"h h","username":"u","password":"p"}"#,
            "invalid_field",
        ),
    ];
    for (body, code) in cases {
        let res = json_post(body).await;
        assert_eq!(res.status, 400, "{body}");
        assert_eq!(res.error_code(), code, "{body}");
        assert_eq!(res.header("content-type"), Some("application/json"));
    }
    let res = gw
        .post("/create-session", "text/plain", b"hostname=h")
        .await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (415, "unsupported_media_type")
    );

    let big = format!(
        r#"{{"hostname":"h","username":"u","password":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let res = gw
        .post("/create-session", "application/json", big.as_bytes())
        .await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (413, "body_too_large")
    );

    let res = gw.get("/create-session").await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(res.header("allow"), Some("POST"));
    assert_eq!(gw.get("/no/such/path").await.error_code(), "not_found");
    let res = gw.get("/ws").await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (400, "bad_websocket_request")
    );
    assert_eq!(gw.handle.pending(), 0, "nothing was stored");
}

/// Unknown, used and expired ids all get the same friendly page, and `unknown_session`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_used_and_expired_ids() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.session_ttl = Duration::from_millis(300)).await;
    let unknown = uuid::Uuid::new_v4().to_string();

    // Used: claimed by one socket, then asked for again.
    let used = gw.create_id(&password_body(&sshd)).await;
    let mut first = gw.ws().await;
    first.start(&used, 80, 24).await;
    first.ready().await;

    let expired = gw.create_id(&password_body(&sshd)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.handle.pending() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pending session never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let not_found_page = gw.get(&format!("/{unknown}")).await;
    assert_eq!(not_found_page.status, 404);
    assert!(
        not_found_page
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    for id in [&unknown, &used, &expired] {
        let page = gw.get(&format!("/{id}")).await;
        assert_eq!(
            (page.status, &page.body),
            (404, &not_found_page.body),
            "same page for all three"
        );
        let mut term = gw.ws().await;
        term.start(id, 80, 24).await;
        let (_, close) = term.expect_error("unknown_session").await;
        assert_eq!(close, Some(1008));
    }
    assert_eq!(gw.get("/not-a-uuid").await.status, 404);
    first.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_before_start() {
    let gw = Gateway::start().await;
    let cases: Vec<(Message, &str, u16)> = vec![
        (Message::text("not json"), "bad_message", 1008),
        (
            Message::text(r#"{"event":"start-session"}"#),
            "bad_message",
            1008,
        ),
        (
            Message::text(r#"["start-session",{"id":"nope"}]"#),
            "bad_message",
            1008,
        ),
        (
            Message::text(r#"["ssh-input","ls\r"]"#),
            "bad_message",
            1008,
        ),
        (Message::binary(b"ls\r".to_vec()), "bad_message", 1008),
        (
            Message::binary(vec![b'x'; 2 * 1024 * 1024]),
            "message_too_large",
            1009,
        ),
        (
            Message::text("x".repeat(2 * 1024 * 1024)),
            "message_too_large",
            1009,
        ),
    ];
    for (message, code, close) in cases {
        let mut term = gw.ws().await;
        term.send(message).await;
        assert_eq!(term.expect_error(code).await.1, Some(close), "{code}");
    }
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_session_deadline() {
    let gw = Gateway::start().await;
    let mut term = gw.ws().await;
    let started = std::time::Instant::now();
    assert_eq!(term.expect_error("start_timeout").await.1, Some(1008));
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not before the 10 s deadline"
    );
}

/// Unknown events and a second start-session are warnings; garbage ends the live session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_in_a_live_session() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;

    term.send_event("no-such-event", json!({})).await;
    assert_eq!(term.expect("warning").await["code"], "unknown_event");
    term.start(&id, 80, 24).await;
    assert_eq!(term.expect("warning").await["code"], "already_started");
    assert_eq!(term.run("echo still-alive").await, "still-alive\r\n");

    term.send_event("resize", json!({"cols": 0, "rows": 24}))
        .await;
    assert_eq!(term.expect_error("bad_message").await.1, Some(1008));
    gw.assert_idle().await;

    // A hostile frame in a live session ends it too, with its own code.
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    term.send(Message::binary(vec![0u8; 2 * 1024 * 1024])).await;
    assert_eq!(term.expect_error("message_too_large").await.1, Some(1009));
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let keys = sshd.keys();
    let mut wrong_password = password_body(&sshd);
    wrong_password["password"] = "not-the-password".into();
    let mut wrong_user = password_body(&sshd);
    wrong_user["username"] = "nobody-here".into();
    let cases = [
        ("wrong password", wrong_password, "auth_failed"),
        ("unknown user", wrong_user, "auth_failed"),
        (
            "key not authorized",
            key_body(&sshd, &keys.unauthorized_ed25519, None),
            "auth_failed",
        ),
        (
            "garbage key",
            key_body(
                &sshd,
                "-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n-----END OPENSSH PRIVATE KEY-----\n",
                None,
            ),
            "key_invalid",
        ),
        (
            "wrong passphrase",
            key_body(&sshd, &keys.ed25519_encrypted, Some("wrong")),
            "key_invalid",
        ),
        (
            "missing passphrase",
            key_body(&sshd, &keys.ed25519_encrypted, None),
            "key_invalid",
        ),
    ];
    for (what, body, code) in cases {
        let mut term = gw.open(&body, 80, 24).await;
        let (message, close) = term.expect_error(code).await;
        assert_eq!(close, Some(1011), "{what}");
        assert!(
            !message.contains("not-the-password") && !message.contains("BEGIN"),
            "{what}: {message}"
        );
    }
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_targets() {
    let gw = Gateway::start().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let body = |host: &str, port: u16| json!({"hostname": host, "port": port, "username": "u", "password": "p"});
    let mut term = gw.open(&body("127.0.0.1", closed_port), 80, 24).await;
    assert_eq!(term.expect_error("connect_failed").await.1, Some(1011));
    // RFC 6761: `.invalid` never resolves, and the query never leaves the machine.
    let mut term = gw.open(&body("no-such-host.invalid", 22), 80, 24).await;
    assert_eq!(term.expect_error("dns_failed").await.1, Some(1011));
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cap() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.max_sessions = 1).await;
    // Two sockets upgrade while nothing is live; only one can start.
    let (first_id, second_id) = (
        gw.create_id(&password_body(&sshd)).await,
        gw.create_id(&password_body(&sshd)).await,
    );
    let (mut first, mut second) = (gw.ws().await, gw.ws().await);
    first.start(&first_id, 80, 24).await;
    first.ready().await;
    second.start(&second_id, 80, 24).await;
    assert_eq!(second.expect_error("too_many_sessions").await.1, Some(1013));
    assert_eq!(
        gw.handle.pending(),
        1,
        "a refused start does not burn the link"
    );

    // At the cap, sockets still upgrade (one may be resuming a live session), but a new
    // session is refused after its start-session.
    let mut third = gw.ws().await;
    third.start(&second_id, 80, 24).await;
    assert_eq!(third.expect_error("too_many_sessions").await.1, Some(1013));

    first.close().await;
    gw.assert_idle().await;
    let mut again = gw.ws().await;
    again.start(&second_id, 80, 24).await;
    again.ready().await;
    again.close().await;
    gw.assert_idle().await;
}

/// Request targets that are not a path (RFC 9112 §3.2: authority form, asterisk form) get
/// a JSON 400 with its code, never a dropped connection; in absolute form the path counts.
#[tokio::test]
async fn request_targets_that_are_not_paths() {
    let gw = Gateway::start().await;
    for head in [
        "GET example.com:80 HTTP/1.1",
        "POST example.com:80 HTTP/1.1",
        "GET 127.0.0.1:8022 HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "CONNECT example.com:22 HTTP/1.1",
        "CONNECT 127.0.0.1:8022 HTTP/1.1",
    ] {
        let res = gw.raw(head, b"").await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (400, "bad_request_target"),
            "{head}"
        );
        assert_eq!(res.header("content-type"), Some("application/json"));
    }
    let res = gw.raw("GET http://x/healthz HTTP/1.1", b"").await;
    assert_eq!(res.status, 200, "absolute form: {}", res.text());
    for head in ["GET http://x/ HTTP/1.1", "GET http://x HTTP/1.1"] {
        let res = gw.raw(head, b"").await;
        assert_eq!((res.status, res.error_code().as_str()), (404, "not_found"));
    }
    assert_eq!(gw.get("/healthz").await.status, 200, "still serving");
}
