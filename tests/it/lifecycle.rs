//! Every way a session ends frees its thread, channel, socket and remote shell.

use std::time::Duration;

use serde_json::json;

use crate::support::gateway::Gateway;
use crate::support::sshd::Sshd;
use crate::support::term::{PROMPT, Term};
use crate::support::{WAIT, password_body};

/// The PID of the session's remote shell (the sshd is on this machine).
async fn shell_pid(term: &mut Term) -> u32 {
    term.run("echo $$").await.trim().parse().expect("a pid")
}

async fn assert_process_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // A zombie (state Z) has exited; PID 1 here may not reap it.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "remote shell {pid} is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_output() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    let pid = shell_pid(&mut term).await;
    term.input("yes flood\r").await;
    term.wait_for("flood\r\nflood\r\nflood\r\n").await;
    term.vanish();
    gw.assert_idle().await;
    assert_process_gone(pid).await;
}

/// A slow reader stalls the output, not the input: Ctrl-C still stops a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_flows_while_output_is_stalled() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    term.input("yes flood\r").await;
    term.wait_for("flood\r\n").await;
    // Not reading for a while fills every queue between `yes` and this socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    term.send(tokio_tungstenite::tungstenite::Message::binary(vec![3u8]))
        .await;
    term.wait_for(&format!("^C\r\n{PROMPT}")).await;
    assert_eq!(term.run("echo after").await, "after\r\n");
    term.close().await;
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_dies_mid_session() {
    let mut sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    sshd.stop();
    let (message, close) = term.expect_error("connection_lost").await;
    assert_eq!(close, Some(1011));
    assert!(message.contains("lost"), "{message}");
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_ends_session_with_signal_name() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    term.input("kill -KILL $$\r").await;
    let closed = term.expect("ssh-closed").await;
    assert_eq!(closed["reason"], "signalled", "{closed}");
    assert_eq!(closed["exit_signal"], "KILL", "{closed}");
    assert_eq!(term.expect_close().await, Some(1000));
    gw.assert_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_tells_live_sessions() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    let pid = shell_pid(&mut term).await;
    let handle = gw.handle.clone();
    let stopping = tokio::spawn(gw.stop());
    assert_eq!(term.expect_error("server_shutdown").await.1, Some(1001));
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stops in time")
        .unwrap();
    assert_eq!((handle.live(), handle.bridge_threads()), (0, 0));
    assert_process_gone(pid).await;
}

/// A loopback listener that accepts and never speaks SSH: the handshake hangs.
fn tarpit() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout() {
    let (_listener, port) = tarpit();
    let gw = Gateway::start_with(|c| c.connect_timeout = Duration::from_millis(500)).await;
    let body = json!({"hostname": "127.0.0.1", "port": port, "username": "u", "password": "p"});
    let mut term = gw.open(&body, 80, 24).await;
    assert_eq!(term.expect_error("connect_timeout").await.1, Some(1011));
    gw.assert_idle().await;
}

/// Closing the tab while the handshake hangs frees the thread at once, not at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaves_during_handshake() {
    let (listener, port) = tarpit();
    let gw = Gateway::start_with(|c| c.connect_timeout = Duration::from_secs(600)).await;
    let body = json!({"hostname": "127.0.0.1", "port": port, "username": "u", "password": "p"});
    let term = gw.open(&body, 80, 24).await;
    // The gateway's TCP connection reached the tarpit: the bridge thread is in the handshake.
    listener.set_nonblocking(false).unwrap();
    let (_conn, _) = listener.accept().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.handle.bridge_threads() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bridge thread started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    term.close().await;
    gw.assert_idle().await;
}

/// `pause` stops output at the source (the remote program blocks on the SSH window) while
/// input still flows; `resume` lets the rest through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let sshd = Sshd::start();
    let gw = Gateway::start().await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    term.send_event("pause", json!(null)).await;
    // ~21 MB of output if it ran to the end.
    term.input("seq 1 3000000\r").await;
    let while_paused = term.read_for(Duration::from_millis(1500)).await;
    assert_eq!(while_paused, 0, "output arrived while paused");
    // Ctrl-C gets through while paused, so `seq` never finishes.
    term.send(tokio_tungstenite::tungstenite::Message::binary(vec![3u8]))
        .await;
    term.send_event("resume", json!(null)).await;
    term.wait_for(&format!("^C\r\n{PROMPT}")).await;
    let total = term.output.len();
    assert!(total < 20 << 20, "seq ran to the end: {total} bytes");
    assert_eq!(term.run("echo after").await, "after\r\n");
    term.close().await;
    gw.assert_idle().await;
}

/// A shutdown signal drains: new sessions and readiness are refused, live sessions are told
/// and go on (a command finishes), then end with `server_shutdown` at the drain deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_live_sessions_finish() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.drain_timeout = Duration::from_secs(3)).await;
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    term.ready().await;
    assert_eq!(gw.get("/readyz").await.status, 200);
    let probe = gw.client();
    let handle = gw.handle.clone();
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(gw.stop());

    assert_eq!(term.expect("warning").await["code"], "server_draining");
    // The live session goes on…
    assert_eq!(term.run("sleep 0.5; echo finished").await, "finished\r\n");
    // …while nothing new is accepted, and readiness says so.
    let ready = probe.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.error_code().as_str()),
        (503, "server_shutdown")
    );
    let res = probe.create(&password_body(&sshd)).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (503, "server_shutdown")
    );

    assert_eq!(term.expect_error("server_shutdown").await.1, Some(1001));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not before the drain deadline"
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stops in time")
        .unwrap();
    assert_eq!((handle.live(), handle.bridge_threads()), (0, 0));
}

/// --max-sessions-per-token counts pending sessions, not only live ones: with a limit of
/// 1, a burst of creates gets one session (the rest `too_many_sessions`), so no more than
/// one can go live; once it ends the token may create again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_limit_counts_pending_sessions() {
    let sshd = Sshd::start();
    let gw = Gateway::start_with(|c| c.max_sessions_per_token = 1).await;
    let body = password_body(&sshd);
    let burst = futures_util::future::join_all((0..4).map(|_| gw.create(&body))).await;
    let mut created = Vec::new();
    for res in burst {
        match res.status {
            201 => created.push(res.json()["id"].as_str().expect("id").to_owned()),
            _ => assert_eq!(
                (res.status, res.error_code().as_str()),
                (503, "too_many_sessions")
            ),
        }
    }
    assert_eq!(created.len(), 1, "one session per token, pending or live");

    let mut term = gw.ws().await;
    term.start(&created[0], 80, 24).await;
    term.ready().await;
    let res = gw.create(&body).await;
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (503, "too_many_sessions"),
        "a live session counts too"
    );
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
    gw.create_id(&body).await;
}

/// A session counts as live until its bridge thread has exited, not only its task: a thread
/// still closing on a server that stopped answering holds its --max-sessions slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_live_until_its_thread_has_exited() {
    let sshd = Sshd::start();
    let proxy = crate::support::proxy::Proxy::start(sshd.addr()).await;
    let gw = Gateway::start().await;
    let mut body = password_body(&sshd);
    body["port"] = json!(proxy.addr.port());
    let mut term = gw.open(&body, 80, 24).await;
    term.ready().await;
    // The thread's close now waits for a server that never answers (its close timeouts).
    proxy.freeze();
    term.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // `live` first: the thread's count drops before its slot is given back.
        let live = gw.handle.live();
        let threads = gw.handle.bridge_threads();
        assert!(
            live >= threads,
            "{threads} bridge threads outlive their slot"
        );
        if threads == 0 && live == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
