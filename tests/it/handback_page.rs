//! Issue 12 from the page's side, in real Chromium against the real gateway and sshd: the
//! handback buttons end the session with the job's verdict (by mouse and by keyboard, only
//! after a confirm), sessions without handback show none, a revoke through the API is told
//! as such to the owner and a viewer, and the last minutes before the time limit count down
//! until an extend hides them. The API's status answer is the job's side of each ending.

use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::gateway::{Gateway, HttpResponse, TEST_TOKEN};
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::PROMPT;

use fantoccini::key::Key;

/// Creates a session from the test user's body plus `extra` (issue-12 fields), opens its
/// page and waits for the prompt; returns the session id.
async fn open(sshd: &Sshd, gw: &Gateway, browser: &Browser, extra: Value) -> String {
    let mut body = password_body(sshd);
    for (field, value) in extra.as_object().expect("extra is an object") {
        body[field] = value.clone();
    }
    let id = gw.create_id(&body).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;
    id
}

/// A request to the sessions API with the test token (and a JSON body, if any).
async fn api(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    let body = body.map_or_else(String::new, |b| b.to_string());
    gw.raw(
        &format!(
            "{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {TEST_TOKEN}"
        ),
        body.as_bytes(),
    )
    .await
}

/// The session's status once it has ended, through the API's long poll.
async fn ended_status(gw: &Gateway, id: &str) -> Value {
    let res = api(
        gw,
        "GET",
        &format!("/sessions/{id}?wait=ended&timeout=15s"),
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let status = res.json();
    assert_eq!(status["timed_out"], false, "{status}");
    status
}

/// Whether the element with `id` takes room on the page (not hidden, not in a hidden parent).
async fn shown(browser: &Browser, id: &str) -> bool {
    let script = format!("return document.getElementById('{id}').getClientRects().length > 0");
    browser.execute(&script).await == true
}

/// The focused element's id, or its class when it has none (xterm's textarea).
async fn focused(browser: &Browser) -> String {
    let script = "const e = document.activeElement; return e ? (e.id || e.className) : ''";
    match browser.execute(script).await {
        Value::String(s) => s,
        other => panic!("activeElement {other}"),
    }
}

/// xterm.js's input textarea, which has the focus while keys go to the shell.
const TERMINAL_INPUT: &str = "xterm-helper-textarea";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_asks_once_then_ends_the_session_and_the_job_continues() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = open(&sshd, &gw, &browser, json!({"handback": true})).await;

    assert!(shown(&browser, "handback-continue").await);
    assert!(shown(&browser, "handback-fail").await);
    // Shown, not focused: keys still go to the shell.
    assert_eq!(focused(&browser).await, TERMINAL_INPUT);

    browser.click("#handback-continue").await;
    assert!(shown(&browser, "handback-yes").await, "a click only asks");
    assert!(!shown(&browser, "handback-continue").await);
    let yes = browser
        .execute("return document.getElementById('handback-yes').textContent")
        .await;
    assert_eq!(yes, "Yes — continue the job");
    // The second click of a double-click on "Done" is no confirm: nothing is sent (a sent
    // verdict disables the buttons, synchronously in the click handler).
    let sent = browser
        .execute(
            "const yes = document.getElementById('handback-yes');
             yes.dispatchEvent(new MouseEvent('click', { bubbles: true, detail: 2 }));
             return yes.disabled;",
        )
        .await;
    assert_eq!(sent, false, "a double-click's second click confirmed");

    browser.click("#handback-yes").await;
    browser.wait_for_state("ended").await;
    assert_eq!(
        browser.status_text().await,
        "you handed the session back; the job continues — you can close the tab"
    );
    assert!(!shown(&browser, "handback").await, "buttons after the end");

    let status = ended_status(&gw, &id).await;
    assert_eq!(status["state"], "ended", "{status}");
    assert_eq!(status["end_reason"], "handback", "{status}");
    assert_eq!(status["handback"], "continue", "{status}");
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_works_from_the_keyboard_and_cancel_gives_the_terminal_back() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = open(&sshd, &gw, &browser, json!({"handback": true})).await;
    let enter = char::from(Key::Enter).to_string();

    // Enter on "Done — fail" asks, with the focus on Cancel: a second Enter cancels.
    browser.send_keys("#handback-fail", &enter).await;
    assert_eq!(focused(&browser).await, "handback-cancel");
    browser.send_keys("#handback-cancel", &enter).await;
    assert!(shown(&browser, "handback-fail").await);
    assert!(!shown(&browser, "handback-yes").await);
    assert_eq!(focused(&browser).await, TERMINAL_INPUT);
    browser.enter("echo still-''here").await;
    browser.wait_for_line("still-here").await;

    // Now for real: Enter, Shift+Tab from Cancel to the confirm, Enter.
    browser.send_keys("#handback-fail", &enter).await;
    let back_tab = format!(
        "{}{}{}",
        char::from(Key::Shift),
        char::from(Key::Tab),
        char::from(Key::Null)
    );
    browser.send_keys("#handback-cancel", &back_tab).await;
    assert_eq!(focused(&browser).await, "handback-yes");
    browser.send_keys("#handback-yes", &enter).await;
    browser.wait_for_state("ended").await;
    assert_eq!(
        browser.status_text().await,
        "you handed the session back; the job will fail — you can close the tab"
    );

    let status = ended_status(&gw, &id).await;
    assert_eq!(status["end_reason"], "handback", "{status}");
    assert_eq!(status["handback"], "fail", "{status}");
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_confirm_goes_back_to_the_buttons_and_the_terminal() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = open(&sshd, &gw, &browser, json!({"handback": true})).await;

    browser.click("#handback-continue").await;
    assert_eq!(focused(&browser).await, "handback-cancel");
    // terminal.js gives a confirm 10 s; WAIT (20 s) bounds this.
    browser
        .wait_until("the confirm to fall back to the two buttons", async || {
            shown(&browser, "handback-continue").await.then_some(())
        })
        .await;
    assert!(!shown(&browser, "handback-yes").await);
    assert_eq!(focused(&browser).await, TERMINAL_INPUT);
    let status = api(&gw, "GET", &format!("/sessions/{id}"), None)
        .await
        .json();
    assert_eq!(status["state"], "live", "{status}");
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_handback_shows_no_buttons_and_no_countdown() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = open(&sshd, &gw, &browser, json!({})).await;

    assert!(
        !shown(&browser, "handback").await,
        "buttons without handback"
    );
    // The gateway's own cap (hours) is far from the last 5 minutes.
    assert!(
        !shown(&browser, "timer").await,
        "a countdown hours before the cap"
    );
    browser.enter("exit 4").await;
    browser.wait_for_state("ended").await;
    assert_eq!(
        browser.status_text().await,
        "the shell exited with status 4 — this link is used up; you can close the tab"
    );
    let status = ended_status(&gw, &id).await;
    assert_eq!(status["handback"], Value::Null, "{status}");
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_told_as_an_end_through_the_api_to_owner_and_viewer() {
    let sshd = Sshd::start();
    // Share links need resume on (the page's token authorises them).
    let gw =
        Gateway::start_with(|c| c.resume_grace = Some(std::time::Duration::from_secs(60))).await;
    let browser = Browser::start().await;
    let id = open(&sshd, &gw, &browser, json!({"handback": true})).await;
    let share = api(&gw, "POST", &format!("/sessions/{id}/share"), None).await;
    assert_eq!(share.status, 201, "{}", share.text());
    let view_url = share.json()["view_url"].as_str().unwrap().to_owned();
    let owner = browser.open_in_new_tab(&view_url).await;
    browser.wait_for_state("viewing").await;
    assert!(
        !shown(&browser, "handback").await,
        "a viewer has no handback buttons"
    );

    let revoked = api(&gw, "DELETE", &format!("/sessions/{id}"), None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let expected = "session ended through the API (by the job or an operator) — \
        this link is used up; to go on, ask whoever gave it to you for a new one";
    browser.wait_for_state("ended").await;
    assert_eq!(browser.status_text().await, expected, "the viewer");
    browser.switch_to(owner).await;
    browser.wait_for_state("ended").await;
    assert_eq!(browser.status_text().await, expected, "the owner");
    assert!(!shown(&browser, "handback").await, "buttons after the end");

    let status = ended_status(&gw, &id).await;
    assert_eq!(status["end_reason"], "revoked", "{status}");
    browser.close().await;
    gw.assert_idle().await;
}

/// The countdown's seconds, from `ends in mm:ss`.
fn countdown_seconds(text: &str) -> u64 {
    let (mm, ss) = text
        .strip_prefix("ends in ")
        .and_then(|t| t.split_once(':'))
        .unwrap_or_else(|| panic!("countdown {text:?}"));
    let number = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("countdown {text:?}: {e}"))
    };
    number(mm) * 60 + number(ss)
}

async fn timer_text(browser: &Browser) -> String {
    match browser
        .execute("return document.getElementById('timer').textContent")
        .await
    {
        Value::String(s) => s,
        other => panic!("timer text {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_minutes_count_down_and_an_extend_hides_them() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    let id = open(&sshd, &gw, &browser, json!({"max_duration": "200s"})).await;

    assert!(
        shown(&browser, "timer").await,
        "no countdown 200 s before the cap"
    );
    let first = countdown_seconds(&timer_text(&browser).await);
    assert!((150..=200).contains(&first), "{first} s left of 200");
    // It counts on the page's clock, with no event from the server.
    browser
        .wait_until("the countdown to tick", async || {
            let now = countdown_seconds(&timer_text(&browser).await);
            (now < first).then_some(())
        })
        .await;

    let extended = api(
        &gw,
        "POST",
        &format!("/sessions/{id}/extend"),
        Some(json!({"by": "10m"})),
    )
    .await;
    assert_eq!(extended.status, 200, "{}", extended.text());
    browser
        .wait_until("the countdown to hide after the extend", async || {
            (!shown(&browser, "timer").await).then_some(())
        })
        .await;
    assert_eq!(browser.state().await, "connected");
    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_buttons_and_the_countdown() {
    let sshd = Sshd::start();
    let gw =
        Gateway::start_with(|c| c.resume_grace = Some(std::time::Duration::from_secs(60))).await;
    let browser = Browser::start().await;
    let extra = json!({"handback": true, "max_duration": "200s"});
    let id = open(&sshd, &gw, &browser, extra).await;
    let before = countdown_seconds(&timer_text(&browser).await);

    // The new page resumes; session-resumed does not repeat what connection-ready said.
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_state("connected").await;
    assert!(
        shown(&browser, "handback-continue").await,
        "no buttons after a reload"
    );
    assert!(
        shown(&browser, "timer").await,
        "no countdown after a reload"
    );
    let after = countdown_seconds(&timer_text(&browser).await);
    assert!(
        after <= before && before - after < 30,
        "{before} s left before the reload, {after} s after"
    );

    browser.click("#handback-continue").await;
    browser.click("#handback-yes").await;
    browser.wait_for_state("ended").await;
    let status = ended_status(&gw, &id).await;
    assert_eq!(status["handback"], "continue", "{status}");
    browser.close().await;
    gw.assert_idle().await;
}

/// The boxes of the bar's parts and the terminal, in CSS pixels, and the page's widths.
const LAYOUT_SCRIPT: &str = "
    const box = (id) => {
        const r = document.getElementById(id).getBoundingClientRect();
        return { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
    };
    const ids = ['status', 'timer', 'handback-continue', 'handback-fail', 'handback-yes',
                 'handback-cancel', 'share', 'terminal'];
    const boxes = {};
    ids.forEach((id) => { boxes[id] = box(id); });
    return { width: innerWidth, scroll_width: document.documentElement.scrollWidth, boxes };";

#[derive(Debug, serde::Deserialize)]
struct Layout {
    width: f64,
    scroll_width: f64,
    boxes: std::collections::HashMap<String, Rect>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Rect {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl Layout {
    async fn read(browser: &Browser) -> Layout {
        let value = browser.execute(LAYOUT_SCRIPT).await;
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("layout {value}: {e}"))
    }

    fn get(&self, id: &str) -> &Rect {
        &self.boxes[id]
    }

    /// The shown `ids` lie inside the window's width, and above the terminal.
    fn assert_fits(&self, ids: &[&str]) {
        assert!(
            self.scroll_width <= self.width,
            "the page scrolls sideways: {self:?}"
        );
        let terminal = self.get("terminal");
        for id in ids {
            let r = self.get(id);
            assert!(r.right > r.left, "{id} is not shown: {self:?}");
            assert!(
                r.left >= 0.0 && r.right <= self.width,
                "{id} off screen: {self:?}"
            );
            assert!(r.bottom <= terminal.top, "{id} over the terminal: {self:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buttons_fit_a_wide_window_and_a_phone() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    // With the countdown too: the fullest bar.
    open(
        &sshd,
        &gw,
        &browser,
        json!({"handback": true, "max_duration": "200s"}),
    )
    .await;

    // Wide (1000 px): one row, the buttons beside the status.
    let wide = Layout::read(&browser).await;
    wide.assert_fits(&["status", "timer", "handback-continue", "handback-fail"]);
    let (status, done) = (wide.get("status"), wide.get("handback-continue"));
    assert!(
        done.top < status.bottom && status.top < done.bottom,
        "two rows: {wide:?}"
    );

    // A phone (360 px): the buttons take a row of their own, tap-sized, under the status.
    let before = browser.term_size().await;
    browser.set_window_size(360, 640).await;
    browser
        .wait_until("a refit to the phone's width", async || {
            (browser.term_size().await != before).then_some(())
        })
        .await;
    let phone = Layout::read(&browser).await;
    phone.assert_fits(&["status", "timer", "handback-continue", "handback-fail"]);
    for id in ["handback-continue", "handback-fail"] {
        let r = phone.get(id);
        assert!(
            r.top >= phone.get("status").bottom,
            "{id} beside the status: {phone:?}"
        );
        assert!(r.bottom - r.top >= 32.0, "{id} too small to tap: {phone:?}");
    }

    // Arming shows the confirm in the same room: the terminal keeps its size.
    let size = browser.term_size().await;
    browser.click("#handback-fail").await;
    let armed = Layout::read(&browser).await;
    armed.assert_fits(&["handback-yes", "handback-cancel"]);
    assert_eq!(
        armed.get("terminal"),
        phone.get("terminal"),
        "arming moved the terminal"
    );
    assert_eq!(browser.term_size().await, size);
    browser.click("#handback-cancel").await;
    assert!(shown(&browser, "handback-fail").await);

    browser.enter("exit").await;
    browser.wait_for_state("ended").await;
    browser.close().await;
    gw.assert_idle().await;
}
