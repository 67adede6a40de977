//! The terminal page in a real headless Chromium: what a person types and sees, through
//! terminal.js, xterm.js, the WebSocket and SSH. Each test has its own sshd, gateway and
//! browser, so they run in parallel with the rest of the suite.

use crate::support::browser::Browser;
use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::PROMPT;

/// Creates a session, opens its page and waits for the prompt; returns the page's URL.
async fn open_session(sshd: &Sshd, gw: &Gateway, browser: &Browser) -> String {
    let id = gw.create_id(&password_body(sshd)).await;
    let url = format!("http://{}/{id}", gw.addr);
    browser.open(&url).await;
    // The screen keeps no trailing blanks, so an idle prompt is a line without its space.
    browser.wait_for_line(PROMPT.trim_end()).await;
    // connection-ready comes before any output, so the state is already set.
    assert_eq!(browser.state().await, "connected");
    url
}

/// A word no earlier output can contain.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_command_output_appears() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    let word = unique("hello");
    browser.enter(&format!("echo {word}")).await;
    // A line that is exactly the word is the output, not the echoed command line.
    let screen = browser.wait_for_line(&word).await;
    assert!(
        screen.contains(&format!("{PROMPT}echo {word}")),
        "the typed command is echoed after the prompt:\n{screen}"
    );
    assert_eq!(browser.state().await, "connected");
    assert_eq!(gw.handle.live(), 1);

    browser.close().await;
    gw.assert_idle().await;
}

/// A window resize refits the terminal and the new size reaches the remote PTY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_resize_reaches_the_pty() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    let initial = browser.term_size().await;
    assert_stty_matches(&browser, initial).await;

    let smaller = resize_window(&browser, 640, 420).await;
    assert!(
        smaller.0 < initial.0 && smaller.1 < initial.1,
        "{initial:?} became {smaller:?}"
    );
    assert_stty_matches(&browser, smaller).await;

    let larger = resize_window(&browser, 1200, 820).await;
    assert!(
        larger.0 > initial.0 && larger.1 > initial.1,
        "{initial:?} became {larger:?}"
    );
    assert_stty_matches(&browser, larger).await;

    browser.close().await;
    gw.assert_idle().await;
}

/// Resizes the window and waits for the terminal to refit; returns its new (cols, rows).
async fn resize_window(browser: &Browser, width: u32, height: u32) -> (u16, u16) {
    let before = browser.term_size().await;
    browser.set_window_size(width, height).await;
    browser
        .wait_until(
            &format!("a refit to a {width}x{height} window"),
            async || Some(browser.term_size().await).filter(|size| *size != before),
        )
        .await
}

/// `stty size` in the shell reports the size the page shows, `expected` (cols, rows).
async fn assert_stty_matches(browser: &Browser, expected: (u16, u16)) {
    let out = browser.run("stty size").await;
    // Read again after the output: a late refit would make the page and the PTY disagree.
    let (cols, rows) = browser.term_size().await;
    assert_eq!((cols, rows), expected, "the terminal refit again");
    assert_eq!(out, [format!("{rows} {cols}")], "stty size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_shows_in_the_status_bar() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    browser.enter("exit 3").await;
    browser.wait_for_state("ended").await;
    let status = browser.status_text().await;
    assert!(status.contains('3'), "status bar: {status:?}");
    gw.assert_idle().await;
    assert_eq!(browser.state().await, "ended", "the state is final");

    browser.close().await;
}

/// A used link and an unknown one both get the same friendly page, and opening a used link
/// does not disturb the session that claimed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_and_unknown_links_show_the_notice_page() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let url = open_session(&sshd, &gw, &browser).await;

    let session_tab = browser.open_in_new_tab(&url).await;
    let used = browser.page_text().await;
    assert!(
        used.contains("can't be opened") && used.contains("already been used"),
        "used link: {used:?}"
    );
    assert_eq!(
        browser.execute("return typeof window.alfresco").await,
        "undefined",
        "no terminal on the notice page"
    );

    browser
        .open(&format!("http://{}/{}", gw.addr, uuid::Uuid::new_v4()))
        .await;
    let unknown = browser.page_text().await;
    assert_eq!(unknown, used, "the same page whatever the reason");

    browser.switch_to(session_tab).await;
    assert_eq!(browser.state().await, "connected");
    let word = unique("still");
    browser.enter(&format!("echo {word}")).await;
    browser.wait_for_line(&word).await;

    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_goes_both_ways() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    // CJK and emoji are two cells wide, é is two bytes, ✓ three and 😀 four. The emoji
    // comes as from an emoji picker or IME, one input event: typed as a key it would reach
    // xterm.js as two keypresses, one per UTF-16 surrogate (see `Browser::insert_text`).
    let text = "日本語 é ✓ 😀";
    browser.type_text("echo 日本語 é ✓ ").await;
    browser.insert_text("😀").await;
    browser.enter("").await;
    let screen = browser.wait_for_line(text).await;
    assert!(
        screen.contains(&format!("{PROMPT}echo {text}")),
        "the typed line is echoed as typed:\n{screen}"
    );

    // Typed as a key, the emoji arrives as a lone surrogate: the page drops it, and the
    // session lives on (it used to send JSON the server refused, ending the session).
    browser.type_text("😀").await;
    browser.enter("echo still-here").await;
    browser.wait_for_line("still-here").await;
    assert_eq!(browser.state().await, "connected");

    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_ssh_server_shows_an_error() {
    let mut sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    sshd.stop();
    browser.wait_for_state("error").await;
    let status = browser.status_text().await;
    assert!(status.contains("connection_lost"), "status bar: {status:?}");
    gw.assert_idle().await;

    browser.close().await;
}
