//! Shared test support: a real OpenSSH sshd (`sshd`), the gateway running in-process on
//! `127.0.0.1:0` (`gateway`), and clients that speak its HTTP and WebSocket contract, over
//! plain TCP or TLS (`tls`).

#![allow(dead_code)] // each test file uses a different part of the support

pub mod browser;
pub mod compat_keys;
pub mod dropbear;
pub mod gateway;
pub mod logs;
pub mod proxy;
pub mod sshd;
pub mod term;
pub mod tinyssh;
pub mod tls;
pub mod watchdog;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A client connection to the gateway, plain TCP or TLS.
pub type Stream = Box<dyn Io>;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Bounds every wait in the tests: long enough for a loaded CI machine, short enough to
/// fail instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// A session body for the test user with a password.
pub fn password_body(sshd: &sshd::Sshd) -> serde_json::Value {
    serde_json::json!({
        "hostname": "127.0.0.1",
        "port": sshd.addr().port(),
        "username": sshd::TEST_USER,
        "password": sshd::test_password(),
    })
}

/// A session body for the test user with a private key (and optional passphrase).
pub fn key_body(sshd: &sshd::Sshd, key: &str, passphrase: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "hostname": "127.0.0.1",
        "port": sshd.addr().port(),
        "username": sshd::TEST_USER,
        "private_key": key,
    });
    if let Some(p) = passphrase {
        body["passphrase"] = p.into();
    }
    body
}
