//! Long single-line pastes: 64 KiB to 4 MiB with no newline, sent as a browser sends a paste
//! (16 KiB `ssh-input` frames, as fast as the socket takes them). The session must survive
//! with echo on and off, into a program that reads and one that does not, and a program
//! that reads every byte must get every byte.

use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::{PROMPT, Term};

const FRAME: usize = 16 * 1024;
const KIB: usize = 1024;

async fn open(gw: &Gateway, sshd: &Sshd) -> Term {
    let mut term = gw.open(&password_body(sshd), 80, 24).await;
    term.ready().await;
    term
}

/// The shell still answers after the paste: nothing was lost on the way back either.
async fn assert_alive(term: &mut Term) {
    assert_eq!(term.run("echo still-here").await, "still-here\r\n");
}

/// The shell still answers, then exits; nothing is left behind.
async fn end(mut term: Term, gw: Gateway) {
    assert_alive(&mut term).await;
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
    gw.stop().await;
}

/// Switches the terminal to raw mode without echo, runs `reader`, and returns once raw mode
/// is on: a paste that began earlier would meet the canonical line limit instead.
async fn raw_reader(term: &mut Term, reader: &str, marker: &str) {
    term.input(&format!(
        "stty raw -echo; echo ready''-{marker}; {reader}; stty sane; echo counted''-{marker}\r"
    ))
    .await;
    term.wait_for(&format!("ready-{marker}")).await;
}

/// Waits for the count `wc -c` printed and checks it.
async fn expect_count(term: &mut Term, len: usize, marker: &str) {
    let out = term.wait_for(&format!("counted-{marker}")).await;
    assert!(
        out.contains(&format!("{len}\r\n")) || out.contains(&format!("{len}\n")),
        "{len} bytes pasted, the reader counted: {:?}",
        out.trim()
    );
    term.wait_for(PROMPT).await;
}

/// A raw-mode reader counts exactly what arrived: `head -c` ends after `len` bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_line_paste_arrives_whole() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = open(&gw, &sshd).await;
    for len in [64 * KIB, 256 * KIB, 1024 * KIB, 4096 * KIB] {
        let marker = len.to_string();
        raw_reader(&mut term, &format!("head -c {len} | wc -c"), &marker).await;
        term.paste(b'x', len, FRAME).await;
        expect_count(&mut term, len, &marker).await;
    }
    end(term, gw).await;
}

/// The case from the report: a line discipline that holds one line, `cat` reading into
/// /dev/null, echo off (where sshd answers each write with an equally long SSH_MSG_IGNORE)
/// and on; then Enter and Ctrl-D.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_line_into_cat_echo_off_and_on() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = open(&gw, &sshd).await;
    for (echo, len) in [
        ("-echo", 64 * KIB),
        ("-echo", 256 * KIB),
        ("-echo", 4096 * KIB),
        ("echo", 256 * KIB),
        ("echo", 1024 * KIB),
    ] {
        term.input(&format!(
            "stty {echo}; cat > /dev/null; stty echo; echo done''-{len}\r"
        ))
        .await;
        term.wait_for("\r\n").await;
        term.paste(b'y', len, FRAME).await;
        term.input("\r\x04").await;
        term.wait_for(&format!("done-{len}")).await;
        term.wait_for(PROMPT).await;
    }
    end(term, gw).await;
}

/// Programs that do not read. `sleep` in canonical mode: the line discipline drops what
/// exceeds one line, Ctrl-C ends the program and the session goes on. Then a raw-mode reader
/// that starts late: 4 MiB is more than sshd's window and buffers hold, so the gateway's
/// writes wait on the window for seconds, and every byte still arrives once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_line_into_a_program_that_does_not_read() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = open(&gw, &sshd).await;
    for echo in ["-echo", "echo"] {
        term.input(&format!("stty {echo}; sleep 60\r")).await;
        term.wait_for("\r\n").await;
        term.paste(b'z', 1024 * KIB, FRAME).await;
        term.input("\x03").await;
        term.wait_for(PROMPT).await;
        // Ctrl-C ended the whole line, so echo is turned back on here.
        term.input("stty echo\r").await;
        term.wait_for(PROMPT).await;
        assert_alive(&mut term).await;
    }
    let len = 4096 * KIB;
    raw_reader(
        &mut term,
        &format!("sleep 3; head -c {len} | wc -c"),
        "late",
    )
    .await;
    term.paste(b'w', len, FRAME).await;
    expect_count(&mut term, len, "late").await;
    end(term, gw).await;
}

/// Issue 19's report: a multi-line paste (64-character lines, 4–64 KiB) into `wc -c` with
/// echo off ended the session. Every line must arrive, echo off and on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_paste_into_a_line_reader() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = open(&gw, &sshd).await;
    // 63 characters and the Enter a browser sends for a newline: 64 bytes a line.
    let line = format!("{}\r", "m".repeat(63));
    for (echo, len) in [
        ("-echo", 4 * KIB),
        ("-echo", 16 * KIB),
        ("-echo", 64 * KIB),
        ("echo", 64 * KIB),
    ] {
        let marker = format!("{echo}{len}");
        term.input(&format!(
            "stty {echo}; echo ready''-{marker}; wc -c; stty echo; echo counted''-{marker}\r"
        ))
        .await;
        term.wait_for(&format!("ready-{marker}")).await;
        let text = line.repeat(len / line.len());
        for chunk in text.as_bytes().chunks(FRAME) {
            term.input(std::str::from_utf8(chunk).unwrap()).await;
        }
        term.input("\x04").await;
        expect_count(&mut term, len, &marker).await;
    }
    end(term, gw).await;
}
