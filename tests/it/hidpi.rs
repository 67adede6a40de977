//! The terminal page on HiDPI screens and phones: Chromium started with its own device scale
//! factor (1, 2 and 3), in a desktop-sized window and in a phone-sized one with touch. Not
//! CDP's emulated `deviceScaleFactor`: it leaves ResizeObserver's `devicePixelContentBoxSize`
//! at 1x, and xterm's canvas renderer then draws twice too large, which no real screen does
//! (issue 18). Each test starts one browser and makes every check in it, as starts cost seconds.

use serde_json::json;

use crate::support::browser::{Browser, Screen};
use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::PROMPT;

/// What the page and xterm.js say about the terminal's size and where its canvas sits. Uses
/// xterm's private `_renderService.dimensions`, what the fit addon itself reads: the public
/// API has no cell size.
const GEOMETRY_SCRIPT: &str = "
    const term = window.alfresco.term;
    const dims = term._core._renderService.dimensions;
    const viewport = term.element.querySelector('.xterm-viewport');
    const canvas = term.element.querySelector('canvas.xterm-text-layer');
    const box = canvas ? canvas.getBoundingClientRect() : { left: 0, top: 0, width: 0, height: 0 };
    return {
        dpr: devicePixelRatio,
        innerWidth: innerWidth,
        innerHeight: innerHeight,
        scrollWidth: document.documentElement.scrollWidth,
        cols: term.cols,
        rows: term.rows,
        cssCellWidth: dims.css.cell.width,
        cssCellHeight: dims.css.cell.height,
        deviceCellWidth: dims.device.cell.width,
        deviceCellHeight: dims.device.cell.height,
        textWidth: viewport.clientWidth,
        textHeight: viewport.clientHeight,
        textRight: viewport.getBoundingClientRect().left + viewport.clientWidth,
        canvasWidth: canvas ? canvas.width : 0,
        canvasHeight: canvas ? canvas.height : 0,
        canvasCssWidth: box.width,
        canvasCssHeight: box.height,
        maxTouchPoints: navigator.maxTouchPoints,
        touchEvents: 'ontouchstart' in window,
        coarsePointer: matchMedia('(pointer: coarse)').matches,
    };";

/// ResizeObserver's first report on the text canvas: its size in device pixels and in CSS
/// pixels. Device = CSS x ratio on a real screen; CDP's emulation reports 1x here.
const DEVICE_PIXELS_SCRIPT: &str = "
    const canvas = window.alfresco.term.element.querySelector('canvas.xterm-text-layer');
    return new Promise((resolve) => {
        const observer = new ResizeObserver((entries) => {
            observer.disconnect();
            const entry = entries[0];
            resolve([entry.devicePixelContentBoxSize[0].inlineSize,
                     entry.contentBoxSize[0].inlineSize]);
        });
        observer.observe(canvas);
    });";

/// Where the last cell of the line `arguments[0]` is drawn, after the next frame: the text
/// canvas's pixels at its right edge and middle (device pixels, from the renderer's own cell
/// geometry), where that edge is in CSS pixels, and whether the cell's centre hits the
/// terminal's screen (`elementFromPoint` answers null outside the viewport).
const LAST_CELL_SCRIPT: &str = "
    const line = arguments[0];
    const term = window.alfresco.term;
    const buffer = term.buffer.active;
    let index = -1;
    for (let i = buffer.length - 1; i >= 0 && index < 0; i--) {
        if (buffer.getLine(i).translateToString(true) === line) { index = i; }
    }
    const cell = term._core._renderService.dimensions.device.cell;
    const canvas = term.element.querySelector('canvas.xterm-text-layer');
    const row = index - buffer.viewportY;
    // xterm renders in an animation frame it asked for when the line was parsed, so
    // a frame asked for now comes after it.
    return new Promise((resolve) => requestAnimationFrame(() => {
        const ctx = canvas.getContext('2d');
        const y = Math.floor((row + 0.5) * cell.height);
        const right = term.cols * cell.width;
        const pixel = (x) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
        const box = canvas.getBoundingClientRect();
        const scale = box.width / canvas.width;
        const hit = document.elementFromPoint(
            box.left + (right - cell.width / 2) * scale, box.top + y * scale);
        resolve({
            row: row,
            edge: pixel(right - 1),
            middle: pixel(right - Math.ceil(cell.width / 2)),
            cssRight: box.left + right * scale,
            onScreen: hit !== null && hit.closest('.xterm-screen') !== null,
        });
    }));";

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Geometry {
    dpr: f64,
    inner_width: f64,
    scroll_width: f64,
    cols: u16,
    rows: u16,
    css_cell_width: f64,
    css_cell_height: f64,
    device_cell_width: f64,
    device_cell_height: f64,
    text_width: f64,
    text_height: f64,
    text_right: f64,
    canvas_width: f64,
    canvas_height: f64,
    canvas_css_width: f64,
    canvas_css_height: f64,
    max_touch_points: u32,
    touch_events: bool,
    coarse_pointer: bool,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LastCell {
    row: i64,
    edge: [u8; 3],
    middle: [u8; 3],
    css_right: f64,
    on_screen: bool,
}

/// A desktop window and a phone's, in CSS pixels (an iPhone 12 to 15 is 390x844).
fn desktop(scale: f64) -> Screen {
    Screen {
        width: 1000,
        height: 700,
        scale,
        touch: false,
    }
}

fn phone(scale: f64) -> Screen {
    Screen {
        width: 390,
        height: 844,
        scale,
        touch: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_at_ratio_1() {
    check(desktop(1.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_at_ratio_2() {
    check(desktop(2.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_at_ratio_3() {
    check(desktop(3.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_at_ratio_1() {
    check(phone(1.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_at_ratio_2() {
    check(phone(2.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_at_ratio_3() {
    check(phone(3.0)).await;
}

/// Opens a session on `screen` and checks, in one browser: the scale factor and touch are
/// real, the canvas has one backing pixel per device pixel, the terminal's text area holds
/// `cols` x `rows` cells, a line of exactly `cols` characters is drawn to its last cell
/// inside the viewport, and `stty size` agrees with the page.
async fn check(screen: Screen) {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start_on(screen).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;

    let g: Geometry = parse(browser.execute(GEOMETRY_SCRIPT).await);
    let context = format!("{screen:?}\n{g:#?}");
    assert_eq!(g.dpr, screen.scale, "devicePixelRatio; {context}");
    // Only touch events follow the flag (see `Screen::touch`).
    assert_eq!(g.touch_events, screen.touch, "touch; {context}");
    // One canvas pixel per screen pixel: neither blurred (fewer) nor drawn past its box (more).
    let within_a_pixel = |device: f64, css: f64| (device - css * g.dpr).abs() <= 1.0;
    assert!(
        within_a_pixel(g.canvas_width, g.canvas_css_width)
            && within_a_pixel(g.canvas_height, g.canvas_css_height),
        "the text canvas's backing store; {context}"
    );
    let [device, css] = parse::<[f64; 2]>(browser.execute(DEVICE_PIXELS_SCRIPT).await);
    assert!(
        within_a_pixel(device, css),
        "ResizeObserver's devicePixelContentBoxSize is {device} for {css} CSS px; {context}"
    );
    // The renderer's cells are the CSS cells scaled, and all `cols` of them fit its canvas.
    assert!(
        within_a_pixel(g.device_cell_width, g.css_cell_width)
            && f64::from(g.cols) * g.device_cell_width <= g.canvas_width,
        "device cells; {context}"
    );
    // The text area (the terminal less its scrollbar) over the cell size is the terminal's
    // size: the fit addon floors it, so the quotient is at most one column (row) more.
    let (fit_cols, fit_rows) = (
        g.text_width / g.css_cell_width,
        g.text_height / g.css_cell_height,
    );
    assert!(
        (fit_cols - f64::from(g.cols)).abs() < 1.0 && (fit_rows - f64::from(g.rows)).abs() < 1.0,
        "{fit_cols:.2} x {fit_rows:.2} cells fit; {context}"
    );
    assert!(
        g.scroll_width <= g.inner_width,
        "the page scrolls sideways; {context}"
    );

    // Exactly `cols` characters: dashes, then a full block, which xterm draws itself (a
    // custom glyph, not the font's), filling its cell to the right edge in the foreground
    // colour. Printed as octal escapes so the typed line stays ASCII.
    let cols = usize::from(g.cols);
    let line = format!("{}\u{2588}", "-".repeat(cols - 1));
    browser
        .enter(&format!(
            "printf '%*s\\342\\226\\210\\n' {} '' | tr ' ' -",
            cols - 1
        ))
        .await;
    browser.wait_for_line(&line).await;
    let last: LastCell = parse(
        browser
            .execute_with(LAST_CELL_SCRIPT, vec![json!(line)])
            .await,
    );
    let context = format!("{context}\n{last:#?}");
    // The foreground is #d4d4d4 on #1e1e1e: any channel under 128 is not the block.
    let drawn = |rgb: [u8; 3]| rgb.iter().all(|&c| c >= 128);
    assert!(
        (0..i64::from(g.rows)).contains(&last.row) && drawn(last.edge) && drawn(last.middle),
        "the last column is not drawn; {context}"
    );
    assert!(
        last.on_screen && last.css_right <= g.inner_width.min(g.text_right) + 0.5,
        "the last column is off screen; {context}"
    );

    let out = browser.run("stty size").await;
    assert_eq!(
        browser.term_size().await,
        (g.cols, g.rows),
        "a refit; {context}"
    );
    assert_eq!(
        out,
        [format!("{} {}", g.rows, g.cols)],
        "stty size; {context}"
    );

    eprintln!(
        "hidpi {}x{} at {}{}: {}x{} cells of {:.3}x{:.3} CSS px ({}x{} device), \
         {fit_cols:.2} fit in {} CSS px, last column ends at {:.1} of {}; \
         maxTouchPoints {}, pointer coarse {}",
        screen.width,
        screen.height,
        screen.scale,
        if screen.touch { " with touch" } else { "" },
        g.cols,
        g.rows,
        g.css_cell_width,
        g.css_cell_height,
        g.device_cell_width,
        g.device_cell_height,
        g.text_width,
        last.css_right,
        g.inner_width,
        g.max_touch_points,
        g.coarse_pointer,
    );
    browser.close().await;
    gw.assert_idle().await;
}

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// Writes docs/screenshot@2x.png: browser::screenshot's scene on a ratio-2 screen, the
/// same 1000x600 CSS px, so 2000x1200 pixels. Run on purpose only:
/// `cargo test --test it hidpi::screenshot_at_ratio_2 -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshot@2x.png"]
async fn screenshot_at_ratio_2() {
    // browser::screenshot's commands; no CJK: the test machine may have no CJK font.
    const SCENE: [&str; 4] = [
        "ls -l --color=always /usr",
        "grep --color=always -E '^(root|alfresco)[^:]*' /etc/passwd",
        "for c in {0..7}; do printf '\\e[4%sm    \\e[10%sm    ' $c $c; done; printf '\\e[0m\\n'",
        "printf 'UTF-8: é ñ ß λ → ✓ ─┼─ \\U1F600\\n'",
    ];
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let browser = Browser::start_on(desktop(2.0)).await;
    // A 1000x600 viewport: the window's size includes the browser's frame.
    let frame = browser
        .execute("return outerHeight - innerHeight")
        .await
        .as_u64()
        .expect("a frame height");
    browser.set_window_size(1000, 600 + frame as u32).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    browser.open(&format!("http://{}/{id}", gw.addr)).await;
    browser.wait_for_line(PROMPT.trim_end()).await;

    for command in SCENE {
        browser.enter(command).await;
        // Done when the screen ends with an idle prompt below the command's line.
        browser
            .wait_until(&format!("a prompt after {command:?}"), async || {
                let screen = browser.screen_text().await;
                let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
                let (last, before) = lines.split_last()?;
                let echoed = before.iter().any(|l| l.contains(command));
                (*last == PROMPT.trim_end() && echoed).then_some(())
            })
            .await;
    }
    let png = browser.screenshot().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot@2x.png");
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {path}: {e}"));
    eprintln!("wrote {path} ({} bytes)", png.len());

    browser.close().await;
    gw.assert_idle().await;
}
