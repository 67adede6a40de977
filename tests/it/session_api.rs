//! The session as a resource for the job that created it (`/sessions`): status through every
//! state, long-poll waits, revoke, extend, per-session timers, handback, ownership, history;
//! and every bad input, with nothing left behind. Real gateway, real sshd.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::gateway::{ADMIN_TOKEN, Gateway, HttpResponse, TEST_TOKEN};
use crate::support::sshd::Sshd;
use crate::support::term::Term;
use crate::support::{WAIT, password_body};

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn status(gw: &Gateway, id: &str) -> Value {
    let res = gw.get_authorized(&format!("/sessions/{id}")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

/// `GET /sessions/<id>?<query>` with the test token.
async fn wait(gw: &Gateway, id: &str, query: &str) -> HttpResponse {
    gw.get_authorized(&format!("/sessions/{id}?{query}")).await
}

async fn open(gw: &Gateway, id: &str) -> Term {
    let mut term = gw.ws().await;
    term.start(id, 80, 24).await;
    term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_session_from_create_to_exit() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let res = gw.create(&password_body(&sshd)).await;
    let created = res.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["status_url"],
        format!("http://{}/sessions/{id}", gw.addr)
    );
    let s = status(&gw, &id).await;
    assert_eq!(s["state"], "pending");
    assert_eq!(s["token"], "test");
    assert_eq!(s["expires_at"], created["expires_at"]);
    assert_eq!(
        s["target"],
        format!("alfresco-test@127.0.0.1:{}", sshd.addr().port())
    );
    for key in ["claimed_at", "ready_at", "ended_at", "end_reason", "client"] {
        assert!(s[key].is_null(), "{key}: {s}");
    }
    let text = s.to_string();
    assert!(!text.contains("password") && !text.contains(&crate::support::sshd::test_password()));

    // A waiter on `opened`, answered when the link is opened (not by its timeout).
    let waiter = {
        let client = gw.client();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .get_authorized(&format!("/sessions/{id}?wait=opened&timeout=15s"))
                .await
        })
    };
    wait_until(|| gw.handle.waiters() == 1).await;
    let mut term = open(&gw, &id).await;
    let opened = waiter.await.unwrap().json();
    assert_eq!(opened["timed_out"], false);
    assert!(
        ["connecting", "live"].contains(&opened["state"].as_str().unwrap()),
        "{opened}"
    );
    assert_eq!(opened["client"], "127.0.0.1");
    term.ready().await;
    let s = status(&gw, &id).await;
    assert_eq!(
        (s["state"].as_str(), s["attached"].as_bool()),
        (Some("live"), Some(true))
    );
    assert!(s["ready_at"].is_string() && s["ends_at"].is_string());

    term.input("exit 7\r").await;
    let ended = wait(&gw, &id, "wait=ended&timeout=15s").await.json();
    assert_eq!(ended["state"], "ended", "{ended}");
    assert_eq!(ended["end_reason"], "exited");
    assert_eq!(ended["exit_status"], 7);
    assert_eq!(ended["attached"], false);
    assert!(ended["bytes_in"].as_u64().unwrap() >= 7);
    assert!(ended["bytes_out"].as_u64().unwrap() > 0);
    assert!(ended["ended_at"].is_string());
    // After the end, it is still there to ask.
    assert_eq!(status(&gw, &id).await["exit_status"], 7);
    gw.assert_idle().await;
    gw.stop().await;
}

/// Polls `cond` until it holds, within `WAIT`.
async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_nobody_opens_expires_at_its_own_ttl() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw
        .create_id(&with(password_body(&sshd), json!({"ttl": "1s"})))
        .await;
    let started = tokio::time::Instant::now();
    let res = wait(&gw, &id, "wait=ended&timeout=15s").await;
    let s = res.json();
    assert_eq!(
        (s["state"].as_str(), s["timed_out"].as_bool()),
        (Some("expired"), Some(false)),
        "{s}"
    );
    assert_eq!(s["end_reason"], "expired");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at the deadline, not the timeout"
    );
    // The link is dead: the page says so, a start gets unknown_session.
    assert_eq!(gw.get(&format!("/{id}")).await.status, 404);
    let mut term = open(&gw, &id).await;
    term.expect_error("unknown_session").await;
    assert_eq!(gw.handle.pending(), 0, "credentials wiped");
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_times_out_with_the_current_state() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let s = wait(&gw, &id, "wait=live&timeout=1s").await.json();
    assert_eq!(
        (s["state"].as_str(), s["timed_out"].as_bool()),
        (Some("pending"), Some(true))
    );
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_kills_a_pending_link_and_ends_a_live_session() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    // Pending: dead at once, credentials wiped.
    let id = gw.create_id(&password_body(&sshd)).await;
    let res = gw
        .call("DELETE", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
        .await;
    assert_eq!(res.status, 200);
    let s = res.json();
    assert_eq!(
        (s["state"].as_str(), s["end_reason"].as_str()),
        (Some("revoked"), Some("revoked"))
    );
    assert_eq!(gw.handle.pending(), 0);
    let mut term = open(&gw, &id).await;
    term.expect_error("unknown_session").await;
    // Idempotent.
    let again = gw
        .call("DELETE", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
        .await;
    assert_eq!(again.json()["state"], "revoked");
    assert_eq!(again.json()["ended_at"], s["ended_at"], "nothing changed");

    // Live: the page hears `revoked`, the status says ended/revoked.
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = open(&gw, &id).await;
    term.ready().await;
    let res = gw
        .call("DELETE", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
        .await;
    assert_eq!(res.status, 200);
    let closed = term.expect("ssh-closed").await;
    assert_eq!(closed["reason"], "revoked");
    assert_eq!(term.expect_close().await, Some(1000));
    let s = wait(&gw, &id, "wait=ended&timeout=15s").await.json();
    assert_eq!(
        (s["state"].as_str(), s["end_reason"].as_str()),
        (Some("ended"), Some("revoked"))
    );
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_racing_the_page_has_one_winner_and_leaks_nothing() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let (mut revoked_first, mut opened_first) = (0, 0);
    for _ in 0..12 {
        let id = gw.create_id(&password_body(&sshd)).await;
        let mut term = gw.ws().await;
        let path = format!("/sessions/{id}");
        let delete = gw.call("DELETE", &path, Some(TEST_TOKEN), None);
        let (_, res) = tokio::join!(term.start(&id, 80, 24), delete);
        assert_eq!(res.status, 200);
        // Either the link died before the claim (the page is refused), or the session was
        // claimed and then ended by the revoke.
        let first = loop {
            match term.next().await {
                crate::support::term::Event::Named(name, data) if name == "ssh-error" => {
                    break data["code"].as_str().unwrap().to_owned();
                }
                crate::support::term::Event::Named(name, data) if name == "ssh-closed" => {
                    assert_eq!(data["reason"], "revoked");
                    break "revoked".to_owned();
                }
                crate::support::term::Event::Closed(_) => break "closed".to_owned(),
                _ => {}
            }
        };
        let s = wait(&gw, &id, "wait=ended&timeout=15s").await.json();
        match s["state"].as_str().unwrap() {
            "revoked" => {
                assert!(
                    ["unknown_session", "revoked"].contains(&first.as_str()),
                    "{first}"
                );
                revoked_first += 1;
            }
            "ended" => {
                assert_eq!(s["end_reason"], "revoked");
                opened_first += 1;
            }
            other => panic!("{other}: {s}"),
        }
        assert_eq!(s["end_reason"], "revoked");
    }
    eprintln!("revoked first {revoked_first}, opened first {opened_first}");
    assert_eq!(gw.handle.pending(), 0);
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_creating_token_or_an_admin_sees_a_session() {
    const OTHER: &str = "other-token-0123456789abcdef";
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| {
        let mut tokens = (*c.api_tokens)
            .iter()
            .map(|t| alfresco_ssh::config::ApiToken {
                name: t.name.clone(),
                token: alfresco_ssh::secret::Secret::new(t.token.expose().clone()),
                admin: t.admin,
            })
            .collect::<Vec<_>>();
        tokens.push(alfresco_ssh::config::ApiToken {
            name: "other".into(),
            token: alfresco_ssh::secret::Secret::new(OTHER.into()),
            admin: false,
        });
        c.api_tokens = std::sync::Arc::new(tokens);
    })
    .await;
    let mine = gw.create_id(&password_body(&sshd)).await;
    let path = format!("/sessions/{mine}");
    for method in ["GET", "DELETE"] {
        let res = gw.call(method, &path, Some(OTHER), None).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (404, "unknown_session"),
            "{method}"
        );
    }
    let res = gw
        .call(
            "POST",
            &format!("{path}/extend"),
            Some(OTHER),
            Some(&json!({"by": "1m"})),
        )
        .await;
    assert_eq!(res.status, 404);
    let res = gw
        .call("POST", &format!("{path}/share"), Some(OTHER), None)
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert_eq!(gw.call("GET", &path, None, None).await.status, 401);
    assert_eq!(
        gw.call("GET", &path, Some("wrong-token-0123456789abcdef"), None)
            .await
            .status,
        401
    );
    assert_eq!(
        status(&gw, &mine).await["state"],
        "pending",
        "the other token changed nothing"
    );
    assert_eq!(gw.get_as(&path, ADMIN_TOKEN).await.json()["token"], "test");

    // Lists: own sessions only; an admin's: all.
    let other_res = gw
        .raw(
            &format!("POST /create-session HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {OTHER}"),
            password_body(&sshd).to_string().as_bytes(),
        )
        .await;
    let theirs = other_res.json()["id"].as_str().unwrap().to_owned();
    let ids = |res: HttpResponse| -> Vec<String> {
        res.json()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(gw.get_authorized("/sessions").await),
        vec![mine.clone()]
    );
    assert_eq!(
        ids(gw.get_as("/sessions", OTHER).await),
        vec![theirs.clone()]
    );
    assert_eq!(
        ids(gw.get_as("/sessions", ADMIN_TOKEN).await),
        vec![theirs.clone(), mine.clone()]
    );
    let res = gw.get_as("/sessions?limit=1", ADMIN_TOKEN).await.json();
    assert_eq!(res["sessions"][0]["id"], theirs);
    let cursor = res["next_cursor"].as_str().unwrap().to_owned();
    let res = gw
        .get_as(&format!("/sessions?limit=1&cursor={cursor}"), ADMIN_TOKEN)
        .await
        .json();
    assert_eq!(
        (
            res["sessions"][0]["id"].as_str(),
            res["next_cursor"].as_str()
        ),
        (Some(mine.as_str()), None)
    );
    gw.call("DELETE", &path, Some(TEST_TOKEN), None).await;
    assert_eq!(
        ids(gw.get_as("/sessions?state=pending", ADMIN_TOKEN).await),
        vec![theirs.clone()]
    );
    assert_eq!(
        ids(gw.get_as("/sessions?state=ended", ADMIN_TOKEN).await),
        vec![mine.clone()]
    );
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_ids_and_timers_are_refused_with_their_codes() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.max_session_time = Some(Duration::from_secs(3600))).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    for query in [
        "wait=asleep",
        "wait=",
        "wait=live&timeout=-5s",
        "wait=live&timeout=0",
        "wait=live&timeout=11m",
        "wait=live&timeout=99999999999999999999",
        "wait=live&wait=ended",
        "timeout=5s",
        "wait=live&extra=1",
    ] {
        let res = wait(&gw, &id, query).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (400, "invalid_query"),
            "{query}"
        );
    }
    for query in [
        "state=asleep",
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=abc",
        "other=1",
    ] {
        let res = gw.get_authorized(&format!("/sessions?{query}")).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (400, "invalid_query"),
            "{query}"
        );
    }
    for path in [
        format!("/sessions/{}", uuid::Uuid::new_v4()),
        "/sessions/not-a-uuid".to_owned(),
        format!("/sessions/{id}x"),
    ] {
        let res = gw.get_authorized(&path).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (404, "unknown_session"),
            "{path}"
        );
    }
    let res = gw
        .call("PUT", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
        .await;
    assert_eq!(res.status, 405);
    for (extra, field) in [
        (json!({"ttl": 0}), "ttl"),
        (json!({"ttl": "-1s"}), "ttl"),
        (json!({"ttl": "soon"}), "ttl"),
        (json!({"ttl": "25h"}), "ttl"),
        (json!({"max_duration": "2h"}), "max_duration"),
        (json!({"idle_timeout": 1.5}), "idle_timeout"),
        (json!({"resume_grace": "1m"}), "resume_grace"),
        (json!({"handback": "yes"}), "handback"),
    ] {
        let res = gw.create(&with(password_body(&sshd), extra.clone())).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (400, "invalid_field"),
            "{extra}"
        );
        assert!(
            res.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{}",
            res.text()
        );
    }
    // Extend: malformed, past the bound, or on an ended session.
    let extend = |id: &str, body: Value| {
        let path = format!("/sessions/{id}/extend");
        let client = gw.client();
        async move {
            client
                .call("POST", &path, Some(TEST_TOKEN), Some(&body))
                .await
        }
    };
    for (body, code) in [
        (json!({}), "missing_field"),
        (json!({"by": "x"}), "invalid_field"),
        (json!({"by": -5}), "invalid_field"),
        (json!({"by": "1m", "and": 1}), "invalid_field"),
        (json!([1]), "malformed_body"),
        (json!({"by": "24h"}), "invalid_field"),
    ] {
        let res = extend(&id, body.clone()).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (400, code),
            "{body}"
        );
    }
    let res = extend(&id, json!({"by": "5m"})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    gw.call("DELETE", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
        .await;
    let res = extend(&id, json!({"by": "5m"})).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (409, "session_ended")
    );
    assert_eq!(gw.handle.pending(), 0);
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_extend_moves_the_join_deadline() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw
        .create_id(&with(password_body(&sshd), json!({"ttl": "2s"})))
        .await;
    let before = status(&gw, &id).await["expires_at"].clone();
    let res = gw
        .call(
            "POST",
            &format!("/sessions/{id}/extend"),
            Some(TEST_TOKEN),
            Some(&json!({"by": 60})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let after = res.json()["expires_at"].clone();
    assert!(after.as_str() > before.as_str(), "{before} → {after}");
    // Past the old deadline, the link still opens.
    let s = wait(&gw, &id, "wait=expired&timeout=3s").await.json();
    assert_eq!(
        (s["state"].as_str(), s["timed_out"].as_bool()),
        (Some("pending"), Some(true))
    );
    let mut term = open(&gw, &id).await;
    term.ready().await;
    term.close().await;
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_extend_moves_the_cap_and_tells_the_page() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.max_session_time = Some(Duration::from_secs(3600))).await;
    let id = gw
        .create_id(&with(password_body(&sshd), json!({"max_duration": "200s"})))
        .await;
    let mut term = open(&gw, &id).await;
    let ready = term.ready().await;
    let ends_in = ready["ends_in"].as_u64().unwrap();
    assert!((190..=200).contains(&ends_in), "{ready}");
    let before = status(&gw, &id).await["ends_at"].clone();
    let path = format!("/sessions/{id}/extend");
    let res = gw
        .call("POST", &path, Some(TEST_TOKEN), Some(&json!({"by": "10m"})))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["ends_at"].as_str() > before.as_str());
    let timer = term.expect("session-timer").await;
    let ends_in = timer["ends_in"].as_u64().unwrap();
    assert!((780..=800).contains(&ends_in), "{timer}");
    // Past --max-session-time (1h) from the claim: refused, the cap stays.
    let res = gw
        .call("POST", &path, Some(TEST_TOKEN), Some(&json!({"by": "1h"})))
        .await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("--max-session-time"), "{}", res.text());
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_on_its_own_idle_timeout() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw
        .create_id(&with(password_body(&sshd), json!({"idle_timeout": "1s"})))
        .await;
    let mut term = open(&gw, &id).await;
    term.ready().await;
    term.expect_error("idle_timeout").await;
    let s = wait(&gw, &id, "wait=ended&timeout=10s").await.json();
    assert_eq!(
        (s["state"].as_str(), s["end_reason"].as_str()),
        (Some("ended"), Some("idle_timeout"))
    );
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handback_ends_the_session_with_the_verdict() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    // Without handback: a warning, the session goes on.
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = open(&gw, &id).await;
    assert_eq!(term.ready().await["handback"], false);
    term.send_event("handback", json!("fail")).await;
    assert_eq!(term.expect("warning").await["code"], "handback_off");
    term.run("true").await;
    term.close().await;

    for verdict in ["continue", "fail"] {
        let id = gw
            .create_id(&with(password_body(&sshd), json!({"handback": true})))
            .await;
        assert_eq!(status(&gw, &id).await["handback_enabled"], true);
        let mut term = open(&gw, &id).await;
        assert_eq!(term.ready().await["handback"], true);
        term.send_event("handback", json!(verdict)).await;
        let closed = term.expect("ssh-closed").await;
        assert_eq!(
            (closed["reason"].as_str(), closed["handback"].as_str()),
            (Some("handback"), Some(verdict))
        );
        let s = wait(&gw, &id, "wait=ended&timeout=10s").await.json();
        assert_eq!(s["end_reason"], "handback");
        assert_eq!(s["handback"], verdict);
    }
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_goes_away_is_freed() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut stream = gw.connect().await;
        let head = format!(
            "GET /sessions/{id}?wait=ended&timeout=5m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    wait_until(|| gw.handle.waiters() == 5).await;
    drop(streams);
    wait_until(|| gw.handle.waiters() == 0).await;
    assert_eq!(
        status(&gw, &id).await["state"],
        "pending",
        "the session is untouched"
    );
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_answers_every_waiter() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.drain_timeout = Duration::from_secs(30)).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = open(&gw, &id).await;
    term.ready().await;
    let mut stream = gw.connect().await;
    let head = format!(
        "GET /sessions/{id}?wait=ended&timeout=5m HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    wait_until(|| gw.handle.waiters() == 1).await;
    let client = gw.client();
    let stopping = tokio::spawn(gw.stop());
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("\"draining\":true") && text.contains("\"state\":\"live\""),
        "{text}"
    );
    // The live session still runs through the drain; ending it lets the stop finish.
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stopped in time")
        .unwrap();
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_ended_sessions_within_its_bounds() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.session_history_entries = 2).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = gw.create_id(&password_body(&sshd)).await;
        gw.call("DELETE", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
            .await;
        ids.push(id);
    }
    let res = gw.get_authorized(&format!("/sessions/{}", ids[0])).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (404, "unknown_session")
    );
    assert_eq!(status(&gw, &ids[2]).await["state"], "revoked");
    assert_eq!(gw.handle.known_sessions(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_read_again_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "ci:first-token-0123456789abcdef\n").unwrap();
    let sshd = Sshd::start();
    let source = alfresco_ssh::config::TokenSource {
        file: Some(file.clone()),
        env: None,
    };
    let tokens = source.load().unwrap();
    let gw = Gateway::start_with(move |c| {
        c.api_tokens = std::sync::Arc::new(tokens);
        c.token_source = source;
    })
    .await;
    let create = |token: &'static str| {
        let client = gw.client();
        let body = password_body(&sshd).to_string();
        async move {
            client
                .raw(
                    &format!("POST /create-session HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}"),
                    body.as_bytes(),
                )
                .await
                .status
        }
    };
    assert_eq!(create("first-token-0123456789abcdef").await, 201);
    std::fs::write(&file, "ci2:second-token-0123456789abcdef:admin\n").unwrap();
    assert_eq!(gw.handle.reload_tokens().unwrap(), 1);
    assert_eq!(create("first-token-0123456789abcdef").await, 401);
    assert_eq!(create("second-token-0123456789abcdef").await, 201);
    // A broken file keeps the tokens in force.
    std::fs::write(&file, "bad name:short\n").unwrap();
    assert!(gw.handle.reload_tokens().is_err());
    assert_eq!(create("second-token-0123456789abcdef").await, 201);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extend_reaches_viewers_and_a_page_that_was_away() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.resume_grace = Some(Duration::from_secs(60))).await;
    let id = gw
        .create_id(&with(
            password_body(&sshd),
            json!({"max_duration": "200s", "handback": true}),
        ))
        .await;
    let mut term = open(&gw, &id).await;
    let ready = term.ready().await;
    let token = ready["resume_token"].as_str().unwrap().to_owned();
    let share = gw
        .post(&format!("/sessions/{id}/share"), "application/json", b"")
        .await;
    assert_eq!(share.status, 201, "{}", share.text());
    let link = share.json()["view_id"].as_str().unwrap().to_owned();
    let mut viewer = gw.ws().await;
    viewer.send_event("view-session", json!({"id": link})).await;
    assert_eq!(viewer.expect("connection-ready").await["handback"], false);
    // The page goes away; the job extends; the viewer hears it at once.
    term.vanish();
    let s = wait(&gw, &id, "wait=detached&timeout=15s").await.json();
    assert_eq!(s["state"], "detached", "{s}");
    let res = gw
        .call(
            "POST",
            &format!("/sessions/{id}/extend"),
            Some(TEST_TOKEN),
            Some(&json!({"by": "10m"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let timer = viewer.expect("session-timer").await;
    assert!(
        (780..=800).contains(&timer["ends_in"].as_u64().unwrap()),
        "{timer}"
    );
    // The page that comes back learns the new cap and keeps its buttons.
    let mut back = gw.ws().await;
    back.send_event(
        "resume-session",
        json!({"token": token, "offset": 0, "cols": 80, "rows": 24}),
    )
    .await;
    let resumed = back.expect("session-resumed").await;
    assert_eq!(resumed["handback"], true, "{resumed}");
    assert!(
        (780..=800).contains(&resumed["ends_in"].as_u64().unwrap()),
        "{resumed}"
    );
    back.input("exit\r").await;
    back.expect("ssh-closed").await;
    gw.assert_idle().await;
    gw.stop().await;
}
