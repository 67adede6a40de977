//! Resume: a session outlives its socket for the grace period, and a client that comes back
//! with its resume token gets exactly the output it missed, byte for byte.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::term::{PROMPT, Term};

/// A gateway that keeps sessions `grace` after their socket drops, with `buffer` bytes of
/// output for replays.
async fn gateway(grace: Duration, buffer: usize) -> Gateway {
    Gateway::start_with(|c| {
        c.resume_grace = Some(grace);
        c.resume_buffer = buffer;
    })
    .await
}

/// Opens a session and returns it with its first resume token.
async fn open(gw: &Gateway, sshd: &Sshd) -> (Term, String) {
    let mut term = gw.open(&password_body(sshd), 80, 24).await;
    let ready = term.ready().await;
    let token = ready["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    assert_eq!(token.len(), 64, "{ready}");
    (term, token)
}

/// Resumes on a new socket with `token`, having received `offset` bytes.
async fn resume(gw: &Gateway, token: &str, offset: usize, cols: u16, rows: u16) -> Term {
    let mut term = gw.ws().await;
    term.send_event(
        "resume-session",
        json!({"token": token, "offset": offset, "cols": cols, "rows": rows}),
    )
    .await;
    term
}

/// The `session-resumed` answer, checked against the token it replaced.
async fn resumed(term: &mut Term, old_token: &str) -> Value {
    let data = term.expect("session-resumed").await;
    let token = data["resume_token"].as_str().expect("a new token");
    assert_eq!(token.len(), 64);
    assert_ne!(token, old_token, "the token rotates on every attach");
    data
}

/// Ends the session from the shell: closing a socket would only detach it.
async fn end(mut term: Term) {
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
}

/// `seq 1 n` as the terminal shows it.
fn seq_output(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\r\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mid_flood_loses_and_repeats_nothing() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 16 << 20).await;
    let (mut first, token) = open(&gw, &sshd).await;
    first.input("seq 1 300000; echo seq-''done\r").await;
    first.wait_for("1000\r\n").await;
    let received = first.output.clone();
    first.vanish();

    let mut second = resume(&gw, &token, received.len(), 80, 24).await;
    let data = resumed(&mut second, &token).await;
    assert_eq!(data["offset"], received.len(), "{data}");
    assert_eq!(data["truncated"], false);
    second.wait_for("seq-done\r\n").await;
    let mut all = received;
    all.extend_from_slice(&second.output);
    let all = String::from_utf8(all).expect("UTF-8");
    let expected = seq_output(300_000);
    assert!(
        all.contains(&expected),
        "the output across the drop differs from seq's ({} bytes received, {} expected)",
        all.len(),
        expected.len()
    );
    assert_eq!(second.run("echo still-here").await, "still-here\r\n");
    end(second).await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_at_an_idle_prompt_and_at_a_new_size() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 1 << 20).await;
    let (mut first, token) = open(&gw, &sshd).await;
    assert_eq!(first.run("stty size").await, "24 80\r\n");
    let offset = first.output.len();
    first.close().await;

    let mut second = resume(&gw, &token, offset, 100, 30).await;
    let data = resumed(&mut second, &token).await;
    assert_eq!(
        (data["offset"].as_u64(), data["truncated"].as_bool()),
        (Some(offset as u64), Some(false))
    );
    assert_eq!(second.run("stty size").await, "30 100\r\n");

    // A reload: a fresh page has nothing, and gets everything the buffer holds.
    let next = data["resume_token"].as_str().unwrap().to_owned();
    second.vanish();
    let mut third = resume(&gw, &next, 0, 100, 30).await;
    let data = resumed(&mut third, &next).await;
    assert_eq!(data["offset"], 0);
    third.wait_for("30 100\r\n").await;
    third.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_while_detached_then_resume() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 1 << 20).await;
    let (mut first, token) = open(&gw, &sshd).await;
    // The resize and the drop race: the resume carries the size that counts.
    first.resize(120, 40).await;
    first.vanish();
    let mut second = resume(&gw, &token, 0, 90, 33).await;
    resumed(&mut second, &token).await;
    assert_eq!(second.run("stty size").await, "33 90\r\n");
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reused_and_unknown_tokens_are_refused() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 1 << 20).await;
    let (first, token) = open(&gw, &sshd).await;
    first.vanish();
    let mut second = resume(&gw, &token, 0, 80, 24).await;
    let next = resumed(&mut second, &token).await["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The first token was used: it cannot attach again, and the live client stays.
    let mut reused = resume(&gw, &token, 0, 80, 24).await;
    assert_eq!(reused.expect_error("resume_invalid").await.1, Some(1008));
    let mut unknown = resume(&gw, &"0".repeat(64), 0, 80, 24).await;
    assert_eq!(unknown.expect_error("resume_invalid").await.1, Some(1008));
    let mut malformed = resume(&gw, "not-a-token", 0, 80, 24).await;
    malformed.expect_error("bad_message").await;
    // An offset past the output is a client bug, refused; the token stays good.
    let mut ahead = resume(&gw, &next, 1 << 40, 80, 24).await;
    ahead.expect_error("bad_message").await;
    assert_eq!(second.run("echo alive").await, "alive\r\n");
    let metrics = gw.get("/metrics").await.text();
    for line in [
        "alfresco_attaches_total{outcome=\"resumed\"} 1",
        "alfresco_attaches_total{outcome=\"resume_refused\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tab_takes_over() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 1 << 20).await;
    let (mut first, token) = open(&gw, &sshd).await;
    let offset = first.output.len();
    let mut second = resume(&gw, &token, offset, 80, 24).await;
    resumed(&mut second, &token).await;
    let (message, close) = first.expect_error("session_taken_over").await;
    assert_eq!(close, Some(1008));
    assert!(message.contains("elsewhere"), "{message}");
    assert_eq!(second.run("echo mine-now").await, "mine-now\r\n");
    end(second).await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_ends_when_no_one_resumes_in_time() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_millis(500), 1 << 20).await;
    let (first, token) = open(&gw, &sshd).await;
    first.vanish();
    // Within the grace period the session is still there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gw.handle.live(), 1);
    gw.assert_idle().await;
    let mut late = resume(&gw, &token, 0, 80, 24).await;
    late.expect_error("resume_invalid").await;
}

/// A client that asks for output the buffer no longer holds gets what it has, from a line
/// start, flagged `truncated`. (A detached session stops reading once its buffer is full,
/// so a gap can no longer be made by waiting: the client asks from byte 0 instead, when
/// more than the 4 KiB buffer has been output.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_buffer_no_longer_holds_is_flagged() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 4096).await;
    let (mut first, token) = open(&gw, &sshd).await;
    first.input("seq 1 50000; echo seq-''done\r").await;
    // About 9 KB of output: more than the buffer holds.
    first.wait_for("2000\r\n").await;
    first.vanish();
    let mut second = resume(&gw, &token, 0, 80, 24).await;
    let data = resumed(&mut second, &token).await;
    assert_eq!(data["truncated"], true, "{data}");
    assert!(data["offset"].as_u64().unwrap() > 4096, "{data}");
    let replay = second.wait_for("\n").await;
    assert!(
        replay.trim_end().parse::<u32>().is_ok(),
        "the replay starts at a line start: {replay:?}"
    );
    second.wait_for("seq-done\r\n").await;
    second.wait_for(PROMPT).await;
    assert!(second.text().contains("50000\r\n"), "{}", second.text());
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_there_is_no_token_and_the_session_ends_with_its_socket() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    let ready = term.ready().await;
    assert!(ready.get("resume_token").is_none(), "{ready}");
    term.vanish();
    gw.assert_idle().await;
}

/// A shutdown drain takes no new sessions, but a live one can still come back to its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_can_be_resumed_during_the_drain() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| {
        c.resume_grace = Some(Duration::from_secs(60));
        c.drain_timeout = Duration::from_secs(5);
    })
    .await;
    let pending = gw.create_id(&password_body(&sshd)).await;
    let (mut first, token) = open(&gw, &sshd).await;
    let probe = gw.client();
    let stopping = tokio::spawn(gw.stop());
    assert_eq!(first.expect("warning").await["code"], "server_draining");
    let offset = first.output.len();
    first.vanish();

    let mut back = probe.ws().await;
    back.send_event(
        "resume-session",
        json!({"token": token, "offset": offset, "cols": 80, "rows": 24}),
    )
    .await;
    resumed(&mut back, &token).await;
    // The page that came back is told about the drain too.
    assert_eq!(back.expect("warning").await["code"], "server_draining");
    assert_eq!(back.run("echo back-''in-drain").await, "back-in-drain\r\n");

    let mut new = probe.ws().await;
    new.start(&pending, 80, 24).await;
    assert_eq!(new.expect_error("server_shutdown").await.1, Some(1001));
    assert_eq!(back.expect_error("server_shutdown").await.1, Some(1001));
    tokio::time::timeout(crate::support::WAIT, stopping)
        .await
        .expect("stops in time")
        .unwrap();
}

/// A network that dies without a word (no FIN, as under a laptop lid) leaves the old socket
/// looking attached, its sends stuck while output streams. The page, back on a new socket,
/// must not wait for those sends to time out, and still loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_does_not_wait_for_a_silently_dead_socket() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 32 << 20).await;
    let proxy = crate::support::proxy::Proxy::start(gw.addr).await;
    let id = gw.create_id(&password_body(&sshd)).await;
    let stream: crate::support::Stream = Box::new(
        tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect to the relay"),
    );
    let mut first = Term::connect(stream, &format!("ws://{}/ws", proxy.addr)).await;
    first.start(&id, 80, 24).await;
    let token = first.ready().await["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();
    first.input("seq 1 2000000; echo seq-''done\r").await;
    first.wait_for("1000\r\n").await;
    proxy.freeze();
    let received = first.output.clone();
    drop(first);
    // Long enough for the frozen relay's buffers to fill and the gateway's send to stall.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    let mut second = resume(&gw, &token, received.len(), 80, 24).await;
    let data = resumed(&mut second, &token).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the resume waited {waited:?} for the dead socket's send"
    );
    assert_eq!(data["offset"], received.len(), "{data}");
    second.wait_for("seq-done\r\n").await;
    let mut all = received;
    all.extend_from_slice(&second.output);
    let all = String::from_utf8(all).expect("UTF-8");
    assert!(
        all.contains(&seq_output(2_000_000)),
        "the output across the dead socket differs from seq's"
    );
    end(second).await;
    gw.assert_idle().await;
}

/// Bytes written so far by process `pid` (the sshd is on this machine), or `None` once it
/// has exited.
fn bytes_written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let line = io.lines().find_map(|l| l.strip_prefix("wchar:"))?;
    Some(line.trim().parse().expect("a byte count"))
}

/// A detached session whose program floods stops reading once its ring is full: the
/// program then waits in the SSH window instead of the gateway reading (and dropping)
/// its output for the whole grace. After a resume, output flows again, to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_flood_stops_reading_once_the_ring_is_full() {
    // 32 MiB of zeros; far more than the 64 KiB ring, the SSH window and the sockets'
    // buffers together, so a flood that is read to its end is told from a held one.
    const FLOOD: u64 = 512 * 64 * 1024;
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 64 << 10).await;
    let (mut first, token) = open(&gw, &sshd).await;
    // dd writes the flood itself, and prints its pid first (exec keeps it), so its write
    // count can be read from /proc. The '' keep the echo of the line from matching.
    first
        .input("sh -c 'echo flood-''pid=$$; exec dd if=/dev/zero bs=64k count=512 status=none'; echo flood-''done\r")
        .await;
    first.wait_for("flood-pid=").await;
    let pid: u32 = first.wait_for("\r\n").await.trim().parse().expect("a pid");
    let received = first.output.len();
    first.vanish();

    // The flood stops (its write count holds still for half a second) well short of its
    // end; read on, it would run to the end (or exit) instead.
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    let (mut last, mut still) = (0, 0);
    while still < 25 {
        let written = bytes_written(pid).expect("the flood is still running, held");
        assert!(
            written < FLOOD / 2,
            "the flood was read on: {written} bytes"
        );
        (still, last) = if written == last {
            (still + 1, last)
        } else {
            (0, written)
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood never stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("flood held after {last} of {FLOOD} bytes");

    let mut second = resume(&gw, &token, received, 80, 24).await;
    resumed(&mut second, &token).await;
    second.wait_for("flood-done\r\n").await;
    assert!(
        second.output.len() as u64 >= FLOOD / 2,
        "the rest came through"
    );
    end(second).await;
    gw.assert_idle().await;
}

/// Keystrokes that reached the gateway before the page moved to a new socket are kept. The
/// old socket here stops reading during a flood, so the gateway's send to it is stuck and
/// the input it sent meanwhile sits unread; the resume lets that socket go, and the typed
/// command still runs once the flood ends. Before, it was dropped with the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_sent_before_a_resume_is_not_lost() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 1 << 20).await;
    let (mut first, token) = open(&gw, &sshd).await;
    first.input("seq 1 3000000; echo seq-''done\r").await;
    first.wait_for("1000\r\n").await;
    // Not read from now on: the buffers fill and the gateway's send to this socket stalls.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.input("echo typed-''ahead\r").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = first.output.len();
    let mut second = resume(&gw, &token, received, 80, 24).await;
    resumed(&mut second, &token).await;
    second.wait_for("seq-done\r\n").await;
    second.wait_for("typed-ahead\r\n").await;
    drop(first);
    end(second).await;
    gw.assert_idle().await;
}

/// A page that paused output (its terminal was busy) and is then taken over leaves no pause
/// behind: the new page, which never asked for one, gets output at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_ends_with_the_page_that_asked_for_it() {
    let sshd = Sshd::start();
    let gw = gateway(Duration::from_secs(60), 1 << 20).await;
    let (mut first, token) = open(&gw, &sshd).await;
    first.input("echo before-''pause\r").await;
    first.wait_for("before-pause\r\n").await;
    first.send_event("pause", Value::Null).await;
    // Read before the resume: the echo of this input waits behind the pause.
    first.input("\r").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = resume(&gw, &token, first.output.len(), 80, 24).await;
    resumed(&mut second, &token).await;
    second.input("echo after-''takeover\r").await;
    second.wait_for("after-takeover\r\n").await;
    drop(first);
    end(second).await;
    gw.assert_idle().await;
}
