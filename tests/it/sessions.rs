//! The whole path works: create-session → page → WebSocket → SSH shell, with every kind of
//! credential, resize, and the exit status coming back.

use crate::support::gateway::Gateway;
use crate::support::sshd::Sshd;
use crate::support::{key_body, password_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_session_end_to_end() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw.create_id(&password_body(&sshd)).await;
    assert_eq!(gw.handle.pending(), 1);

    // The page renders for a pending id and does not consume it.
    for _ in 0..2 {
        let page = gw.get(&format!("/{id}")).await;
        assert_eq!(page.status, 200);
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(page.text().contains("/assets/terminal.js"));
        assert!(
            !page.text().contains(&id),
            "the page must not reflect the id"
        );
    }
    assert_eq!(gw.handle.pending(), 1);

    let mut term = gw.ws().await;
    term.start(&id, 100, 30).await;
    let mut ready = term.ready().await;
    let target = format!("alfresco-test@127.0.0.1:{}", sshd.addr().port());
    // The cap is the default --max-session-time (12h) from the claim, in whole seconds.
    let ends_in = ready["ends_in"].take().as_u64().expect("ends_in");
    assert!((43_100..=43_200).contains(&ends_in), "{ends_in}");
    assert_eq!(
        ready,
        serde_json::json!({"cols": 100, "rows": 30, "target": target, "handback": false, "ends_in": null})
    );
    assert_eq!(
        gw.handle.pending(),
        0,
        "start-session claims the credentials"
    );
    assert_eq!(gw.handle.live(), 1);

    // A command's output comes back.
    let marker = format!("hello-{}", std::process::id());
    assert_eq!(
        term.run(&format!("echo {marker}")).await,
        format!("{marker}\r\n")
    );
    assert_eq!(term.run("stty size").await, "30 100\r\n");
    term.resize(132, 43).await;
    assert_eq!(term.run("stty size").await, "43 132\r\n");
    // The locale was passed with setenv, as OpenSSH's SendEnv does.
    assert_eq!(term.run("echo $LANG").await, "C.UTF-8\r\n");

    // The page is gone once the session is claimed.
    assert_eq!(gw.get(&format!("/{id}")).await.status, 404);

    term.input("exit 3\r").await;
    let closed = term.expect("ssh-closed").await;
    assert_eq!(
        closed,
        serde_json::json!({"exit_status": 3, "exit_signal": null, "reason": "exited"})
    );
    assert_eq!(term.expect_close().await, Some(1000));
    gw.assert_idle().await;
    gw.stop().await;
}

/// Each key kind the issue names authenticates; the session answers a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sessions() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let keys = sshd.keys();
    let cases = [
        ("ed25519", &keys.ed25519, None),
        ("rsa", &keys.rsa, None),
        ("rsa-pem", &keys.rsa_pem, None),
        ("ecdsa", &keys.ecdsa, None),
        (
            "ed25519+passphrase",
            &keys.ed25519_encrypted,
            Some(keys.passphrase.as_str()),
        ),
    ];
    for (kind, key, passphrase) in cases {
        let mut term = gw.open(&key_body(&sshd, key, passphrase), 80, 24).await;
        term.ready().await;
        assert_eq!(
            term.run(&format!("echo key-{kind}")).await,
            format!("key-{kind}\r\n"),
            "{kind}"
        );
        term.input("exit\r").await;
        let closed = term.expect("ssh-closed").await;
        assert_eq!(closed["exit_status"], 0, "{kind}");
        term.expect_close().await;
    }
    gw.assert_idle().await;
}

/// The form-encoded body works like JSON (what `curl -d … --data-urlencode` sends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_body_session() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let key: String = form_urlencoded::byte_serialize(sshd.keys().ed25519.as_bytes()).collect();
    let body = format!(
        "hostname=127.0.0.1&port={}&username=alfresco-test&private_key={key}",
        sshd.addr().port()
    );
    let res = gw
        .post(
            "/create-session",
            "application/x-www-form-urlencoded",
            body.as_bytes(),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["id"].as_str().unwrap().to_owned();
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    assert_eq!(term.run("whoami").await, "alfresco-test\r\n");
    term.close().await;
    gw.assert_idle().await;
}

/// Output is byte-exact, including multibyte characters split across SSH reads and frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_byte_exact() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 200, 50).await;
    term.ready().await;
    // ~2.6 MB of 1-4 byte UTF-8 characters. With -onlcr the PTY passes "\n" unchanged, so
    // what arrives must equal what was printed, byte for byte.
    let line = "aé€😀─┼ßñ日本語🎉";
    let count = 60_000;
    term.input(&format!("stty -onlcr; for i in $(seq 1 {count}); do printf '{line}\\n'; done; echo; echo done-''marker; stty onlcr\r")).await;
    term.wait_for("stty onlcr\r\n").await;
    let out = term.wait_for("\ndone-marker").await;
    let body = &out.as_bytes()[..out.len() - "\ndone-marker".len()];
    let expected = format!("{line}\n").repeat(count);
    assert_eq!(body.len(), expected.len(), "byte count");
    assert!(body == expected.as_bytes(), "content differs");
    term.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_counts_sessions() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let health = |res: crate::support::gateway::HttpResponse| {
        assert_eq!(res.status, 200);
        let json = res.json();
        assert_eq!(json["status"], "ok");
        (
            json["pending"].as_u64().unwrap(),
            json["live"].as_u64().unwrap(),
        )
    };
    assert_eq!(health(gw.get("/healthz").await), (0, 0));
    let id = gw.create_id(&password_body(&sshd)).await;
    assert_eq!(health(gw.get("/healthz").await), (1, 0));
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    assert_eq!(health(gw.get("/healthz").await), (0, 1));
    term.close().await;
    gw.assert_idle().await;
    assert_eq!(health(gw.get("/healthz").await), (0, 0));
    let ready = gw.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json()["ready"].as_bool()),
        (200, Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_with_types_and_caching() {
    let gw = Gateway::start().await;
    for (path, kind) in [
        ("/assets/xterm.js", "text/javascript"),
        ("/assets/terminal.js", "text/javascript"),
        ("/assets/xterm.css", "text/css"),
        ("/assets/addon-fit.js", "text/javascript"),
    ] {
        let res = gw.get(path).await;
        assert_eq!(res.status, 200, "{path}");
        assert!(
            res.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(res.body.len() > 100, "{path}");
        assert!(
            res.header("cache-control").unwrap().contains("max-age"),
            "{path}"
        );
        let etag = res.header("etag").unwrap().to_owned();
        let again = gw
            .raw(
                &format!("GET {path} HTTP/1.1\r\nIf-None-Match: {etag}"),
                b"",
            )
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
    }
    assert_eq!(gw.get("/assets/nope.js").await.error_code(), "not_found");
    assert_eq!(gw.get("/assets/../Cargo.toml").await.status, 404);
}

/// Metrics follow sessions as they come and go: scrape, act, scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_sessions() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let scrape = || async {
        let res = gw.get("/metrics").await;
        assert_eq!(res.status, 200);
        assert!(
            res.header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        res.text()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    let before = scrape().await;
    assert_eq!(value(&before, "alfresco_sessions_live"), 0.0);

    let id = gw.create_id(&password_body(&sshd)).await;
    let bad = gw
        .raw(
            "POST /create-session HTTP/1.1\r\nContent-Type: application/json",
            b"{}",
        )
        .await;
    assert_eq!(bad.status, 401);
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    let during = scrape().await;
    assert_eq!(
        value(
            &during,
            "alfresco_create_session_requests_total{outcome=\"created\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &during,
            "alfresco_create_session_requests_total{outcome=\"unauthorized\"}"
        ),
        1.0
    );
    assert_eq!(value(&during, "alfresco_sessions_live"), 1.0);
    assert_eq!(value(&during, "alfresco_bridge_threads"), 1.0);
    assert_eq!(value(&during, "alfresco_ssh_connect_seconds_count"), 1.0);

    term.input("exit 3\r").await;
    term.expect("ssh-closed").await;
    term.expect_close().await;
    gw.assert_idle().await;
    let after = scrape().await;
    assert_eq!(value(&after, "alfresco_sessions_live"), 0.0);
    assert_eq!(
        value(&after, "alfresco_sessions_ended_total{reason=\"exited\"}"),
        1.0
    );
    assert!(value(&after, "alfresco_terminal_bytes_total{direction=\"out\"}") > 10.0);
    assert!(value(&after, "alfresco_websocket_frames_total{direction=\"in\"}") >= 1.0);
}

/// --remote-lang is what the shell gets as LANG (the server accepts it here); empty sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_lang_reaches_the_shell() {
    let sshd = Sshd::start();
    for (lang, expected) in [(Some("en_US.UTF-8"), "en_US.UTF-8"), (None, "")] {
        let gw = Gateway::start_with(|c| c.remote_lang = lang.map(str::to_owned)).await;
        let mut term = gw.open(&password_body(&sshd), 80, 24).await;
        term.ready().await;
        assert_eq!(
            term.run("echo \"[$LANG]\"").await,
            format!("[{expected}]\r\n")
        );
        term.close().await;
        gw.assert_idle().await;
    }
}
