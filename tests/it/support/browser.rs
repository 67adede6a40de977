//! `Browser`: a headless Chromium driven over WebDriver (fantoccini and a chromedriver child),
//! to use the terminal page as a person would and read it back through `window.alfresco`.
//! Each `Browser` owns one chromedriver, the Chromium it starts and a fresh profile, so tests
//! run in parallel. `close` ends the WebDriver session; drop, or a watchdog if this process
//! dies first, kills chromedriver's process group (Chromium included) by PID, and nothing else.
//! `start_on` picks the window, the device scale factor and touch (a `Screen`) by Chromium's
//! own flags; `start` keeps the 1000x700 window at the machine's ratio that most tests assume.

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MOUSE_BUTTON_RIGHT, MouseActions, PointerAction};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::{Capabilities, WindowHandle};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::WAIT;
use super::watchdog::Watchdog;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver listens within ~100 ms; 10 s only bounds a broken install.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Between two looks at the page while waiting for it to change. One look is a WebDriver
/// round trip of a few milliseconds, so this adds little load and little latency.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Bounds the wait for killed processes to disappear; SIGKILL normally takes microseconds.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);
/// The textarea that xterm.js reads keystrokes from.
const INPUT: &str = ".xterm-helper-textarea";

/// Panic context that never fails: the page's state, status line and screen, as far as
/// they can be read (the 404 page has no terminal).
const SNAPSHOT_SCRIPT: &str = "
    const a = window.alfresco;
    const status = document.getElementById('status');
    return 'state: ' + (a ? a.state() : '(no terminal)')
        + '\\nstatus: ' + (status ? status.textContent : '(none)')
        + '\\nscreen:\\n' + (a ? a.screenText().trimEnd() : document.body.innerText);";

/// A headless Chromium with one WebDriver session. Dropping it kills the browser.
pub struct Browser {
    /// `None` once `close` has taken it.
    client: Option<Client>,
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a fresh Chromium (about a second) in a 1000x700 window at the
    /// machine's scale factor (1 here), panicking with chromedriver's output if either fails.
    pub async fn start() -> Browser {
        Browser::launch(vec!["--window-size=1000,700".to_owned()]).await
    }

    /// As `start`, on `screen`: its window size, scale factor and touch.
    pub async fn start_on(screen: Screen) -> Browser {
        let browser = Browser::launch(screen.args()).await;
        // Headless Chromium starts no narrower than 500 px whatever `--window-size` says,
        // and a phone is narrower; WebDriver's window size has no such floor.
        browser.set_window_size(screen.width, screen.height).await;
        browser
    }

    /// Starts chromedriver and Chromium with the common flags and then `screen_args`.
    async fn launch(screen_args: Vec<String>) -> Browser {
        let driver = Driver::start().await;
        let profile = driver.dir.path().join("profile");
        let mut args: Vec<String> = [
            "--headless",
            // We run as root, where Chromium's sandbox refuses to start.
            "--no-sandbox",
            "--disable-gpu",
            // Loopback only: nothing may phone home or wait for a network.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ]
        .map(str::to_owned)
        .into();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(screen_args);
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": args,
                // Pages may read the clipboard without asking, as after a person's "Allow":
                // a headless browser has no one to click its permission prompt.
                "prefs": {
                    "profile.default_content_setting_values.clipboard": 1,
                },
            }),
        );
        let url = format!("http://127.0.0.1:{}", driver.port);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let client = match tokio::time::timeout(WAIT, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("start Chromium: {e}; chromedriver:\n{}", driver.log()),
            Err(_) => panic!(
                "Chromium not started after {WAIT:?}; chromedriver:\n{}",
                driver.log()
            ),
        };
        Browser {
            client: Some(client),
            driver,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is not closed")
    }

    /// Bounds one WebDriver command by `WAIT`; panics with `what` and the error.
    async fn call<T, E: std::fmt::Display>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, E>>,
    ) -> T {
        match tokio::time::timeout(WAIT, command).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!(
                "WebDriver {what}: {e}; chromedriver:\n{}",
                self.driver.log()
            ),
            Err(_) => panic!(
                "WebDriver {what}: no answer after {WAIT:?}; chromedriver:\n{}",
                self.driver.log()
            ),
        }
    }

    /// Loads `url` in the current tab and waits for its load event (deferred scripts ran).
    pub async fn open(&self, url: &str) {
        self.call(&format!("open {url}"), self.client().goto(url))
            .await;
    }

    /// Opens `url` in a new tab, which becomes the current one; returns the previous tab.
    pub async fn open_in_new_tab(&self, url: &str) -> WindowHandle {
        let previous = self.call("current tab", self.client().window()).await;
        let tab = self.call("new tab", self.client().new_window(true)).await;
        self.switch_to(tab.handle).await;
        self.open(url).await;
        previous
    }

    pub async fn switch_to(&self, tab: WindowHandle) {
        self.call("switch tab", self.client().switch_to_window(tab))
            .await;
    }

    /// Runs `script` (a function body: use `return`) in the page and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            &format!("execute {script:?}"),
            self.client().execute(script, Vec::new()),
        )
        .await
    }

    /// Runs `script` with `args` (read as `arguments[0]`, …) and returns its value.
    pub async fn execute_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            &format!("execute {script:?}"),
            self.client().execute(script, args),
        )
        .await
    }

    async fn string(&self, script: &str) -> String {
        match self.execute(script).await {
            Value::String(s) => s,
            other => panic!("{script:?} returned {other}, not a string"),
        }
    }

    /// The terminal's buffer as text, one line per row, trailing blanks trimmed.
    pub async fn screen_text(&self) -> String {
        self.string("return window.alfresco.screenText()").await
    }

    /// The page's state: connecting, connected, ended, error or disconnected.
    pub async fn state(&self) -> String {
        self.string("return window.alfresco.state()").await
    }

    /// The text of the status bar.
    pub async fn status_text(&self) -> String {
        self.string("return document.getElementById('status').textContent")
            .await
    }

    /// The page's visible text, for pages without a terminal.
    pub async fn page_text(&self) -> String {
        self.string("return document.body.innerText").await
    }

    /// The terminal's size as xterm.js has it: (cols, rows).
    pub async fn term_size(&self) -> (u16, u16) {
        let size = self
            .execute("const t = window.alfresco.term; return [t.cols, t.rows]")
            .await;
        let dimension = |v: &Value| {
            v.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or_else(|| panic!("terminal size {size}"))
        };
        (dimension(&size[0]), dimension(&size[1]))
    }

    /// The tab's title.
    pub async fn title(&self) -> String {
        self.string("return document.title").await
    }

    /// Which xterm.js buffer is shown: `normal`, or `alternate` for full-screen programs.
    pub async fn buffer_type(&self) -> String {
        self.string("return window.alfresco.term.buffer.active.type")
            .await
    }

    /// The page's flow-control counters (terminal.js `flow()`).
    pub async fn flow(&self) -> Flow {
        let flow = self.execute("return window.alfresco.flow()").await;
        serde_json::from_value(flow.clone()).unwrap_or_else(|e| panic!("flow() {flow}: {e}"))
    }

    /// Bytes in use on the page's JavaScript heap (Chromium's `performance.memory`), if the
    /// browser tells.
    pub async fn js_heap_used(&self) -> Option<u64> {
        self.execute("return performance.memory ? performance.memory.usedJSHeapSize : null")
            .await
            .as_u64()
    }

    /// A PNG of the current tab's viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.call("screenshot", self.client().screenshot()).await
    }

    /// What a failing wait prints.
    async fn snapshot(&self) -> String {
        match tokio::time::timeout(WAIT, self.client().execute(SNAPSHOT_SCRIPT, Vec::new())).await {
            Ok(Ok(Value::String(s))) => s,
            Ok(Ok(other)) => format!("(snapshot returned {other})"),
            Ok(Err(e)) => format!("(no snapshot: {e})"),
            Err(_) => "(no snapshot: the page did not answer)".to_owned(),
        }
    }

    async fn input(&self) -> Element {
        self.call(
            "find the terminal's textarea",
            self.client().find(Locator::Css(INPUT)),
        )
        .await
    }

    /// Clicks the element `css` matches (a real click, through WebDriver).
    pub async fn click(&self, css: &str) {
        let element = self
            .call(
                &format!("find {css}"),
                self.client().find(Locator::Css(css)),
            )
            .await;
        self.call(&format!("click {css}"), element.click()).await;
    }

    /// Types `text` as key presses into the element `css` matches (WebDriver focuses it
    /// first), e.g. Enter on a button.
    pub async fn send_keys(&self, css: &str, text: &str) {
        let element = self
            .call(
                &format!("find {css}"),
                self.client().find(Locator::Css(css)),
            )
            .await;
        self.call(
            &format!("type {text:?} into {css}"),
            element.send_keys(text),
        )
        .await;
    }

    /// Types `text` into the terminal as key presses.
    pub async fn type_text(&self, text: &str) {
        let input = self.input().await;
        self.call(&format!("type {text:?}"), input.send_keys(text))
            .await;
    }

    /// Enters `text` as an IME or emoji picker does: one `input` event with the whole
    /// text and no key events. ChromeDriver types a character outside the BMP as a keypress
    /// carrying only its first UTF-16 surrogate, which xterm.js forwards alone.
    pub async fn insert_text(&self, text: &str) {
        let input = self.input().await;
        let script =
            "arguments[0].focus(); return document.execCommand('insertText', false, arguments[1])";
        let args = vec![json!(input), json!(text)];
        let inserted = self
            .call(
                &format!("insert {text:?}"),
                self.client().execute(script, args),
            )
            .await;
        assert_eq!(inserted, true, "insertText {text:?} was refused");
    }

    /// Types `text` with `modifier` held, e.g. `(Key::Control, "c")` for Ctrl-C.
    pub async fn chord(&self, modifier: Key, text: &str) {
        // Send-keys holds a modifier from its key until the NULL key releases all.
        self.type_text(&format!(
            "{}{text}{}",
            char::from(modifier),
            char::from(Key::Null)
        ))
        .await;
    }

    /// Pastes `text` as the browser does on Ctrl+Shift+V: a `paste` event carrying the text,
    /// on the textarea whose paste handler xterm.js turns into input. Returns whether xterm.js
    /// sent it as a bracketed paste (`ESC[200~` … `ESC[201~`, when the program asked for it).
    pub async fn paste(&self, text: &str) -> bool {
        let input = self.input().await;
        // xterm.js stops the event's propagation once it has taken the text, so an event
        // that reaches the document was ignored. Its input event fires synchronously.
        let script = "
            const data = new DataTransfer();
            data.setData('text/plain', arguments[1]);
            let ignored = false;
            const spy = () => { ignored = true; };
            let sent = '';
            const listener = window.alfresco.term.onData((s) => { sent += s; });
            document.addEventListener('paste', spy);
            arguments[0].dispatchEvent(new ClipboardEvent('paste', {
                clipboardData: data, bubbles: true, cancelable: true }));
            document.removeEventListener('paste', spy);
            listener.dispose();
            return [!ignored, sent.startsWith('\x1b[200~') && sent.endsWith('\x1b[201~')];";
        let args = vec![json!(input), json!(text)];
        let result = self
            .call(
                &format!("paste {} bytes", text.len()),
                self.client().execute(script, args),
            )
            .await;
        assert_eq!(result[0], true, "xterm.js did not take the paste event");
        result[1]
            .as_bool()
            .unwrap_or_else(|| panic!("paste returned {result}"))
    }

    /// Right-clicks in the middle of the terminal.
    pub async fn right_click_terminal(&self) {
        let terminal = self
            .call(
                "find the terminal",
                self.client().find(Locator::Css(".xterm-screen")),
            )
            .await;
        let click = MouseActions::new("mouse".to_owned())
            .then(PointerAction::MoveToElement {
                element: terminal,
                duration: None,
                x: 0.0,
                y: 0.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_RIGHT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_RIGHT,
            });
        self.call("right-click", self.client().perform_actions(click))
            .await;
    }

    /// Types `line` and presses Enter.
    pub async fn enter(&self, line: &str) {
        self.type_text(&format!("{line}{}", char::from(Key::Enter)))
            .await;
    }

    /// Types `command` between two marker commands and returns the screen lines between the
    /// markers' output. The markers are split in the typed line (`m''-start`), so the echo of
    /// the command line cannot match them; command and output must fit the terminal's width.
    pub async fn run(&self, command: &str) -> Vec<String> {
        let marker = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (start, end) = (format!("{marker}-start"), format!("{marker}-end"));
        self.enter(&format!(
            "echo {marker}''-start; {command}; echo {marker}''-end"
        ))
        .await;
        let screen = self.wait_for_line(&end).await;
        let lines: Vec<&str> = screen.lines().collect();
        let from = lines
            .iter()
            .rposition(|l| *l == start)
            .unwrap_or_else(|| panic!("no {start:?} line before {end:?}:\n{screen}"));
        let to = from + lines[from..].iter().position(|l| *l == end).unwrap();
        lines[from + 1..to]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }

    /// Polls `check` until it returns `Some`, at most `WAIT`; then panics with `what` and
    /// what the page shows.
    pub async fn wait_until<T>(&self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {WAIT:?} for {what}; the page shows\n{}",
                    self.snapshot().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the screen contains `needle`; returns the screen.
    pub async fn wait_for_screen(&self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?} on the screen"), async || {
            Some(self.screen_text().await).filter(|s| s.contains(needle))
        })
        .await
    }

    /// Waits until a line of the screen is exactly `line` (trailing blanks trimmed), so a
    /// command's output is not mistaken for the echo of the command; returns the screen.
    pub async fn wait_for_line(&self, line: &str) -> String {
        self.wait_until(&format!("a line {line:?} on the screen"), async || {
            Some(self.screen_text().await).filter(|s| s.lines().any(|l| l == line))
        })
        .await
    }

    /// Waits until `state()` is `state`.
    pub async fn wait_for_state(&self, state: &str) {
        self.wait_until(&format!("state {state:?}"), async || {
            (self.state().await == state).then_some(())
        })
        .await
    }

    /// Resizes the browser window (outer size, in CSS pixels).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            &format!("resize the window to {width}x{height}"),
            self.client().set_window_size(width, height),
        )
        .await;
    }

    /// Ends the WebDriver session, which closes Chromium, then stops chromedriver.
    pub async fn close(mut self) {
        let client = self.client.take().expect("close once");
        self.call("close the session", client.close()).await;
    }
}

/// The screen a `Browser` starts on, set by Chromium's own flags as a real HiDPI screen or
/// phone sets them. Never CDP's emulated `deviceScaleFactor` (what WebDriver's mobile
/// emulation sets): it leaves ResizeObserver's `devicePixelContentBoxSize` at 1x while
/// `devicePixelRatio` says more, and xterm's canvas renderer then draws too large (issue 18).
#[derive(Clone, Copy, Debug)]
pub struct Screen {
    /// The window's outer size, in CSS pixels.
    pub width: u32,
    pub height: u32,
    /// Device pixels per CSS pixel: `--force-device-scale-factor`.
    pub scale: f64,
    /// A touch screen, as on a phone: `--touch-events=enabled`. Pages then see touch events
    /// (`'ontouchstart' in window`), but `navigator.maxTouchPoints` stays 0 and
    /// `(pointer: coarse)` false: Chromium has no flag for those.
    pub touch: bool,
}

impl Screen {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--window-size={},{}", self.width, self.height),
            format!("--force-device-scale-factor={}", self.scale),
        ];
        if self.touch {
            args.push("--touch-events=enabled".to_owned());
        }
        args
    }
}

/// The page's flow-control counters: bytes written to xterm.js and not yet parsed, whether
/// output is paused, how many `pause` and `resume` events it sent, and the most pending.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub pending: u64,
    pub paused: bool,
    pub pauses: u64,
    pub resumes: u64,
    pub max_pending: u64,
}

/// A chromedriver child in its own process group, with its output in a temp dir that also
/// holds the browser profile.
struct Driver {
    port: u16,
    child: Child,
    dir: TempDir,
    /// Stdin of a `sh` that kills the process group when it reads EOF, that is when this
    /// process exits without dropping the `Driver` (an abort, Ctrl-C, SIGKILL).
    watchdog: Option<Watchdog>,
}

impl Driver {
    async fn start() -> Driver {
        let dir = tempfile::Builder::new()
            .prefix("alfresco-browser-")
            .tempdir()
            .expect("create a temp dir for the browser");
        // Binding :0 and releasing it leaves a window where another process could take the
        // port; then chromedriver fails to bind and exits, and `wait_ready` says so.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("find a free loopback port")
            .port();
        let log = File::create(dir.path().join("chromedriver.log")).expect("create its log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup chromedriver.log"))
            .stderr(log)
            // Its own group, which Chromium and its helpers inherit: one kill of the group
            // by its leader's PID ends them all, and Ctrl-C at the test runner spares it.
            // (Chromium's crashpad handlers leave the group, but exit when Chromium dies.)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {CHROMEDRIVER} (is chromium-driver installed?): {e}")
            });
        let pid = child.id();

        // Kills the whole group and removes the profile if this process dies first.
        let watchdog = Watchdog::spawn(&format!("-{pid}"), Some(dir.path()));

        let mut driver = Driver {
            port,
            child,
            dir,
            watchdog: Some(watchdog),
        };
        driver.wait_ready().await;
        driver
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("chromedriver.log"))
            .unwrap_or_else(|e| format!("(no chromedriver log: {e})"))
    }

    /// Polls until chromedriver accepts connections, panicking with its output if it exits
    /// or the deadline passes. It has no other readiness signal.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll chromedriver") {
                panic!(
                    "chromedriver exited early ({status}) on port {}:\n{}",
                    self.port,
                    self.log()
                );
            }
            match tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "chromedriver not listening on port {} after {READY_DEADLINE:?} ({e}):\n{}",
                    self.port,
                    self.log()
                ),
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }
}

impl Drop for Driver {
    /// Kills chromedriver's group (chromedriver, Chromium and its helpers) by the group
    /// leader's PID, which cannot be reused while the leader is unreaped, then waits for the
    /// group to be gone so the profile dir is free to delete.
    fn drop(&mut self) {
        // The watchdog goes first: it holds the same PID and must not outlive our claim on it.
        drop(self.watchdog.take());
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let deadline = Instant::now() + EXIT_DEADLINE;
        while group_alive(pgid) {
            if Instant::now() > deadline {
                eprintln!(
                    "browser harness: process group {pgid} alive {EXIT_DEADLINE:?} after SIGKILL"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a live (not zombie) process in group `pgid` remains, from `/proc/PID/stat`.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) S ppid pgrp ..."; comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().take(4).collect();
            matches!(fields.as_slice(), [state, _ppid, pgrp, ..]
                if !matches!(*state, "Z" | "X") && pgrp.parse() == Ok(pgid))
        })
}
