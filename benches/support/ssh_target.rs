//! The `target` scenario's SSH server: a russh server that plays a tiny shell, so the
//! gateway can be driven to thousands of sessions without one sshd process per session.
//! It runs in a child process of the benchmark (the bench binary re-executed with
//! `TARGET_ENV` set), so its sockets count against that process's descriptor limit, not
//! the benchmark client's. It accepts any password, grants `pty-req`, `env` and `shell`,
//! sends `PROMPT` when the shell starts and echoes every byte it receives.
//! It must not touch anything but loopback; the benchmark kills it by PID.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, ChannelOpenHandle, Config, Handler, Msg, Server, Session};
use russh::{Channel, ChannelId};

/// Set (to anything) in the environment of the re-executed bench binary to make it the target.
pub const TARGET_ENV: &str = "ALFRESCO_BENCH_TARGET";
/// What the target's shell prints when it starts, as a real shell prints its prompt.
pub const PROMPT: &[u8] = b"target$ ";

/// Serves on a free loopback port until killed; prints the port on stdout first.
/// Each session holds one socket here: the caller raises the descriptor limit first.
pub fn serve() -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("target: tokio runtime");
    let result: std::io::Result<()> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let config = Arc::new(Config {
            keys: vec![host_key()],
            // Every password is right, so no rejection delay is ever paid; the gateway sends
            // its password first, without probing with "none".
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            // Idle sessions are the point; the benchmark ends them (and this process) itself.
            inactivity_timeout: None,
            // A keystroke's echo must not wait for Nagle's algorithm.
            nodelay: true,
            ..Config::default()
        });
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", listener.local_addr()?.port())?;
        stdout.flush()?;
        // Returns only if accept(2) fails (EMFILE, say): then the run is over, loudly.
        EchoShell.run_on_socket(config, &listener).await
    });
    eprintln!("target: the server stopped: {result:?}");
    std::process::exit(1)
}

/// A fresh ed25519 host key each run: nothing trusts it, and nothing needs to.
fn host_key() -> PrivateKey {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .expect("target: read a host key seed from /dev/urandom");
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// One per connection; it has no state, since the shell only echoes.
#[derive(Clone)]
struct EchoShell;

impl Server for EchoShell {
    type Handler = EchoShell;

    fn new_client(&mut self, _: Option<std::net::SocketAddr>) -> EchoShell {
        EchoShell
    }
}

impl Handler for EchoShell {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        // Dropped: everything arrives through the callbacks below, and an unread channel
        // would fill its buffer and stall the connection.
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.data(channel, PROMPT.to_vec())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.data(channel, data.to_vec())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No PTY to resize behind this shell; acknowledged only if the client asked for an
        // answer (libssh2 does not: russh sends nothing then).
        session.channel_success(channel)
    }
}
