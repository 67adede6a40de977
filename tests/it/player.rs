//! The recording player page in a real headless Chromium: it asks for the API token, refuses
//! a wrong one visibly, fetches the recording with the right one and plays it through
//! xterm.js, resizes included.

use crate::support::browser::Browser;
use crate::support::gateway::{ADMIN_TOKEN, Gateway};

/// A recording written by hand in the documented format: the player must not depend on
/// our writer's quirks. The long pauses are shortened to 2 s, then played at 16×.
fn cast(marker: &str) -> String {
    [
        r#"{"version":2,"width":40,"height":10,"timestamp":1796283612,"title":"me@host:22","env":{"TERM":"xterm-256color"}}"#,
        r#"[0.2,"o","first line\r\n"]"#,
        r#"[0.4,"i","typed\r"]"#,
        r#"[1.0,"r","60x12"]"#,
        &format!(r#"[30.0,"o","{marker} h\u00e9 \u20ac\r\n"]"#),
        r#"[31.0,"o","last line\r\n"]"#,
    ]
    .join("\n")
        + "\n"
}

/// Puts `token` in the form and submits it, as a person pressing Enter would.
async fn submit_token(browser: &Browser, token: &str) {
    let script = format!(
        "document.getElementById('token').value = {token:?};\
         document.getElementById('token-form').requestSubmit(); return true;"
    );
    browser.execute(&script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_plays_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_recording(dir.path(), false).await;
    let marker = format!(
        "played-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let name = "20261203T074012Z-5b0e6f1c";
    std::fs::write(dir.path().join(format!("{name}.cast")), cast(&marker)).unwrap();
    let browser = Browser::start().await;
    let url = format!("http://{}/recordings/{name}", gw.addr);
    browser.open(&url).await;
    browser.wait_for_state("token").await;

    // A wrong token is refused in the page, and the form comes back.
    submit_token(&browser, "not-the-token-0123456789").await;
    browser.wait_for_state("error").await;
    let status = browser.status_text().await;
    assert!(status.contains("refused (401)"), "status: {status:?}");
    let form_shown = browser
        .execute("return !document.getElementById('token-form').hidden")
        .await;
    assert_eq!(form_shown, true);

    submit_token(&browser, ADMIN_TOKEN).await;
    browser.wait_for_state("ready").await;
    assert_eq!(browser.term_size().await, (40, 10));
    browser
        .execute(
            "const speed = document.getElementById('speed');\
             speed.value = '16'; speed.dispatchEvent(new Event('change'));\
             document.getElementById('play').click(); return true;",
        )
        .await;
    let screen = browser.wait_for_screen(&format!("{marker} hé €")).await;
    assert!(screen.contains("first line"), "{screen}");
    assert!(
        !screen.contains("typed"),
        "input events are never shown: {screen}"
    );
    browser.wait_for_state("ended").await;
    assert!(browser.screen_text().await.contains("last line"));
    assert_eq!(
        browser.term_size().await,
        (60, 12),
        "the resize was applied"
    );
    let position = browser
        .execute("return document.getElementById('position').textContent")
        .await;
    // 0.2 + 0.2 + 0.6 + 2 (of 29) + 1 seconds.
    assert_eq!(position, "0:04 / 0:04");

    // The token stays for the tab: a reload loads at once.
    browser.open(&url).await;
    browser.wait_for_state("ready").await;
    // An unknown recording says so.
    browser
        .open(&format!(
            "http://{}/recordings/20261203T074012Z-00000000",
            gw.addr
        ))
        .await;
    browser.wait_for_state("error").await;
    let status = browser.status_text().await;
    assert!(status.contains("no such recording"), "status: {status:?}");

    browser.close().await;
    gw.stop().await;
}
