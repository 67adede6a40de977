//! Webhooks end to end: the gateway's ledger tells them of each transition of a real
//! session against the real sshd, in order (created, opened, ready, detached, resumed, and
//! each kind of end); a stalled or failing receiver leaves the session's echo, flood and end
//! as they are; a graceful shutdown still sends the last events.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::receiver::{Answer, Received, Receiver};
use super::{SECRET, config, verifies};
use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::sshd::Sshd;
use crate::support::{WAIT, password_body};

/// The gateway with `flags` (webhook flags) applied on top of the test configuration.
async fn gateway_with(flags: &[&str]) -> Gateway {
    let webhook = config(flags).webhook;
    Gateway::start_with(move |c| c.webhook = webhook).await
}

/// The event names the receiver got, in order.
fn events(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.header("x-alfresco-event").to_owned())
        .collect()
}

/// `/metrics` counts `delivered` deliveries, polled until `n` (bounded by `WAIT`).
async fn metrics_delivered(gw: &Gateway, n: u64) {
    let line = format!("alfresco_webhook_deliveries_total{{outcome=\"delivered\"}} {n}");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = gw.get("/metrics").await.text();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_that_exits_posts_created_opened_ready_ended() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let url = receiver.url("/hook");
    let gw = gateway_with(&[
        "--webhook",
        &url,
        "--webhook-secret-file",
        secret.to_str().unwrap(),
    ])
    .await;

    let created = gw.create(&password_body(&sshd)).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    term.input("exit 7\r").await;
    let ended = gw
        .get_authorized(&format!("/sessions/{id}?wait=ended&timeout=15s"))
        .await
        .json();
    assert_eq!(ended["state"], "ended", "{ended}");

    let got = receiver.wait_for(4).await;
    assert_eq!(events(&got), ["created", "opened", "ready", "ended"]);
    for r in &got {
        assert!(verifies(r), "signed");
        let body = r.json();
        assert_eq!(body["session"]["id"], id.as_str());
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains(&crate::support::sshd::test_password()),
            "no credential in {text}"
        );
    }
    let states: Vec<Value> = got
        .iter()
        .map(|r| r.json()["session"]["state"].clone())
        .collect();
    assert_eq!(states, ["pending", "connecting", "live", "ended"]);
    assert_eq!(got[0].json()["url"], created["url"], "the link, on created");
    for r in &got[1..] {
        assert_eq!(r.json().get("url"), None, "and on created only");
    }
    assert_eq!(got[1].json()["session"]["client"], "127.0.0.1");
    let last = got[3].json();
    assert_eq!(last["session"]["end_reason"], "exited");
    assert_eq!(last["session"]["exit_status"], 7);
    assert_eq!(last["session"], ended_without_wait_fields(ended));
    metrics_delivered(&gw, 4).await;
    gw.assert_idle().await;
    gw.stop().await;
}

/// A wait's answer is the status object plus its own fields.
fn ended_without_wait_fields(mut answer: Value) -> Value {
    let object = answer.as_object_mut().unwrap();
    object.remove("timed_out");
    object.remove("draining");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_nobody_opens_posts_expired() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let url = receiver.url("/hook");
    let gw = gateway_with(&["--webhook", &url, "--webhook-format", "slack"]).await;
    let mut body = password_body(&sshd);
    body["ttl"] = "1s".into();
    let id = gw.create_id(&body).await;
    let s = gw
        .get_authorized(&format!("/sessions/{id}?wait=ended&timeout=15s"))
        .await
        .json();
    assert_eq!(s["state"], "expired", "{s}");
    let got = receiver.wait_for(2).await;
    assert_eq!(events(&got), ["created", "expired"]);
    let text = got[1].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.ends_with("expired: nobody opened the link in time"),
        "{text}"
    );
    assert!(got[0].json()["text"].as_str().unwrap().contains(&id));
    gw.assert_idle().await;
    gw.stop().await;
}

/// A receiver that never answers and one that answers 500 (the gateway's own policy: 5 s
/// per attempt, 4 attempts) leave the session as it is: the shell answers, exits, and the
/// end is seen at once, long before the deliveries give up. Shutdown waits for them at most
/// `WEBHOOK_DRAIN` (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_failing_receivers_do_not_change_the_session() {
    let sshd = Sshd::start();
    let stalled = Receiver::start(Answer::Never).await;
    let failing = Receiver::start(Answer::Status(500)).await;
    let (a, b) = (stalled.url("/"), failing.url("/"));
    let gw = gateway_with(&["--webhook", &a, "--webhook", &b]).await;

    let started = Instant::now();
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    for n in 0..20 {
        let marker = format!("echo-{n}-{}", std::process::id());
        assert_eq!(
            term.run(&format!("echo {marker}")).await,
            format!("{marker}\r\n")
        );
    }
    term.input("exit 0\r").await;
    let ended = gw
        .get_authorized(&format!("/sessions/{id}?wait=ended&timeout=15s"))
        .await
        .json();
    let took = started.elapsed();
    assert_eq!(
        (ended["end_reason"].as_str(), ended["exit_status"].as_i64()),
        (Some("exited"), Some(0)),
        "{ended}"
    );
    // The stalled receiver still holds its first delivery (`created`, 5 s per attempt).
    assert!(took < Duration::from_secs(5), "the session took {took:?}");
    assert_eq!(stalled.seen().len(), 1, "one attempt in flight");
    assert!(!failing.seen().is_empty());
    eprintln!("session with a stalled and a failing receiver: {took:?} create to ended");
    gw.assert_idle().await;
    let stopping = Instant::now();
    gw.stop().await;
    let stop_took = stopping.elapsed();
    eprintln!("shutdown with a stalled receiver: {stop_took:?}");
    assert!(
        stop_took < Duration::from_secs(8),
        "shutdown took {stop_took:?}"
    );
}

/// 20 echo round trips and a 100,000-line flood through one session of `gw`: how long each
/// took.
async fn session_figures(gw: &Gateway, sshd: &Sshd) -> (Duration, Duration) {
    let mut term = gw.open(&password_body(sshd), 80, 24).await;
    term.ready().await;
    let started = Instant::now();
    for n in 0..20 {
        let marker = format!("echo-{n}-{}", std::process::id());
        assert_eq!(
            term.run(&format!("echo {marker}")).await,
            format!("{marker}\r\n")
        );
    }
    let echoes = started.elapsed();
    let started = Instant::now();
    term.input("seq 1 100000; echo flood-''done\r").await;
    term.wait_for("flood-done\r\n").await;
    let flood = started.elapsed();
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    (echoes, flood)
}

/// The same session figures with no webhooks and with a stalled and a failing receiver:
/// webhooks act only at state changes, so nothing on the data path waits for them. Printed
/// for the record; asserted only to work, since timings on a shared machine are noisy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_figures_with_and_without_stalled_webhooks() {
    let sshd = Sshd::start();
    let plain = Gateway::start().await;
    let (echo_plain, flood_plain) = session_figures(&plain, &sshd).await;
    plain.assert_idle().await;
    plain.stop().await;

    let stalled = Receiver::start(Answer::Never).await;
    let failing = Receiver::start(Answer::Status(500)).await;
    let (a, b) = (stalled.url("/"), failing.url("/"));
    let hooked = gateway_with(&["--webhook", &a, "--webhook", &b]).await;
    let (echo_hooked, flood_hooked) = session_figures(&hooked, &sshd).await;
    eprintln!(
        "20 echoes: {echo_plain:?} without webhooks, {echo_hooked:?} with a stalled and a \
         failing receiver; 100,000-line flood: {flood_plain:?} / {flood_hooked:?}"
    );
    assert_eq!(
        stalled.seen().len(),
        1,
        "the stalled receiver held its first delivery"
    );
    hooked.assert_idle().await;
}

/// A graceful shutdown still sends the last events, `ended` with `server_shutdown`: the
/// receiver takes 1 s per event, so when the session has ended `ended` is still queued
/// behind the others, and `run` returns only once it went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_last_ended() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Slow(Duration::from_secs(1))).await;
    let url = receiver.url("/hook");
    let gw = gateway_with(&["--webhook", &url]).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    term.ready().await;
    let stopping = Instant::now();
    gw.stop().await;
    eprintln!("shutdown with a live session: {:?}", stopping.elapsed());
    let got = receiver.seen();
    assert_eq!(events(&got), ["created", "opened", "ready", "ended"]);
    assert_eq!(got[3].json()["session"]["end_reason"], "server_shutdown");
}

/// The ends that never went live: `revoked` for a link deleted while pending, `failed` with
/// its code for a wrong password. Each after `created` (and `opened`), and nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_failed_sessions_post_their_end() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let url = receiver.url("/hook");
    let gw = gateway_with(&["--webhook", &url]).await;

    let revoked = gw.create_id(&password_body(&sshd)).await;
    let path = format!("/sessions/{revoked}");
    let answer = gw.call("DELETE", &path, Some(TEST_TOKEN), None).await;
    assert_eq!(answer.json()["state"], "revoked");
    // Idempotent, and so silent: a second DELETE changes nothing and posts nothing.
    gw.call("DELETE", &path, Some(TEST_TOKEN), None).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(events(&got), ["created", "revoked"]);
    assert_eq!(got[1].json()["session"]["end_reason"], "revoked");

    let mut body = password_body(&sshd);
    body["password"] = "not-the-password".into();
    let failed = gw.create_id(&body).await;
    let mut term = gw.ws().await;
    term.start(&failed, 80, 24).await;
    term.expect_error("auth_failed").await;
    let got = receiver.wait_for(5).await;
    assert_eq!(
        events(&got),
        ["created", "revoked", "created", "opened", "failed"]
    );
    let end = got[4].json();
    assert_eq!(end["session"]["id"], failed.as_str());
    assert_eq!(end["session"]["state"], "failed");
    assert_eq!(end["session"]["end_reason"], "auth_failed");
    assert!(!String::from_utf8_lossy(&got[4].body).contains("not-the-password"));
    gw.assert_idle().await;
    gw.stop().await;
    assert_eq!(receiver.seen().len(), 5, "nothing after the end");
}

/// A page that goes away and comes back: `detached`, then `resumed` from its address, and no
/// resume token in either body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_leaves_and_resumes_posts_detached_and_resumed() {
    let sshd = Sshd::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let webhook = config(&["--webhook", &receiver.url("/hook")]).webhook;
    let gw = Gateway::start_with(move |c| {
        c.webhook = webhook;
        c.resume_grace = Some(Duration::from_secs(60));
    })
    .await;
    let mut first = gw.open(&password_body(&sshd), 80, 24).await;
    let ready = first.ready().await;
    let token = ready["resume_token"].as_str().unwrap().to_owned();
    let received = first.output.len();
    first.vanish();
    let got = receiver.wait_for(4).await;
    assert_eq!(events(&got), ["created", "opened", "ready", "detached"]);
    assert_eq!(got[3].json()["session"]["state"], "detached");

    let mut second = gw.ws().await;
    second
        .send_event(
            "resume-session",
            json!({"token": token, "offset": received, "cols": 80, "rows": 24}),
        )
        .await;
    let resumed = second.expect("session-resumed").await;
    let got = receiver.wait_for(5).await;
    assert_eq!(got[4].header("x-alfresco-event"), "resumed");
    assert_eq!(got[4].json()["session"]["state"], "live");
    assert_eq!(got[4].json()["session"]["client"], "127.0.0.1");
    let new_token = resumed["resume_token"].as_str().unwrap();
    for r in &got {
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains(&token) && !text.contains(new_token),
            "a resume token in {text}"
        );
    }
    second.input("exit\r").await;
    second.expect("ssh-closed").await;
    let got = receiver.wait_for(6).await;
    assert_eq!(got[5].header("x-alfresco-event"), "ended");
    gw.assert_idle().await;
    gw.stop().await;
}

/// The binary refuses a bad webhook flag at start-up (`--check-config` here), with the
/// flag's position and never the URL: a URL's path may be its secret.
#[test]
fn check_config_refuses_bad_webhook_flags() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_alfresco-ssh"))
            .arg("--check-config")
            .args(args)
            .env_remove("ALFRESCO_WEBHOOK")
            .env_remove("ALFRESCO_WEBHOOK_SECRET_FILE")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&["--webhook", "ftp://hooks.example/SECRET-PATH"]);
    assert!(!ok);
    assert!(stderr.contains("--webhook #1: only http"), "{stderr}");
    assert!(!stderr.contains("SECRET-PATH"), "{stderr}");
    let (ok, stderr) = run(&["--webhook-secret-file", "/nonexistent/secret"]);
    assert!(!ok);
    assert!(
        stderr.contains("--webhook-secret-file needs --webhook"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["--webhook", "https://hooks.example/x"]);
    assert!(ok, "{stderr}");
}
