//! Issue 18 in real Chromium: every page the gateway serves (the terminal page, the 404
//! notice, the recording player's token prompt) fits a 320 px phone, a 390 px phone and a
//! 1280 px desktop without scrolling sideways, the notice pages' sentences wrap between
//! words and select like text, and a session's end says what the person can do next.

use alfresco_ssh::{ssh, ws};
use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::gateway::{Gateway, TEST_TOKEN};
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::PROMPT;

/// A small phone, a large one, a desktop (CSS px).
const WIDTHS: [u32; 3] = [320, 390, 1280];
/// Tall enough for every page; the width is what these tests are about.
const HEIGHT: u32 = 800;

/// What the page measures of itself: its width and the document's, and for the element
/// `arguments[0]` matches (if any) every rendered word that is not on one line, and every
/// element under it that a click would select whole.
const LAYOUT_SCRIPT: &str = "
    const out = { innerWidth: window.innerWidth,
        scrollWidth: document.documentElement.scrollWidth, words: 0, split: [], selectAll: [] };
    const root = arguments[0] ? document.querySelector(arguments[0]) : null;
    if (!root) { return out; }
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const re = /\\S+/g;
        for (let m = re.exec(node.data); m; m = re.exec(node.data)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            const rects = Array.from(range.getClientRects()).filter((r) => r.width > 0);
            if (rects.length === 0) { continue; } // not rendered (a hidden element)
            out.words++;
            if (rects.length !== 1) { out.split.push(m[0]); }
        }
    }
    for (const el of [root, ...root.querySelectorAll('*')]) {
        const style = getComputedStyle(el);
        if (style.userSelect === 'all' || style.webkitUserSelect === 'all') {
            out.selectAll.push(el.tagName.toLowerCase());
        }
    }
    return out;";

/// Resizes the window to `width` and checks the page at it: nothing wider than the window,
/// and, if `prose` names the page's notice text, its words whole and selectable as text.
async fn check_at(browser: &Browser, page: &str, width: u32, prose: Option<&str>) {
    browser.set_window_size(width, HEIGHT).await;
    // The resize is done when the page has been laid out at the new width.
    let layout = browser
        .wait_until(&format!("{page} laid out {width} px wide"), async || {
            let layout = browser
                .execute_with(LAYOUT_SCRIPT, vec![json!(prose)])
                .await;
            (layout["innerWidth"] == width).then_some(layout)
        })
        .await;
    let at = format!("{page} at {width} px: {layout}");
    let scroll_width = layout["scrollWidth"].as_u64().expect("scrollWidth");
    assert!(scroll_width <= u64::from(width), "scrolls sideways: {at}");
    if prose.is_some() {
        assert!(layout["words"].as_u64() > Some(10), "the notice text: {at}");
        assert_eq!(layout["split"], json!([]), "words split across lines: {at}");
        assert_eq!(layout["selectAll"], json!([]), "select-all text: {at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_every_width_and_keeps_notice_words_whole() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_recording(dir.path(), false).await;
    let browser = Browser::start().await;

    // The 404 notice: an id the gateway does not hold.
    browser
        .open(&format!("http://{}/{}", gw.addr, uuid::Uuid::new_v4()))
        .await;
    for width in WIDTHS {
        check_at(&browser, "the 404 page", width, Some("main")).await;
    }

    // The player's token prompt; no recording is needed before the token.
    browser
        .open(&format!(
            "http://{}/recordings/20261203T074012Z-5b0e6f1c",
            gw.addr
        ))
        .await;
    browser.wait_for_state("token").await;
    for width in WIDTHS {
        check_at(
            &browser,
            "the player's token prompt",
            width,
            Some("#token-form"),
        )
        .await;
    }

    // The terminal page, live: it has no prose, and its share-link box keeps its own rules
    // (one token that may break anywhere and that a click selects whole).
    let id = gw.create_id(&password_body(&sshd)).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;
    for width in WIDTHS {
        check_at(&browser, "the terminal page", width, None).await;
    }
    let share_box = browser
        .execute(
            "const s = getComputedStyle(document.getElementById('notice'));\
             return [s.wordBreak, s.userSelect || s.webkitUserSelect];",
        )
        .await;
    assert_eq!(share_box, json!(["break-all", "all"]));

    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}

/// The status bar's text, and whether all of it is shown (nothing clipped at its end).
async fn status_shown_whole(browser: &Browser) -> (String, bool) {
    let status = browser
        .execute(
            "const s = document.getElementById('status');\
             return [s.textContent, s.scrollWidth <= s.clientWidth];",
        )
        .await;
    match status {
        Value::Array(a) if a.len() == 2 => {
            (a[0].as_str().expect("status text").to_owned(), a[1] == true)
        }
        other => panic!("status {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_says_the_link_is_used_up_and_the_tab_can_close() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    // A small phone: the whole sentence must be readable there too.
    browser.set_window_size(WIDTHS[0], HEIGHT).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;

    browser.enter("exit 3").await;
    browser.wait_for_state("ended").await;
    let (text, whole) = status_shown_whole(&browser).await;
    assert_eq!(
        text,
        "the shell exited with status 3 — this link is used up; you can close the tab"
    );
    assert!(whole, "the status is clipped at {} px", WIDTHS[0]);
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_keeps_its_text_and_says_to_ask_for_a_new_link() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = gw.create_id(&password_body(&sshd)).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;

    let revoked = gw
        .call("DELETE", &format!("/sessions/{id}"), Some(TEST_TOKEN), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    browser.wait_for_state("ended").await;
    assert_eq!(
        browser.status_text().await,
        "session ended through the API (by the job or an operator) — \
         this link is used up; to go on, ask whoever gave it to you for a new one"
    );
    browser.close().await;
    gw.assert_idle().await;
}

/// A full gateway refuses before it claims the link, so the page says a reload can work,
/// and it does once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_says_the_link_still_works_and_a_reload_does() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.max_sessions = 1).await;
    let browser = Browser::start().await;
    let first = gw.create_id(&password_body(&sshd)).await;
    browser.open(&format!("http://{}/{first}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;

    let second = gw.create_id(&password_body(&sshd)).await;
    let first_tab = browser
        .open_in_new_tab(&format!("http://{}/{second}", gw.addr))
        .await;
    browser.wait_for_state("error").await;
    let status = browser.status_text().await;
    assert!(
        status.contains("(too_many_sessions)")
            && status.ends_with("the link still works: reload the page in a minute to try again"),
        "status bar: {status:?}"
    );

    browser.switch_to(first_tab).await;
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    // The slot is free once the first session's thread is gone, a moment after its page
    // heard of the end; then the same link opens its session.
    gw.assert_idle().await;
    browser.open(&format!("http://{}/{second}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}

/// Every code the page's next-step table names is one the gateway sends: a misspelt key
/// would fall silently to the default step.
#[test]
fn the_next_step_table_names_only_real_error_codes() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/terminal.js"))
        .unwrap();
    let table = page
        .split_once("const NEXT_STEP = {")
        .and_then(|(_, rest)| rest.split_once("\n  };"))
        .map(|(table, _)| table)
        .expect("terminal.js has a NEXT_STEP table");
    let codes: Vec<&str> = ws::ErrorKind::ALL
        .iter()
        .map(|&k| ws::ErrorCode::from(k).code())
        .chain(
            ssh::SshErrorKind::ALL
                .iter()
                .map(|&k| ws::ErrorCode::from(k).code()),
        )
        .collect();
    let keys: Vec<&str> = table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .filter_map(|l| l.split_once(':').map(|(key, _)| key))
        .collect();
    assert!(keys.len() >= 10, "{keys:?}");
    let unknown: Vec<&&str> = keys.iter().filter(|k| !codes.contains(k)).collect();
    assert!(unknown.is_empty(), "not error codes: {unknown:?}");
}
