//! The connect deadline is absolute: a server that keeps the handshake busy (here, a banner
//! line that never ends) is cut off when `--connect-timeout` passes, and the bridge thread
//! goes with it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::WAIT;
use crate::support::gateway::Gateway;
use crate::support::sshd::{TEST_USER, test_password};

/// How long the fake server keeps talking at most, so it ends even if the gateway never hangs up.
const TALK_FOR: Duration = Duration::from_secs(60);

/// Accepts one connection and sends `x` without end (bounded by `TALK_FOR`), as fast as the
/// client reads. libssh2 skips lines before the one that starts with `SSH-`, taking each
/// 256 bytes as a line, and its timeout is checked only when it has to wait for data, which
/// it never does here. The task ends when the client hangs up (EOF on the read side).
async fn endless_banner() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let (mut reader, mut writer) = socket.into_split();
        let talk = async {
            let chunk = [b'x'; 4096];
            while writer.write_all(&chunk).await.is_ok() {}
            // Write failed: the client is gone; wait for the read side to say so too.
            std::future::pending::<()>().await;
        };
        let hang_up = async {
            let mut buf = [0u8; 256];
            while reader.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        };
        let _ = tokio::time::timeout(TALK_FOR, async {
            tokio::select! {
                () = talk => {}
                () = hang_up => {}
            }
        })
        .await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_banner_is_cut_at_the_connect_deadline() {
    let (addr, server) = endless_banner().await;
    let gw = Gateway::start_with(|c| c.connect_timeout = Duration::from_secs(1)).await;
    let body = serde_json::json!({
        "hostname": "127.0.0.1",
        "port": addr.port(),
        "username": TEST_USER,
        "password": test_password(),
    });
    let mut term = gw.open(&body, 80, 24).await;
    // Within WAIT (20 s) rather than the minute the server would keep the handshake going.
    let (message, close) = term.expect_error("connect_timeout").await;
    assert_eq!(message, "the SSH server did not answer in time");
    assert!(close.is_some());
    gw.assert_idle().await;
    // The gateway hung up (the server reads EOF) well before TALK_FOR.
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the fake server sees the gateway hang up")
        .unwrap();
    gw.stop().await;
}
