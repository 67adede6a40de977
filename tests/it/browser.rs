//! The terminal page in a real headless Chromium: what a person types and sees, through
//! terminal.js, xterm.js, the WebSocket and SSH. Each test has its own sshd, gateway and
//! browser, so they run in parallel with the rest of the suite.

use std::time::{Duration, Instant};

use fantoccini::key::Key;

use crate::support::browser::Browser;
use crate::support::gateway::Gateway;
use crate::support::sshd::Sshd;
use crate::support::term::PROMPT;
use crate::support::{WAIT, password_body};

/// Creates a session, opens its page and waits for the prompt; returns the page's URL.
async fn open_session(sshd: &Sshd, gw: &Gateway, browser: &Browser) -> String {
    let id = gw.create_id(&password_body(sshd)).await;
    let url = format!("http://{}/{id}", gw.addr);
    browser.open(&url).await;
    // The screen keeps no trailing blanks, so an idle prompt is a line without its space.
    browser.wait_for_line(PROMPT.trim_end()).await;
    // connection-ready comes before any output, so the state is already set.
    assert_eq!(browser.state().await, "connected");
    let status = browser.status_text().await;
    assert!(
        status.starts_with("connected to alfresco-test@127.0.0.1:"),
        "status bar: {status:?}"
    );
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

/// A gateway that drains on SIGTERM says so in the page, and the session goes on until
/// the drain deadline ends it with a clear reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_shows_in_the_status_bar() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.drain_timeout = std::time::Duration::from_secs(4)).await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;
    let stopping = tokio::spawn(gw.stop());

    browser.wait_for_state("draining").await;
    let status = browser.status_text().await;
    assert!(status.contains("shutting down"), "status bar: {status:?}");
    let word = unique("still-working");
    browser.enter(&format!("echo {word}")).await;
    browser.wait_for_line(&word).await;

    browser.wait_for_state("error").await;
    let status = browser.status_text().await;
    assert!(status.contains("server_shutdown"), "status bar: {status:?}");
    stopping.await.unwrap();
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
    // Also a combining mark (e + U+0301, one cell) and box drawing (three bytes each).
    let text = "日本語 é ✓ 😀 e\u{301} ─┼─";
    browser.type_text("echo 日本語 é ✓ ").await;
    browser.insert_text("😀").await;
    browser.type_text(" e").await;
    browser.insert_text("\u{301}").await;
    browser.type_text(" ─┼─").await;
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

/// Waits until the screen ends with an idle prompt below a line containing `after` (a prompt
/// seen before the shell has echoed what was just typed is not the one to wait for);
/// returns how long that took.
async fn wait_for_prompt_after(browser: &Browser, after: &str) -> Duration {
    let start = Instant::now();
    browser
        .wait_until(&format!("an idle prompt after {after:?}"), async || {
            let screen = browser.screen_text().await;
            let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
            let (last, before) = lines.split_last()?;
            (*last == PROMPT.trim_end() && before.iter().any(|l| l.contains(after))).then_some(())
        })
        .await;
    start.elapsed()
}

/// A flood of output: the page stays responsive, its flow control engages (it sends `pause`
/// when xterm.js falls behind, `resume` when it has caught up) and Ctrl-C gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_keeps_the_page_responsive_and_ctrl_c_stops_it() {
    /// How long the flood runs before Ctrl-C.
    const FLOOD: Duration = Duration::from_secs(3);
    /// One look at the page must take this long at most: xterm.js parses in short slices,
    /// so a script gets its turn between two. A look takes 0.1–0.4 s during the flood here,
    /// up to 1.6 s on two cores at load 10; a page that froze would take far longer.
    const RESPONSIVE: Duration = Duration::from_secs(3);
    /// The terminal's last line with text.
    const LAST_LINE_SCRIPT: &str = "
        const buffer = window.alfresco.term.buffer.active;
        for (let i = buffer.length - 1; i >= 0; i--) {
            const text = buffer.getLine(i).translateToString(true);
            if (text !== '') { return text; }
        }
        return '';";
    /// From Ctrl-C to the prompt: what is already in flight (the SSH window, the gateway's
    /// queue, socket buffers, the page's unparsed output) is parsed, no more. 0.3–1 s here,
    /// 2.5 s at load 10; the issue asks for a second, this leaves room for a loaded machine.
    const STOPS_WITHIN: Duration = Duration::from_secs(5);

    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;
    let heap_before = browser.js_heap_used().await;

    // Never ends by itself (10^9 lines take hours at a few MB/s): only Ctrl-C stops it.
    browser.enter("seq 1 1000000000").await;
    let started = Instant::now();
    let (mut looks, mut slowest, mut last_number) = (0, Duration::ZERO, 0u64);
    // At least FLOOD, and on until the page has shown a real flood and paused for it: a
    // loaded machine renders slower, which is no failure (WAIT bounds it).
    let flooded = |n: u64| n > 10_000;
    while started.elapsed() < FLOOD
        || (started.elapsed() < WAIT && !(flooded(last_number) && browser.flow().await.pauses > 0))
    {
        let look = Instant::now();
        browser.flow().await;
        let took = look.elapsed();
        assert!(took < RESPONSIVE, "a look at the page took {took:?}");
        slowest = slowest.max(took);
        looks += 1;
        // Not the whole screen: copying 5000 lines of scrollback would load the page more
        // than the flood does.
        let last = browser.execute(LAST_LINE_SCRIPT).await;
        if let Some(n) = last.as_str().and_then(|s| s.parse::<u64>().ok()) {
            last_number = last_number.max(n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flooded_for = started.elapsed();
    let during = browser.flow().await;
    assert!(flooded(last_number), "the flood reached only {last_number}");
    assert!(during.pauses > 0, "the page never paused: {during:?}");

    browser.chord(Key::Control, "c").await;
    let stopped_after = wait_for_prompt_after(&browser, "^C").await;
    assert!(
        stopped_after < STOPS_WITHIN,
        "the prompt came back {stopped_after:?} after Ctrl-C"
    );
    let word = unique("after-flood");
    browser.enter(&format!("echo {word}")).await;
    browser.wait_for_line(&word).await;
    let after = browser.flow().await;
    assert!(!after.paused, "output is flowing again: {after:?}");
    assert_eq!(after.pauses, after.resumes, "{after:?}");
    // The high watermark plus what was in flight when `pause` went out (loopback socket
    // buffers, the gateway's queue); without flow control this passes 10 MB in 3 s here.
    assert!(after.max_pending < 8 * 1024 * 1024, "{after:?}");
    let heap_after = browser.js_heap_used().await;
    eprintln!(
        "flood: up to {last_number} in {:?}; {looks} looks, slowest {slowest:?}; \
         prompt {stopped_after:?} after Ctrl-C; {after:?}; JS heap {heap_before:?} -> {heap_after:?}",
        flooded_for
    );

    browser.close().await;
    gw.assert_idle().await;
}

/// A text of about `size` bytes in lines of up to ~200 bytes (a canonical-mode TTY drops
/// what goes past 4095 bytes in one line): printable ASCII, tabs, empty lines and UTF-8
/// of two to four bytes, from a fixed seed so a failure repeats.
fn paste_text(size: usize) -> String {
    const PIECES: [&str; 8] = ["é", "日本", "😀", "\t", "─┼─", "~!$`\\\"'", "{}", "#"];
    let mut state: u32 = 0x2545_f491;
    let mut next = move |n: u32| {
        // xorshift32: enough variety, no dependency.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state % n
    };
    let mut text = String::with_capacity(size + 256);
    while text.len() < size {
        let len = next(200);
        let mut line = String::new();
        while (line.len() as u32) < len {
            match next(10) {
                0 => line.push_str(PIECES[next(PIECES.len() as u32) as usize]),
                _ => line.push(char::from(b' ' + next(95) as u8)),
            }
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// POSIX `cksum`: CRC-32 (polynomial 0x04C11DB7, MSB first) of the data then its length.
fn cksum(data: &[u8]) -> String {
    let mut crc: u32 = 0;
    let mut feed = |byte: u8| {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    };
    data.iter().copied().for_each(&mut feed);
    let mut len = data.len();
    while len > 0 {
        feed(len as u8);
        len >>= 8;
    }
    format!("{} {}", !crc, data.len())
}

const PASTE_SIZE: usize = 200 * 1024;

/// A 200 KB paste into `cat` arrives byte-exact, checked by `cksum` in the shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paste_of_200_kb_arrives_byte_exact() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    let text = paste_text(PASTE_SIZE);
    let file = format!("/tmp/{}", unique("paste"));
    // The marker is printed after readline has put the TTY back in canonical mode, so
    // the paste cannot reach readline while `cat` is starting.
    let ready = unique("ready");
    browser.enter(&format!("echo {ready}; cat > {file}")).await;
    browser.wait_for_line(&ready).await;
    assert!(
        !browser.paste(&text).await,
        "cat asked for no bracketed paste"
    );
    // ^D at the start of a line: end of file for cat, once all the lines before it are read.
    browser.chord(Key::Control, "d").await;
    wait_for_prompt_after(&browser, &ready).await;

    let out = browser.run(&format!("cksum < {file}; rm -f {file}")).await;
    assert_eq!(out, [cksum(text.as_bytes())], "cksum of {file}");

    browser.close().await;
    gw.assert_idle().await;
}

/// With bracketed paste on, a 200 KB paste into bash's command line arrives byte-exact.
/// Bash turns the mode off while a command runs, so the paste goes to readline itself:
/// a here-document that `cat` writes to a file once Enter runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bracketed_paste_of_200_kb_arrives_byte_exact() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    // setup-test-user.sh turns bracketed paste off for byte-exact output checks. `set +H`:
    // no history expansion of the `!` in the text.
    browser
        .enter("bind 'set enable-bracketed-paste on'; set +H")
        .await;
    browser
        .wait_until("bracketed paste mode", async || {
            let on = browser
                .execute("return window.alfresco.term.modes.bracketedPasteMode")
                .await;
            (on == true).then_some(())
        })
        .await;

    let text = paste_text(PASTE_SIZE);
    let file = format!("/tmp/{}", unique("bracketed"));
    let end = unique("END");
    let heredoc = format!("cat > {file} <<'{end}'\n{text}{end}");
    assert!(browser.paste(&heredoc).await, "the paste was not bracketed");
    browser.enter("").await;
    wait_for_prompt_after(&browser, &end).await;

    let out = browser.run(&format!("cksum < {file}; rm -f {file}")).await;
    assert_eq!(out, [cksum(text.as_bytes())], "cksum of {file}");

    browser.close().await;
    gw.assert_idle().await;
}

/// Keys as in a local terminal: Up recalls history, Tab completes, Ctrl-C drops the line,
/// Alt-b moves back a word, Ctrl-D at an empty prompt ends the shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_work_as_in_a_local_terminal() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;
    let count = |screen: &str, line: &str| screen.lines().filter(|l| *l == line).count();

    // Each step waits for the shell's next prompt before typing on: keys that come while
    // bash is between commands are echoed by the TTY, and a Ctrl-C then flushes them.
    let recalled = unique("history");
    browser.enter(&format!("echo {recalled}")).await;
    browser.wait_for_line(&recalled).await;
    wait_for_prompt_after(&browser, &recalled).await;
    browser
        .type_text(&format!(
            "{}{}",
            char::from(Key::Up),
            char::from(Key::Enter)
        ))
        .await;
    browser
        .wait_until("the recalled command's output", async || {
            (count(&browser.screen_text().await, &recalled) == 2).then_some(())
        })
        .await;
    wait_for_prompt_after(&browser, &recalled).await;

    let completed = unique("tab");
    browser.type_text("ech\t").await;
    browser.wait_for_screen(&format!("{PROMPT}echo ")).await;
    browser.enter(&completed).await;
    browser.wait_for_line(&completed).await;
    wait_for_prompt_after(&browser, &completed).await;

    let dropped = unique("dropped");
    browser.type_text(&format!("echo {dropped}")).await;
    // Readline has the whole line before the Ctrl-C that drops it.
    browser
        .wait_for_screen(&format!("{PROMPT}echo {dropped}"))
        .await;
    browser.chord(Key::Control, "c").await;
    wait_for_prompt_after(&browser, &format!("{dropped}^C")).await;

    // Alt-b: back before "two"; the X goes in there.
    let word = unique("alt");
    browser.type_text(&format!("echo {word} two")).await;
    browser.chord(Key::Alt, "b").await;
    browser.enter("X").await;
    let screen = browser.wait_for_line(&format!("{word} Xtwo")).await;
    assert_eq!(
        count(&screen, &dropped),
        0,
        "Ctrl-C ran the line:\n{screen}"
    );
    wait_for_prompt_after(&browser, &format!("{word} Xtwo")).await;

    browser.chord(Key::Control, "d").await;
    browser.wait_for_state("ended").await;
    let status = browser.status_text().await;
    assert!(
        status.contains("exited with status 0"),
        "status bar: {status:?}"
    );

    browser.close().await;
    gw.assert_idle().await;
}

/// A full-screen program: vi draws on the alternate screen, takes insert-mode text, writes
/// the file on `:wq` and gives the normal screen back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vi_renders_edits_and_quits() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    let file = format!("/tmp/{}.txt", unique("vi"));
    let line = unique("written in vi");
    browser.enter(&format!("vi {file}")).await;
    browser
        .wait_until("vi on the alternate screen", async || {
            let screen = browser.screen_text().await;
            // `~` marks the lines past the end of the (empty) file.
            let drawn = screen.lines().filter(|l| *l == "~").count() > 5;
            (drawn && browser.buffer_type().await == "alternate").then_some(())
        })
        .await;
    browser
        .type_text(&format!("i{line}{}", char::from(Key::Escape)))
        .await;
    let screen = browser.wait_for_screen(&line).await;
    assert_eq!(screen.lines().next(), Some(line.as_str()), "{screen}");
    browser.enter(":wq").await;
    wait_for_prompt_after(&browser, &format!("vi {file}")).await;
    assert_eq!(browser.buffer_type().await, "normal");

    let out = browser.run(&format!("cat {file}; rm -f {file}")).await;
    assert_eq!(out, [line]);

    browser.close().await;
    gw.assert_idle().await;
}

/// A phone-sized window: the page does not scroll sideways, the terminal fits in it, and
/// the PTY gets the smaller size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_mobile_viewport_fits_without_horizontal_scroll() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;
    let initial = browser.term_size().await;

    let narrow = resize_window(&browser, 380, 700).await;
    assert!(narrow.0 < initial.0, "{initial:?} became {narrow:?}");
    assert!(narrow.0 >= 20, "a usable width: {narrow:?}");
    let fits = browser
        .execute(
            "const screen = document.querySelector('.xterm-screen').getBoundingClientRect();
             return [innerWidth, document.documentElement.scrollWidth,
                     document.body.scrollWidth, Math.ceil(screen.right)];",
        )
        .await;
    let [inner, html, body, terminal_right] =
        [0, 1, 2, 3].map(|i| fits[i].as_u64().unwrap_or_else(|| panic!("{fits}")));
    assert!(inner <= 400, "the window is narrow: {fits}");
    assert!(
        html <= inner && body <= inner && terminal_right <= inner,
        "[innerWidth, html, body, terminal's right edge] = {fits}"
    );
    assert_stty_matches(&browser, narrow).await;

    browser.close().await;
    gw.assert_idle().await;
}

/// The remote program's title (OSC 0 and OSC 2) becomes the tab's title.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_title_becomes_the_page_title() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    for osc in [0, 2] {
        let title = unique(&format!("title{osc}"));
        browser
            .enter(&format!("printf '\\e]{osc};{title}\\a'"))
            .await;
        browser
            .wait_until(&format!("the title {title:?}"), async || {
                browser.title().await.contains(&title).then_some(())
            })
            .await;
    }

    browser.close().await;
    gw.assert_idle().await;
}

/// Right-click pastes the clipboard (the test profile lets pages read it without a prompt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_click_pastes_the_clipboard() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    open_session(&sshd, &gw, &browser).await;

    let word = unique("clipboard");
    let written = browser
        .execute(&format!(
            "return navigator.clipboard.writeText('echo {word}\\n').then(() => true)"
        ))
        .await;
    assert_eq!(written, true);
    browser.right_click_terminal().await;
    browser.wait_for_line(&word).await;

    browser.close().await;
    gw.assert_idle().await;
}

/// Writes docs/screenshot.png from a live session. Run on purpose only:
/// `cargo test --test it browser::screenshot -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshot.png"]
async fn screenshot() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start().await;
    // A 1000x600 viewport: the window's size includes the browser's frame.
    let frame = browser
        .execute("return outerHeight - innerHeight")
        .await
        .as_u64()
        .expect("a frame height");
    browser.set_window_size(1000, 600 + frame as u32).await;
    open_session(&sshd, &gw, &browser).await;

    // No CJK here: the test machine may have no CJK font (the utf8 test covers it).
    let commands = [
        "ls -l --color=always /usr",
        "grep --color=always -E '^(root|alfresco)[^:]*' /etc/passwd",
        "for c in {0..7}; do printf '\\e[4%sm    \\e[10%sm    ' $c $c; done; printf '\\e[0m\\n'",
        "printf 'UTF-8: é ñ ß λ → ✓ ─┼─ \\U1F600\\n'",
    ];
    for command in commands {
        browser.enter(command).await;
        wait_for_prompt_after(&browser, command).await;
    }
    let png = browser.screenshot().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot.png");
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {path}: {e}"));
    eprintln!("wrote {path} ({} bytes)", png.len());

    browser.close().await;
    gw.assert_idle().await;
}
