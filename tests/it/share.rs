//! Read-only share links: made by the session's page or an API token holder, watched live
//! from the current screen on, never typed into, capped, revocable, gone with the session.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gateway::{Gateway, HttpResponse, TEST_TOKEN};
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::Term;

async fn gateway(max_viewers: usize) -> Gateway {
    Gateway::start_with(|c| {
        c.resume_grace = Some(Duration::from_secs(60));
        c.max_viewers = max_viewers;
    })
    .await
}

/// Creates and opens a session; returns the socket, the session id and its resume token.
async fn open(gw: &Gateway, sshd: &Sshd) -> (Term, String, String) {
    let id = gw.create_id(&password_body(sshd)).await;
    let mut term = gw.ws().await;
    term.start(&id, 80, 24).await;
    let ready = term.ready().await;
    let token = ready["resume_token"].as_str().unwrap().to_owned();
    (term, id, token)
}

async fn share(gw: &Gateway, id: &str, bearer: Option<&str>) -> HttpResponse {
    let auth = bearer.map_or(String::new(), |b| format!("\r\nAuthorization: Bearer {b}"));
    gw.raw(&format!("POST /sessions/{id}/share HTTP/1.1{auth}"), b"")
        .await
}

async fn revoke(gw: &Gateway, id: &str, link: &str, bearer: &str) -> HttpResponse {
    gw.raw(
        &format!("DELETE /sessions/{id}/share/{link} HTTP/1.1\r\nAuthorization: Bearer {bearer}"),
        b"",
    )
    .await
}

/// A share link's view id, checking the 201 answer.
async fn link(gw: &Gateway, id: &str, bearer: &str) -> String {
    let res = share(gw, id, Some(bearer)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let json = res.json();
    let link = json["view_id"].as_str().unwrap().to_owned();
    assert_eq!(
        json["view_url"],
        format!("http://{}/view/{link}", gw.addr),
        "{json}"
    );
    link
}

async fn view(gw: &Gateway, link: &str) -> Term {
    let mut viewer = gw.ws().await;
    viewer.send_event("view-session", json!({"id": link})).await;
    viewer
}

async fn viewing(viewer: &mut Term) -> Value {
    let ready = viewer.expect("connection-ready").await;
    assert_eq!(ready["read_only"], true, "{ready}");
    assert!(
        ready.get("resume_token").is_none(),
        "viewers get no token: {ready}"
    );
    ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_the_screen_and_live_output_but_cannot_type() {
    let sshd = Sshd::start();
    let gw = gateway(10).await;
    let (mut owner, id, token) = open(&gw, &sshd).await;
    owner.run("echo before-''share").await;
    let link = link(&gw, &id, &token).await;
    assert_eq!(gw.get(&format!("/view/{link}")).await.status, 200);

    let mut viewer = view(&gw, &link).await;
    let ready = viewing(&mut viewer).await;
    assert_eq!(
        (ready["cols"].as_u64(), ready["rows"].as_u64()),
        (Some(80), Some(24))
    );
    viewer.wait_for("before-share\r\n").await;
    owner.run("echo live-''output").await;
    viewer.wait_for("live-output\r\n").await;

    // Typing and resizing from the view do nothing but earn one warning.
    viewer.input("echo from-''viewer\r").await;
    viewer.resize(20, 5).await;
    let warning = viewer.expect("warning").await;
    assert_eq!(warning["code"], "read_only");
    assert_eq!(owner.run("stty size").await, "24 80\r\n");
    owner.run("echo after-''typing").await;
    viewer.wait_for("after-typing\r\n").await;
    assert!(!owner.text().contains("from-viewer"), "{}", owner.text());

    // The owner's resize reaches the viewer's page.
    owner.resize(100, 30).await;
    let size = viewer.expect("terminal-size").await;
    assert_eq!(size, json!({"cols": 100, "rows": 30}));

    // The session ends: the viewer is told, and the link is gone.
    owner.input("exit 4\r").await;
    owner.expect("ssh-closed").await;
    let closed = viewer.expect("ssh-closed").await;
    assert_eq!(closed["exit_status"], 4);
    gw.assert_idle().await;
    assert_eq!(gw.get(&format!("/view/{link}")).await.status, 404);
    let mut late = view(&gw, &link).await;
    late.expect_error("unknown_view").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_needs_the_resume_token_or_an_api_token() {
    let sshd = Sshd::start();
    let gw = gateway(10).await;
    let (owner, id, token) = open(&gw, &sshd).await;
    assert_eq!(share(&gw, &id, None).await.error_code(), "unauthorized");
    let wrong = share(&gw, &id, Some(&"0".repeat(64))).await;
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "unauthorized")
    );
    link(&gw, &id, TEST_TOKEN).await;
    link(&gw, &id, &token).await;
    let unknown = share(&gw, &uuid(), Some(TEST_TOKEN)).await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "unknown_session")
    );
    let get = gw.get(&format!("/sessions/{id}/share")).await;
    assert_eq!(get.status, 405);
    assert_eq!(gw.get(&format!("/sessions/{id}/other")).await.status, 404);
    // Another session's token is no key to this one.
    let (other, _, other_token) = open(&gw, &sshd).await;
    assert_eq!(share(&gw, &id, Some(&other_token)).await.status, 401);
    other.close().await;
    owner.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_links_are_capped() {
    let sshd = Sshd::start();
    let gw = gateway(1).await;
    let (mut owner, id, token) = open(&gw, &sshd).await;
    let link = link(&gw, &id, &token).await;
    let second = share(&gw, &id, Some(&token)).await;
    assert_eq!(
        (second.status, second.error_code().as_str()),
        (409, "too_many_share_links")
    );
    let mut first = view(&gw, &link).await;
    viewing(&mut first).await;
    let mut extra = view(&gw, &link).await;
    assert_eq!(extra.expect_error("too_many_viewers").await.1, Some(1013));
    // The first viewer is unaffected.
    owner.run("echo still-''watched").await;
    first.wait_for("still-watched\r\n").await;
    owner.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_closes_its_viewers_and_opens_no_more() {
    let sshd = Sshd::start();
    let gw = gateway(10).await;
    let (mut owner, id, token) = open(&gw, &sshd).await;
    let revoked = link(&gw, &id, &token).await;
    let kept = link(&gw, &id, &token).await;
    let mut gone = view(&gw, &revoked).await;
    viewing(&mut gone).await;
    let mut stays = view(&gw, &kept).await;
    viewing(&mut stays).await;

    let res = revoke(&gw, &id, &revoked, &token).await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(gone.expect_error("share_revoked").await.1, Some(1008));
    assert_eq!(revoke(&gw, &id, &revoked, &token).await.status, 404);
    assert_eq!(revoke(&gw, &id, &kept, "wrong").await.status, 401);
    let mut again = view(&gw, &revoked).await;
    again.expect_error("unknown_view").await;
    assert_eq!(gw.get(&format!("/view/{revoked}")).await.status, 404);

    owner.run("echo for-''the-rest").await;
    stays.wait_for("for-the-rest\r\n").await;
    owner.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_survive_the_owner_dropping_and_resuming() {
    let sshd = Sshd::start();
    let gw = gateway(10).await;
    let (owner, id, token) = open(&gw, &sshd).await;
    let link = link(&gw, &id, &token).await;
    let mut viewer = view(&gw, &link).await;
    viewing(&mut viewer).await;
    let offset = owner.output.len();
    owner.vanish();
    let mut back = gw.ws().await;
    back.send_event(
        "resume-session",
        json!({"token": token, "offset": offset, "cols": 80, "rows": 24}),
    )
    .await;
    back.expect("session-resumed").await;
    back.run("echo back-''again").await;
    viewer.wait_for("back-again\r\n").await;
    back.close().await;
}

fn uuid() -> String {
    // Any well-formed id that no session has.
    "5b0e6f1c-9c1f-4a57-b2a2-3f1d2e4c5a6b".into()
}

/// A viewer that stops reading is closed, and the owner's flood does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_does_not_read_is_dropped_not_waited_for() {
    let sshd = Sshd::start();
    let gw = gateway(10).await;
    let (mut owner, id, token) = open(&gw, &sshd).await;
    let link = link(&gw, &id, &token).await;
    let mut viewer = view(&gw, &link).await;
    viewing(&mut viewer).await;
    // ~27 MB of output: far more than the socket buffers and the viewer's queue hold.
    owner.input("seq 1 4000000; echo flood-''done\r").await;
    owner.wait_for("flood-done\r\n").await;
    // Only now does the viewer read: what it was sent, then why it was dropped.
    let (message, close) = viewer.expect_error("viewer_too_slow").await;
    assert_eq!(close, Some(1013));
    assert!(message.contains("behind"), "{message}");
    assert!(
        viewer.output.len() < owner.output.len(),
        "the viewer got everything ({} bytes) though it never read",
        viewer.output.len()
    );
    assert_eq!(owner.run("echo owner-''fine").await, "owner-fine\r\n");
    owner.input("exit\r").await;
    owner.expect("ssh-closed").await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_can_be_turned_off() {
    let sshd = Sshd::start();
    let gw = gateway(0).await;
    let (mut owner, id, token) = open(&gw, &sshd).await;
    let res = share(&gw, &id, Some(&token)).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (409, "too_many_share_links")
    );
    assert!(res.text().contains("--max-viewers 0"), "{}", res.text());
    owner.input("exit\r").await;
    owner.expect("ssh-closed").await;
}
