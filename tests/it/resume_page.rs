//! Resume and share links from the page's side, in real Chromium: a cut connection and a
//! reload resume the session with the screen as it would have been, and the page's share
//! button makes a view link that watches without typing.

use std::time::Duration;

use crate::support::browser::Browser;
use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::proxy::Proxy;
use crate::support::sshd::Sshd;
use crate::support::term::PROMPT;

async fn gateway() -> Gateway {
    Gateway::start_with(|c| c.resume_grace = Some(Duration::from_secs(60))).await
}

/// Opens a new session's page at `base` (the gateway or a proxy in front of it) and waits
/// for the prompt; returns the session id.
async fn open(sshd: &Sshd, gw: &Gateway, browser: &Browser, base: &str) -> String {
    let id = gw.create_id(&password_body(sshd)).await;
    browser.open(&format!("{base}/{id}")).await;
    browser.wait_for_line(PROMPT.trim_end()).await;
    id
}

/// Prints 300 numbered lines over about 1.5 s, then a marker.
const SLOW_OUTPUT: &str =
    "for i in $(seq 1 300); do echo line-$i; sleep 0.005; done; echo all-''done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_with_the_same_screen() {
    let sshd = Sshd::start();
    let gw = gateway().await;
    let proxy = Proxy::start(gw.addr).await;
    let browser = Browser::start().await;

    // The reference: the same command, never interrupted.
    open(&sshd, &gw, &browser, &format!("http://{}", gw.addr)).await;
    browser.enter(SLOW_OUTPUT).await;
    browser.wait_for_line("all-done").await;
    let reference = browser.screen_text().await;
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;

    open(&sshd, &gw, &browser, &format!("http://{}", proxy.addr)).await;
    browser.enter(SLOW_OUTPUT).await;
    browser.wait_for_line("line-40").await;
    proxy.cut();
    browser.wait_for_state("reconnecting").await;
    // The network says it is back, twice in a row: two reconnects race, and only the
    // newest socket may speak for the page (the older one is taken over).
    browser
        .execute("window.dispatchEvent(new Event('online')); window.dispatchEvent(new Event('online')); return null;")
        .await;
    browser.wait_for_line("all-done").await;
    assert_eq!(browser.state().await, "connected");
    let resumed = browser.screen_text().await;
    assert_eq!(
        resumed, reference,
        "the screen after a cut differs from an uninterrupted run"
    );

    // The resumed session takes input as before.
    browser.enter("echo after-''cut").await;
    browser.wait_for_line("after-cut").await;
    // A socket the racing reconnects left behind would be ended by the gateway after its
    // 10 s start deadline, and its error must not reach the page.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        browser.state().await,
        "connected",
        "{}",
        browser.status_text().await
    );
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resumes_the_session() {
    let sshd = Sshd::start();
    let gw = gateway().await;
    let browser = Browser::start().await;
    let base = format!("http://{}", gw.addr);
    let id = open(&sshd, &gw, &browser, &base).await;
    browser.enter("cd /tmp; echo before-''reload").await;
    browser.wait_for_line("before-reload").await;

    browser.open(&format!("{base}/{id}")).await;
    // The new page rebuilds the screen from the session's buffer.
    browser.wait_for_line("before-reload").await;
    browser.wait_for_state("connected").await;
    browser.enter("pwd").await;
    browser.wait_for_line("/tmp").await;
    assert_eq!(gw.handle.live(), 1, "still the one session");
    browser.enter("exit 7").await;
    browser.wait_for_state("ended").await;
    assert!(browser.status_text().await.contains("exited with status 7"));
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_link_watches_but_cannot_type() {
    let sshd = Sshd::start();
    let gw = gateway().await;
    let browser = Browser::start().await;
    let base = format!("http://{}", gw.addr);
    open(&sshd, &gw, &browser, &base).await;
    browser.enter("echo shared-''screen").await;
    browser.wait_for_line("shared-screen").await;

    // The page's own share button makes the link, with the page's resume token.
    browser.click("#share").await;
    let notice = browser
        .wait_until("the share link under the bar", async || {
            let text = browser
                .execute("return document.getElementById('notice').textContent")
                .await;
            text.as_str()
                .filter(|t| t.contains("/view/"))
                .map(str::to_owned)
        })
        .await;
    let view_url = notice
        .split_whitespace()
        .last()
        .expect("a link in the notice")
        .to_owned();
    assert!(view_url.starts_with(&format!("{base}/view/")), "{notice}");

    let owner = browser.open_in_new_tab(&view_url).await;
    browser.wait_for_state("viewing").await;
    browser.wait_for_line("shared-screen").await;
    assert!(browser.status_text().await.contains("read-only"));
    browser.type_text("echo typed-in-view\n").await;
    let viewer = browser.open_in_new_tab("about:blank").await;
    browser.switch_to(owner).await;
    browser.enter("echo from-''owner").await;
    browser.wait_for_line("from-owner").await;
    assert!(
        !browser.screen_text().await.contains("typed-in-view"),
        "a viewer's keys reached the shell"
    );
    browser.switch_to(viewer).await;
    browser.wait_for_line("from-owner").await;
    browser.close().await;
}
