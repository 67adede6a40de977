//! `--tls-cert`/`--tls-key`: the same API and WebSocket over HTTPS and WSS, with a
//! certificate made at test time; and the handshake, the one new thing a client controls,
//! cannot stall or break the server.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::WAIT;
use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;
use crate::support::tls::{TestCert, server_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_over_https_gives_an_https_url() {
    let sshd = Sshd::start();
    let cert = TestCert::generate();
    let gw = Gateway::start_tls(&cert).await;

    // The server offers exactly HTTP/1.1 by ALPN.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = cert.connector().connect(server_name(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(tls);

    let res = gw.create(&password_body(&sshd)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(res.json()["url"], format!("https://{}/{id}", gw.addr));
    // The link's page is served over the same TLS listener.
    assert_eq!(gw.get(&format!("/{id}")).await.status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_over_wss() {
    let sshd = Sshd::start();
    let cert = TestCert::generate();
    let gw = Gateway::start_tls(&cert).await;

    // `open` creates over HTTPS (checking the https:// url) and starts over WSS.
    let mut term = gw.open(&password_body(&sshd), 80, 24).await;
    let ready = term.ready().await;
    assert_eq!(
        (ready["cols"].as_u64(), ready["rows"].as_u64()),
        (Some(80), Some(24))
    );
    assert_eq!(term.run("echo over-$((6*7))-tls").await, "over-42-tls\r\n");
    term.input("exit 4\r").await;
    let closed = term.expect("ssh-closed").await;
    assert_eq!(closed["exit_status"], 4, "{closed}");
    term.expect_close().await;
    gw.assert_idle().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_fails_cleanly() {
    let cert = TestCert::generate();
    let gw = Gateway::start_tls(&cert).await;

    let mut plain = TcpStream::connect(gw.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr);
    plain.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server closes the connection (perhaps after a TLS alert, perhaps with a reset);
    // what matters is that it does, and answers nothing that looks like HTTP.
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("the server closes a plain-HTTP connection");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    let health = gw.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_blocks_no_one_and_is_cut_off() {
    let cert = TestCert::generate();
    let gw = Gateway::start_tls(&cert).await;

    // One client never starts the handshake; another sends only a record header.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let started = Instant::now();

    for _ in 0..3 {
        assert_eq!(gw.get("/healthz").await.status, 200);
    }

    // The handshake deadline (10 s) closes both; WAIT (20 s) bounds the test.
    for stalled in [&mut silent, &mut partial] {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(WAIT, stalled.read_to_end(&mut rest))
            .await
            .expect("a stalled handshake is closed by the server");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed too early"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_stalled_handshake() {
    let cert = TestCert::generate();
    let gw = Gateway::start_tls(&cert).await;
    let _silent = TcpStream::connect(gw.addr).await.unwrap();
    // Let the server accept it, proved by serving a request after it.
    assert_eq!(gw.get("/healthz").await.status, 200);

    let started = Instant::now();
    gw.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for a handshake",
        started.elapsed()
    );
}
